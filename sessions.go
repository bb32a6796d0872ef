package caddylualambda

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/attach"
	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/store"
)

// sessionsKey names the session registry in the usage pool, so live
// sessions survive config reloads and end when Caddy stops.
const sessionsKey = "sessions"

// sessionRegistry holds the live sessions of this process by id.
type sessionRegistry struct {
	mu   sync.Mutex
	hubs map[string]*attach.Hub
	// stored is closed once a session's end is in the store, so that
	// clients are told it ended only when its status says so too.
	stored map[string]chan struct{}
	// attached counts each live session's attached clients.
	attached map[string]int
}

// Bounds on attached clients: how many one session takes, how long a
// write to a client may block, and how often an idle connection is
// pinged (a client that does not answer within writeTimeout is dropped).
const (
	maxAttachPerSession = 8
	attachWriteTimeout  = 10 * time.Second
	attachPingInterval  = 30 * time.Second
)

func newSessionRegistry() *sessionRegistry {
	return &sessionRegistry{hubs: map[string]*attach.Hub{}, stored: map[string]chan struct{}{}, attached: map[string]int{}}
}

// join counts a client attaching to id; it refuses past maxAttachPerSession.
func (sr *sessionRegistry) join(id string) (leave func(), ok bool) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.attached[id] >= maxAttachPerSession {
		return nil, false
	}
	sr.attached[id]++
	var once sync.Once
	return func() {
		once.Do(func() {
			sr.mu.Lock()
			defer sr.mu.Unlock()
			if sr.attached[id]--; sr.attached[id] <= 0 {
				delete(sr.attached, id)
			}
		})
	}, true
}

// get returns a live session's hub and the channel closed once its end
// is stored; a nil hub when there is no live session.
func (sr *sessionRegistry) get(id string) (*attach.Hub, <-chan struct{}) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return sr.hubs[id], sr.stored[id]
}

func (sr *sessionRegistry) put(id string, h *attach.Hub) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	sr.hubs[id] = h
	sr.stored[id] = make(chan struct{})
}

// remove forgets a session whose end has been stored.
func (sr *sessionRegistry) remove(id string) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if ch, ok := sr.stored[id]; ok {
		close(ch)
	}
	delete(sr.hubs, id)
	delete(sr.stored, id)
}

// Destruct ends every session: their VMs end with them.
func (sr *sessionRegistry) Destruct() error {
	sr.mu.Lock()
	hubs := make([]*attach.Hub, 0, len(sr.hubs))
	for _, h := range sr.hubs {
		hubs = append(hubs, h)
	}
	sr.mu.Unlock()
	for _, h := range hubs {
		h.Stop()
	}
	return nil
}

// serveSession boots a VM whose agent runs an interactive LuaJIT, with the
// request's packages on the module path and its module (or source) run
// first, and answers at once with the token to attach with.
func (h *Handler) serveSession(w http.ResponseWriter, r *http.Request, id string, p *profileRuntime) error {
	a, ok := h.admit(w, r, id, p, true)
	if !ok {
		return nil
	}
	rows, _ := strconv.Atoi(r.URL.Query().Get(invokeapi.RowsParam))
	cols, _ := strconv.Atoi(r.URL.Query().Get(invokeapi.ColsParam))
	hub := attach.NewHub()
	sess, err := a.vm.StartSession(context.Background(), h.job(a), rows, cols, hub.Feed)
	if err != nil {
		a.gate.NoCharge("the VM failed")
		a.vm.Close()
		a.leave()
		h.release(r.Context(), id)
		return h.internal(w, "start session", err)
	}
	a.gate.Charge()
	hub.Start(sess, time.Duration(h.SessionIdle))
	h.sessions.put(id, hub)
	go func() {
		defer a.leave()
		<-hub.Done()
		end := hub.Ended()
		out := &store.Output{
			ID: id, Profile: a.p.Name, Reason: end.Reason, Error: end.Error, Stdout: string(hub.Transcript()),
			Timings: store.Timings{QueueMillis: ms(a.queue), TotalMillis: ms(time.Since(a.start))},
		}
		if _, err := h.store.Finish(context.Background(), id, out); err != nil {
			h.logger.Error("storing a session's transcript", zap.String("id", id), zap.Error(err))
		}
		h.sessions.remove(id)
	}()
	h.keepReceipt(a.gate, id)
	base := basePath(r)
	w.Header().Set(invokeapi.TokenHeader, a.token)
	writeJSON(w, http.StatusOK, invokeapi.SessionStart{
		ID: id, Mode: invokeapi.ModeSession, Token: a.token,
		AttachPath: invokeapi.AttachPath(base, id), StatusPath: invokeapi.StatusPath(base, id),
		EndsBy: a.start.Add(time.Duration(a.p.Timeout)),
	})
	return nil
}

// serveAttach joins a live session over a WebSocket. It needs the token of
// the request that started the session.
func (h *Handler) serveAttach(w http.ResponseWriter, r *http.Request, id string) error {
	rec, err := h.store.Get(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusNotFound, "no session "+id)
		return nil
	}
	if !authorize(w, r, rec) {
		return nil
	}
	hub, stored := h.sessions.get(id)
	if hub == nil {
		if !rec.Session {
			writeError(w, http.StatusConflict, id+" is a run, not a session")
			return nil
		}
		if rec.State == store.StateRunning && rec.Node != h.Node && r.Header.Get(forwardedHeader) == "" {
			return h.attachThrough(w, r, rec)
		}
		writeError(w, http.StatusGone, "session "+id+" has ended (reason: "+rec.Reason+")")
		return nil
	}
	leave, ok := h.sessions.join(id)
	if !ok {
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("session %s already has %d clients attached", id, maxAttachPerSession))
		return nil
	}
	defer leave()
	client, scrollback, ok := hub.Attach()
	if !ok {
		writeError(w, http.StatusGone, "session "+id+" has ended")
		return nil
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// The token, not the browser's origin, authorises the attach.
		InsecureSkipVerify: true,
	})
	if err != nil {
		client.Detach()
		return nil
	}
	conn.SetReadLimit(64 << 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// write sends one message, dropping a client that does not take it in time.
	write := func(typ websocket.MessageType, b []byte) error {
		wctx, wcancel := context.WithTimeout(ctx, attachWriteTimeout)
		defer wcancel()
		return conn.Write(wctx, typ, b)
	}
	go func() {
		t := time.NewTicker(attachPingInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				pctx, pcancel := context.WithTimeout(ctx, attachWriteTimeout)
				err := conn.Ping(pctx)
				pcancel()
				if err != nil {
					client.Detach()
					cancel()
					return
				}
			}
		}
	}()
	go func() {
		defer cancel()
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				client.Detach()
				return
			}
			if typ == websocket.MessageBinary {
				_ = hub.Input(data)
				continue
			}
			var m invokeapi.AttachMessage
			if json.Unmarshal(data, &m) == nil && m.Type == invokeapi.AttachResize {
				_ = hub.Resize(m.Rows, m.Cols)
			}
		}
	}()
	if len(scrollback) > 0 {
		if err := write(websocket.MessageBinary, scrollback); err != nil {
			client.Detach()
			return nil
		}
	}
	for b := range client.Output {
		if err := write(websocket.MessageBinary, b); err != nil {
			client.Detach()
			return nil
		}
	}
	if end := hub.Ended(); end != nil {
		// The end is announced once it is stored (bounded: a failing
		// store must not hold the client).
		select {
		case <-stored:
		case <-time.After(10 * time.Second):
		}
		msg, _ := json.Marshal(invokeapi.AttachMessage{Type: invokeapi.AttachEnd, Reason: end.Reason, Error: end.Error})
		_ = write(websocket.MessageText, msg)
		conn.Close(websocket.StatusNormalClosure, "session ended: "+end.Reason)
		return nil
	}
	conn.Close(websocket.StatusNormalClosure, "detached")
	return nil
}

// forwardedHeader marks an attach one node passes to another, which serves
// it only from its own sessions (so a request never goes round).
const forwardedHeader = "X-Lualambda-Forwarded-By"

// attachThrough passes an attach to the node that runs the session, at the
// internal address that node announces in its heartbeat; the WebSocket is
// proxied both ways. The token was checked here against the shared record,
// and travels on for the owner to check again.
func (h *Handler) attachThrough(w http.ResponseWriter, r *http.Request, rec *store.Record) error {
	addr, ok := h.store.NodeAddress(r.Context(), rec.Node)
	if !ok {
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("session %s runs on node %s, which this node cannot reach (is its internal_address set?)", rec.ID, rec.Node))
		return nil
	}
	target, err := url.Parse(strings.TrimSuffix(addr, "/") + "/" + rec.ID + "/" + invokeapi.AttachSegment)
	if err != nil {
		return h.internal(w, "node address", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = target.Host
			pr.Out.Header.Set(forwardedHeader, h.Node)
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			h.logger.Warn("passing an attach to the session's node", zap.String("id", rec.ID), zap.String("node", rec.Node), zap.Error(err))
			writeError(w, http.StatusBadGateway, "the node running session "+rec.ID+" did not answer")
		},
	}
	proxy.ServeHTTP(w, r)
	return nil
}

// Package attach shares one interactive VM session among any number of
// attached clients: every client sees the same output, any of them may
// type, and a client that joins late first gets the recent scrollback.
package attach

import (
	"sync"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// ScrollbackBytes is how much recent output a late joiner receives.
const ScrollbackBytes = 128 << 10

// Terminal is what a hub drives: a vmpool.Session.
type Terminal interface {
	Input(b []byte) error
	Resize(rows, cols int) error
	Done() <-chan struct{}
	Result() *vmpool.Result
	End()
}

// End says how a session ended.
type End struct {
	Reason string `json:"reason"`
	Error  string `json:"error,omitempty"`
}

// Hub is one session and its attached clients.
type Hub struct {
	mu         sync.Mutex
	term       Terminal
	scroll     []byte
	clients    map[*Client]struct{}
	ended      *End
	lastActive time.Time
	done       chan struct{}
}

// Client is one attached viewer.
type Client struct {
	// Output carries terminal output; it is closed when the client is
	// dropped or the session ends.
	Output chan []byte
	hub    *Hub
}

// NewHub returns a hub; call Feed with the terminal's output and Start
// once the terminal exists.
func NewHub() *Hub {
	return &Hub{clients: map[*Client]struct{}{}, lastActive: time.Now(), done: make(chan struct{})}
}

// Feed records output and sends it to every client. A client too slow to
// keep up is dropped rather than allowed to stall the others.
func (h *Hub) Feed(_ protocol.Stream, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.scroll = append(h.scroll, b...)
	if len(h.scroll) > ScrollbackBytes {
		h.scroll = append([]byte(nil), h.scroll[len(h.scroll)-ScrollbackBytes:]...)
	}
	for c := range h.clients {
		select {
		case c.Output <- append([]byte(nil), b...):
		default:
			delete(h.clients, c)
			close(c.Output)
		}
	}
}

// Start attaches the terminal and ends the hub when the terminal ends, or
// when nobody has typed for idle (0: never).
func (h *Hub) Start(term Terminal, idle time.Duration) {
	h.mu.Lock()
	h.term = term
	h.mu.Unlock()
	go func() {
		var tick <-chan time.Time
		if idle > 0 {
			t := time.NewTicker(idle / 10)
			defer t.Stop()
			tick = t.C
		}
		idled := false
		for {
			select {
			case <-term.Done():
				h.finish(term.Result(), idled)
				return
			case <-tick:
				h.mu.Lock()
				quiet := time.Since(h.lastActive) > idle
				h.mu.Unlock()
				if quiet && !idled {
					idled = true
					go term.End()
				}
			}
		}
	}()
}

func (h *Hub) finish(res *vmpool.Result, idled bool) {
	end := &End{Reason: string(res.Reason), Error: res.Error}
	if idled {
		end = &End{Reason: "idle", Error: "the session was idle too long"}
	}
	h.mu.Lock()
	h.ended = end
	for c := range h.clients {
		close(c.Output)
		delete(h.clients, c)
	}
	h.mu.Unlock()
	close(h.done)
}

// Attach joins a client. It returns the scrollback to show first, or ok
// false when the session has ended.
func (h *Hub) Attach() (c *Client, scrollback []byte, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended != nil {
		return nil, nil, false
	}
	c = &Client{Output: make(chan []byte, 256), hub: h}
	h.clients[c] = struct{}{}
	return c, append([]byte(nil), h.scroll...), true
}

// Detach removes a client; the session goes on.
func (c *Client) Detach() {
	h := c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; ok {
		delete(h.clients, c)
		close(c.Output)
	}
}

// Input types into the terminal.
func (h *Hub) Input(b []byte) error {
	h.mu.Lock()
	h.lastActive = time.Now()
	term := h.term
	h.mu.Unlock()
	if term == nil {
		return nil
	}
	return term.Input(b)
}

// Resize changes the terminal's size.
func (h *Hub) Resize(rows, cols int) error {
	h.mu.Lock()
	term := h.term
	h.mu.Unlock()
	if term == nil || rows <= 0 || cols <= 0 || rows > 1000 || cols > 1000 {
		return nil
	}
	return term.Resize(rows, cols)
}

// Done is closed when the session has ended.
func (h *Hub) Done() <-chan struct{} { return h.done }

// Ended reports how the session ended, or nil while it runs.
func (h *Hub) Ended() *End {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ended
}

// Transcript returns the scrollback.
func (h *Hub) Transcript() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]byte(nil), h.scroll...)
}

// Stop ends the session.
func (h *Hub) Stop() {
	h.mu.Lock()
	term := h.term
	h.mu.Unlock()
	if term != nil {
		term.End()
	}
}

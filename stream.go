package caddylualambda

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// keepAliveEvery is how long a streamed run may be quiet before the stream
// carries a comment, so that proxies and clients do not take it for dead.
const keepAliveEvery = 15 * time.Second

// wantsStream reports whether a run's request asks for its output as
// Server-Sent Events (Accept: text/event-stream).
func wantsStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && mt == invokeapi.EventStreamType && params["q"] != "0" {
				return true
			}
		}
	}
	return false
}

// outputChunk is text a guest printed on one stream.
type outputChunk struct {
	stream protocol.Stream
	data   []byte
}

// outputQueue carries a run's output from the VM's reader to the request's
// goroutine without ever blocking the reader: push appends and signals.
// What it holds is bounded by limit (the profile's output cap bounds what
// a run prints, so nothing is dropped in practice); past it, chunks are
// dropped from the stream (the result still has all of the output).
type outputQueue struct {
	mu      sync.Mutex
	chunks  []outputChunk
	held    int64
	limit   int64
	dropped bool
	// ready has a value when there is something to take.
	ready chan struct{}
}

func newOutputQueue(limit int64) *outputQueue {
	return &outputQueue{limit: limit, ready: make(chan struct{}, 1)}
}

// push is the run's vmpool.OutputFunc.
func (q *outputQueue) push(stream protocol.Stream, data []byte) {
	q.mu.Lock()
	if q.held+int64(len(data)) > q.limit {
		q.dropped = true
	} else {
		q.held += int64(len(data))
		q.chunks = append(q.chunks, outputChunk{stream: stream, data: bytes.Clone(data)})
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take returns what was pushed since the last take, consecutive chunks of
// one stream joined, and whether anything was pushed at all (a dropped
// chunk counts: the guest printed).
func (q *outputQueue) take() ([]outputChunk, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	chunks, printed := q.chunks, len(q.chunks) > 0 || q.dropped
	q.chunks, q.held = nil, 0
	var joined []outputChunk
	for _, c := range chunks {
		if n := len(joined); n > 0 && joined[n-1].stream == c.stream {
			joined[n-1].data = append(joined[n-1].data, c.data...)
			continue
		}
		joined = append(joined, c)
	}
	return joined, printed
}

// sseWriter writes a streamed run's events and flushes each.
type sseWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	last time.Time
	// tail holds each stream's last bytes that end in an unfinished UTF-8
	// character, until the rest of it is printed.
	tail map[protocol.Stream][]byte
	// failed is set once a write fails (the client went away); the run
	// goes on and is stored, nothing more is written.
	failed bool
}

// event writes one event whose data is one line.
func (s *sseWriter) event(name string, data []byte) {
	if s.failed {
		return
	}
	var b bytes.Buffer
	b.WriteString("event: ")
	b.WriteString(name)
	b.WriteString("\ndata: ")
	b.Write(data)
	b.WriteString("\n\n")
	s.write(b.Bytes())
}

func (s *sseWriter) write(b []byte) {
	if s.failed {
		return
	}
	if _, err := s.w.Write(b); err != nil {
		s.failed = true
		return
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.failed = true
	}
	s.last = time.Now()
}

// output writes chunks as stdout and stderr events, keeping an unfinished
// UTF-8 character for the stream's next chunk.
func (s *sseWriter) output(chunks []outputChunk) {
	for _, c := range chunks {
		data := append(s.tail[c.stream], c.data...)
		cut := completeUTF8(data)
		s.tail[c.stream] = bytes.Clone(data[cut:])
		if cut > 0 {
			s.text(c.stream, data[:cut])
		}
	}
}

// flushTails writes what the streams still hold.
func (s *sseWriter) flushTails() {
	for _, st := range []protocol.Stream{protocol.Stdout, protocol.Stderr} {
		if len(s.tail[st]) > 0 {
			s.text(st, s.tail[st])
			s.tail[st] = nil
		}
	}
}

func (s *sseWriter) text(stream protocol.Stream, data []byte) {
	name := invokeapi.EventStdout
	if stream == protocol.Stderr {
		name = invokeapi.EventStderr
	}
	s.event(name, jsonLine(string(data)))
}

// jsonLine encodes v on one line as the API's JSON answers are encoded.
func jsonLine(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// completeUTF8 returns how much of b ends on a whole character: b less an
// unfinished UTF-8 sequence at its end (invalid bytes count as whole).
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}

// runOutcome is what a VM's Run returned.
type runOutcome struct {
	res *vmpool.Result
	err error
}

// serveRunStream runs an admitted request and streams its output as
// Server-Sent Events (see invokeapi.EventStreamType). Nothing is written
// until the guest has the job: its first output proves it, or, for a run
// that prints nothing, its end. Then the payment gate commits (a paid run
// settles before the first byte); a run whose payment does not settle is
// stopped and its id released, and the gate answers. A run that ends
// before the guest had the job answers 503 as a run without streaming
// does, uncharged.
func (h *Handler) serveRunStream(w http.ResponseWriter, r *http.Request, a *admitted) error {
	ctx := r.Context()
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	q := newOutputQueue(max(a.p.OutputBytes, 64<<10))
	done := make(chan runOutcome, 1)
	go func() {
		res, err := a.vm.Run(runCtx, h.job(a), q.push)
		done <- runOutcome{res, err}
	}()
	var sse *sseWriter
	var outcome *runOutcome
	quiet := h.keepAlive
	if quiet <= 0 {
		quiet = keepAliveEvery
	}
	keepAlive := time.NewTicker(quiet / 3)
	defer keepAlive.Stop()
	for outcome == nil {
		select {
		case o := <-done:
			outcome = &o
		case <-q.ready:
		case <-keepAlive.C:
			if sse != nil && time.Since(sse.last) >= quiet {
				sse.write([]byte(": keep-alive\n\n"))
			}
			continue
		}
		chunks, printed := q.take()
		if sse == nil {
			delivered := printed || (outcome != nil && outcome.err == nil && outcome.res.Delivered)
			if !delivered {
				continue // nothing yet, or a run that never started (below)
			}
			// The guest has the job: the run is the user's, and paid now.
			h.keepReceipt(a.gate, a.rec.ID)
			w.Header().Set(invokeapi.TokenHeader, a.token)
			// A gate that cannot settle first (ErrNotCommitted) holds the
			// answer and settles after it: the stream goes on into it.
			if err := a.gate.Commit(ctx); err != nil && !errors.Is(err, payhook.ErrNotCommitted) {
				stop()
				if outcome == nil {
					<-done
				}
				h.logger.Warn("a streamed run's payment did not settle; the run was stopped", zap.String("id", a.rec.ID), zap.Error(err))
				w.Header().Del(invokeapi.TokenHeader)
				h.release(ctx, a.rec.ID)
				return nil
			}
			sse = startStream(w)
		}
		sse.output(chunks)
	}
	res, err := outcome.res, outcome.err
	if err != nil {
		res = &vmpool.Result{Reason: protocol.ReasonCrash, Error: err.Error(), Delivered: sse != nil}
	}
	if sse == nil {
		h.refuseUndelivered(w, ctx, a, res)
		return nil
	}
	sse.flushTails()
	out, state := h.finishRun(ctx, a, res)
	sse.event(invokeapi.EventResult, jsonLine(runAnswer(basePath(r), out, state, a.token)))
	return nil
}

// startStream writes the headers of a streamed answer and flushes them.
func startStream(w http.ResponseWriter) *sseWriter {
	hd := w.Header()
	hd.Set("Content-Type", invokeapi.EventStreamType+"; charset=utf-8")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	hd.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: http.NewResponseController(w), tail: map[protocol.Stream][]byte{}}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.failed = true
	}
	s.last = time.Now()
	return s
}

package caddylualambda

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// The handler's logic around a streamed run, with VMs that fail in ways a
// real one does rarely and cannot be made to on cue. The streaming itself
// is tested with real VMs, real Caddy and the devnet in e2e/stream_test.go.

// scriptedVMs hands out one scriptedVM per Acquire.
type scriptedVMs struct {
	vm       *scriptedVM
	observed atomic.Int32
}

func (s *scriptedVMs) Acquire(context.Context) (guestVM, error) { return s.vm, nil }
func (s *scriptedVMs) ObserveJob(string, time.Duration)         { s.observed.Add(1) }

// scriptedVM is a VM whose run is run.
type scriptedVM struct {
	run func(ctx context.Context, onOutput vmpool.OutputFunc) (*vmpool.Result, error)
}

func (v *scriptedVM) Run(ctx context.Context, _ vmpool.Job, onOutput vmpool.OutputFunc) (*vmpool.Result, error) {
	return v.run(ctx, onOutput)
}

func (v *scriptedVM) StartSession(context.Context, vmpool.Job, int, int, vmpool.OutputFunc) (*vmpool.Session, error) {
	return nil, errors.New("no sessions here")
}

func (v *scriptedVM) Close() error { return nil }

// streamRequest is a streamed run of id on nano with a payment gate whose
// committer is commit (nil: none set).
func streamRequest(t *testing.T, id string, commit func(context.Context) error) (*http.Request, *payhook.Gate, *atomic.Int32) {
	t.Helper()
	ctx, gate := payhook.WithGate(t.Context())
	var commits atomic.Int32
	if commit != nil {
		gate.SetCommitter(func(ctx context.Context) error {
			commits.Add(1)
			return commit(ctx)
		})
	}
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/"+id+"/nano", strings.NewReader("print(1)"))
	r.Header.Set("Content-Type", "text/x-lua")
	r.Header.Set("Accept", "text/event-stream")
	return r, gate, &commits
}

// TestStreamedRunVMFailsBeforeJob: a paid streamed run whose VM fails
// before the guest takes the job streams nothing, never commits (so the
// gate never settles), is not charged, answers 503 JSON and frees its id.
func TestStreamedRunVMFailsBeforeJob(t *testing.T) {
	h := routeTestHandler(t)
	h.clients = newClientLimiter(h.MaxPerClient)
	vms := &scriptedVMs{vm: &scriptedVM{run: func(context.Context, vmpool.OutputFunc) (*vmpool.Result, error) {
		return &vmpool.Result{Reason: protocol.ReasonCrash, Error: "the VM ended before the job", Delivered: false}, nil
	}}}
	for _, p := range h.profiles {
		p.vms = vms
	}
	r, gate, commits := streamRequest(t, "undelivered", func(context.Context) error { return nil })
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, nil); err != nil {
		t.Fatal(err)
	}
	charge, decided, _ := gate.Decision()
	if w.Code != http.StatusServiceUnavailable || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") ||
		strings.Contains(w.Body.String(), "event:") || w.Header().Get(invokeapi.TokenHeader) != "" {
		t.Fatalf("undelivered streamed run: %d %v %s", w.Code, w.Header(), w.Body.String())
	}
	if commits.Load() != 0 || charge || !decided {
		t.Fatalf("undelivered streamed run: commits %d, charge %v decided %v", commits.Load(), charge, decided)
	}
	if vms.observed.Load() != 0 {
		t.Fatal("a run that never started was counted as a job")
	}
	st := httptest.NewRecorder()
	_ = h.ServeHTTP(st, httptest.NewRequest(http.MethodGet, "/undelivered", nil), nil)
	if st.Code != http.StatusNotFound {
		t.Fatalf("the id of a run that never started: %d %s", st.Code, st.Body.String())
	}
}

// TestStreamedRunCommitFails: when the payment does not settle at the
// first output, the handler writes nothing, stops the run and frees the id.
func TestStreamedRunCommitFails(t *testing.T) {
	h := routeTestHandler(t)
	h.clients = newClientLimiter(h.MaxPerClient)
	stopped := make(chan struct{})
	vms := &scriptedVMs{vm: &scriptedVM{run: func(ctx context.Context, onOutput vmpool.OutputFunc) (*vmpool.Result, error) {
		onOutput(protocol.Stdout, []byte("secret\n"))
		select {
		case <-ctx.Done():
			close(stopped)
			return nil, ctx.Err()
		case <-time.After(time.Minute):
			return &vmpool.Result{Reason: protocol.ReasonOK, Stdout: "secret\n", Delivered: true}, nil
		}
	}}}
	for _, p := range h.profiles {
		p.vms = vms
	}
	r, _, commits := streamRequest(t, "unsettled", func(context.Context) error { return errors.New("settlement failed") })
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("the run went on after its payment failed")
	}
	if commits.Load() != 1 || w.Body.Len() != 0 || strings.Contains(w.Header().Get("Content-Type"), "event-stream") ||
		w.Header().Get(invokeapi.TokenHeader) != "" {
		t.Fatalf("unsettled streamed run: commits %d, %d %v %q", commits.Load(), w.Code, w.Header(), w.Body.String())
	}
	st := httptest.NewRecorder()
	_ = h.ServeHTTP(st, httptest.NewRequest(http.MethodGet, "/unsettled", nil), nil)
	if st.Code != http.StatusNotFound {
		t.Fatalf("the id of an unpaid run: %d %s", st.Code, st.Body.String())
	}
}

// TestWantsStream: only an Accept that names text/event-stream (not with
// q=0) streams.
func TestWantsStream(t *testing.T) {
	for accept, want := range map[string]bool{
		"":                                 false,
		"application/json":                 false,
		"text/event-stream":                true,
		"Text/Event-Stream; charset=utf-8": true,
		"application/json, text/event-stream;q=1": true,
		"text/event-stream;q=0":                   false,
		"text/event-streamx":                      false,
		"*/*":                                     false,
	} {
		r := httptest.NewRequest(http.MethodPost, "/x/nano", nil)
		if accept != "" {
			r.Header.Set("Accept", accept)
		}
		if got := wantsStream(r); got != want {
			t.Errorf("Accept %q: %v, want %v", accept, got, want)
		}
	}
}

// TestCompleteUTF8: a chunk that ends inside a character keeps it for the
// next chunk.
func TestCompleteUTF8(t *testing.T) {
	s := []byte("aé€😀")
	for n := 0; n <= len(s); n++ {
		cut := completeUTF8(s[:n])
		if cut > n || !utf8Valid(s[:cut]) || n-cut >= 4 {
			t.Errorf("%q: cut at %d", s[:n], cut)
		}
	}
	if got := completeUTF8([]byte{'a', 0xff}); got != 2 {
		t.Errorf("invalid byte: cut at %d, want 2", got)
	}
}

func utf8Valid(b []byte) bool { return strings.ToValidUTF8(string(b), "?") == string(b) }

// TestStreamKeepAlive: a streamed run that is quiet for the keep-alive
// interval gets a comment on its stream, over real HTTP, before its next
// output.
func TestStreamKeepAlive(t *testing.T) {
	h := routeTestHandler(t)
	h.clients = newClientLimiter(h.MaxPerClient)
	h.keepAlive = 60 * time.Millisecond
	sawComment := make(chan struct{})
	vms := &scriptedVMs{vm: &scriptedVM{run: func(ctx context.Context, onOutput vmpool.OutputFunc) (*vmpool.Result, error) {
		onOutput(protocol.Stdout, []byte("a"))
		select {
		case <-sawComment:
		case <-time.After(time.Minute):
		}
		onOutput(protocol.Stdout, []byte("b"))
		return &vmpool.Result{Reason: protocol.ReasonOK, Stdout: "ab", Delivered: true}, nil
	}}}
	for _, p := range h.profiles {
		p.vms = vms
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.ServeHTTP(w, r, nil)
	}))
	defer srv.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/quiet/nano", strings.NewReader("x"))
	req.Header.Set("Content-Type", "text/x-lua")
	req.Header.Set("Accept", invokeapi.EventStreamType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	closed := false
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if sc.Text() == ": keep-alive" && !closed {
			close(sawComment)
			closed = true
		}
	}
	got := strings.Join(lines, "\n")
	if !closed || !strings.HasPrefix(got, "event: stdout\ndata: \"a\"\n\n: keep-alive\n") ||
		!strings.Contains(got, "event: stdout\ndata: \"b\"\n\nevent: result\ndata: {") {
		t.Fatalf("stream:\n%s", got)
	}
}

// TestOutputQueueIsBounded: the queue between the VM's reader and a slow
// client holds at most its limit; output past it is left out of the
// stream, never blocking the reader.
func TestOutputQueueIsBounded(t *testing.T) {
	q := newOutputQueue(10)
	for range 5 {
		q.push(protocol.Stdout, []byte("abcd"))
	}
	q.push(protocol.Stderr, []byte("e"))
	chunks, printed := q.take()
	if !printed || len(chunks) != 2 || string(chunks[0].data) != "abcdabcd" || string(chunks[1].data) != "e" || q.held != 0 {
		t.Fatalf("took %q printed=%v held=%d", chunks, printed, q.held)
	}
	q.push(protocol.Stdout, []byte("0123456789"))
	if chunks, _ := q.take(); len(chunks) != 1 || len(chunks[0].data) != 10 {
		t.Fatalf("after a take the queue holds its limit again: %q", chunks)
	}
}

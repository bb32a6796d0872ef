package vmpool_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// startREPL starts a session on a fresh VM and waits for its prompt.
func startREPL(t *testing.T, ctx context.Context) *vmpool.Session {
	t.Helper()
	vm := clone(t)
	var mu sync.Mutex
	var out strings.Builder
	prompt := make(chan struct{})
	var once sync.Once
	s, err := vm.StartSession(ctx, vmpool.Job{Limits: vmpool.LimitsFor(testMemoryMiB, time.Minute, 64<<10)}, 24, 80, func(_ protocol.Stream, b []byte) {
		mu.Lock()
		defer mu.Unlock()
		out.Write(b)
		if strings.Contains(out.String(), "> ") {
			once.Do(func() { close(prompt) })
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-prompt:
	case <-s.Done():
		t.Fatalf("the session ended before its prompt: %+v", s.Result())
	case <-time.After(time.Minute):
		t.Fatal("no prompt within a minute")
	}
	return s
}

// TestSessionEndIsNoCrash: a session ended by End (its user, or its host)
// or by its context says it was ended, not that the VM crashed; one whose
// REPL exits still reports how it exited.
func TestSessionEndIsNoCrash(t *testing.T) {
	t.Run("End", func(t *testing.T) {
		s := startREPL(t, context.Background())
		s.End()
		if r := s.Result(); r.Reason != vmpool.ReasonEnded || r.Error != "the session was ended" {
			t.Fatalf("ended by End: %+v", r)
		}
	})
	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		s := startREPL(t, ctx)
		cancel()
		select {
		case <-s.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the session outlived its context")
		}
		if r := s.Result(); r.Reason != vmpool.ReasonEnded {
			t.Fatalf("ended by its context: %+v", r)
		}
	})
	t.Run("REPL exits", func(t *testing.T) {
		s := startREPL(t, context.Background())
		if err := s.Input([]byte("os.exit(0)\n")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the session did not end")
		}
		if r := s.Result(); r.Reason != protocol.ReasonOK {
			t.Fatalf("the REPL's own exit: %+v", r)
		}
	})
}

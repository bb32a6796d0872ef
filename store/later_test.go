package store

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// heldStorage is a file storage whose writes outside invocation records
// wait until released, and which counts the writes and locks it was asked
// for.
type heldStorage struct {
	*certmagic.FileStorage
	release chan struct{}
	once    sync.Once
	stores  atomic.Int64
	locks   atomic.Int64
}

func (h *heldStorage) Store(ctx context.Context, key string, value []byte) error {
	h.stores.Add(1)
	if !strings.HasPrefix(key, Prefix+"invocations/") {
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.FileStorage.Store(ctx, key, value)
}

func (h *heldStorage) Lock(ctx context.Context, name string) error {
	h.locks.Add(1)
	return h.FileStorage.Lock(ctx, name)
}

func (h *heldStorage) letGo() { h.once.Do(func() { close(h.release) }) }

// TestAnswerWaitsOnlyForTheClaim: a run's request waits for the claim (one
// lock, one write) and nothing else; the index entry, the output and the
// receipt land after it, and this store reads them at once meanwhile.
func TestAnswerWaitsOnlyForTheClaim(t *testing.T) {
	c := &clock{t: time.Now()}
	held := &heldStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}, release: make(chan struct{})}
	t.Cleanup(held.letGo)
	st := NewWithClock(held, c.now)
	st.DeferWrites(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := st.Claim(ctx, record("r1", c.now())); err != nil {
		t.Fatal(err)
	}
	if got := held.locks.Load(); got != 1 {
		t.Errorf("the claim took %d storage locks, want 1", got)
	}
	// Finish and the receipt return while every write but the claim's
	// record is held.
	rec, err := st.Finish(ctx, "r1", &Output{ID: "r1", Reason: "ok", Result: []byte(`4`), Stdout: "hi\n"})
	if err != nil || rec.State != StateDone || rec.Reason != "ok" {
		t.Fatalf("finish: %+v %v", rec, err)
	}
	if err := st.AddReceipt(ctx, "r1", Receipt{TxID: "TX1"}); err != nil {
		t.Fatal(err)
	}
	if got := held.locks.Load(); got != 1 {
		t.Errorf("finishing waited for %d more storage locks", got-1)
	}
	// This store shows what is still pending.
	rec, err = st.Get(ctx, "r1")
	if err != nil || rec.State != StateDone || !rec.Paid || rec.Receipt == nil {
		t.Fatalf("pending finish, read here: %+v %v", rec, err)
	}
	out, err := st.Output(ctx, rec)
	if err != nil || out.Stdout != "hi\n" || out.Receipt == nil || out.Receipt.TxID != "TX1" {
		t.Fatalf("pending output, read here: %+v %v", out, err)
	}
	// The storage has only the claim so far.
	other := NewWithClock(held.FileStorage, c.now)
	if rec, err := other.Get(ctx, "r1"); err != nil || rec.State != StateRunning {
		t.Fatalf("the storage before the writes land: %+v %v", rec, err)
	}

	held.letGo()
	landed(t, st)
	rec, err = other.Get(ctx, "r1")
	if err != nil || rec.State != StateDone || rec.Reason != "ok" || !rec.Paid {
		t.Fatalf("the storage once the writes landed: %+v %v", rec, err)
	}
	out, err = other.Output(ctx, rec)
	if err != nil || out.Stdout != "hi\n" || string(out.Result) != "4" || out.Receipt == nil || out.Receipt.TxID != "TX1" {
		t.Fatalf("the stored output: %+v %v", out, err)
	}
	if keys, _ := held.FileStorage.List(ctx, dueDir, true); len(keys) < 2 {
		t.Fatalf("the reaper's index entry did not land: %v", keys)
	}
}

// TestReleaseWaitsForTheIndexEntry: a run released right after its claim
// leaves no index entry behind, although the entry is written after the
// claim returns.
func TestReleaseWaitsForTheIndexEntry(t *testing.T) {
	c := &clock{t: time.Now()}
	held := &heldStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}, release: make(chan struct{})}
	st := NewWithClock(held, c.now)
	st.DeferWrites(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := st.Claim(ctx, record("r2", c.now())); err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() { released <- st.Release(ctx, "r2") }()
	held.letGo()
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	landed(t, st)
	if keys, _ := held.FileStorage.List(ctx, dueDir, true); len(keys) > 1 {
		t.Fatalf("a released run left index entries: %v", keys)
	}
	if _, err := st.Get(ctx, "r2"); err != ErrNotFound {
		t.Fatalf("a released id: %v", err)
	}
}

// TestPendingWritesAreBounded: when the storage falls behind, a store with
// as many ids pending as it allows writes the next one before it returns.
func TestPendingWritesAreBounded(t *testing.T) {
	c := &clock{t: time.Now()}
	held := &heldStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}, release: make(chan struct{})}
	t.Cleanup(held.letGo)
	st := NewWithClock(held, c.now)
	st.DeferWrites(true)
	st.later.maxPending = 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := st.Claim(ctx, record("first", c.now())); err != nil {
		t.Fatal(err)
	}
	// first's index entry is pending (held: its write has been asked for);
	// the next claim's must be written before its Claim returns.
	for held.stores.Load() < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("first's index entry was never written")
		case <-time.After(time.Millisecond):
		}
	}
	before := held.stores.Load()
	done := make(chan error, 1)
	go func() {
		_, err := st.Claim(ctx, record("second", c.now()))
		done <- err
	}()
	// second's record, then its index entry: two writes asked for.
	for held.stores.Load() < before+2 {
		select {
		case err := <-done:
			t.Fatalf("the claim returned (%v) before its index entry was written", err)
		case <-ctx.Done():
			t.Fatal("the second claim never wrote")
		case <-time.After(time.Millisecond):
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the claim returned (%v) while its index entry is held", err)
	default:
	}
	held.letGo()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	landed(t, st)
}

package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// newTestStore returns a store on a real file system storage with a clock
// the test moves.
func newTestStore(t *testing.T) (*Store, *time.Time) {
	t.Helper()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	st := New(&certmagic.FileStorage{Path: t.TempDir()})
	st.now = func() time.Time { return now }
	return st, &now
}

func record(id string, now time.Time) *Record {
	return &Record{
		ID: id, State: StateRunning, Profile: "nano", CreatedAt: now,
		Deadline: now.Add(time.Minute), Retention: 5 * time.Minute, TokenHash: HashToken("secret"),
	}
}

func TestClaimIsExclusive(t *testing.T) {
	st, now := newTestStore(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, results[i] = st.Claim(ctx, record("same", *now))
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range results {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrExists):
			t.Fatalf("claim: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d claims of one id succeeded, want 1", won)
	}
}

func TestLifecycle(t *testing.T) {
	st, now := newTestStore(t)
	ctx := context.Background()
	hash, err := st.PutBlob(ctx, []byte("zip bytes"))
	if err != nil {
		t.Fatal(err)
	}
	rec := record("run1", *now)
	rec.Packages = []PackageRef{{Name: "p", Hash: hash}}
	if _, err := st.Claim(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(ctx, "run1")
	if err != nil || got.State != StateRunning || got.ExpiresAt != nil {
		t.Fatalf("while running: %+v %v", got, err)
	}
	if !got.TokenMatches("secret") || got.TokenMatches("guess") || got.TokenMatches("") {
		t.Fatal("token check is wrong")
	}
	*now = now.Add(10 * time.Second)
	if err := st.Finish(ctx, rec, &Output{ID: "run1", Reason: "ok", Result: []byte(`4`)}); err != nil {
		t.Fatal(err)
	}
	got, _ = st.Get(ctx, "run1")
	out, err := st.Output(ctx, got)
	if err != nil || string(out.Result) != "4" || got.State != StateDone {
		t.Fatalf("after the run: %+v %+v %v", got, out, err)
	}
	if err := st.AddReceipt(ctx, "run1", Receipt{TxID: "TX1", Network: "algorand:x"}); err != nil {
		t.Fatal(err)
	}
	got, _ = st.Get(ctx, "run1")
	out, _ = st.Output(ctx, got)
	if !got.Paid || out.Receipt == nil || out.Receipt.TxID != "TX1" {
		t.Fatalf("receipt: %+v %+v", got, out)
	}

	// An unreferenced blob older than the grace period is reaped; a used one is not.
	orphan, _ := st.PutBlob(ctx, []byte("nobody uses me"))
	*now = now.Add(6 * time.Minute) // past retention
	got, _ = st.Get(ctx, "run1")
	if got.State != StateExpired {
		t.Fatalf("after retention: %s", got.State)
	}
	if _, err := st.Output(ctx, got); !errors.Is(err, ErrExpired) {
		t.Fatalf("output after retention: %v", err)
	}
	// File storage stamps blobs with the real time: reap with a clock past the grace.
	*now = time.Now().Add(2 * time.Hour)
	if _, err := st.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Blob(ctx, orphan); !errors.Is(err, ErrNotFound) {
		t.Fatalf("orphan blob: %v", err)
	}
	if _, err := st.Blob(ctx, hash); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the expired record's blob should go too: %v", err)
	}
	// The record stays as a tombstone, so the id still reads as expired (410, not 404).
	if got, err := st.Get(ctx, "run1"); err != nil || got.State != StateExpired {
		t.Fatalf("tombstone: %+v %v", got, err)
	}
	if _, err := st.Claim(ctx, record("run1", *now)); !errors.Is(err, ErrExists) {
		t.Fatalf("an expired id must stay used: %v", err)
	}
}

func TestLostRun(t *testing.T) {
	st, now := newTestStore(t)
	ctx := context.Background()
	if _, err := st.Claim(ctx, record("lost", *now)); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(2 * time.Minute) // past the deadline: its node died
	got, err := st.Get(ctx, "lost")
	if err != nil || got.State != StateDone || got.Reason != "lost" {
		t.Fatalf("a run past its deadline: %+v %v", got, err)
	}
	if _, err := st.Output(ctx, got); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a lost run has no output: %v", err)
	}
}

func TestReleaseFreesTheID(t *testing.T) {
	st, now := newTestStore(t)
	ctx := context.Background()
	if _, err := st.Claim(ctx, record("r", *now)); err != nil {
		t.Fatal(err)
	}
	if err := st.Release(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Claim(ctx, record("r", *now)); err != nil {
		t.Fatalf("claim after release: %v", err)
	}
}

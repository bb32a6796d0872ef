package x402pay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	redisstorage "github.com/lualambda/caddy-lualambda/storage/redis"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// sharedBackends opens two handles on one storage (two nodes' views) per
// kind: file storage (Lock only) and Redis (TryLock).
func sharedBackends(t *testing.T) map[string]func(t *testing.T) (certmagic.Storage, certmagic.Storage) {
	return map[string]func(t *testing.T) (certmagic.Storage, certmagic.Storage){
		"file": func(t *testing.T) (certmagic.Storage, certmagic.Storage) {
			dir := t.TempDir()
			return &certmagic.FileStorage{Path: dir}, &certmagic.FileStorage{Path: dir}
		},
		"redis": func(t *testing.T) (certmagic.Storage, certmagic.Storage) {
			addr := testenv.StartRedis(t)
			open := func() certmagic.Storage {
				st, err := redisstorage.Open(&redisstorage.Storage{Address: []string{addr}, KeyPrefix: "x402pay-test"}, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = st.Close() })
				return st
			}
			return open(), open()
		},
	}
}

// A payment claimed on one node is in use on the other; once used it is
// spent on both, settled or not; unused, it is free again.
func TestSharedPaymentsAcrossNodes(t *testing.T) {
	for name, open := range sharedBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			sa, sb := open(t)
			a, b := newSharedPayments(ctx, sa), newSharedPayments(ctx, sb)

			rel, reason, err := a.claim(ctx, "TXA")
			if err != nil || reason != "" {
				t.Fatalf("first claim: %q %v", reason, err)
			}
			start := time.Now()
			if _, reason, err := b.claim(ctx, "TXA"); err != nil || reason != reasonInUse {
				t.Fatalf("claim while in flight elsewhere: %q %v", reason, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("a busy payment took %s to refuse", d)
			}
			// Not used: free again, on either node.
			if err := rel(false, false); err != nil {
				t.Fatal(err)
			}
			rel, reason, err = b.claim(ctx, "TXA")
			if err != nil || reason != "" {
				t.Fatalf("claim after an unused release: %q %v", reason, err)
			}
			if err := rel(true, true); err != nil {
				t.Fatal(err)
			}
			for _, s := range []*sharedPayments{a, b} {
				if _, reason, err := s.claim(ctx, "TXA"); err != nil || reason != reasonSettled {
					t.Fatalf("claim of a settled payment: %q %v", reason, err)
				}
			}

			rel, reason, err = a.claim(ctx, "TXB")
			if err != nil || reason != "" {
				t.Fatalf("claim: %q %v", reason, err)
			}
			if err := rel(true, false); err != nil {
				t.Fatal(err)
			}
			if _, reason, err := b.claim(ctx, "TXB"); err != nil || reason != reasonUsedCharged {
				t.Fatalf("claim of a used, uncharged payment: %q %v", reason, err)
			}
		})
	}
}

// A payment key that is not a plain token never reaches a storage key.
func TestSharedPaymentsRejectBadKeys(t *testing.T) {
	dir := t.TempDir()
	s := newSharedPayments(t.Context(), &certmagic.FileStorage{Path: dir})
	for _, k := range []string{"", "../../etc/passwd", "a/b", "a b", "a\x00b", "tx.id", string(make([]byte, 129))} {
		if _, _, err := s.claim(t.Context(), k); err == nil {
			t.Fatalf("key %q accepted", k)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("bad keys wrote %v", entries)
	}
}

// An expired spent record no longer refuses its payment and is deleted
// when met; a sweep deletes the expired ones it finds and only those.
func TestSharedPaymentsForgetExpired(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	st := &certmagic.FileStorage{Path: dir}
	s := newSharedPayments(ctx, st)
	old := time.Now().Add(-settledTTL - time.Minute)
	put := func(key string, at time.Time) {
		t.Helper()
		data, err := json.Marshal(spentRecord{At: at, Settled: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Store(ctx, sharedSpentPrefix+key, data); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, filepath.FromSlash(sharedSpentPrefix+key))
		if err := os.Chtimes(file, at, at); err != nil {
			t.Fatal(err)
		}
	}

	put("MET", old)
	rel, reason, err := s.claim(ctx, "MET")
	if err != nil || reason != "" {
		t.Fatalf("claim of an expired payment: %q %v", reason, err)
	}
	if err := rel(false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctx, sharedSpentPrefix+"MET"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the expired record met is still there: %v", err)
	}

	for i := range 3 {
		put(fmt.Sprintf("OLD%d", i), old)
	}
	put("NEW", time.Now().Add(-time.Minute))
	n, err := s.sweep(ctx)
	if err != nil || n != 3 {
		t.Fatalf("sweep deleted %d: %v", n, err)
	}
	if _, reason, err := s.claim(ctx, "NEW"); err != nil || reason != reasonSettled {
		t.Fatalf("a recent record was swept: %q %v", reason, err)
	}
	keys, err := st.List(ctx, "x402pay/spent", false)
	if err != nil || len(keys) != 1 {
		t.Fatalf("left %v: %v", keys, err)
	}
}

// A claim whose caller has gone is an error, not a duplicate.
func TestSharedPaymentsCancelledIsError(t *testing.T) {
	dir := t.TempDir()
	s := newSharedPayments(t.Context(), &certmagic.FileStorage{Path: dir})
	ctx, cancel := context.WithCancel(t.Context())
	rel, _, err := s.claim(t.Context(), "TXC")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rel(false, false) }()
	cancel()
	if _, reason, err := s.claim(ctx, "TXC"); err == nil {
		t.Fatalf("a cancelled claim answered %q without error", reason)
	}
}

// BenchmarkSharedClaim measures what the storage layer adds to one paid
// request: a claim, then a release that records the payment as settled.
func BenchmarkSharedClaim(b *testing.B) {
	dir := b.TempDir()
	s := newSharedPayments(b.Context(), &certmagic.FileStorage{Path: dir})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		rel, reason, err := s.claim(b.Context(), fmt.Sprintf("TX%d", i))
		if err != nil || reason != "" {
			b.Fatalf("%q %v", reason, err)
		}
		if err := rel(true, true); err != nil {
			b.Fatal(err)
		}
	}
}

// A storage that fails is an error for the request (the handler answers
// 503), never a free pass or a duplicate.
func TestSharedPaymentsStorageFailureIsError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSharedPayments(t.Context(), &certmagic.FileStorage{Path: file})
	if rel, reason, err := s.claim(t.Context(), "TXD"); err == nil {
		if rel != nil {
			_ = rel(false, false)
		}
		t.Fatalf("claim on a broken storage answered %q without error", reason)
	}
}

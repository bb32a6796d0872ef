package redisstorage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lualambda/caddy-lualambda/internal/storagetest"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/store"
)

// testLockTTL is short so that the dead-holder case is quick; renewal
// every third of it keeps live holders safe on a busy machine.
const testLockTTL = 2 * time.Second

func TestMain(m *testing.M) {
	storagetest.HelperMain(func(spec string) (certmagic.Storage, error) {
		var cfg Storage
		if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
			return nil, fmt.Errorf("helper spec: %w", err)
		}
		return Open(&cfg, nil)
	})
	os.Exit(m.Run())
}

var prefixes atomic.Int64

// newRedis opens a storage on addr under a fresh key prefix.
func newRedis(t *testing.T, addr string, logger *zap.Logger) (*Storage, string) {
	t.Helper()
	cfg := Storage{
		Address:   []string{addr},
		KeyPrefix: fmt.Sprintf("test%d", prefixes.Add(1)),
		LockTTL:   caddy.Duration(testLockTTL),
	}
	spec, err := json.Marshal(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open(&cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st, string(spec)
}

func TestRedisStorageSuite(t *testing.T) {
	addr := testenv.StartRedis(t)
	storagetest.RunSuite(t, storagetest.Backend{
		New: func(t *testing.T) (certmagic.Storage, string) {
			return newRedis(t, addr, nil)
		},
		Expiry: testLockTTL,
	})
}

// TestRedisRefusesFileOverDirectory checks file-system semantics: a key
// cannot be both a value and a directory.
func TestRedisRefusesFileOverDirectory(t *testing.T) {
	st, _ := newRedis(t, testenv.StartRedis(t), nil)
	ctx := context.Background()
	if err := st.Store(ctx, "a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := st.Store(ctx, "a", []byte("x")); err == nil {
		t.Error("stored a value over the directory a")
	}
	if err := st.Store(ctx, "a/b/c", []byte("x")); err == nil {
		t.Error("stored a key under the value a/b")
	}
}

// TestRedisLockLostIsLoud takes a lock, has it vanish behind the holder's
// back, and checks that renewal logs the loss at error level and Unlock
// reports it, and that Unlock does not delete another holder's lock.
func TestRedisLockLostIsLoud(t *testing.T) {
	addr := testenv.StartRedis(t)
	core, logs := observer.New(zap.ErrorLevel)
	st, _ := newRedis(t, addr, zap.New(core))
	other, _ := newRedis(t, addr, nil)
	other.prefix = st.prefix
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := st.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	// The lock disappears (as after a Redis failover) and another takes it.
	if err := st.client.Del(ctx, st.lockKey("x")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := other.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	for logs.FilterMessageSnippet("LOST").Len() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the lost lock was never logged")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := st.Unlock(ctx, "x"); !errors.Is(err, ErrLockNotHeld) {
		t.Fatalf("Unlock of a lost lock: %v, want ErrLockNotHeld", err)
	}
	// The other holder still has it.
	if ok, err := st.TryLock(ctx, "x"); err != nil || ok {
		t.Fatalf("TryLock after the old holder's Unlock = %v, %v: the other holder's lock was released", ok, err)
	}
	if err := other.Unlock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
}

// TestRedisStoreCycle runs the lualambda store over Redis: claim, a second
// claim of the same id, finish, receipt, and the reaper.
func TestRedisStoreCycle(t *testing.T) {
	st, _ := newRedis(t, testenv.StartRedis(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	s := store.NewWithClock(st, func() time.Time { return *clock.Load() })
	rec := &store.Record{
		ID: "run1", State: store.StateRunning, Profile: "default",
		CreatedAt: now, Deadline: now.Add(time.Minute), Retention: time.Hour,
		TokenHash: store.HashToken("tok"),
	}
	if existing, err := s.Claim(ctx, rec); err != nil || existing != nil {
		t.Fatalf("Claim = %v, %v", existing, err)
	}
	if _, err := s.Claim(ctx, rec); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second Claim: %v, want ErrExists", err)
	}
	done, err := s.Finish(ctx, "run1", &store.Output{ID: "run1", Profile: "default", Reason: "ok", Stdout: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if done.State != store.StateDone {
		t.Fatalf("state after Finish = %s", done.State)
	}
	if err := s.AddReceipt(ctx, "run1", store.Receipt{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "run1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Receipt == nil {
		t.Fatal("receipt not recorded")
	}
	if out, err := s.Output(ctx, got); err != nil || out.Stdout != "hi" {
		t.Fatalf("Output = %+v, %v", out, err)
	}
	// Past retention and the tombstone, the reaper removes everything.
	later := now.Add(24 * time.Hour * 400)
	clock.Store(&later)
	for i := 0; i < 3; i++ {
		if _, err := s.Reap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(ctx, "run1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after reaping: %v, want ErrNotFound", err)
	}
	keys, err := st.List(ctx, "lualambda/outputs", true)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("outputs left after reaping: %q", keys)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *Storage
		want string
	}{
		{"cluster", &Storage{ClientType: "cluster"}, "not supported"},
		{"two addresses", &Storage{Address: []string{"a:1", "b:2"}}, "addresses"},
		{"bad address", &Storage{Address: []string{"nohost"}}, "address"},
		{"bad timeout", &Storage{Timeout: "soon"}, "timeout"},
		{"encryption", &Storage{EncryptionKey: "k"}, "encryption_key"},
		{"compression", &Storage{Compression: "zlib"}, "compression"},
		{"short ttl", &Storage{LockTTL: caddy.Duration(time.Millisecond)}, "lock_ttl"},
	} {
		_, err := Open(tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	t.Setenv("REDISTEST_PASSWORD", "s3cret")
	userFile := t.TempDir() + "/user"
	if err := os.WriteFile(userFile, []byte("node1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Storage{Password: "{env.REDISTEST_PASSWORD}", Username: "{file." + userFile + "}", Timeout: "2"}
	st, err := Open(&cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if o := st.client.Options(); o.Password != "s3cret" || o.Username != "node1" || o.ReadTimeout != 2*time.Second || o.Addr != "127.0.0.1:6379" {
		t.Fatalf("options = password set %v, user %q, timeout %s, addr %s", o.Password == "s3cret", o.Username, o.ReadTimeout, o.Addr)
	}
}

// TestRedisCleanupKeepsHeldLocks: a config reload cleans up the old module
// while work under it still holds a lock; the lock stays renewed and
// releasable, and the connection closes after the last Unlock.
func TestRedisCleanupKeepsHeldLocks(t *testing.T) {
	addr := testenv.StartRedis(t)
	st, _ := newRedis(t, addr, nil)
	other, _ := newRedis(t, addr, nil)
	other.prefix = st.prefix
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := st.Lock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if err := st.Cleanup(); err != nil {
		t.Fatal(err)
	}
	wait, cancelWait := context.WithTimeout(ctx, 3*testLockTTL)
	err := other.Lock(wait, "job")
	cancelWait()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a lock held across Cleanup: %v, want the deadline", err)
	}
	if err := st.Unlock(ctx, "job"); err != nil {
		t.Fatalf("Unlock after Cleanup: %v", err)
	}
	if err := st.client.Ping(ctx).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Fatalf("client after the last Unlock: %v, want closed", err)
	}
	if err := other.Lock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if err := other.Unlock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
}

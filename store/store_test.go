package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// clock is a test's time: it starts where the test says and moves only when
// the test moves it. The store reads no other clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// clockStarts are the dates every store test runs from: a year back, today
// and a year ahead, so that nothing depends on the calendar.
var clockStarts = map[string]time.Duration{
	"year-back": -365 * 24 * time.Hour, "today": 0, "year-ahead": 365 * 24 * time.Hour,
}

// forEachStart runs fn as a subtest for each start of the clock, with the
// store's writes made before it answers and after.
func forEachStart(t *testing.T, fn func(t *testing.T, st *Store, c *clock, storage certmagic.Storage)) {
	for name, offset := range clockStarts {
		for _, deferred := range []bool{false, true} {
			mode := "/writes-now"
			if deferred {
				mode = "/writes-after"
			}
			t.Run(name+mode, func(t *testing.T) {
				c := &clock{t: time.Now().Add(offset)}
				storage := &certmagic.FileStorage{Path: t.TempDir()}
				st := NewWithClock(storage, c.now)
				st.DeferWrites(deferred)
				t.Cleanup(func() { landed(t, st) })
				fn(t, st, c, storage)
			})
		}
	}
}

func record(id string, now time.Time) *Record {
	return &Record{
		ID: id, State: StateRunning, Profile: "nano", CreatedAt: now,
		Deadline: now.Add(time.Minute), Retention: 5 * time.Minute, TokenHash: HashToken("secret"),
	}
}

func TestClaimIsExclusive(t *testing.T) {
	forEachStart(t, func(t *testing.T, st *Store, c *clock, _ certmagic.Storage) {
		ctx := context.Background()
		var wg sync.WaitGroup
		results := make([]error, 8)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, results[i] = st.Claim(ctx, record("same", c.now()))
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
	})
}

func TestLifecycle(t *testing.T) {
	forEachStart(t, func(t *testing.T, st *Store, c *clock, _ certmagic.Storage) {
		ctx := context.Background()
		zip := []byte("zip bytes")
		rec := record("run1", c.now())
		rec.Packages = []PackageRef{{Name: "p", Hash: BlobHash(zip)}}
		if _, err := st.Claim(ctx, rec); err != nil {
			t.Fatal(err)
		}
		hash, err := st.PutBlob(ctx, "run1", zip)
		if err != nil || hash != BlobHash(zip) {
			t.Fatalf("put blob: %s %v", hash, err)
		}
		got, err := st.Get(ctx, "run1")
		if err != nil || got.State != StateRunning || got.ExpiresAt != nil {
			t.Fatalf("while running: %+v %v", got, err)
		}
		if !got.TokenMatches("secret") || got.TokenMatches("guess") || got.TokenMatches("") {
			t.Fatal("token check is wrong")
		}
		c.add(10 * time.Second)
		if _, err := st.Finish(ctx, "run1", &Output{ID: "run1", Reason: "ok", Result: []byte(`4`)}); err != nil {
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
		// Nothing is due yet: the reaper leaves everything alone.
		landed(t, st)
		if n, err := st.Reap(ctx); err != nil || n != 0 {
			t.Fatalf("reap before anything is due: %d %v", n, err)
		}
		if _, err := st.Blob(ctx, hash); err != nil {
			t.Fatalf("a retained run's blob: %v", err)
		}

		c.add(6 * time.Minute) // past retention
		got, _ = st.Get(ctx, "run1")
		if got.State != StateExpired {
			t.Fatalf("after retention: %s", got.State)
		}
		if _, err := st.Output(ctx, got); !errors.Is(err, ErrExpired) {
			t.Fatalf("output after retention: %v", err)
		}
		// The index holds the run at its latest possible expiry (deadline +
		// retention); reap an hour later, when its bucket has certainly passed.
		c.add(time.Hour)
		landed(t, st)
		if n, err := st.Reap(ctx); err != nil || n != 1 {
			t.Fatalf("reap after retention: %d %v", n, err)
		}
		if _, err := st.Blob(ctx, hash); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the expired run's blob should go: %v", err)
		}
		// The record stays as a tombstone, so the id still reads as expired (410, not 404).
		if got, err := st.Get(ctx, "run1"); err != nil || got.State != StateExpired {
			t.Fatalf("tombstone: %+v %v", got, err)
		}
		if _, err := st.Claim(ctx, record("run1", c.now())); !errors.Is(err, ErrExists) {
			t.Fatalf("an expired id must stay used: %v", err)
		}
		// After the tombstone period the record goes too.
		c.add(Tombstone + time.Hour)
		landed(t, st)
		if n, err := st.Reap(ctx); err != nil || n != 1 {
			t.Fatalf("reap after the tombstone period: %d %v", n, err)
		}
		if _, err := st.Get(ctx, "run1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after the tombstone period: %v", err)
		}
	})
}

func TestBlobStaysWhileAnyRunUsesIt(t *testing.T) {
	forEachStart(t, func(t *testing.T, st *Store, c *clock, _ certmagic.Storage) {
		ctx := context.Background()
		zip := []byte("shared package")
		first := record("first", c.now())
		first.Packages = []PackageRef{{Name: "p", Hash: BlobHash(zip)}}
		if _, err := st.Claim(ctx, first); err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutBlob(ctx, "first", zip); err != nil {
			t.Fatal(err)
		}
		c.add(30 * time.Minute)
		second := record("second", c.now())
		second.Retention = 24 * time.Hour
		second.Packages = first.Packages
		if _, err := st.Claim(ctx, second); err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutBlob(ctx, "second", zip); err != nil {
			t.Fatal(err)
		}
		c.add(2 * time.Hour) // the first is due, the second is not
		landed(t, st)
		if n, err := st.Reap(ctx); err != nil || n != 1 {
			t.Fatalf("reap: %d %v", n, err)
		}
		if _, err := st.Blob(ctx, BlobHash(zip)); err != nil {
			t.Fatalf("a blob another run still uses was reaped: %v", err)
		}
		c.add(26 * time.Hour)
		landed(t, st)
		if n, err := st.Reap(ctx); err != nil || n != 1 {
			t.Fatalf("reap: %d %v", n, err)
		}
		if _, err := st.Blob(ctx, BlobHash(zip)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a blob no run uses: %v", err)
		}
	})
}

func TestLostRun(t *testing.T) {
	forEachStart(t, func(t *testing.T, st *Store, c *clock, _ certmagic.Storage) {
		ctx := context.Background()
		if _, err := st.Claim(ctx, record("lost", c.now())); err != nil {
			t.Fatal(err)
		}
		c.add(2 * time.Minute) // past the deadline: its node died
		got, err := st.Get(ctx, "lost")
		if err != nil || got.State != StateDone || got.Reason != ReasonLost {
			t.Fatalf("a run past its deadline: %+v %v", got, err)
		}
		if _, err := st.Output(ctx, got); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a lost run has no output: %v", err)
		}
		c.add(2 * time.Hour)
		landed(t, st)
		if n, err := st.Reap(ctx); err != nil || n != 1 {
			t.Fatalf("a lost run is reaped too: %d %v", n, err)
		}
	})
}

func TestReleaseFreesTheID(t *testing.T) {
	forEachStart(t, func(t *testing.T, st *Store, c *clock, storage certmagic.Storage) {
		ctx := context.Background()
		zip := []byte("refused package")
		rec := record("r", c.now())
		rec.Packages = []PackageRef{{Name: "p", Hash: BlobHash(zip)}}
		if _, err := st.Claim(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutBlob(ctx, "r", zip); err != nil {
			t.Fatal(err)
		}
		if err := st.Release(ctx, "r"); err != nil {
			t.Fatal(err)
		}
		// Nothing of the released run is left: no blob, no index entry.
		if _, err := st.Blob(ctx, BlobHash(zip)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a released run's blob: %v", err)
		}
		if keys, _ := storage.List(ctx, dueDir, true); len(keys) > 1 {
			t.Fatalf("a released run left index entries: %v", keys)
		}
		if _, err := st.Claim(ctx, record("r", c.now())); err != nil {
			t.Fatalf("claim after release: %v", err)
		}
	})
}

// TestChangesAreNeverLost races the end of a run with its payment's
// settlement, as a paid session does: whichever comes first, the record
// ends done and paid, with the receipt in the output.
func TestChangesAreNeverLost(t *testing.T) {
	forEachStart(t, func(t *testing.T, st *Store, c *clock, storage certmagic.Storage) {
		ctx := context.Background()
		const n = 12
		var wg sync.WaitGroup
		for i := range n {
			id := fmt.Sprintf("s%d", i)
			if _, err := st.Claim(ctx, record(id, c.now())); err != nil {
				t.Fatal(err)
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				if _, err := st.Finish(ctx, id, &Output{ID: id, Reason: "ok"}); err != nil {
					t.Error(err)
				}
			}()
			go func() {
				defer wg.Done()
				if err := st.AddReceipt(ctx, id, Receipt{TxID: "TX" + id}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		landed(t, st)
		// Read what landed in the storage, through a store with nothing
		// pending.
		st = NewWithClock(storage, c.now)
		for i := range n {
			id := fmt.Sprintf("s%d", i)
			rec, err := st.Get(ctx, id)
			if err != nil || rec.State != StateDone || !rec.Paid {
				t.Fatalf("%s: %+v %v", id, rec, err)
			}
			out, err := st.Output(ctx, rec)
			if err != nil || out.Receipt == nil || out.Receipt.TxID != "TX"+id {
				t.Fatalf("%s output: %+v %v", id, out, err)
			}
		}
	})
}

func TestReceiptWhileRunningSurvivesFinish(t *testing.T) {
	forEachStart(t, func(t *testing.T, st *Store, c *clock, _ certmagic.Storage) {
		ctx := context.Background()
		if _, err := st.Claim(ctx, record("sess", c.now())); err != nil {
			t.Fatal(err)
		}
		if err := st.AddReceipt(ctx, "sess", Receipt{TxID: "TXS"}); err != nil {
			t.Fatalf("a receipt for a running session: %v", err)
		}
		rec, err := st.Finish(ctx, "sess", &Output{ID: "sess", Reason: "ok"})
		if err != nil || !rec.Paid || rec.State != StateDone {
			t.Fatalf("finish after the receipt: %+v %v", rec, err)
		}
		out, err := st.Output(ctx, rec)
		if err != nil || out.Receipt == nil || out.Receipt.TxID != "TXS" {
			t.Fatalf("output: %+v %v", out, err)
		}
	})
}

// countingStorage counts the loads a file storage serves.
type countingStorage struct {
	*certmagic.FileStorage
	loads atomic.Int64
}

func (c *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	c.loads.Add(1)
	return c.FileStorage.Load(ctx, key)
}

// TestReapCostFollowsWhatIsDue stores many records of which few are due:
// the reaper reads only those.
func TestReapCostFollowsWhatIsDue(t *testing.T) {
	c := &clock{t: time.Now()}
	storage := &countingStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}}
	st := NewWithClock(storage, c.now)
	ctx := context.Background()
	for i := range 200 {
		rec := record(fmt.Sprintf("long%d", i), c.now())
		rec.Retention = 7 * 24 * time.Hour
		if _, err := st.Claim(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := st.Claim(ctx, record(fmt.Sprintf("short%d", i), c.now())); err != nil {
			t.Fatal(err)
		}
	}
	c.add(2 * time.Hour)
	landed(t, st)
	before := storage.loads.Load()
	n, err := st.Reap(ctx)
	if err != nil || n != 3 {
		t.Fatalf("reap: %d %v", n, err)
	}
	if loads := storage.loads.Load() - before; loads > 3*2 {
		t.Fatalf("the reaper loaded %d keys for 3 due records among 203", loads)
	}
}

func TestArgsHashIsKeyed(t *testing.T) {
	ctx := context.Background()
	args := []byte(`["a guessable secret"]`)
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	one, err := New(storage).HashArgs(ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	plain := sha256.Sum256(args)
	if one == hex.EncodeToString(plain[:]) {
		t.Fatal("the args hash is the plain SHA-256: anyone can confirm a guess")
	}
	again, _ := New(storage).HashArgs(ctx, args)
	if again != one {
		t.Fatal("two servers on one storage must hash alike")
	}
	other, _ := New(&certmagic.FileStorage{Path: t.TempDir()}).HashArgs(ctx, args)
	if other == one {
		t.Fatal("another server's secret gives the same hash")
	}
}

// TestNodeThatStopsBeatingLosesItsRuns: a running record reads as lost
// once its node has been silent for NodeStale, long before its deadline;
// a node that never beat is judged by the deadline; the reaper, which goes
// by the deadline, leaves a run of a merely paused node alone.
func TestNodeThatStopsBeatingLosesItsRuns(t *testing.T) {
	forEachStart(t, func(t *testing.T, st *Store, c *clock, _ certmagic.Storage) {
		ctx := context.Background()
		rec := record("beating", c.now())
		rec.Node, rec.Deadline = "node-a", c.now().Add(time.Hour)
		if _, err := st.Claim(ctx, rec); err != nil {
			t.Fatal(err)
		}
		quiet := record("quiet", c.now())
		quiet.Node, quiet.Deadline = "node-b", c.now().Add(time.Hour)
		if _, err := st.Claim(ctx, quiet); err != nil {
			t.Fatal(err)
		}
		if err := st.Heartbeat(ctx, "node-a", "http://10.0.0.1:8080/invoke"); err != nil {
			t.Fatal(err)
		}
		last := c.now()
		c.add(NodeStale - time.Second)
		if got, _ := st.Get(ctx, "beating"); got.State != StateRunning {
			t.Fatalf("a node that beat %s ago: %+v", NodeStale-time.Second, got)
		}
		c.add(2 * time.Second)
		got, err := st.Get(ctx, "beating")
		if err != nil || got.State != StateDone || got.Reason != ReasonLost || !got.Finished.Equal(last) {
			t.Fatalf("a node silent for longer than %s: %+v %v", NodeStale, got, err)
		}
		if got, _ := st.Get(ctx, "quiet"); got.State != StateRunning {
			t.Fatalf("a node that never beat is judged by the deadline: %+v", got)
		}
		landed(t, st)
		if n, err := st.Reap(ctx); err != nil || n != 0 {
			t.Fatalf("the reaper acted on a run whose deadline has not passed: %d %v", n, err)
		}
		if _, ok := st.NodeAddress(ctx, "node-a"); ok {
			t.Fatal("a silent node's address is still offered")
		}
		// The node comes back (it was only paused): its run is running again.
		if err := st.Heartbeat(ctx, "node-a", "http://10.0.0.1:8080/invoke"); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Get(ctx, "beating"); got.State != StateRunning {
			t.Fatalf("after the node beat again: %+v", got)
		}
		if addr, ok := st.NodeAddress(ctx, "node-a"); !ok || addr != "http://10.0.0.1:8080/invoke" {
			t.Fatalf("a live node's address: %q %v", addr, ok)
		}
	})
}

// landed waits for the store's writes that follow answers.
func landed(t *testing.T, st *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

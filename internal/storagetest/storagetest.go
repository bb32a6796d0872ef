// Package storagetest is a test suite for certmagic.Storage backends: the
// same cases run against certmagic's FileStorage and the Redis storage,
// including locks contended by, held by and killed in real processes (the
// test binary re-executed as a helper).
package storagetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// Backend describes a storage under test.
type Backend struct {
	// New returns a fresh, empty storage, and a spec from which Open (in a
	// helper process) reaches the same storage.
	New func(t *testing.T) (certmagic.Storage, string)
	// Expiry is how long a dead holder's lock can outlive it.
	Expiry time.Duration
}

// Helper environment variables.
const (
	envMode = "STORAGETEST_HELPER"
	envSpec = "STORAGETEST_SPEC"
	envLock = "STORAGETEST_LOCK"
	envN    = "STORAGETEST_N"
)

// HelperMain must be called first in the TestMain of a package that runs
// the suite. In a helper process it runs the helper with the storage open
// returns for the spec, and exits; otherwise it returns.
func HelperMain(open func(spec string) (certmagic.Storage, error)) {
	mode := os.Getenv(envMode)
	if mode == "" {
		return
	}
	err := runHelper(mode, open)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runHelper(mode string, open func(string) (certmagic.Storage, error)) error {
	st, err := open(os.Getenv(envSpec))
	if err != nil {
		return err
	}
	ctx := context.Background()
	name := os.Getenv(envLock)
	switch mode {
	case "count":
		// Say ready, wait for "go", then increment a counter key N
		// times, each under the lock.
		n, _ := strconv.Atoi(os.Getenv(envN))
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return fmt.Errorf("wait for go: %w", err)
		}
		for range n {
			if err := st.Lock(ctx, name); err != nil {
				return err
			}
			if err := increment(ctx, st, name+"-counter"); err != nil {
				return err
			}
			if err := st.Unlock(ctx, name); err != nil {
				return err
			}
		}
		return nil
	case "hold":
		// Take the lock, say so, hold it until stdin closes, release.
		if err := st.Lock(ctx, name); err != nil {
			return err
		}
		fmt.Println("locked")
		_, _ = io.Copy(io.Discard, os.Stdin)
		if err := st.Unlock(ctx, name); err != nil {
			return err
		}
		fmt.Println("unlocked")
		return nil
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// increment reads a decimal counter at key and writes it back plus one.
func increment(ctx context.Context, st certmagic.Storage, key string) error {
	n := 0
	b, err := st.Load(ctx, key)
	switch {
	case err == nil:
		if n, err = strconv.Atoi(string(b)); err != nil {
			return fmt.Errorf("counter %q: %w", b, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return st.Store(ctx, key, []byte(strconv.Itoa(n+1)))
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	errb  *strings.Builder
}

func startHelper(t *testing.T, mode, spec, lock string, extra ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envMode+"="+mode, envSpec+"="+spec, envLock+"="+lock)
	cmd.Env = append(cmd.Env, extra...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, lines: make(chan string, 8), errb: &strings.Builder{}}
	cmd.Stderr = &syncWriter{b: h.errb}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return h
}

type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// expect waits (with a deadline) for the helper to print want.
func (h *helper) expect(t *testing.T, want string, within time.Duration) {
	t.Helper()
	select {
	case got, ok := <-h.lines:
		if !ok || got != want {
			t.Fatalf("helper printed %q (open %v), want %q; stderr: %s", got, ok, want, h.errb.String())
		}
	case <-time.After(within):
		t.Fatalf("helper did not print %q within %s", want, within)
	}
}

// RunSuite runs every case against storages made by b.
func RunSuite(t *testing.T, b Backend) {
	t.Run("StoreLoadDelete", func(t *testing.T) { testStoreLoadDelete(t, b) })
	t.Run("ListStat", func(t *testing.T) { testListStat(t, b) })
	t.Run("ListMany", func(t *testing.T) { testListMany(t, b) })
	t.Run("Locks", func(t *testing.T) {
		t.Run("ContentionAcrossProcesses", func(t *testing.T) { t.Parallel(); testContention(t, b) })
		t.Run("HolderDies", func(t *testing.T) { t.Parallel(); testHolderDies(t, b) })
		t.Run("HolderRenews", func(t *testing.T) { t.Parallel(); testHolderRenews(t, b) })
	})
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func testStoreLoadDelete(t *testing.T, b Backend) {
	st, _ := b.New(t)
	ctx := ctxFor(t, 30*time.Second)
	if _, err := st.Load(ctx, "nope/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	if _, err := st.Stat(ctx, "nope/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat of a missing key: %v, want fs.ErrNotExist", err)
	}
	if st.Exists(ctx, "nope/missing") {
		t.Fatal("Exists of a missing key is true")
	}
	if err := st.Delete(ctx, "nope/missing"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	val := []byte("hello\x00\xffworld")
	if err := st.Store(ctx, "a/b/c.txt", val); err != nil {
		t.Fatal(err)
	}
	got, err := st.Load(ctx, "a/b/c.txt")
	if err != nil || string(got) != string(val) {
		t.Fatalf("Load = %q, %v; want %q", got, err, val)
	}
	if err := st.Store(ctx, "a/b/c.txt", []byte("second")); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Load(ctx, "a/b/c.txt"); string(got) != "second" {
		t.Fatalf("overwritten Load = %q", got)
	}
	for _, k := range []string{"a", "a/b", "a/b/c.txt"} {
		if !st.Exists(ctx, k) {
			t.Errorf("Exists(%q) = false", k)
		}
	}
	if err := st.Store(ctx, "a/empty", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Load(ctx, "a/empty"); err != nil || len(got) != 0 {
		t.Fatalf("empty value Load = %q, %v", got, err)
	}
	if err := st.Delete(ctx, "a/b/c.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctx, "a/b/c.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load after Delete: %v, want fs.ErrNotExist", err)
	}
	// Deleting a directory deletes what is under it.
	for _, k := range []string{"d/x", "d/y/z", "d2/keep"} {
		if err := st.Store(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"d", "d/x", "d/y", "d/y/z"} {
		if st.Exists(ctx, k) {
			t.Errorf("%q exists after deleting its directory", k)
		}
	}
	if got, err := st.Load(ctx, "d2/keep"); err != nil || string(got) != "d2/keep" {
		t.Fatalf("sibling d2/keep after deleting d: %q, %v", got, err)
	}
}

func testListStat(t *testing.T, b Backend) {
	st, _ := b.New(t)
	ctx := ctxFor(t, 30*time.Second)
	keys := []string{"certs/acme/a.example/a.crt", "certs/acme/a.example/a.key", "certs/acme/b.example/b.crt", "certs/top.json", "certs.json", "other/x"}
	for _, k := range keys {
		if err := st.Store(ctx, k, []byte("v:"+k)); err != nil {
			t.Fatal(err)
		}
	}
	list := func(p string, rec bool) []string {
		t.Helper()
		got, err := st.List(ctx, p, rec)
		if err != nil {
			t.Fatalf("List(%q, %v): %v", p, rec, err)
		}
		slices.Sort(got)
		return got
	}
	if got, want := list("certs", false), []string{"certs/acme", "certs/top.json"}; !slices.Equal(got, want) {
		t.Errorf("List(certs) = %q, want %q", got, want)
	}
	if got, want := list("certs/acme", false), []string{"certs/acme/a.example", "certs/acme/b.example"}; !slices.Equal(got, want) {
		t.Errorf("List(certs/acme) = %q, want %q", got, want)
	}
	wantRec := []string{"certs/acme", "certs/acme/a.example", "certs/acme/a.example/a.crt", "certs/acme/a.example/a.key", "certs/acme/b.example", "certs/acme/b.example/b.crt", "certs/top.json"}
	if got := list("certs", true); !slices.Equal(got, wantRec) {
		t.Errorf("List(certs, recursive) = %q, want %q", got, wantRec)
	}
	if got, err := st.List(ctx, "nothing/here", false); err == nil && len(got) > 0 {
		t.Errorf("List of a missing dir = %q", got)
	}
	before := time.Now().Add(-time.Minute)
	fi, err := st.Stat(ctx, "certs/top.json")
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsTerminal || fi.Size != int64(len("v:certs/top.json")) || fi.Key != "certs/top.json" {
		t.Errorf("Stat(file) = %+v", fi)
	}
	if fi.Modified.Before(before) || fi.Modified.After(time.Now().Add(time.Minute)) {
		t.Errorf("Stat(file).Modified = %s, not about now", fi.Modified)
	}
	di, err := st.Stat(ctx, "certs/acme")
	if err != nil {
		t.Fatal(err)
	}
	if di.IsTerminal {
		t.Errorf("Stat(dir) = %+v, want not terminal", di)
	}
	if err := st.Delete(ctx, "certs/acme/b.example/b.crt"); err != nil {
		t.Fatal(err)
	}
	if got, want := list("certs/acme", false), []string{"certs/acme/a.example"}; !slices.Equal(got, want) {
		if !(len(got) == 2 && got[0] == want[0]) { // FileStorage keeps an emptied directory
			t.Errorf("List(certs/acme) after delete = %q, want %q", got, want)
		}
	}
}

func testContention(t *testing.T, b Backend) {
	st, spec := b.New(t)
	const perProc = 10
	lock := "contended"
	h1 := startHelper(t, "count", spec, lock, envN+"="+strconv.Itoa(perProc))
	h2 := startHelper(t, "count", spec, lock, envN+"="+strconv.Itoa(perProc))
	// All three start together, so that they contend.
	for _, h := range []*helper{h1, h2} {
		h.expect(t, "ready", 30*time.Second)
	}
	for _, h := range []*helper{h1, h2} {
		if _, err := io.WriteString(h.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	// This process takes part too.
	ctx := ctxFor(t, 60*time.Second)
	for range perProc {
		if err := st.Lock(ctx, lock); err != nil {
			t.Fatal(err)
		}
		if err := increment(ctx, st, lock+"-counter"); err != nil {
			t.Fatal(err)
		}
		if err := st.Unlock(ctx, lock); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []*helper{h1, h2} {
		if err := h.cmd.Wait(); err != nil {
			t.Fatalf("helper: %v; stderr: %s", err, h.errb.String())
		}
	}
	got, err := st.Load(ctx, lock+"-counter")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != strconv.Itoa(3*perProc) {
		t.Fatalf("counter = %s after %d locked increments: the lock let updates be lost", got, 3*perProc)
	}
}

func testHolderDies(t *testing.T, b Backend) {
	st, spec := b.New(t)
	lock := "dies"
	h := startHelper(t, "hold", spec, lock)
	h.expect(t, "locked", 30*time.Second)
	if tl, ok := st.(certmagic.TryLocker); ok {
		got, err := tl.TryLock(ctxFor(t, 10*time.Second), lock)
		if err != nil || got {
			t.Fatalf("TryLock while another process holds it = %v, %v", got, err)
		}
	}
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = h.cmd.Wait()
	killed := time.Now()
	ctx := ctxFor(t, b.Expiry*3+10*time.Second)
	if err := st.Lock(ctx, lock); err != nil {
		t.Fatalf("lock of a killed holder not taken over within %s: %v", b.Expiry*3+10*time.Second, err)
	}
	t.Logf("took the dead holder's lock after %s", time.Since(killed).Round(time.Millisecond))
	if err := st.Unlock(ctx, lock); err != nil {
		t.Fatal(err)
	}
}

func testHolderRenews(t *testing.T, b Backend) {
	st, spec := b.New(t)
	lock := "renews"
	h := startHelper(t, "hold", spec, lock)
	h.expect(t, "locked", 30*time.Second)
	// The holder lives on: through several expiry periods, nobody gets it.
	hold := 3 * b.Expiry
	ctx, cancel := context.WithTimeout(context.Background(), hold)
	err := st.Lock(ctx, lock)
	cancel()
	if err == nil {
		t.Fatalf("took a lock whose holder is alive and renewing, within %s", hold)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while held: %v, want the deadline", err)
	}
	// The holder releases; then it is ours.
	_ = h.stdin.Close()
	h.expect(t, "unlocked", 30*time.Second)
	ctx2 := ctxFor(t, 30*time.Second)
	if err := st.Lock(ctx2, lock); err != nil {
		t.Fatalf("lock after the holder released it: %v", err)
	}
	if err := st.Unlock(ctx2, lock); err != nil {
		t.Fatal(err)
	}
}

// testListMany lists a directory with more entries than a backend is
// likely to read at once, mixing files and subdirectories.
func testListMany(t *testing.T, b Backend) {
	st, _ := b.New(t)
	ctx := ctxFor(t, 60*time.Second)
	var wantTop, wantAll []string
	for i := range 300 {
		k := fmt.Sprintf("many/f%03d", i)
		wantTop = append(wantTop, k)
		if i%60 == 0 {
			dir := fmt.Sprintf("many/f%03d.d", i)
			wantTop = append(wantTop, dir)
			wantAll = append(wantAll, dir)
			for j := range 3 {
				sub := fmt.Sprintf("%s/x%d", dir, j)
				wantAll = append(wantAll, sub)
				if err := st.Store(ctx, sub, []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := st.Store(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	wantAll = append(wantAll, wantTop...)
	wantAll = slices.Compact(slices.Sorted(slices.Values(wantAll)))
	slices.Sort(wantTop)
	got, err := st.List(ctx, "many", false)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, wantTop) {
		t.Errorf("List(many) has %d entries, want %d; first difference near %q", len(got), len(wantTop), firstDiff(got, wantTop))
	}
	got, err = st.List(ctx, "many", true)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, wantAll) {
		t.Errorf("List(many, recursive) has %d entries, want %d; first difference near %q", len(got), len(wantAll), firstDiff(got, wantAll))
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i] + " / " + b[i]
		}
	}
	return "(end)"
}

package bench

import (
	"context"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/redisserver"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// onlyRows returns the skip list that leaves just rows.
func onlyRows(rows ...string) []string {
	keep := map[string]bool{}
	for _, r := range rows {
		keep[r] = true
	}
	var skip []string
	for _, r := range Rows() {
		if !keep[r] {
			skip = append(skip, r)
		}
	}
	return skip
}

// TestStorageAndIdleRows runs the storage and idle rows for real, on one
// in-process Caddy with real VMs: warm runs on file storage, then on a real
// redis-server (stopped at the end), then a full pool of 8 idle warm VMs
// whose QEMU processes' CPU is read over the window.
func TestStorageAndIdleRows(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed (run ./scripts/setup)")
	}
	im := testenv.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{Image: im.Dir, Warm: 1, Runs: 3, Skip: onlyRows(RowStorage, RowIdle), Progress: testWriter{t}})
	if err != nil {
		t.Fatalf("bench: %v (report %+v)", err, rep)
	}
	if len(rep.Unavailable) > 0 {
		t.Fatalf("rows not available: %v", rep.Unavailable)
	}
	if !(rep.StorageFileP50 > 0) || !(rep.StorageRedisP50 > 0) || rep.StorageRuns != 3 || !(rep.StorageRedisVsFile > 0) {
		t.Errorf("storage figures: file %.1f ms, redis %.1f ms, %d runs, ratio %.2f; want two positive p50s of 3 runs",
			rep.StorageFileP50, rep.StorageRedisP50, rep.StorageRuns, rep.StorageRedisVsFile)
	}
	t.Logf("warm p50: redis %.1f ms, file %.1f ms", rep.StorageRedisP50, rep.StorageFileP50)
	// Whatever the pool does with idle VMs, 8 QEMU processes cannot use
	// more than the machine's cores.
	if rep.IdleCPUPct == nil {
		t.Fatal("no idle CPU figure")
	}
	if pct := *rep.IdleCPUPct; pct < 0 || pct > float64(100*runtime.NumCPU())+5 || rep.IdleCPUVMs != 8 || rep.IdleCPUProfileMiB != 64 {
		t.Errorf("idle CPU %.2f%% of a core for %d VMs of %d MiB; want 0-%d%% for 8 of 64", pct, rep.IdleCPUVMs, rep.IdleCPUProfileMiB, 100*runtime.NumCPU())
	}
	t.Logf("idle pool of 8: %.2f%% of a core", *rep.IdleCPUPct)
	if left := testenv.QEMUProcesses(im.Dir); len(left) > 0 {
		t.Errorf("QEMU processes left: %v", left)
	}
	if redisserver.ChildLeft() {
		t.Error("a redis-server started by the bench is still running")
	}
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

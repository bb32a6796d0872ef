package bench

import (
	"context"
	"encoding/json"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestFloorWithRealSignatures times the floor's operations on a real
// payment group, signed and verified with real ed25519 keys, and checks
// the figures agree with each other.
func TestFloorWithRealSignatures(t *testing.T) {
	ctx := context.Background()
	f, err := measureFloor(ctx, 150*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if f.Parallel != runtime.GOMAXPROCS(0) {
		t.Errorf("parallel = %d, want GOMAXPROCS %d", f.Parallel, runtime.GOMAXPROCS(0))
	}
	for name, v := range map[string]float64{"verify": f.VerifyPerS, "sign": f.SignPerS, "decode": f.DecodePerS} {
		if !(v > 100) || math.IsInf(v, 0) {
			t.Errorf("%s rate = %v per s, want a finite figure above 100", name, v)
		}
	}
	p := f.PerS()
	if !(p > 0) || math.IsInf(p, 0) {
		t.Fatalf("floor = %v per s, want positive and finite", p)
	}
	// Three verifies per request: the floor is below a third of the
	// verify rate, and below the sign and decode rates.
	if p >= f.VerifyPerS/floorVerifies || p >= f.SignPerS || p >= f.DecodePerS {
		t.Errorf("floor %.0f/s is not below its parts %+v", p, f)
	}
	t.Logf("floor %.0f paid requests/s from %+v", p, f)
}

// TestFloorArithmetic checks the floor against figures worked by hand.
func TestFloorArithmetic(t *testing.T) {
	f := cryptoFloor{Parallel: 2, VerifyPerS: 3000, SignPerS: 1000, DecodePerS: 1000}
	// 3/3000 + 1/1000 + 1/1000 = 3 ms per request.
	if got, want := f.PerS(), 1000.0/3; math.Abs(got-want) > 1e-9 {
		t.Errorf("PerS = %v, want %v", got, want)
	}
	if got := (cryptoFloor{VerifyPerS: 1, SignPerS: 0, DecodePerS: 1}).PerS(); got != 0 {
		t.Errorf("PerS with an unmeasured part = %v, want 0", got)
	}
	rep := &Report{}
	rep.recordFloor(200, f)
	if rep.X402PaidPS != 200 || math.Abs(rep.X402FloorPct-60) > 1e-9 || rep.X402FloorParallel != 2 {
		t.Errorf("recorded %+v, want paid 200, 60%% of the floor", rep)
	}
}

// TestFloorCatchesBadSignature proves the verify operation really checks:
// a signature with one bit flipped stops the timing with an error.
func TestFloorCatchesBadSignature(t *testing.T) {
	ctx := context.Background()
	g, err := newFloorGroup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.verify(); err != nil {
		t.Fatalf("good signature: %v", err)
	}
	if err := g.decode(); err != nil {
		t.Fatalf("good group: %v", err)
	}
	g.paySig[7] ^= 1
	if _, err := parallelRate(ctx, 2, time.Second, g.verify); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("bad signature timed without error: %v", err)
	}
	g.wire = g.wire[:len(g.wire)-3]
	if err := g.decode(); err == nil {
		t.Error("a truncated group decoded")
	}
}

// TestNewJSONKeys checks the new figures' keys, and that an idle CPU of 0
// (a fully paused pool) is reported rather than dropped.
func TestNewJSONKeys(t *testing.T) {
	zero := 0.0
	rep := &Report{IdleCPUPct: &zero, IdleCPUVMs: 8, X402PaidPS: 1, X402FloorPS: 2, X402FloorPct: 50,
		StorageRedisP50: 3, StorageFileP50: 2}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"idle_cpu_pct":0`, `"x402_floor_per_s":2`, `"x402_paid_per_s":1`, `"warm_p50_ms_redis":3`, `"warm_p50_ms_file":2`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON lacks %s: %s", k, b)
		}
	}
	b, _ = json.Marshal(&Report{})
	if strings.Contains(string(b), "idle_cpu_pct") {
		t.Errorf("an unmeasured idle CPU is in the JSON: %s", b)
	}
}

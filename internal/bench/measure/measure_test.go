package measure

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0, time.Millisecond}, {0.5, 50 * time.Millisecond}, {0.9, 90 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := Percentile(ds, tc.p); got != tc.want {
			t.Errorf("Percentile(1..100 ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if ds[0] != 100*time.Millisecond {
		t.Errorf("Percentile sorted its input in place")
	}
	if got := Percentile(nil, 0.5); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
	s := Summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	if s.P50 != 2 || s.P90 != 2 || s.P99 != 2 || s.N != 3 {
		t.Errorf("Summarize(1, 2, 3 ms) = %+v", s)
	}
}

func TestPSSOfThisProcess(t *testing.T) {
	kib, err := PSSKiB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// A Go test binary maps a few MiB at least and far less than a GiB.
	if kib < 1024 || kib > 1<<20 {
		t.Errorf("PSS of the test process = %d KiB: implausible", kib)
	}
	if _, err := PSSKiB(-1); err == nil {
		t.Errorf("PSSKiB(-1) succeeded")
	}
	if pids := QEMUProcesses("no-such-marker-" + t.Name()); len(pids) != 0 {
		t.Errorf("QEMU processes for an unused marker: %v", pids)
	}
	if _, err := MeasureMemory("no-such-marker-" + t.Name()); err == nil {
		t.Errorf("MeasureMemory with no QEMU process succeeded")
	}
}

// TestWorkloadsOnHost runs each workload with the host's luajit and checks
// the value it computes, which the guest must reproduce.
func TestWorkloadsOnHost(t *testing.T) {
	if _, err := exec.LookPath("luajit"); err != nil {
		t.Skip("no luajit on this host (scripts/setup installs it)")
	}
	want := map[string]string{
		"fib":    "2178309",
		"string": "688894:100000:100000", // digits and an x per item, commas; 100000 replacements and words
		"table":  "787980917:5000",
	}
	ws := Workloads()
	if len(ws) != len(want) {
		t.Fatalf("%d workloads, want %d", len(ws), len(want))
	}
	for _, w := range ws {
		d, check, err := HostLuaJIT(context.Background(), w)
		if err != nil {
			t.Fatal(err)
		}
		if check != want[w.Name] || d <= 0 || d > 30*time.Second {
			t.Errorf("%s: %q in %v, want %q", w.Name, check, d, want[w.Name])
		}
	}
}

func TestParseGuestResult(t *testing.T) {
	g, err := ParseGuestResult(json.RawMessage(`{"s":0.25,"check":"2178309"}`))
	if err != nil || g.Seconds != 0.25 || g.Check != "2178309" {
		t.Errorf("ParseGuestResult = %+v, %v", g, err)
	}
	for _, bad := range []string{`4`, `{"s":0,"check":"x"}`, `{"s":1}`, `not json`} {
		if _, err := ParseGuestResult(json.RawMessage(bad)); err == nil {
			t.Errorf("ParseGuestResult(%s) succeeded", bad)
		}
	}
}

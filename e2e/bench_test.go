package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// runBench runs the built `lualambda bench` and returns its stdout, stderr
// and exit code.
func runBench(t *testing.T, timeout time.Duration, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "lualambda"), append([]string{"bench"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("bench %v did not finish in %s; stderr:\n%s", args, timeout, tail(stderr.String(), 4000))
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// TestBenchJSON runs every row of `lualambda bench --json` with a tiny
// duration and few samples, and checks each figure is there and sane.
func TestBenchJSON(t *testing.T) {
	im := testenv.Image(t)
	stdout, stderr, code := runBench(t, 5*time.Minute, "--json", "--image", im.Dir, "--accel", "tcg",
		"--duration", "3s", "--runs", "3", "--cold-runs", "2", "--boots", "1", "--warm", "2")
	if code != 0 {
		t.Fatalf("bench exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, tail(stderr, 4000))
	}
	defer func() {
		if t.Failed() {
			t.Logf("bench stderr:\n%s", tail(stderr, 4000))
		}
	}()
	testenv.WaitNoQEMU(t, "lualambda-bench-vms-")

	var rep map[string]any
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	if dec.More() {
		t.Fatalf("stdout has more than one JSON value:\n%s", stdout)
	}
	for _, k := range []string{"failed", "unavailable", "skipped", "sustained_errors"} {
		if v, ok := rep[k]; ok {
			t.Errorf("%s: %v", k, v)
		}
	}

	if rep["accel"] != "tcg" {
		t.Errorf("accel = %v, want tcg (forced with --accel)", rep["accel"])
	}
	if got := num(t, rep, "cores"); got != float64(runtime.NumCPU()) {
		t.Errorf("cores = %v, want %d", got, runtime.NumCPU())
	}
	out, err := exec.Command("qemu-system-x86_64", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	qemu, _ := rep["qemu"].(string)
	if !regexp.MustCompile(`^\d+\.\d+`).MatchString(qemu) || !strings.Contains(string(out), "version "+qemu) {
		t.Errorf("qemu = %q; qemu-system-x86_64 --version says %q", qemu, out)
	}

	p50, p90, p99 := num(t, rep, "warm_p50_ms"), num(t, rep, "warm_p90_ms"), num(t, rep, "warm_p99_ms")
	if !(p50 <= p90 && p90 <= p99) || p99 > 10_000 {
		t.Errorf("warm p50/p90/p99 = %v/%v/%v ms: not ordered or implausible", p50, p90, p99)
	}
	if n := num(t, rep, "warm_runs"); n != 3 {
		t.Errorf("warm_runs = %v, want 3", n)
	}
	cold := num(t, rep, "cold_p50_ms")
	if cold <= p50 {
		t.Errorf("a cold boot per run (%v ms) is not slower than a warm run (%v ms)", cold, p50)
	}
	if r := num(t, rep, "cold_vs_warm"); math.Abs(r-cold/p50) > 0.01*r {
		t.Errorf("cold_vs_warm = %v, want %v", r, cold/p50)
	}
	if n := num(t, rep, "cold_runs"); n != 2 {
		t.Errorf("cold_runs = %v, want 2", n)
	}
	if od := num(t, rep, "ondemand_p50_ms"); od <= p50 || od >= cold {
		t.Errorf("a clone per run (%v ms) should sit between a warm run (%v) and a cold boot (%v)", od, p50, cold)
	}

	rps := num(t, rep, "runs_per_s")
	if runs := num(t, rep, "sustained_runs"); math.Abs(rps-runs/3) > 0.01 || rps > 1000 {
		t.Errorf("runs_per_s = %v for %v runs in 3s", rps, runs)
	}

	boot, clone := num(t, rep, "boot_ms"), num(t, rep, "clone_ms")
	if clone >= boot {
		t.Errorf("a clone (%v ms) is not faster than a cold boot (%v ms)", clone, boot)
	}
	if r := num(t, rep, "boot_clone_ratio"); math.Abs(r-boot/clone) > 0.01*r {
		t.Errorf("boot_clone_ratio = %v, want %v", r, boot/clone)
	}

	pss, total := num(t, rep, "pss_mib"), num(t, rep, "pss_total_mib")
	vms := num(t, rep, "pss_vms")
	if vms != 2 {
		t.Errorf("pss_vms = %v, want the 2 warm VMs", vms)
	}
	// A VM's RAM is 64 + 96 MiB; QEMU and its translation cache add some.
	if pss < 1 || pss > 64+96+128 || math.Abs(total-pss*vms) > 0.01*total {
		t.Errorf("PSS %v MiB per VM, %v MiB for %v VMs: implausible", pss, total, vms)
	}

	lua, ok := rep["lua_guest_vs_host"].(map[string]any)
	if !ok {
		t.Fatalf("lua_guest_vs_host = %v, want an object", rep["lua_guest_vs_host"])
	}
	for _, w := range []string{"fib", "string", "table"} {
		r, ok := lua[w].(float64)
		if !ok || math.IsNaN(r) || r < 0.2 || r > 1000 {
			t.Errorf("lua_guest_vs_host[%s] = %v: implausible", w, lua[w])
		}
	}
	if len(lua) != 3 {
		t.Errorf("lua_guest_vs_host has %d workloads, want 3: %v", len(lua), lua)
	}

	ratio := num(t, rep, "x402_throughput_ratio")
	gated, plain := num(t, rep, "x402_gated_per_s"), num(t, rep, "x402_plain_per_s")
	if ratio > 1.5 || math.Abs(ratio-gated/plain) > 0.01*ratio {
		t.Errorf("x402 ratio %v for gated %v/s and plain %v/s", ratio, gated, plain)
	}
	if n := num(t, rep, "x402_payments"); n < 1 {
		t.Errorf("x402_payments = %v", n)
	}
}

// num reads a positive, finite number from the report.
func num(t *testing.T, rep map[string]any, key string) float64 {
	t.Helper()
	v, ok := rep[key].(float64)
	if !ok {
		t.Errorf("%s missing or not a number: %v", key, rep[key])
		return math.NaN()
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
		t.Errorf("%s = %v, want a finite number > 0", key, v)
	}
	return v
}

// TestBenchTable prints the readable table for the one row that needs no
// VM: payment overhead on the devnet.
func TestBenchTable(t *testing.T) {
	stdout, stderr, code := runBench(t, 2*time.Minute, "--only", "x402", "--duration", "1s")
	if code != 0 {
		t.Fatalf("bench exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, tail(stderr, 4000))
	}
	for _, want := range []string{
		"lualambda bench: accel", "QEMU ",
		"x402pay respond route / plain route", "x402pay paid requests / cryptographic floor", "≥ 60%", "req/s",
		"warm run over HTTP", "skipped",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	if !regexp.MustCompile(`cryptographic floor\s+\d+ / \d+ req/s \(\d+%\)\s+≥ 60%\s+(met|missed)`).MatchString(stdout) {
		t.Errorf("the floor row has no figure and verdict:\n%s", stdout)
	}
}

// TestBenchUsage checks that bad flags are usage errors (exit 2) that say
// what is wrong, before anything starts.
func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--concurrency", "0"}, "concurrency"},
		{[]string{"--duration", "0s"}, "duration"},
		{[]string{"--skip", "warm,nope"}, `unknown row "nope"`},
		{[]string{"--accel", "fast"}, "accel"},
		{[]string{"--runs", "x"}, "runs"},
		{[]string{"extra"}, "no arguments"},
	} {
		stdout, stderr, code := runBench(t, 30*time.Second, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("bench %v: exit %d, stderr %q, stdout %q; want exit 2 and a message about %q", tc.args, code, stderr, stdout, tc.want)
		}
	}
}

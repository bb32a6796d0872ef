package measure

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// startChild starts a child process and ends it when the test ends.
func startChild(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// TestMeasureCPUBusyVsSleeping measures a real busy-looping child and a
// real sleeping one over the same second.
func TestMeasureCPUBusyVsSleeping(t *testing.T) {
	busy := startChild(t, "sh", "-c", "while :; do :; done")
	// A name with a space and parentheses, as /proc/PID/stat shows it,
	// must not shift the fields.
	odd := filepath.Join(t.TempDir(), "a) b (c")
	sleepBin, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sleepBin, odd); err != nil {
		t.Fatal(err)
	}
	sleeper := startChild(t, odd, "600")
	ctx := context.Background()
	var busyPct, sleepPct float64
	var busyErr, sleepErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); busyPct, busyErr = MeasureCPU(ctx, []int{busy.Process.Pid}, time.Second) }()
	go func() { defer wg.Done(); sleepPct, sleepErr = MeasureCPU(ctx, []int{sleeper.Process.Pid}, time.Second) }()
	wg.Wait()
	if busyErr != nil || sleepErr != nil {
		t.Fatalf("busy: %v, sleeping: %v", busyErr, sleepErr)
	}
	t.Logf("busy child %.1f%%, sleeping child %.1f%% of a core", busyPct, sleepPct)
	// A loop spinning alone would show 100%; the machine may be shared,
	// but it gets a good part of a core.
	if busyPct < 25 || busyPct > 105 {
		t.Errorf("busy child used %.1f%% of a core, want 25-105", busyPct)
	}
	if sleepPct > 2 {
		t.Errorf("sleeping child used %.1f%% of a core, want about 0", sleepPct)
	}
	// Both together: the sum of the two.
	both, err := MeasureCPU(ctx, []int{busy.Process.Pid, sleeper.Process.Pid}, 300*time.Millisecond)
	if err != nil || both < 20 {
		t.Errorf("both: %.1f%%, %v; want the busy child's share", both, err)
	}
}

// TestMeasureCPUProcessEnds reports a process that is gone as a changed
// set, not as a figure.
func TestMeasureCPUProcessEnds(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	_, err := MeasureCPU(context.Background(), []int{cmd.Process.Pid}, 10*time.Millisecond)
	if !errors.Is(err, ErrProcessesChanged) {
		t.Errorf("ended process: %v, want ErrProcessesChanged", err)
	}
	if _, err := MeasureCPU(context.Background(), nil, time.Second); err == nil {
		t.Error("no process: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := MeasureCPU(ctx, []int{os.Getpid()}, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// TestCPUTimeOfThisProcess: after a busy stretch, this process has used
// CPU time, and a later reading is never smaller.
func TestCPUTimeOfThisProcess(t *testing.T) {
	end := time.Now().Add(100 * time.Millisecond)
	x := 0
	for time.Now().Before(end) {
		x++
	}
	a, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	b, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if a <= 0 || b < a {
		t.Errorf("CPU time %s then %s (after %d loops), want positive and growing", a, b, x)
	}
}

// TestStatCPUTime reads utime and stime from stat lines whose command name
// holds spaces and parentheses, and refuses broken ones.
func TestStatCPUTime(t *testing.T) {
	// Fields after the name: state ppid pgrp session tty tpgid flags
	// minflt cminflt majflt cmajflt utime stime cutime ...
	good := "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 7 0 0 0 250 120 9 9 20 0 1 0 100 0 0"
	d, err := statCPUTime([]byte(good))
	if err != nil || d != 3700*time.Millisecond {
		t.Errorf("%q: %s, %v; want 3.7s", good, d, err)
	}
	for _, bad := range []string{"", "4242 no name", "4242 (x) S 1 2", "4242 (x) S 1 4242 4242 0 -1 4194560 7 0 0 0 -5 120 9"} {
		if _, err := statCPUTime([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

package vmpool_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// newPool makes a pool in its own runtime directory and closes it at the
// end of the test, checking that no QEMU process of it is left.
func newPool(t *testing.T, cfg vmpool.Config) *vmpool.Pool {
	t.Helper()
	dir, err := os.MkdirTemp(runtimeDir, "pool-")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Machine = machine(t)
	cfg.Machine.RuntimeDir = dir
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = time.Minute
	}
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	p, err := vmpool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		testenv.WaitNoQEMU(t, dir)
	})
	return p
}

func acquire(t *testing.T, p *vmpool.Pool) *vmpool.VM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := p.Acquire(ctx)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	return vm
}

func limits() protocol.Limits { return vmpool.LimitsFor(testMemoryMiB, 10*time.Second, 1<<10) }

func TestPoolHandsOutEachVMOnce(t *testing.T) {
	p := newPool(t, vmpool.Config{Warm: 2, Snapshots: true})
	ids := map[string]bool{}
	pids := map[int]bool{}
	for i := 0; i < 4; i++ {
		vm := acquire(t, p)
		if ids[vm.ID()] || pids[vm.Pid()] {
			t.Fatalf("VM %s (pid %d) handed out twice", vm.ID(), vm.Pid())
		}
		ids[vm.ID()], pids[vm.Pid()] = true, true
		if !vm.Restored {
			t.Errorf("VM %s was booted cold; snapshots should work here", vm.ID())
		}
		res, err := vm.Run(context.Background(), vmpool.Job{Source: "return 2 + 2", Limits: limits()}, nil)
		if err != nil || res.Reason != protocol.ReasonOK || string(res.Value) != "4" {
			t.Fatalf("clone %d answered %+v, %v", i, res, err)
		}
	}
	if st := p.Stats(); !st.Snapshots || st.Warm != 2 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestPoolRefillsAfterCrash(t *testing.T) {
	p := newPool(t, vmpool.Config{Warm: 1, Snapshots: true})
	vm := acquire(t, p)
	done := make(chan *vmpool.Result, 1)
	running := make(chan struct{})
	var once sync.Once
	go func() {
		res, _ := vm.Run(context.Background(), vmpool.Job{Source: `io.write("running\n") io.stdout:flush() while true do end`, Limits: limits()},
			func(protocol.Stream, []byte) { once.Do(func() { close(running) }) })
		done <- res
	}()
	select {
	case <-running:
	case <-time.After(30 * time.Second):
		t.Fatal("the job never started")
	}
	if err := syscall.Kill(vm.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res == nil || res.Reason != protocol.ReasonCrash || !res.Delivered {
			t.Fatalf("QEMU killed mid-job: got %+v, want reason crash after the job was delivered", res)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the run did not end when QEMU was killed")
	}
	next := acquire(t, p)
	if next.ID() == vm.ID() {
		t.Fatal("the crashed VM was handed out again")
	}
	res, err := next.Run(context.Background(), vmpool.Job{Source: "return 'again'", Limits: limits()}, nil)
	if err != nil || res.Reason != protocol.ReasonOK {
		t.Fatalf("after a crash: %+v, %v", res, err)
	}
}

func TestPoolBusy(t *testing.T) {
	p := newPool(t, vmpool.Config{Warm: 0, Live: vmpool.NewLiveLimit(1), MaxWaiters: 1})
	held := acquire(t, p)
	defer held.Close()

	waiting := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() {
		vm, err := p.Acquire(ctx)
		if vm != nil {
			vm.Close()
		}
		waiting <- err
	}()
	// Give the waiter time to queue, then the next caller must be refused at once.
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Waiting < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	_, err := p.Acquire(context.Background())
	if !errors.Is(err, vmpool.ErrBusy) {
		t.Fatalf("over the cap and queue: got %v, want ErrBusy", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("ErrBusy must come at once")
	}
	if err := <-waiting; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the queued caller: got %v, want its deadline (the cap of 1 VM is held)", err)
	}
	if st := p.Stats(); st.Live > 1 {
		t.Fatalf("%d live VMs with a cap of 1", st.Live)
	}
}

func TestPoolBurstStaysUnderCap(t *testing.T) {
	p := newPool(t, vmpool.Config{Warm: 1, Live: vmpool.NewLiveLimit(2), MaxWaiters: 3, Snapshots: true})
	var wg sync.WaitGroup
	var mu sync.Mutex
	busy, served := 0, 0
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			vm, err := p.Acquire(ctx)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, vmpool.ErrBusy):
				busy++
			case err == nil:
				served++
				vm.Close()
			default:
				t.Errorf("acquire: %v", err)
			}
		}()
	}
	wg.Wait()
	if busy == 0 || served == 0 {
		t.Fatalf("a burst of 10 with a queue of 3: %d busy, %d served", busy, served)
	}
	if n := len(testenv.QEMUProcesses(runtimeDir)); n > 2+1 { // the pool's cap plus the shared template's clones
		t.Fatalf("%d QEMU processes for a cap of 2", n)
	}
}

func TestDetectAccelFallsBack(t *testing.T) {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	hardware := bytes.Contains(cpuinfo, []byte(" vmx")) || bytes.Contains(cpuinfo, []byte(" svm"))
	core, logs := observer.New(zapcore.WarnLevel)
	m := machine(t)
	m.User = "root" // let the probe really try /dev/kvm
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	accel, err := vmpool.DetectAccel(ctx, m, vmpool.AccelAuto, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if hardware {
		t.Logf("this host has hardware virtualisation: auto chose %s", accel)
		return
	}
	if accel != vmpool.AccelTCG {
		t.Fatalf("no usable KVM here, yet auto chose %s", accel)
	}
	warned := logs.FilterMessageSnippet("falling back to TCG").Len()
	if warned != 1 {
		t.Fatalf("the fallback must be logged as a warning once, got %d", warned)
	}
}

func TestPoolCloseEndsEveryVM(t *testing.T) {
	dir, err := os.MkdirTemp(runtimeDir, "close-")
	if err != nil {
		t.Fatal(err)
	}
	m := machine(t)
	m.RuntimeDir = dir
	p, err := vmpool.New(vmpool.Config{Machine: m, Warm: 2, Snapshots: true, BootTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	vm := acquire(t, p) // one running, the others warm
	_ = vm
	if len(testenv.QEMUProcesses(dir)) == 0 {
		t.Fatal("expected live QEMU processes before Close")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitNoQEMU(t, dir)
	left, _ := filepath.Glob(filepath.Join(dir, "*", "*"))
	for _, f := range left {
		if !strings.Contains(f, "templates") {
			t.Errorf("left behind: %s", f)
		}
	}
	if _, err := p.Acquire(context.Background()); !errors.Is(err, vmpool.ErrClosed) {
		t.Fatalf("acquire after close: %v", err)
	}
}

func TestPoolFallsBackToColdBoots(t *testing.T) {
	dir, err := os.MkdirTemp(runtimeDir, "nosnap-")
	if err != nil {
		t.Fatal(err)
	}
	// A file where the templates directory should be: saving a snapshot fails.
	if err := os.WriteFile(filepath.Join(dir, "templates"), []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.ErrorLevel)
	m := machine(t)
	m.RuntimeDir = dir
	p, err := vmpool.New(vmpool.Config{Machine: m, Warm: 1, Snapshots: true, BootTimeout: time.Minute, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	defer p.Close()
	vm := acquire(t, p)
	if vm.Restored {
		t.Fatal("a clone without a template?")
	}
	res, err := vm.Run(context.Background(), vmpool.Job{Source: "return 'cold'", Limits: limits()}, nil)
	if err != nil || res.Reason != protocol.ReasonOK {
		t.Fatalf("cold-booted VM: %+v %v", res, err)
	}
	if p.Stats().Snapshots {
		t.Fatal("stats still claim snapshots")
	}
	if logs.FilterMessageSnippet("booted cold").Len() != 1 {
		t.Fatalf("the fallback must be logged as an error once: %v", logs.All())
	}
}

// TestPoolRetriesAndReportsHungBoots gives boots too little time: each is
// killed at its deadline and retried, the failures are counted, and a
// waiting caller is told why instead of waiting out its own deadline.
func TestPoolRetriesAndReportsHungBoots(t *testing.T) {
	p := newPool(t, vmpool.Config{Warm: 1, BootTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := p.Acquire(ctx)
	if err == nil || !strings.Contains(err.Error(), "failures in a row") || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatal("the caller should hear of the failures long before its own deadline")
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(p.Metrics()); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := 0.0
	for _, f := range fams {
		if f.GetName() != "lualambda_vm_failures_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == "boot_timeout" {
					counted += m.GetCounter().GetValue()
				}
			}
		}
	}
	if counted < 3 {
		t.Fatalf("%v boot timeouts counted, want at least 3", counted)
	}
}

// waitStats polls the pool's stats until ok accepts them or limit passes.
func waitStats(t *testing.T, p *vmpool.Pool, limit time.Duration, ok func(vmpool.Stats) bool) vmpool.Stats {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := p.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool stats never got there within %s: %+v", limit, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPoolDefersRefillDuringJob checks that handing out a VM while others
// are ready does not start its replacement during the job (the creation
// would take CPU from it), that the replacement comes when the job's VM
// ends, and that a drained pool refills at once.
func TestPoolDefersRefillDuringJob(t *testing.T) {
	p := newPool(t, vmpool.Config{Warm: 2, Snapshots: true})
	full := func(st vmpool.Stats) bool { return st.Ready == 2 && st.Creating == 0 }
	waitStats(t, p, 2*time.Minute, full)

	vm := acquire(t, p)
	acquired := time.Now()
	st := p.Stats()
	if time.Since(acquired) < vmpool.RefillDelay/2 && st.Creating != 0 {
		t.Fatalf("the replacement started while a VM was still ready and the job had not run: %+v", st)
	}
	res, err := vm.Run(context.Background(), vmpool.Job{Source: "return 2 + 2", Limits: limits()}, nil)
	if err != nil || res.Reason != protocol.ReasonOK || string(res.Value) != "4" {
		t.Fatalf("run answered %+v, %v", res, err)
	}
	waitStats(t, p, 2*time.Minute, full)

	a := acquire(t, p)
	defer a.Close()
	b := acquire(t, p)
	defer b.Close()
	drained := time.Now()
	waitStats(t, p, 2*time.Minute, func(st vmpool.Stats) bool { return st.Creating > 0 })
	if took := time.Since(drained); took >= vmpool.RefillDelay {
		t.Errorf("a drained pool started refilling only after %s", took)
	}
	waitStats(t, p, 2*time.Minute, full)
}

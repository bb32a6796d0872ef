package vmpool_test

import (
	"context"
	"encoding/json"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/lualambda/caddy-lualambda/internal/bench/measure"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// TestIdleVMsPaused: the VMs waiting in a pool have their vCPUs stopped
// (QMP query-status says paused), and one acquired from it runs, runs its
// job right, and sees the host's time however long it sat paused.
func TestIdleVMsPaused(t *testing.T) {
	const warm = 2
	p := newPool(t, vmpool.Config{Warm: warm, Snapshots: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for st := p.Stats(); st.Ready < warm || st.Creating > 0; st = p.Stats() {
		if ctx.Err() != nil {
			t.Fatalf("the pool did not fill: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	states, err := vmpool.ReadyRunStates(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != warm {
		t.Fatalf("%d VMs ready, want %d", len(states), warm)
	}
	for i, st := range states {
		if st != "paused" {
			t.Errorf("ready VM %d is %q, want paused", i, st)
		}
	}

	vm, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	running, status, err := vmpool.RunState(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	if !running {
		t.Fatalf("an acquired VM is %q, want running", status)
	}
	idle := time.Since(vm.Ready)
	before := time.Now()
	res, err := vm.Run(ctx, vmpool.Job{Source: "local clock = (function() " + guestClockSrc + " end)()\n" +
		"return {sum = 2 + 2, clock = clock, time = os.time()}",
		Limits: vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1<<10)}, nil)
	after := time.Now()
	if err != nil || res.Reason != protocol.ReasonOK {
		t.Fatalf("got %+v, %v", res, err)
	}
	var got struct {
		Sum   int   `json:"sum"`
		Clock int64 `json:"clock"`
		Time  int64 `json:"time"`
	}
	if err := json.Unmarshal(res.Value, &got); err != nil {
		t.Fatalf("result %s: %v", res.Value, err)
	}
	if got.Sum != 4 {
		t.Errorf("2 + 2 = %d in a resumed VM", got.Sum)
	}
	// The guest reads its clock after the job was sent and before its
	// result came back; allow a second either side for the send and the
	// clock's granularity.
	guest := time.UnixMilli(got.Clock)
	if guest.Before(before.Add(-time.Second)) || guest.After(after.Add(time.Second)) {
		t.Fatalf("guest clock %s is outside the host's job window [%s, %s] after %s in the pool",
			guest.Format(time.RFC3339Nano), before.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano), idle)
	}
	if d := got.Time - before.Unix(); d < -1 || d > int64(after.Sub(before)/time.Second)+1 {
		t.Errorf("os.time() is %d, %d s off the job's start", got.Time, d)
	}
	t.Logf("the VM waited %s after its handshake; guest clock %s off the job's start", idle, guest.Sub(before))
}

// TestAcquireSkipsDeadIdleVM: a warm VM whose QEMU died while it waited in
// the pool is not handed out: resuming it fails, and Acquire takes the next
// VM, which runs the job.
func TestAcquireSkipsDeadIdleVM(t *testing.T) {
	dir, err := os.MkdirTemp(runtimeDir, "pool-")
	if err != nil {
		t.Fatal(err)
	}
	m := machine(t)
	m.RuntimeDir = dir
	p, err := vmpool.New(vmpool.Config{Machine: m, Warm: 1, Snapshots: true, BootTimeout: time.Minute,
		Logger: zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))})
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for st := p.Stats(); st.Ready < 1 || st.Creating > 0; st = p.Stats() {
		if ctx.Err() != nil {
			t.Fatalf("the pool did not fill: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pids := measure.QEMUProcesses(dir)
	if len(pids) != 1 {
		t.Fatalf("%d QEMU processes in %s, want the one warm VM's", len(pids), dir)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	vm, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if vm.Pid() == pids[0] {
		t.Fatal("Acquire handed out the VM whose QEMU was killed")
	}
	res, err := vm.Run(ctx, vmpool.Job{Source: "return 2 + 2", Limits: vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1<<10)}, nil)
	if err != nil || res.Reason != protocol.ReasonOK || string(res.Value) != "4" {
		t.Fatalf("got %+v, %v", res, err)
	}
}

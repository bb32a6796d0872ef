package vmpool_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// TestHostCapsTheResult: the guest's harness allows a result up to its own
// bound, but the host holds result, error and traceback to the profile's
// output cap whatever the guest sends.
func TestHostCapsTheResult(t *testing.T) {
	const outputCap = 1 << 10
	for _, c := range []struct {
		src    string
		reason protocol.Reason
	}{
		{`return string.rep("x", 100000)`, protocol.ReasonOutputCap},
		{`error(string.rep("e", 100000))`, protocol.ReasonError},
	} {
		vm := clone(t)
		res, err := vm.Run(context.Background(), vmpool.Job{Source: c.src, Limits: vmpool.LimitsFor(testMemoryMiB, 10*time.Second, outputCap)}, nil)
		if err != nil || res.Reason != c.reason {
			t.Fatalf("%s: got %+v, %v; want reason %s", c.src, res, err, c.reason)
		}
		if len(res.Value) > outputCap || len(res.Error) > outputCap || len(res.Traceback) > outputCap {
			t.Fatalf("%s: the host passed %d bytes of result, %d of error, %d of traceback over a cap of %d",
				c.src, len(res.Value), len(res.Error), len(res.Traceback), outputCap)
		}
	}
}

// TestDeadVMNeverHasTheJob: a VM whose QEMU is gone before the job is sent
// reports that the guest never had it (so the run is not charged).
func TestDeadVMNeverHasTheJob(t *testing.T) {
	vm := clone(t)
	if err := syscall.Kill(vm.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("QEMU did not end")
	}
	res, err := vm.Run(context.Background(), vmpool.Job{Source: "return 1", Limits: limits()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered || res.Reason != protocol.ReasonCrash || !strings.Contains(res.Error, "ended") {
		t.Fatalf("a dead VM: %+v", res)
	}
}

package vmpool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// RefillDelay exposes refillDelay to the package's external tests.
const RefillDelay = refillDelay

// PauseGuest stops the VM's CPUs and virtual clock through QMP for d, then
// resumes them. The guest's clock stands still meanwhile, so it falls d
// behind the host's, as a clock drifting under emulation would.
func PauseGuest(ctx context.Context, vm *VM, d time.Duration) error {
	if err := vm.pause(ctx); err != nil {
		return fmt.Errorf("pause guest: %w", err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	if err := vm.resume(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("resume guest: %w", err)
	}
	return ctx.Err()
}

// RunState asks QEMU (QMP query-status) whether the VM's CPUs run, and
// returns its run state ("running", "paused", ...).
func RunState(ctx context.Context, vm *VM) (running bool, status string, err error) {
	vm.qmpMu.Lock()
	defer vm.qmpMu.Unlock()
	if vm.qmp == nil {
		q, err := dialQMP(ctx, filepath.Join(vm.dir, "qmp.sock"))
		if err != nil {
			return false, "", err
		}
		vm.qmp = q
	}
	ret, err := vm.qmp.execute(ctx, "query-status", nil)
	if err != nil {
		return false, "", err
	}
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := json.Unmarshal(ret, &st); err != nil {
		return false, "", fmt.Errorf("query-status: %w", err)
	}
	return st.Running, st.Status, nil
}

// ReadyRunStates reports the run state of every VM in the pool's ready
// queue, taking each out and putting it back. Nothing may acquire from the
// pool meanwhile.
func ReadyRunStates(ctx context.Context, p *Pool) ([]string, error) {
	var states []string
	for n := len(p.ready); n > 0; n-- {
		vm := <-p.ready
		running, status, err := RunState(ctx, vm)
		p.ready <- vm
		if err != nil {
			return nil, err
		}
		if running != (status == "running") {
			return nil, errors.New("query-status: running and status disagree")
		}
		states = append(states, status)
	}
	return states, nil
}

package vmpool

import (
	"context"
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
	q, err := dialQMP(ctx, filepath.Join(vm.dir, "qmp.sock"))
	if err != nil {
		return fmt.Errorf("pause guest: %w", err)
	}
	defer q.close()
	if _, err := q.execute(ctx, "stop", nil); err != nil {
		return fmt.Errorf("pause guest: %w", err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	if _, err := q.execute(context.WithoutCancel(ctx), "cont", nil); err != nil {
		return fmt.Errorf("resume guest: %w", err)
	}
	return ctx.Err()
}

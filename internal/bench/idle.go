package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/internal/bench/measure"
)

// The idle row's pool: the goal is stated for 8 warm VMs of a 64 MiB
// profile, whatever the other rows use.
const (
	idleVMs       = 8
	idleMemoryMiB = 64
	// idleSettle is how long the full pool is left alone before the
	// window: the last VM's warm-up and the pool's own idle handling
	// (pausing, say) happen in it.
	idleSettle = 3 * time.Second
	// idleWindow is how long the CPU is measured.
	idleWindow = 5 * time.Second
)

// idleProfile names the idle row's profile.
func idleProfile(p string) string { return p + "-idle" }

// idleInProcess measures the idle row on a Caddy of its own in this
// process (used with --server).
func (r *run) idleInProcess(ctx context.Context) error {
	ip, err := newInProcess()
	if err != nil {
		return err
	}
	defer func() {
		if err := ip.stop(); err != nil {
			r.o.Logger.Warn("stopping the idle pool's server", zap.Error(err))
		}
	}()
	return r.idleOn(ctx, ip)
}

// idleOn loads ip with one profile of idleVMs warm VMs, waits for the pool
// to fill and settle, and measures the CPU its QEMU processes use over
// idleWindow: whatever the pool does with idle VMs (keep them running,
// pause them) shows in the figure.
func (r *run) idleOn(ctx context.Context, ip *inProcess) error {
	name := idleProfile(r.o.Profile)
	spec := siteSpec{
		Accel: r.o.Accel, Image: r.im.Dir, Snapshots: true,
		Profiles: []profileSpec{{Name: name, MemoryMiB: idleMemoryMiB, Warm: idleVMs}},
	}
	if r.accel != "" {
		spec.Accel = string(r.accel)
	}
	if err := ip.load(ctx, spec); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			return fmt.Errorf("the idle pool did not stay full and idle for %s in 10 attempts", idleWindow)
		}
		if _, err := waitPoolFull(ctx, ip.AdminURL(), name, 5*time.Minute); err != nil {
			return err
		}
		select {
		case <-time.After(idleSettle):
		case <-ctx.Done():
			return ctx.Err()
		}
		// VMs of an earlier config may still be ending: wait until
		// exactly the pool's are left.
		pids := measure.QEMUProcesses(ip.runtimeDir)
		if len(pids) != idleVMs {
			continue
		}
		pct, err := measure.MeasureCPU(ctx, pids, idleWindow)
		if errors.Is(err, measure.ErrProcessesChanged) {
			continue
		}
		if err != nil {
			return err
		}
		// The same VMs must still be there, and the pool full: a VM
		// replaced during the window is not an idle pool.
		after := measure.QEMUProcesses(ip.runtimeDir)
		slices.Sort(pids)
		slices.Sort(after)
		if !slices.Equal(pids, after) {
			continue
		}
		r.rep.IdleCPUPct = &pct
		r.rep.IdleCPUVMs, r.rep.IdleCPUProfileMiB, r.rep.IdleCPUWindowS = idleVMs, idleMemoryMiB, idleWindow.Seconds()
		return nil
	}
}

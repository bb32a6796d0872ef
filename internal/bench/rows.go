package bench

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/internal/bench/measure"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// httpRows measures the rows that only need the invocation API.
func (r *run) httpRows(ctx context.Context) {
	r.measureRow(ctx, RowWarm, fmt.Sprintf("warm latency: %d runs of `return 2 + 2`, each on a never-used warm VM", r.o.Runs), r.warm)
	r.measureRow(ctx, RowSustained, fmt.Sprintf("sustained: %s at concurrency %d", r.o.Duration, r.o.Concurrency), r.sustained)
	r.measureRow(ctx, RowLua, "Lua CPU speed: guest vs host luajit", r.lua)
}

// waitRefill waits before a warm run until the pool has refilled.
func (r *run) waitRefill(ctx context.Context) error {
	if r.admin == "" {
		select {
		case <-time.After(r.o.Pace):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	_, err := waitPoolFull(ctx, r.admin, r.o.Profile, 2*time.Minute)
	return err
}

// warm measures `return 2 + 2` on never-used warm VMs, one at a time,
// letting the pool refill before each run so that each finds an idle VM.
func (r *run) warm(ctx context.Context) error {
	lat, err := r.warmSamples(ctx, r.o.Runs, "warm")
	if err != nil {
		return err
	}
	s := measure.Summarize(lat)
	r.rep.WarmP50, r.rep.WarmP90, r.rep.WarmP99, r.rep.WarmRuns = s.P50, s.P90, s.P99, s.N
	r.coldRatio()
	return nil
}

// coldRatio sets cold_vs_warm once both are known.
func (r *run) coldRatio() {
	if r.rep.WarmP50 > 0 && r.rep.ColdP50 > 0 {
		r.rep.ColdVsWarm = r.rep.ColdP50 / r.rep.WarmP50
	}
}

// serial runs n `return 2 + 2` on profile one after the other and returns
// their latencies.
func (r *run) serial(ctx context.Context, profile string, n int) ([]time.Duration, error) {
	var lat []time.Duration
	for i := 0; i < n; i++ {
		d, err := r.inv.runFour(ctx, r.newID("cold"), profile)
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// cold measures runs that each boot their VM cold.
func (r *run) cold(ctx context.Context, profile string) error {
	lat, err := r.serial(ctx, profile, r.o.ColdRuns)
	if err != nil {
		return err
	}
	s := measure.Summarize(lat)
	r.rep.ColdP50, r.rep.ColdP90, r.rep.ColdRuns = s.P50, s.P90, s.N
	r.coldRatio()
	return nil
}

// sustained keeps Concurrency runs in flight for Duration, each on a new
// VM, and counts those that complete within the window.
func (r *run) sustained(ctx context.Context) error {
	if err := r.waitRefill(ctx); err != nil {
		return err
	}
	start := time.Now()
	end := start.Add(r.o.Duration)
	wctx, cancel := context.WithDeadline(ctx, end.Add(2*time.Minute))
	defer cancel()
	var ok, failed atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < r.o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && wctx.Err() == nil {
				_, err := r.inv.runFour(wctx, r.newID("sustained"), r.o.Profile)
				switch {
				case err != nil:
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				case !time.Now().After(end):
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ok.Load() == 0 {
		if firstErr != nil {
			return fmt.Errorf("no run completed in %s: %w", r.o.Duration, firstErr)
		}
		return fmt.Errorf("no run completed in %s: make --duration longer", r.o.Duration)
	}
	if n := failed.Load(); n > 0 {
		r.o.Logger.Warn("sustained runs failed", zap.Int64("failed", n), zap.Error(firstErr))
	}
	r.rep.RunsPerS = float64(ok.Load()) / r.o.Duration.Seconds()
	r.rep.SustainedRuns, r.rep.SustainedErrors = int(ok.Load()), int(failed.Load())
	r.rep.DurationS, r.rep.Concurrency = r.o.Duration.Seconds(), r.o.Concurrency
	return nil
}

// luaSamples is how many times each workload runs on each side; the best
// time counts, as other load on the host only ever adds time.
const luaSamples = 2

// lua runs each workload in the guest over HTTP and with the host's luajit
// and checks that both compute the same value.
func (r *run) lua(ctx context.Context) error {
	if _, err := exec.LookPath("luajit"); err != nil {
		return errUnavailable{"no luajit on this host to compare with (install the luajit package)"}
	}
	for _, w := range measure.Workloads() {
		var guest, host time.Duration
		var guestCheck, hostCheck string
		for i := 0; i < luaSamples; i++ {
			if err := r.waitRefill(ctx); err != nil {
				return err
			}
			a, _, err := r.inv.run(ctx, r.newID("lua-"+w.Name), r.o.Profile, w.GuestSource())
			if err != nil {
				return fmt.Errorf("%s in the guest: %w", w.Name, err)
			}
			g, err := measure.ParseGuestResult(a.Result)
			if err != nil {
				return fmt.Errorf("%s in the guest: %w", w.Name, err)
			}
			gd := time.Duration(g.Seconds * float64(time.Second))
			if guest == 0 || gd < guest {
				guest = gd
			}
			guestCheck = g.Check
			hd, check, err := measure.HostLuaJIT(ctx, w)
			if err != nil {
				return err
			}
			if host == 0 || hd < host {
				host = hd
			}
			hostCheck = check
		}
		if guestCheck != hostCheck {
			return fmt.Errorf("%s: the guest computed %q, the host %q", w.Name, guestCheck, hostCheck)
		}
		r.rep.LuaGuestMS[w.Name] = measure.Millis(guest)
		r.rep.LuaHostMS[w.Name] = measure.Millis(host)
		r.rep.LuaGuestVsHost[w.Name] = float64(guest) / float64(host)
	}
	return nil
}

// idleMemory waits for a full pool, lets it settle and measures the PSS of
// its QEMU processes, retrying while VMs of earlier runs are still ending.
func (r *run) idleMemory(ctx context.Context, full func(context.Context) error) error {
	var mem measure.Memory
	for attempt := 0; ; attempt++ {
		if err := full(ctx); err != nil {
			return err
		}
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
		var err error
		mem, err = measure.MeasureMemory(r.runDir)
		if err != nil {
			return err
		}
		if mem.VMs == r.o.Warm {
			break
		}
		if attempt == 10 {
			return fmt.Errorf("found %d QEMU processes for %d warm VMs", mem.VMs, r.o.Warm)
		}
	}
	r.rep.PSSMiB, r.rep.PSSTotalMiB, r.rep.PSSVMs = mem.PerVMMiB, mem.TotalMiB, mem.VMs
	r.rep.PSSProfileMiB = r.o.MemoryMiB
	return nil
}

// machine is the VM shape of the local rows.
func (r *run) machine() vmpool.Machine {
	return vmpool.Machine{Image: r.im, Accel: r.accel, MemoryMiB: r.o.MemoryMiB + vmpool.GuestOverheadMiB, RuntimeDir: r.runDir}
}

// detectAccel resolves the accelerator for the local rows as the app does.
func (r *run) detectAccel(ctx context.Context) (vmpool.Accel, error) {
	m := r.machine()
	if err := m.Check(); err != nil {
		return "", err
	}
	a, err := vmpool.DetectAccel(ctx, m, vmpool.Accel(r.o.Accel), r.o.Logger)
	if err != nil {
		return "", fmt.Errorf("accelerator: %w", err)
	}
	return a, nil
}

// creation compares cold boots with snapshot clones, with vmpool directly.
func (r *run) creation(ctx context.Context) error {
	perVM := time.Minute
	if r.accel == vmpool.AccelKVM {
		perVM = 20 * time.Second
	}
	c, err := measure.MeasureCreation(ctx, r.machine(), r.o.Boots, 3*r.o.Boots, perVM)
	if err != nil {
		return err
	}
	r.rep.BootMS, r.rep.CloneMS, r.rep.BootClone = measure.Millis(c.Boot), measure.Millis(c.Clone), c.Ratio()
	return nil
}

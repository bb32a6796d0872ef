package bench

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/internal/bench/measure"
)

// inProcess runs Caddy in this process for the HTTP rows, then the local
// rows.
func (r *run) inProcess(ctx context.Context) error {
	ip, err := newInProcess()
	if err != nil {
		return err
	}
	r.ip, r.runDir, r.admin = ip, ip.runtimeDir, ip.AdminURL()
	r.inv = newInvoker(ip.URL()+"/invoke", r.o.Concurrency)
	r.rep.MemoryMiB = r.o.MemoryMiB
	defer func() {
		if err := ip.stop(); err != nil {
			r.o.Logger.Error("stopping the bench server", zap.Error(err))
		}
	}()
	if r.needs(RowWarm, RowStorage, RowCold, RowSustained, RowMemory, RowIdle, RowLua) {
		if err := r.mainServer(ctx); err != nil {
			return err
		}
	} else {
		// Only the payment row needs a server: one without VMs.
		r.measureRow(ctx, RowX402, "payment overhead: x402pay respond route vs the plain one", r.paymentInProcess)
	}
	r.measureRow(ctx, RowCold, fmt.Sprintf("cold runs: %d, each booting its VM (pool and snapshots off)", r.o.ColdRuns), r.coldInProcess)
	if ip.loaded {
		if err := caddyStop(); err != nil {
			return err
		}
		ip.loaded = false
	}
	if r.accel == "" && r.needs(RowCreation) {
		if r.accel, err = r.detectAccel(ctx); err != nil {
			return err
		}
		r.rep.Accel = string(r.accel)
	}
	r.measureRow(ctx, RowCreation, fmt.Sprintf("VM creation: %d cold boots, a template, %d clones", r.o.Boots, 3*r.o.Boots), r.creation)
	return nil
}

// mainServer loads the in-process config with the bench profile and
// measures the rows that run on it.
func (r *run) mainServer(ctx context.Context) error {
	spec := siteSpec{
		Accel: r.o.Accel, Image: r.im.Dir, Snapshots: true,
		Profiles: []profileSpec{{Name: r.o.Profile, MemoryMiB: r.o.MemoryMiB, Warm: r.o.Warm}},
	}
	if !r.o.skips(RowCold) {
		spec.Profiles = append(spec.Profiles, profileSpec{Name: ondemandProfile(r.o.Profile), MemoryMiB: r.o.MemoryMiB, Warm: 0})
	}
	pay, err := r.preparePayment(ctx, &spec)
	if err != nil {
		// The VM rows do not need the payment row's chain.
		r.rep.Failed[RowX402] = err.Error()
		fmt.Fprintf(r.o.Progress, "bench: %s: failed: %v\n", RowX402, err)
	}
	if pay != nil {
		defer pay.close()
	}
	fmt.Fprintf(r.o.Progress, "bench: starting caddy on %s with profile %s (%d MiB, warm %d)\n", r.ip.URL(), r.o.Profile, r.o.MemoryMiB, r.o.Warm)
	if err := r.ip.load(ctx, spec); err != nil {
		return err
	}
	st, err := waitPoolFull(ctx, r.admin, r.o.Profile, 5*time.Minute)
	if err != nil {
		return fmt.Errorf("the bench pool did not fill: %w", err)
	}
	r.accel, r.rep.Accel = st.Accel, string(st.Accel)
	r.httpRows(ctx)
	r.measureRow(ctx, RowMemory, fmt.Sprintf("memory of the %d idle warm VMs", r.o.Warm), r.memoryInProcess)
	if r.rep.Failed[RowX402] == "" {
		r.measureRow(ctx, RowX402, "payment overhead: x402pay respond route vs the plain one", func(ctx context.Context) error {
			return r.payment(ctx, pay)
		})
	}
	if !r.o.skips(RowCold) {
		r.measureRow(ctx, RowCold, fmt.Sprintf("on-demand clone runs (warm 0): %d", r.o.ColdRuns), r.onDemand)
	}
	// The rows below reload Caddy with configs of their own.
	r.measureRow(ctx, RowStorage, fmt.Sprintf("storage: warm runs with Caddy's storage on files (%d), Redis (%d), files again (%d)", (r.o.Runs+1)/2, r.o.Runs, r.o.Runs/2), r.storageInProcess)
	r.measureRow(ctx, RowIdle, fmt.Sprintf("idle CPU of a full pool of %d warm VMs (%d MiB) over %s", idleVMs, idleMemoryMiB, idleWindow), func(ctx context.Context) error {
		return r.idleOn(ctx, r.ip)
	})
	return nil
}

// ondemandProfile names the warm-0 profile next to the bench profile.
func ondemandProfile(p string) string { return p + "-ondemand" }

// coldProfile names the in-process cold-boot profile.
func coldProfile(p string) string { return p + "-cold" }

// onDemand measures runs on a profile with no warm VMs while snapshots are
// on: each run waits for a clone and its warm-up.
func (r *run) onDemand(ctx context.Context) error {
	name := ondemandProfile(r.o.Profile)
	// The first run also makes the profile's snapshot template.
	if _, err := r.inv.runFour(ctx, r.newID("prime"), name); err != nil {
		return err
	}
	lat, err := r.serial(ctx, name, r.o.ColdRuns)
	if err != nil {
		return err
	}
	r.rep.OnDemandP50 = measure.Summarize(lat).P50
	return nil
}

// coldInProcess reloads the in-process Caddy with snapshots off and a
// profile that keeps no warm VM: every run boots its VM cold.
func (r *run) coldInProcess(ctx context.Context) error {
	name := coldProfile(r.o.Profile)
	spec := siteSpec{
		Accel: r.o.Accel, Image: r.im.Dir, Snapshots: false,
		Profiles: []profileSpec{{Name: name, MemoryMiB: r.o.MemoryMiB, Warm: 0}},
	}
	if r.accel != "" {
		spec.Accel = string(r.accel)
	}
	if err := r.ip.load(ctx, spec); err != nil {
		return err
	}
	if r.accel == "" {
		st, err := waitPoolFull(ctx, r.admin, name, 5*time.Minute)
		if err != nil {
			return err
		}
		r.accel, r.rep.Accel = st.Accel, string(st.Accel)
	}
	return r.cold(ctx, name)
}

// memoryInProcess measures the idle warm VMs of the in-process server once
// its pool is full and has settled.
func (r *run) memoryInProcess(ctx context.Context) error {
	return r.idleMemory(ctx, func(ctx context.Context) error {
		_, err := waitPoolFull(ctx, r.admin, r.o.Profile, 2*time.Minute)
		return err
	})
}

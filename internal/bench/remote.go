package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/vmpool"
)

// remote measures the HTTP rows against Options.Server and the local rows
// (creation, memory) with vmpool on this machine.
func (r *run) remote(ctx context.Context) error {
	r.rep.Target = r.o.Server
	r.inv = newInvoker(r.o.Server, r.o.Concurrency)
	r.admin = r.o.Admin
	dir, err := newRuntimeDir()
	if err != nil {
		return err
	}
	r.runDir = dir
	defer os.RemoveAll(dir)
	if r.admin != "" {
		st, err := waitPoolFull(ctx, r.admin, r.o.Profile, 5*time.Minute)
		if err != nil {
			return fmt.Errorf("the server's %s pool: %w", r.o.Profile, err)
		}
		r.accel, r.rep.Accel = st.Accel, string(st.Accel)
	} else if r.needs(RowCreation, RowMemory) {
		// The server's accelerator is not known without its admin
		// endpoint: report the one the local rows use.
		if r.accel, err = r.detectAccel(ctx); err != nil {
			return err
		}
		r.rep.Accel = string(r.accel) + " (this machine)"
	}
	r.httpRows(ctx)
	r.measureRow(ctx, RowCold, fmt.Sprintf("cold runs on the server's profile %s: %d", r.o.ColdProfile, r.o.ColdRuns), func(ctx context.Context) error {
		if r.o.ColdProfile == "" {
			return errUnavailable{"with --server, name a profile of the server that keeps no warm VM (and runs with snapshots off) with --cold-profile"}
		}
		return r.cold(ctx, r.o.ColdProfile)
	})
	if r.accel == "" && r.needs(RowCreation, RowMemory) {
		if r.accel, err = r.detectAccel(ctx); err != nil {
			return err
		}
	}
	r.measureRow(ctx, RowStorage, "storage: Redis vs files", func(context.Context) error {
		return errUnavailable{"with --server the server's storage is its own: the storage row runs only in process"}
	})
	r.measureRow(ctx, RowMemory, fmt.Sprintf("memory of %d idle warm VMs of a local pool", r.o.Warm), r.memoryLocal)
	r.measureRow(ctx, RowIdle, fmt.Sprintf("idle CPU of a full pool of %d warm VMs (%d MiB) in process over %s", idleVMs, idleMemoryMiB, idleWindow), r.idleInProcess)
	r.measureRow(ctx, RowX402, "payment overhead: x402pay respond route vs the plain one (in process)", r.paymentInProcess)
	r.measureRow(ctx, RowCreation, fmt.Sprintf("VM creation: %d cold boots, a template, %d clones", r.o.Boots, 3*r.o.Boots), r.creation)
	return nil
}

// memoryLocal fills a vmpool pool of warm VMs on this machine and measures
// them idle.
func (r *run) memoryLocal(ctx context.Context) error {
	p, err := vmpool.New(vmpool.Config{
		Name: "bench-memory", Machine: r.machine(), Warm: r.o.Warm, Snapshots: true,
		BootTimeout: time.Minute, Logger: r.o.Logger,
	})
	if err != nil {
		return fmt.Errorf("memory pool: %w", err)
	}
	p.Start()
	defer func() {
		if err := p.Close(); err != nil {
			r.o.Logger.Warn("closing the memory pool", zap.Error(err))
		}
	}()
	return r.idleMemory(ctx, func(ctx context.Context) error {
		deadline := time.Now().Add(5 * time.Minute)
		for st := p.Stats(); st.Ready < st.Warm || st.Creating > 0; st = p.Stats() {
			if time.Now().After(deadline) {
				return fmt.Errorf("memory pool not full after 5m (ready %d of %d)", st.Ready, st.Warm)
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
}

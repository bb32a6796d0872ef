package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/internal/bench/measure"
	"github.com/lualambda/caddy-lualambda/internal/redisserver"
)

// warmSamples runs `return 2 + 2` n times on never-used warm VMs of the
// bench profile, one at a time, letting the pool refill before each run.
func (r *run) warmSamples(ctx context.Context, n int, kind string) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		if err := r.waitRefill(ctx); err != nil {
			return nil, err
		}
		d, err := r.inv.runFour(ctx, r.newID(kind), r.o.Profile)
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// storageInProcess measures the warm p50 with Caddy's storage on the file
// system and on a redis-server started for the purpose, in the order
// file, Redis, file (half the file runs each time), so that a machine
// whose load drifts during the row does not favour either: the first file
// half runs on the config the other rows ran on, then the in-process Caddy
// is reloaded with `storage redis`, then with the file system again.
func (r *run) storageInProcess(ctx context.Context) error {
	if r.ip == nil || !r.ip.loaded {
		return fmt.Errorf("the bench server is not running")
	}
	// Look for redis-server first, so that a host without it spends no
	// time on the file runs.
	if _, err := redisserver.Binary(); err != nil {
		return errUnavailable{err.Error()}
	}
	firstHalf := (r.o.Runs + 1) / 2
	file, err := r.warmSamples(ctx, firstHalf, "storage-file")
	if err != nil {
		return fmt.Errorf("file storage: %w", err)
	}
	rs, err := redisserver.Start(ctx)
	if errors.Is(err, redisserver.ErrNotInstalled) {
		return errUnavailable{err.Error()}
	}
	if err != nil {
		return err
	}
	onRedis := false
	defer func() {
		// Stop Caddy before its storage goes away.
		if onRedis && r.ip.loaded {
			if err := caddyStop(); err != nil {
				r.o.Logger.Warn("stopping the bench server on redis storage", zap.Error(err))
			}
			r.ip.loaded = false
		}
		rs.Stop()
	}()
	spec := siteSpec{
		Accel: r.o.Accel, Image: r.im.Dir, Snapshots: true, Redis: rs.Addr(),
		Profiles: []profileSpec{{Name: r.o.Profile, MemoryMiB: r.o.MemoryMiB, Warm: r.o.Warm}},
	}
	if r.accel != "" {
		spec.Accel = string(r.accel)
	}
	fmt.Fprintf(r.o.Progress, "bench: storage: reloading caddy with storage redis on %s\n", rs.Addr())
	onRedis = true
	if err := r.ip.load(ctx, spec); err != nil {
		return fmt.Errorf("redis storage: %w", err)
	}
	redis, err := r.warmSamples(ctx, r.o.Runs, "storage-redis")
	if err != nil {
		return fmt.Errorf("redis storage: %w", err)
	}
	if r.o.Runs > firstHalf {
		fmt.Fprintln(r.o.Progress, "bench: storage: reloading caddy with storage file_system")
		spec.Redis = ""
		if err := r.ip.load(ctx, spec); err != nil {
			return fmt.Errorf("file storage: %w", err)
		}
		onRedis = false
		more, err := r.warmSamples(ctx, r.o.Runs-firstHalf, "storage-file")
		if err != nil {
			return fmt.Errorf("file storage: %w", err)
		}
		file = append(file, more...)
	}
	r.rep.recordStorage(measure.Summarize(file).P50, measure.Summarize(redis).P50, r.o.Runs)
	return nil
}

// recordStorage records the storage row's figures.
func (rep *Report) recordStorage(fileP50, redisP50 float64, runs int) {
	rep.StorageFileP50, rep.StorageRedisP50, rep.StorageRuns = fileP50, redisP50, runs
	if fileP50 > 0 {
		rep.StorageRedisVsFile = redisP50 / fileP50
	}
}

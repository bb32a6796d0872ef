package vmpool_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/bench/measure"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// clockTicks is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTicks = 100

// procCPU returns the user plus system time pid has used, from
// /proc/PID/stat (all its threads).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: the fields start
	// after the last ')'. utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// idleCPU measures the CPU that the QEMU processes of pids use over d, in
// percent of one core.
func idleCPU(pids []int, d time.Duration) (float64, error) {
	sum := func() (time.Duration, error) {
		var t time.Duration
		for _, pid := range pids {
			c, err := procCPU(pid)
			if err != nil {
				return 0, err
			}
			t += c
		}
		return t, nil
	}
	c0, err := sum()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	time.Sleep(d)
	c1, err := sum()
	if err != nil {
		return 0, err
	}
	return 100 * float64(c1-c0) / float64(time.Since(start)), nil
}

// BenchmarkIdlePool fills a pool of 8 warm VMs of the 64 MiB profile,
// waits until it is full and no VM is being made, and reports the CPU its
// QEMU processes use over 5 s (percent of one core, from utime and stime
// in /proc), their PSS, and how long Acquire takes from a full pool (which
// includes resuming a paused VM).
func BenchmarkIdlePool(b *testing.B) {
	const warm = 8
	const window = 5 * time.Second
	for i := 0; i < b.N; i++ {
		dir, err := os.MkdirTemp(runtimeDir, "bench-idle-")
		if err != nil {
			b.Fatal(err)
		}
		m := machine(b)
		m.RuntimeDir = dir
		p, err := vmpool.New(vmpool.Config{Machine: m, Warm: warm, Snapshots: true, BootTimeout: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		p.Start()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		waitFull(b, ctx, p, warm)
		pids := measure.QEMUProcesses(dir)
		if len(pids) != warm {
			b.Fatalf("%d QEMU processes for a pool of %d", len(pids), warm)
		}
		pct, err := idleCPU(pids, window)
		if err != nil {
			b.Fatal(err)
		}
		mem, err := measure.MeasureMemory(dir)
		if err != nil {
			b.Fatal(err)
		}
		var lat []time.Duration
		for j := 0; j < warm; j++ {
			// A full pool, so that no restore competes with Acquire.
			waitFull(b, ctx, p, warm)
			start := time.Now()
			vm, err := p.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			vm.Close()
		}
		cancel()
		p.Close()
		b.ReportMetric(pct, "idle_cpu_pct")
		b.ReportMetric(mem.PerVMMiB, "pss_mib/vm")
		b.ReportMetric(ms(percentile(lat, 0.5)), "acquire_p50_ms")
		b.ReportMetric(ms(percentile(lat, 1)), "acquire_max_ms")
	}
}

// waitFull waits until the pool has warm VMs ready and makes none.
func waitFull(b *testing.B, ctx context.Context, p *vmpool.Pool, warm int) {
	b.Helper()
	for st := p.Stats(); st.Ready < warm || st.Creating > 0; st = p.Stats() {
		if ctx.Err() != nil {
			b.Fatalf("the pool did not fill: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

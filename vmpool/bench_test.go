package vmpool_test

// Benchmarks print the figures the README quotes. Run them with
//
//	go test -run XXX -bench . -benchtime 1x ./vmpool/
//
// Each benchmark does its own fixed amount of work per op and reports its
// figures with ReportMetric; -benchtime 1x keeps the run to a few minutes.

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/internal/bench/measure"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// ms and percentile are the bench command's, so that both report alike.
var (
	ms         = measure.Millis
	percentile = measure.Percentile
)

// BenchmarkCreation compares a cold boot with a snapshot clone (restore and
// handshake), each to the point where the VM could take a job.
func BenchmarkCreation(b *testing.B) {
	const n = 4
	m := machine(b)
	var boots, clones []time.Duration
	for i := 0; i < b.N; i++ {
		c, err := measure.MeasureCreation(context.Background(), m, n, n*3, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		boots, clones = append(boots, c.Boots...), append(clones, c.Clones...)
	}
	boot, clone := percentile(boots, 0.5), percentile(clones, 0.5)
	b.ReportMetric(ms(boot), "boot_ms")
	b.ReportMetric(ms(clone), "clone_ms")
	b.ReportMetric(float64(boot)/float64(clone), "boot/clone")
	b.Logf("cold boot p50 %.0f ms, clone p50 %.0f ms: a clone costs 1/%.1f of a boot", ms(boot), ms(clone), float64(boot)/float64(clone))
}

// BenchmarkWarmRun measures what a request waits for: take a warm VM from
// the pool and run `return 2 + 2` on it, each time on a never-used VM.
func BenchmarkWarmRun(b *testing.B) {
	b.Run("warmup", func(b *testing.B) { benchWarmRun(b, false) })
	b.Run("no-warmup", func(b *testing.B) { benchWarmRun(b, true) })
}

func benchWarmRun(b *testing.B, skipWarmup bool) {
	const runs = 40
	dir, _ := os.MkdirTemp(runtimeDir, "bench-pool-")
	m := machine(b)
	m.RuntimeDir = dir
	p, err := vmpool.New(vmpool.Config{Machine: m, Warm: 2, Snapshots: true, SkipWarmup: skipWarmup, BootTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	defer p.Close()
	ctx := context.Background()
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		for j := 0; j < runs; j++ {
			// Let the pool refill completely, so each run measures a warm VM
			// with no restore competing for the CPU (BenchmarkSustained
			// measures the loaded case).
			for st := p.Stats(); st.Ready < 2 || st.Creating > 0; st = p.Stats() {
				time.Sleep(20 * time.Millisecond)
			}
			start := time.Now()
			vm, err := p.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			res, err := vm.Run(ctx, vmpool.Job{Source: "return 2 + 2", Limits: vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1<<10)}, nil)
			d := time.Since(start)
			if err != nil || res.Reason != protocol.ReasonOK || string(res.Value) != "4" {
				b.Fatalf("run: %+v %v", res, err)
			}
			lat = append(lat, d)
			if j == runs/2 {
				b.Logf("a run: %s; host saw %.1f ms, agent %.1f ms (unpack %.1f, lua %.1f)", d, res.TotalMillis, res.AgentMillis, res.UnpackMillis, res.RunMillis)
			}
			if d > 300*time.Millisecond {
				b.Logf("slow run: %s total; in guest: unpack %.1f ms, lua %.1f ms; host saw %.1f ms", d, res.UnpackMillis, res.RunMillis, res.TotalMillis)
			}
		}
	}
	b.ReportMetric(ms(percentile(lat, 0.5)), "p50_ms")
	b.ReportMetric(ms(percentile(lat, 0.9)), "p90_ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99_ms")
}

// BenchmarkSustained runs jobs back to back for a fixed time at a
// concurrency of two, each on a new VM, and reports runs per second.
// LUALAMBDA_BENCH_SECONDS sets the duration (default 60).
func BenchmarkSustained(b *testing.B) {
	b.Run("warmup", func(b *testing.B) { benchSustained(b, false) })
	b.Run("no-warmup", func(b *testing.B) { benchSustained(b, true) })
}

func benchSustained(b *testing.B, skipWarmup bool) {
	seconds := 60
	if s, err := strconv.Atoi(os.Getenv("LUALAMBDA_BENCH_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	dir, _ := os.MkdirTemp(runtimeDir, "bench-sustained-")
	m := machine(b)
	m.RuntimeDir = dir
	p, err := vmpool.New(vmpool.Config{Machine: m, Warm: 4, Snapshots: true, SkipWarmup: skipWarmup, MaxBoots: 2, BootTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	defer p.Close()
	ctx := context.Background()
	for p.Stats().Ready < 4 {
		time.Sleep(50 * time.Millisecond)
	}
	var done atomic.Int64
	for i := 0; i < b.N; i++ {
		end := time.Now().Add(time.Duration(seconds) * time.Second)
		var wg sync.WaitGroup
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					vm, err := p.Acquire(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					res, err := vm.Run(ctx, vmpool.Job{Source: "return 2 + 2", Limits: vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1<<10)}, nil)
					if err == nil && res.Reason == protocol.ReasonOK {
						done.Add(1)
					}
				}
			}()
		}
		wg.Wait()
	}
	b.ReportMetric(float64(done.Load())/float64(seconds*b.N), "runs/s")
}

// BenchmarkIdlePSS reports the proportional set size of the QEMU process of
// an idle warm VM (a 64 MiB profile), and of the whole pool.
func BenchmarkIdlePSS(b *testing.B) {
	const warm = 4
	dir, _ := os.MkdirTemp(runtimeDir, "bench-pss-")
	m := machine(b)
	m.RuntimeDir = dir
	p, err := vmpool.New(vmpool.Config{Machine: m, Warm: warm, Snapshots: true, BootTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	defer p.Close()
	for p.Stats().Ready < warm {
		time.Sleep(50 * time.Millisecond)
	}
	// LUALAMBDA_BENCH_IDLE_SECONDS lets the pool idle longer first, e.g. to
	// give KSM time to merge pages (default 1).
	idle := time.Second
	if s, err := strconv.Atoi(os.Getenv("LUALAMBDA_BENCH_IDLE_SECONDS")); err == nil && s > 0 {
		idle = time.Duration(s) * time.Second
	}
	time.Sleep(idle)
	mem, err := measure.MeasureMemory(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(mem.PerVMMiB, "pss_mib/vm")
	b.ReportMetric(mem.TotalMiB, "pss_mib_pool")
	for _, pid := range measure.QEMUProcesses(dir) {
		if s, err := readSmaps(pid); err == nil {
			b.Logf("VM %d: %s", pid, s)
		}
	}
}

// BenchmarkLuaSpeed runs the bench command's Lua workloads (fib(32), a
// string and a table workload) in the guest and with the host's luajit, in
// the same run, and reports their ratios.
func BenchmarkLuaSpeed(b *testing.B) {
	ctx := context.Background()
	for _, w := range measure.Workloads() {
		var guest, host time.Duration
		for i := 0; i < b.N; i++ {
			res := run(b, vmpool.Job{Source: w.GuestSource(), Limits: vmpool.LimitsFor(testMemoryMiB, 60*time.Second, 1<<10)})
			if res.Reason != protocol.ReasonOK {
				b.Fatalf("guest %s: %+v", w.Name, res)
			}
			g, err := measure.ParseGuestResult(res.Value)
			if err != nil {
				b.Fatal(err)
			}
			guest += time.Duration(g.Seconds * float64(time.Second))
			h, check, err := measure.HostLuaJIT(ctx, w)
			if err != nil {
				b.Fatal(err)
			}
			if check != g.Check {
				b.Fatalf("%s: guest computed %q, host %q", w.Name, g.Check, check)
			}
			host += h
		}
		b.ReportMetric(ms(guest)/float64(b.N), "guest_"+w.Name+"_ms")
		b.ReportMetric(ms(host)/float64(b.N), "host_"+w.Name+"_ms")
		b.ReportMetric(float64(guest)/float64(host), w.Name+"_guest/host")
	}
}

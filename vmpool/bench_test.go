package vmpool_test

// Benchmarks print the figures the README quotes. Run them with
//
//	go test -run XXX -bench . -benchtime 1x ./vmpool/
//
// Each benchmark does its own fixed amount of work per op and reports its
// figures with ReportMetric; -benchtime 1x keeps the run to a few minutes.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return s[i]
}

// BenchmarkCreation compares a cold boot with a snapshot clone (restore and
// handshake), each to the point where the VM could take a job.
func BenchmarkCreation(b *testing.B) {
	const n = 4
	m := machine(b)
	ctx := context.Background()
	var boots, clones []time.Duration
	for i := 0; i < b.N; i++ {
		for j := 0; j < n; j++ {
			bctx, cancel := context.WithTimeout(ctx, time.Minute)
			vm, err := vmpool.Boot(bctx, m)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			boots = append(boots, vm.Created)
			vm.Close()
		}
		dir, _ := os.MkdirTemp(runtimeDir, "bench-tpl-")
		os.Remove(dir)
		tpl, err := vmpool.MakeTemplate(ctx, m, dir)
		if err != nil {
			b.Fatal(err)
		}
		for j := 0; j < n*3; j++ {
			vm, err := tpl.Clone(ctx)
			if err != nil {
				b.Fatal(err)
			}
			clones = append(clones, vm.Created)
			vm.Close()
		}
		tpl.Remove()
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
	time.Sleep(time.Second)
	var total int64
	pids := testenv.QEMUProcesses(dir)
	for _, pid := range pids {
		total += pssKiB(b, pid)
	}
	if len(pids) == 0 {
		b.Fatal("no QEMU processes found")
	}
	b.ReportMetric(float64(total)/1024/float64(len(pids)), "pss_mib/vm")
	b.ReportMetric(float64(total)/1024, "pss_mib_pool")
}

// BenchmarkLuaSpeed runs fib(32) in the guest and with the host's luajit,
// in the same run, and reports their ratio.
func BenchmarkLuaSpeed(b *testing.B) {
	const fib = `local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
		local t0 = os.clock() local r = fib(32) return {r = r, s = os.clock() - t0}`
	var guest, host float64
	for i := 0; i < b.N; i++ {
		res := run(b, vmpool.Job{Source: fib, Limits: vmpool.LimitsFor(testMemoryMiB, 60*time.Second, 1<<10)})
		if res.Reason != protocol.ReasonOK {
			b.Fatalf("guest: %+v", res)
		}
		guest += seconds(b, res.Value)
		out, err := exec.Command("luajit", "-e", strings.ReplaceAll(fib, "return {r = r, s = os.clock() - t0}", "print(os.clock() - t0)")).Output()
		if err != nil {
			b.Fatalf("host luajit: %v", err)
		}
		h, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		host += h
	}
	b.ReportMetric(guest*1000/float64(b.N), "guest_fib32_ms")
	b.ReportMetric(host*1000/float64(b.N), "host_fib32_ms")
	b.ReportMetric(guest/host, "guest/host")
}

func seconds(b *testing.B, v []byte) float64 {
	var s string
	if i := bytes.Index(v, []byte(`"s":`)); i >= 0 {
		s = string(v[i+4:])
		s = strings.TrimRight(s, "}")
		if j := strings.IndexByte(s, ','); j >= 0 {
			s = s[:j]
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		b.Fatalf("guest timing %s: %v", v, err)
	}
	return f
}

func pssKiB(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	b.Fatalf("no Pss in smaps_rollup of %d", pid)
	return 0
}

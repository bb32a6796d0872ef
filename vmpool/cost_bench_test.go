package vmpool_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// BenchmarkCloneCost measures, on VMs made one after the other from one
// template, the host CPU time of each stage of a VM's life (restore and
// handshake, warm-up, the run of `return 2 + 2`) and where an idle warm VM's
// memory goes. CPU time, unlike wall time, does not depend on what else
// shares the cores.
func BenchmarkCloneCost(b *testing.B) {
	const vms = 8
	m := machine(b)
	dir, err := os.MkdirTemp(runtimeDir, "bench-cost-")
	if err != nil {
		b.Fatal(err)
	}
	m.RuntimeDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tpl, err := vmpool.MakeTemplate(ctx, m, filepath.Join(dir, "template"))
	if err != nil {
		b.Fatal(err)
	}
	defer tpl.Remove()
	var restore, warm, run, total, lat []time.Duration
	var mems []smapsSummary
	for i := 0; i < b.N*vms; i++ {
		before := childrenCPU()
		vm, err := tpl.Clone(ctx)
		if err != nil {
			b.Fatal(err)
		}
		c0 := taskCPU(vm.Pid())
		if err := vm.Warm(ctx); err != nil {
			b.Fatal(err)
		}
		c1 := taskCPU(vm.Pid())
		time.Sleep(300 * time.Millisecond)
		c2 := taskCPU(vm.Pid())
		mem, err := readSmaps(vm.Pid())
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		res, err := vm.Run(ctx, vmpool.Job{Source: "return 2 + 2", Limits: vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1<<10)}, nil)
		d := time.Since(start)
		if err != nil || res.Reason != protocol.ReasonOK || string(res.Value) != "4" {
			b.Fatalf("run: %+v %v", res, err)
		}
		<-vm.Exited()
		all := childrenCPU() - before
		restore = append(restore, c0)
		warm = append(warm, c1-c0)
		run = append(run, all-c2)
		total = append(total, all-(c2-c1))
		lat = append(lat, d)
		mems = append(mems, mem)
	}
	b.ReportMetric(ms(percentile(restore, 0.5)), "restore_cpu_ms")
	b.ReportMetric(ms(percentile(warm, 0.5)), "warm_cpu_ms")
	b.ReportMetric(ms(percentile(run, 0.5)), "run_cpu_ms")
	b.ReportMetric(ms(percentile(total, 0.5)), "vm_cpu_ms")
	b.ReportMetric(ms(percentile(lat, 0.5)), "run_p50_ms")
	sort.Slice(mems, func(i, j int) bool { return mems[i].pss < mems[j].pss })
	med := mems[len(mems)/2]
	b.ReportMetric(float64(med.pss)/1024, "pss_mib")
	b.Logf("median idle VM: %s", med)
	b.Logf("CPU ms, min/median/max: restore %.0f/%.0f/%.0f, warm-up %.0f/%.0f/%.0f, run %.0f/%.0f/%.0f",
		ms(percentile(restore, 0)), ms(percentile(restore, 0.5)), ms(percentile(restore, 1)),
		ms(percentile(warm, 0)), ms(percentile(warm, 0.5)), ms(percentile(warm, 1)),
		ms(percentile(run, 0)), ms(percentile(run, 0.5)), ms(percentile(run, 1)))
}

// childrenCPU is the user and system time of this process's waited-for children.
func childrenCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// taskCPU is the time all threads of pid have run, from their schedstat.
func taskCPU(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += n
		}
	}
	return time.Duration(sum)
}

// smapsSummary splits a QEMU process's PSS by what the memory holds.
type smapsSummary struct {
	pss      int64 // KiB, everything
	guestPSS int64 // guest RAM (the template's memfd mapping and its CoW copies)
	guestAnn int64 // guest RAM pages copied on write
	codePSS  int64 // TCG's translated code (the rwx anonymous buffer)
	anonPSS  int64 // other anonymous memory (heap, arenas, stacks, TLBs)
	filePSS  int64 // libraries and other files, relocated pages included
	fileAnn  int64 // pages of files copied on write: relocations and data
}

func (s smapsSummary) String() string {
	return fmt.Sprintf("PSS %.1f MiB: guest RAM %.1f (CoW copies %.1f), TCG code %.1f, other anon %.1f, files %.1f (relocated or written %.1f)",
		float64(s.pss)/1024, float64(s.guestPSS)/1024, float64(s.guestAnn)/1024, float64(s.codePSS)/1024,
		float64(s.anonPSS)/1024, float64(s.filePSS)/1024, float64(s.fileAnn)/1024)
}

// readSmaps reads /proc/PID/smaps into a summary.
func readSmaps(pid int) (smapsSummary, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return smapsSummary{}, err
	}
	var s smapsSummary
	kind := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") || strings.Contains(f[0], "-") {
			// A mapping header: range perms offset dev inode [path].
			path := ""
			if len(f) >= 6 {
				path = strings.Join(f[5:], " ")
			}
			switch {
			case strings.Contains(path, "lualambda-template-ram") || strings.HasSuffix(path, "/ram"):
				kind = "guest"
			case path == "" && strings.Contains(f[1], "x"):
				kind = "code"
			case path == "" || strings.HasPrefix(path, "["):
				kind = "anon"
			default:
				kind = "file"
			}
			continue
		}
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Pss:":
			s.pss += n
			switch kind {
			case "guest":
				s.guestPSS += n
			case "code":
				s.codePSS += n
			case "anon":
				s.anonPSS += n
			default:
				s.filePSS += n
			}
		case "Anonymous:":
			switch kind {
			case "guest":
				s.guestAnn += n
			case "file":
				s.fileAnn += n
			}
		}
	}
	return s, sc.Err()
}

package measure

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// QEMUProcesses lists the pids of the QEMU processes whose command line
// mentions marker (a runtime directory, say).
func QEMUProcesses(marker string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		if strings.Contains(cmd, "qemu-system") && strings.Contains(cmd, marker) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// PSSKiB returns a process's proportional set size in KiB, from
// /proc/PID/smaps_rollup: its private pages plus its share of the pages it
// shares with other processes.
func PSSKiB(pid int) (int64, error) {
	path := fmt.Sprintf("/proc/%d/smaps_rollup", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read PSS: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "Pss:")
		if !ok {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: Pss %q: %w", path, v, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%s: no Pss line", path)
}

// Memory is the memory of a set of idle VMs.
type Memory struct {
	// VMs is how many QEMU processes were measured.
	VMs int
	// PerVMMiB is their mean PSS.
	PerVMMiB float64
	// TotalMiB is the sum of their PSS: what the host pays for them.
	TotalMiB float64
}

// MeasureMemory sums the PSS of every QEMU process whose command line
// mentions marker. It fails when there is none.
func MeasureMemory(marker string) (Memory, error) {
	pids := QEMUProcesses(marker)
	if len(pids) == 0 {
		return Memory{}, fmt.Errorf("no QEMU process mentions %s", marker)
	}
	var total int64
	for _, pid := range pids {
		kib, err := PSSKiB(pid)
		if err != nil {
			return Memory{}, fmt.Errorf("QEMU process %d: %w", pid, err)
		}
		total += kib
	}
	mib := float64(total) / 1024
	return Memory{VMs: len(pids), PerVMMiB: mib / float64(len(pids)), TotalMiB: mib}, nil
}

// userHZ is the unit of the CPU times in /proc/PID/stat: the kernel's
// USER_HZ, which Linux fixes at 100 for that interface on every
// architecture this project runs on.
const userHZ = 100

// CPUTime returns the CPU time a process has used so far, all its threads
// together (living and ended): utime + stime from /proc/PID/stat, to
// 1/USER_HZ of a second.
func CPUTime(pid int) (time.Duration, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	d, err := statCPUTime(data)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// statCPUTime reads utime + stime from the text of a /proc/PID/stat.
func statCPUTime(data []byte) (time.Duration, error) {
	// The command name, in parentheses, may hold spaces and parentheses:
	// the fields start after the last ")".
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	// After the name: state (field 3) ... utime (14), stime (15).
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("CPU time %q is not a count of ticks", f)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// ErrProcessesChanged is returned by MeasureCPU when a process it watches
// ended during the window.
var ErrProcessesChanged = errors.New("a measured process ended during the window")

// MeasureCPU returns the CPU the processes used together over window, as a
// percentage of one core (200 is two cores busy). A process that ends
// during the window makes it fail with ErrProcessesChanged.
func MeasureCPU(ctx context.Context, pids []int, window time.Duration) (float64, error) {
	if len(pids) == 0 {
		return 0, errors.New("measure CPU: no process")
	}
	if window <= 0 {
		return 0, fmt.Errorf("measure CPU: window %s is not positive", window)
	}
	sum := func() (time.Duration, error) {
		var total time.Duration
		for _, pid := range pids {
			d, err := CPUTime(pid)
			if errors.Is(err, fs.ErrNotExist) {
				return 0, fmt.Errorf("%w: process %d", ErrProcessesChanged, pid)
			}
			if err != nil {
				return 0, fmt.Errorf("measure CPU: process %d: %w", pid, err)
			}
			total += d
		}
		return total, nil
	}
	before, err := sum()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	t := time.NewTimer(window)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	after, err := sum()
	if err != nil {
		return 0, err
	}
	took := time.Since(start)
	return 100 * float64(after-before) / float64(took), nil
}

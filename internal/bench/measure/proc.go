package measure

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

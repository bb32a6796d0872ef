// Package testenv gives tests what they share: the guest image, built once
// per test binary from this checkout, and a check for leftover QEMU
// processes.
package testenv

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/image"
)

var (
	imageOnce sync.Once
	img       *image.Image
	imgErr    error
)

// Root is the module's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Image returns the guest image for this checkout, building it (cached by
// content hash) on first use.
func Image(t testing.TB) *image.Image {
	t.Helper()
	imageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		img, imgErr = image.Build(ctx, image.Options{SourceDir: Root()})
	})
	if imgErr != nil {
		t.Fatalf("guest image: %v", imgErr)
	}
	return img
}

// QEMUProcesses lists the pids of QEMU processes whose command line
// mentions marker (a runtime directory, say).
func QEMUProcesses(marker string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid := 0
		for _, c := range e.Name() {
			if c < '0' || c > '9' {
				pid = -1
				break
			}
			pid = pid*10 + int(c-'0')
		}
		if pid <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, "qemu-system") && strings.Contains(cmd, marker) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// WaitNoQEMU fails the test unless no QEMU process mentioning marker is
// left within a few seconds.
func WaitNoQEMU(t testing.TB, marker string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := QEMUProcesses(marker)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU processes left behind: %v", pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// VMsDir makes a runtime directory for a test's VMs that QEMU, running as
// another user, can reach (so not under t.TempDir, whose parent is
// private). When the test ends it checks that no QEMU process is left in
// it, then removes it.
func VMsDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		WaitNoQEMU(t, dir)
		os.RemoveAll(dir)
	})
	return dir
}

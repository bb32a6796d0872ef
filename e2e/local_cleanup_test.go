package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// localTempDir is a TMPDIR for the lualambda binary, so that its local
// runtime directory (TMPDIR/lualambda-vms) is the test's alone. QEMU runs
// as other uids and must pass through it: not under t.TempDir, whose parent
// is private.
func localTempDir(t *testing.T) (tmp, runtimeDir string) {
	t.Helper()
	tmp, err := os.MkdirTemp("", "e2e-local-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	return tmp, filepath.Join(tmp, "lualambda-vms")
}

// leftovers lists the VM directories and lock files in a runtime directory.
func leftovers(t *testing.T, runtimeDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(runtimeDir)
	if err != nil {
		t.Fatalf("the local runtime directory: %v", err)
	}
	var left []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "vm-") {
			left = append(left, e.Name())
		}
	}
	return left
}

// assertClean fails unless the CLI, now exited, left no VM directory and no
// QEMU process behind: it must have cleaned up before exiting.
func assertClean(t *testing.T, runtimeDir string) {
	t.Helper()
	if left := leftovers(t, runtimeDir); len(left) > 0 {
		t.Errorf("invoke --local left %v in %s", left, runtimeDir)
	}
	if pids := testenv.QEMUProcesses(runtimeDir); len(pids) > 0 {
		t.Errorf("invoke --local left QEMU processes %v", pids)
	}
}

func TestLocalCleanupAfterRun(t *testing.T) {
	tmp, rt := localTempDir(t)
	env := []string{"TMPDIR=" + tmp}
	out, errOut, code := cli(t, "", env, "invoke", "--local", "--accel", "tcg", "-e", "return 6 * 7")
	if code != 0 || strings.TrimSpace(out) != "42" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	assertClean(t, rt)
	// A Lua error is cleaned up the same way.
	_, errOut, code = cli(t, "", env, "invoke", "--local", "--accel", "tcg", "-e", `error("boom")`)
	if code != 1 || !strings.Contains(errOut, "boom") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	assertClean(t, rt)
}

// TestLocalCleanupOnSignal interrupts invoke --local while its Lua runs, and
// while its VM boots, as Ctrl-C (SIGINT) and as SIGTERM would.
func TestLocalCleanupOnSignal(t *testing.T) {
	for _, c := range []struct {
		name string
		sig  syscall.Signal
		// during says when to send the signal: once stderr shows this line
		// (the Lua code runs), or once the VM directory exists ("").
		during string
	}{
		{"SIGINT while Lua runs", syscall.SIGINT, "spinning"},
		{"SIGTERM while Lua runs", syscall.SIGTERM, "spinning"},
		{"SIGINT while the VM boots", syscall.SIGINT, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmp, rt := localTempDir(t)
			cmd := exec.Command(filepath.Join(bin, "lualambda"), "invoke", "--local", "--accel", "tcg", "--timeout", "2m",
				"-e", `io.stderr:write("spinning\n") io.stderr:flush() while true do end`)
			cmd.Dir = testenv.Root()
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			lines := make(chan string, 64)
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
				exited <- cmd.Wait()
			}()
			deadline := time.After(90 * time.Second)
			var seen []string
		wait:
			for {
				if c.during == "" {
					if _, err := os.Stat(rt); err == nil && len(leftovers(t, rt)) > 0 {
						break wait
					}
				}
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("the CLI ended before the signal: %v", seen)
					}
					seen = append(seen, l)
					if c.during != "" && strings.Contains(l, c.during) {
						break wait
					}
				case <-deadline:
					_ = cmd.Process.Kill()
					t.Fatalf("never saw the moment to signal; stderr: %v", seen)
				case <-time.After(5 * time.Millisecond):
				}
			}
			if err := cmd.Process.Signal(c.sig); err != nil {
				t.Fatal(err)
			}
			for l := range lines {
				seen = append(seen, l)
			}
			select {
			case err := <-exited:
				ee, ok := err.(*exec.ExitError)
				if !ok || ee.ExitCode() != 130 {
					t.Errorf("exit after %s: %v, want status 130; stderr: %v", c.sig, err, seen)
				}
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("the CLI did not end on %s", c.sig)
			}
			if !strings.Contains(strings.Join(seen, "\n"), "lualambda: interrupted") {
				t.Errorf("stderr does not say it was interrupted: %v", seen)
			}
			assertClean(t, rt)
		})
	}
}

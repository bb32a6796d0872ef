//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sandboxArg0 is the argv[0] under which the agent binary, executed again,
// acts as the Lua process's sandbox: it sets the process's rlimits,
// no_new_privs and the seccomp filter, then executes LuaJIT in its place.
// Go cannot run code between fork and exec, hence the extra exec; the
// process keeps its pid, uid and file descriptors through it.
const sandboxArg0 = "lualambda-sandbox"

// defaultFileBytes is the Lua process's RLIMIT_FSIZE until its job sets
// one (the package byte limit), so no file it writes can grow without bound.
const defaultFileBytes = 64 << 20

// sandboxStartTimeout bounds how long the sandbox may take to execute the
// program (the Go runtime starts once more, under TCG too).
const sandboxStartTimeout = 10 * time.Second

// sandboxLimits are the rlimits the sandbox sets before it executes the
// program, besides the fixed ones (open files, processes, core dumps).
type sandboxLimits struct {
	// FileBytes is RLIMIT_FSIZE: the largest file the process may write.
	FileBytes int64
	// MemoryBytes is RLIMIT_AS; 0 leaves it unlimited.
	MemoryBytes int64
}

// sandboxInvoked reports whether the binary was started as the sandbox.
func sandboxInvoked(args []string) bool { return len(args) > 0 && args[0] == sandboxArg0 }

// startSandboxed starts cmd under the sandbox through start (cmd.Start, or
// a pseudo-terminal's starter) and returns once the sandbox has executed
// the program, or with the sandbox's error. cmd.Path must be absolute; cmd
// keeps its credentials, environment and files.
func startSandboxed(cmd *exec.Cmd, lim sandboxLimits, start func(*exec.Cmd) error) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("sandbox: find the agent binary: %w", err)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: status pipe: %w", err)
	}
	defer statusR.Close()
	fd := 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, statusW)
	args := []string{sandboxArg0,
		"status=" + strconv.Itoa(fd),
		"fsize=" + strconv.FormatInt(lim.FileBytes, 10),
		"as=" + strconv.FormatInt(lim.MemoryBytes, 10),
		"--", cmd.Path}
	cmd.Args = append(args, cmd.Args[1:]...)
	cmd.Path = self
	err = start(cmd)
	statusW.Close()
	if err != nil {
		return fmt.Errorf("sandbox: start: %w", err)
	}
	// The status pipe closes empty when the sandbox executes the program
	// (it is close-on-exec there), or carries the sandbox's error.
	_ = statusR.SetReadDeadline(time.Now().Add(sandboxStartTimeout))
	msg, readErr := io.ReadAll(io.LimitReader(statusR, 4<<10))
	if len(msg) == 0 && readErr == nil {
		return nil
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if len(msg) == 0 {
		return fmt.Errorf("sandbox: waiting for it to start: %w", readErr)
	}
	return fmt.Errorf("sandbox: %s", msg)
}

// sandboxMain is the sandbox process: it only returns by executing the
// program; on failure it reports on the status descriptor and exits.
func sandboxMain(args []string) {
	status, err := sandboxExec(args[1:])
	if status >= 0 {
		_, _ = unix.Write(status, []byte(err.Error()))
	}
	os.Exit(127)
}

// sandboxExec parses "status=FD fsize=N as=N -- PROGRAM ARGS...", confines
// the process and executes PROGRAM. It returns only on failure, with the
// status descriptor (or -1 when it could not be read).
func sandboxExec(args []string) (int, error) {
	// no_new_privs and the filter are set per thread: stay on the thread
	// that executes the program.
	runtime.LockOSThread()
	status := -1
	var lim sandboxLimits
	i := 0
	for ; i < len(args) && args[i] != "--"; i++ {
		key, val, _ := strings.Cut(args[i], "=")
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil || n < 0 {
			return status, fmt.Errorf("bad option %q", args[i])
		}
		switch key {
		case "status":
			status = int(n)
		case "fsize":
			lim.FileBytes = n
		case "as":
			lim.MemoryBytes = n
		default:
			return status, fmt.Errorf("unknown option %q", args[i])
		}
	}
	if i+1 >= len(args) {
		return status, errors.New("no program to run")
	}
	argv := args[i+1:]
	if status >= 0 {
		unix.CloseOnExec(status)
	}
	if err := confine(lim); err != nil {
		return status, err
	}
	err := unix.Exec(argv[0], argv, os.Environ())
	return status, fmt.Errorf("execute %s: %w", argv[0], err)
}

// confine applies the limits, no_new_privs and the seccomp filter to the
// calling process.
func confine(lim sandboxLimits) error {
	// A write past RLIMIT_FSIZE then fails with EFBIG instead of killing
	// the process; an ignored signal stays ignored across exec.
	signal.Ignore(syscall.SIGXFSZ)
	fileBytes := lim.FileBytes
	if fileBytes <= 0 {
		fileBytes = defaultFileBytes
	}
	limits := []struct {
		name string
		res  int
		n    uint64
	}{
		{"RLIMIT_FSIZE", unix.RLIMIT_FSIZE, uint64(fileBytes)},
		{"RLIMIT_NOFILE", unix.RLIMIT_NOFILE, 64},
		{"RLIMIT_NPROC", unix.RLIMIT_NPROC, 32},
		{"RLIMIT_CORE", unix.RLIMIT_CORE, 0},
	}
	if lim.MemoryBytes > 0 {
		limits = append(limits, struct {
			name string
			res  int
			n    uint64
		}{"RLIMIT_AS", unix.RLIMIT_AS, uint64(lim.MemoryBytes)})
	}
	for _, l := range limits {
		if err := unix.Setrlimit(l.res, &unix.Rlimit{Cur: l.n, Max: l.n}); err != nil {
			return fmt.Errorf("set %s: %w", l.name, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return loadSeccomp()
}

// userNamespacesPath is the sysctl that caps user namespaces in the guest.
const userNamespacesPath = "/proc/sys/user/max_user_namespaces"

// disableUserNamespaces lets nobody in the guest create a user namespace
// (the seccomp filter refuses it too). A kernel without user namespaces
// has no such file, which is as good.
func disableUserNamespaces() error {
	err := os.WriteFile(userNamespacesPath, []byte("0\n"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable user namespaces: %w", err)
	}
	return nil
}

//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lualambda/caddy-lualambda/guest/harness"
	"github.com/lualambda/caddy-lualambda/guest/protocol"
)

const (
	// luaBinary is LuaJIT as the image builder installs it: the default runtime.
	luaBinary = "/usr/bin/luajit"
	// lua54Binary is Debian's Lua 5.4 as the image builder installs it.
	lua54Binary = "/usr/bin/lua5.4"
	// userID is the unprivileged uid and gid user code runs as ("nobody").
	userID = 65534
	// jobDir is the Lua process's working directory; packages go in pkgDir.
	jobDir = "/job"
	pkgDir = "/job/pkg"
)

// binaryFor returns the interpreter of a job's runtime ("" is LuaJIT).
func binaryFor(runtime string) (string, error) {
	switch runtime {
	case "", protocol.RuntimeLuaJIT:
		return luaBinary, nil
	case protocol.RuntimeLua54:
		return lua54Binary, nil
	}
	return "", fmt.Errorf("unknown runtime %q: want %s or %s", runtime, protocol.RuntimeLuaJIT, protocol.RuntimeLua54)
}

// luaProc is a Lua process (LuaJIT or Lua 5.4) started before any job
// exists, with the harness loaded and blocked reading its job from stdin.
type luaProc struct {
	// oomsBefore is the kernel's OOM-kill count when the process started,
	// read then so that reading it costs nothing on the job's path.
	oomsBefore int64
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	stdout     *os.File
	stderr     *os.File
	result     *os.File
}

// startLua starts the harness under LuaJIT; see startHarness.
func startLua() (*luaProc, error) { return startHarness(luaBinary) }

// startHarness starts the harness under the interpreter binary as an
// unprivileged process in its own process group, in the sandbox, with
// baseline rlimits. Job-specific limits are set when the job comes.
func startHarness(binary string) (*luaProc, error) {
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	resultR, resultW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("result pipe: %w", err)
	}
	if binary == lua54Binary {
		// Plain Lua cannot write to a descriptor it inherited: the harness
		// reopens fd 3 as /proc/self/fd/3, which needs the pipe (root's,
		// mode 0600) to be its user's.
		if err := resultW.Chown(userID, userID); err != nil {
			for _, f := range []*os.File{stdoutR, stdoutW, stderrR, stderrW, resultR, resultW} {
				f.Close()
			}
			return nil, fmt.Errorf("give the result pipe to the user: %w", err)
		}
	}
	cmd := exec.Command(binary, harness.InstallPath)
	cmd.Dir = jobDir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + jobDir, "TMPDIR=/tmp", "LANG=C.UTF-8"}
	cmd.Stdout = stdoutW
	cmd.Stderr = stderrW
	cmd.ExtraFiles = []*os.File{resultW} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: &syscall.Credential{Uid: userID, Gid: userID, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	// The sandbox sets the fixed rlimits, no_new_privs and the seccomp
	// filter before the interpreter runs; the job's limits are set when it comes.
	err = startSandboxed(cmd, sandboxLimits{FileBytes: defaultFileBytes}, (*exec.Cmd).Start)
	stdoutW.Close()
	stderrW.Close()
	resultW.Close()
	if err != nil {
		stdin.Close()
		stdoutR.Close()
		stderrR.Close()
		resultR.Close()
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	p := &luaProc{cmd: cmd, stdin: stdin, stdout: stdoutR, stderr: stderrR, result: resultR, oomsBefore: oomKills()}
	return p, nil
}

// idleTimeout bounds how long the agent waits for a new Lua process to
// load the harness (about 1.5 s for the first one under TCG).
const idleTimeout = 10 * time.Second

// awaitIdle waits until the process is blocked reading its job from stdin,
// which the harness does once it has loaded, or until timeout. It is only
// an optimisation: a process that is still loading when it returns still
// works.
func (p *luaProc) awaitIdle(timeout time.Duration) {
	path := "/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/syscall"
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path)
		if err != nil {
			return // no such file in this kernel, or the process is gone
		}
		// "0 0x0 ..." is read(2) (syscall 0 on x86-64) on fd 0.
		if strings.HasPrefix(string(b), "0 0x0 ") {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// kill ends the Lua process and everything it started.
func (p *luaProc) kill() {
	_ = unix.Kill(-p.cmd.Process.Pid, unix.SIGKILL)
	_ = p.cmd.Process.Kill()
}

// harnessJob is what the harness reads on stdin.
type harnessJob struct {
	Source         string            `json:"source,omitempty"`
	Require        string            `json:"require,omitempty"`
	Args           []json.RawMessage `json:"args"`
	PkgDir         string            `json:"pkgdir"`
	Seed           int64             `json:"seed"`
	MaxResultBytes int64             `json:"max_result_bytes"`
}

// harnessResult is what the harness writes on fd 3.
type harnessResult struct {
	OK        bool            `json:"ok"`
	Result    json.RawMessage `json:"result"`
	Reason    string          `json:"reason"`
	Error     string          `json:"error"`
	Traceback string          `json:"traceback"`
}

// outputSink receives captured output; it returns an error when the host is gone.
type outputSink func(s protocol.Stream, b []byte) error

// run hands the job to the waiting process, captures its output up to the
// cap, enforces the wall clock, and turns how it ended into a Result.
func (p *luaProc) run(job protocol.Job, send outputSink) protocol.Result {
	lim := job.Limits
	pid := p.cmd.Process.Pid
	if lim.CPUSeconds > 0 {
		_ = unix.Prlimit(pid, unix.RLIMIT_CPU, &unix.Rlimit{Cur: uint64(lim.CPUSeconds), Max: uint64(lim.CPUSeconds) + 1}, nil)
	}
	if lim.MemoryBytes > 0 {
		_ = unix.Prlimit(pid, unix.RLIMIT_AS, &unix.Rlimit{Cur: uint64(lim.MemoryBytes), Max: uint64(lim.MemoryBytes)}, nil)
	}
	if lim.PackageBytes > 0 {
		// No file the run writes may be larger than its packages may be.
		_ = unix.Prlimit(pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: uint64(lim.PackageBytes), Max: uint64(lim.PackageBytes)}, nil)
	}
	args := job.Args
	if args == nil {
		args = []json.RawMessage{}
	}
	in, err := json.Marshal(harnessJob{
		Source: job.Source, Require: job.Require, Args: args, PkgDir: pkgDir,
		Seed: job.Seed, MaxResultBytes: lim.ResultBytes,
	})
	if err != nil {
		p.kill()
		return protocol.Result{Reason: protocol.ReasonCrash, Error: "encode job: " + err.Error()}
	}
	start := time.Now()
	writeErr := make(chan error, 1)
	in = append(in, '\n')
	go func() {
		_, err := p.stdin.Write(in)
		if cerr := p.stdin.Close(); err == nil {
			err = cerr
		}
		writeErr <- err
	}()

	var (
		mu       sync.Mutex
		total    int64
		capped   bool
		pumps    sync.WaitGroup
		resultCh = make(chan []byte, 1)
	)
	pump := func(f *os.File, s protocol.Stream) {
		defer pumps.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				mu.Lock()
				chunk := buf[:n]
				if lim.OutputBytes > 0 && total+int64(n) > lim.OutputBytes {
					chunk = buf[:max(0, lim.OutputBytes-total)]
					if !capped {
						capped = true
						p.kill()
					}
				}
				total += int64(n)
				if len(chunk) > 0 {
					_ = send(s, chunk)
				}
				mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}
	pumps.Add(2)
	go pump(p.stdout, protocol.Stdout)
	go pump(p.stderr, protocol.Stderr)
	outputDone := make(chan struct{})
	go func() { pumps.Wait(); close(outputDone) }()
	go func() {
		limit := lim.ResultBytes
		if limit <= 0 {
			limit = protocol.MaxFrame / 2
		}
		b, _ := io.ReadAll(io.LimitReader(p.result, limit+64<<10))
		resultCh <- b
	}()

	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	var (
		timedOut bool
		waitErr  error
		ended    bool // waitErr is how the process ended
		raw      []byte
		gotRaw   bool
	)
	wall := time.Duration(lim.WallMillis) * time.Millisecond
	if wall <= 0 {
		wall = 24 * time.Hour
	}
	timer := time.NewTimer(wall)
	defer timer.Stop()
	// The harness closes stdout, stderr and the result pipe when it is
	// done: answer then, without waiting for the process to exit. A
	// process that dies or overruns is handled by the other cases.
wait:
	for {
		select {
		case raw = <-resultCh:
			gotRaw = true
			if len(raw) == 0 {
				// The result pipe closed empty: the process is dying.
				select {
				case waitErr = <-exited:
					ended = true
				case <-timer.C:
					timedOut = true
				}
				break wait
			}
			select {
			case <-outputDone:
				break wait
			case waitErr = <-exited:
				ended = true
				break wait
			case <-timer.C:
				timedOut = true
				break wait
			}
		case waitErr = <-exited:
			ended = true
			break wait
		case <-timer.C:
			timedOut = true
			break wait
		}
	}
	elapsed := time.Since(start)
	// End the process and anything it started.
	p.kill()
	select {
	case <-outputDone:
	case <-time.After(2 * time.Second):
	}
	if !gotRaw {
		select {
		case raw = <-resultCh:
		case <-time.After(time.Second):
		}
	}
	// A process that reported needs no waiting for: the VM ends with the job.
	if !ended && (len(raw) == 0 || timedOut) {
		select {
		case waitErr = <-exited:
			ended = true
		case <-time.After(time.Second):
		}
	}
	select {
	case <-writeErr:
	case <-time.After(100 * time.Millisecond):
	}

	mu.Lock()
	res := protocol.Result{OutputBytes: total, RunMillis: float64(elapsed.Microseconds()) / 1000}
	wasCapped := capped
	mu.Unlock()
	oomKilled := func() bool { return oomKills() > p.oomsBefore }
	return classify(res, raw, ended, waitErr, timedOut, wasCapped, oomKilled, wall)
}

// oomKills reads the kernel's count of processes the OOM killer has ended.
func oomKills() int64 {
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// classify decides a run's reason from the harness's report and how the
// process ended. Limits the agent enforced take precedence over what the
// (possibly killed) process managed to report. A process that ended itself
// without a result (os.exit, a signal it sent itself, a fault through the
// FFI) is the user's doing: reason exit, never crash.
//
// ended says whether the process was seen to end, waitErr how it did.
// oomKilled is asked only when the process died without a report.
func classify(res protocol.Result, raw []byte, ended bool, waitErr error, timedOut, capped bool, oomKilled func() bool, wall time.Duration) protocol.Result {
	var hr harnessResult
	parsed := len(raw) > 0 && json.Unmarshal(raw, &hr) == nil
	var signal syscall.Signal = -1
	code := -1
	var exitErr *exec.ExitError
	switch {
	case !ended:
	case waitErr == nil:
		code = 0
	case errors.As(waitErr, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				signal = ws.Signal()
			case ws.Exited():
				code = ws.ExitStatus()
			}
		}
	}
	switch {
	case capped:
		res.Reason = protocol.ReasonOutputCap
		res.Error = "output exceeded the cap"
	case timedOut:
		res.Reason = protocol.ReasonTimeout
		res.Error = fmt.Sprintf("run exceeded its wall-clock limit of %s", wall)
	case signal == syscall.SIGXCPU:
		res.Reason = protocol.ReasonTimeout
		res.Error = "run exceeded its CPU time limit"
	case parsed && hr.OK:
		res.Reason = protocol.ReasonOK
		res.Value = hr.Result
	case parsed && hr.Reason == string(protocol.ReasonMemory):
		res.Reason = protocol.ReasonMemory
		res.Error, res.Traceback = hr.Error, hr.Traceback
	case parsed:
		res.Reason = protocol.ReasonError
		res.Error, res.Traceback = hr.Error, hr.Traceback
	case oomKilled():
		res.Reason = protocol.ReasonMemory
		res.Error = "the guest ran out of memory and the kernel ended the Lua process"
	case len(raw) > 0:
		// Only user code can spoil the harness's report (by writing to
		// its descriptor).
		res.Reason = protocol.ReasonError
		res.Error = "the Lua process wrote a malformed result"
	case signal > 0:
		res.Reason = protocol.ReasonExit
		res.Error = fmt.Sprintf("the Lua process ended without a result: signal %s", signal)
	case code >= 0:
		res.Reason = protocol.ReasonExit
		res.Error = fmt.Sprintf("the Lua process ended without a result: exit code %d", code)
	default:
		// The agent could not tell how the process ended: its own failure.
		res.Reason = protocol.ReasonCrash
		res.Error = "the Lua process ended without a result"
		if waitErr != nil {
			res.Error += ": " + waitErr.Error()
		}
	}
	return res
}

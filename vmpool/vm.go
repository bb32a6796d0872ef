package vmpool

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/jobspec"
)

// VM is one QEMU microVM, used for exactly one job and then destroyed.
type VM struct {
	id      string
	dir     string
	private *vmDir // dir, and the uid QEMU runs as
	cmd     *exec.Cmd
	conn    net.Conn
	r       *bufio.Reader
	token   string
	stderr  *tailBuffer
	exited  chan struct{}
	exitErr error
	// Ready is when the VM finished its handshake and could take a job.
	Ready time.Time
	// Created is how long booting or restoring the VM took.
	Created time.Duration
	// Restored says the VM is a snapshot clone rather than a cold boot.
	Restored bool
	// Accel is the accelerator the VM runs under, when its creator set it.
	Accel Accel

	closeOnce sync.Once
	used      bool
	onClose   func()

	qmpMu  sync.Mutex
	qmp    *qmpClient // kept open from the restore, or dialled by pause
	paused bool       // the vCPUs are stopped (QMP stop) until resume
}

// ID names the VM in logs.
func (vm *VM) ID() string { return vm.id }

// Pid is the QEMU process id.
func (vm *VM) Pid() int { return vm.cmd.Process.Pid }

// ErrVMExited is wrapped by errors caused by QEMU ending unexpectedly.
var ErrVMExited = errors.New("qemu exited")

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// launch starts QEMU with the machine's arguments plus extra ones and
// accepts its control connection. The returned VM has not handshaken yet.
func launch(ctx context.Context, m *Machine, memBackend string, extra []string, files []*os.File) (*VM, error) {
	id := randomHex(6)
	pd, err := m.privateDir(id)
	if err != nil {
		return nil, err
	}
	dir := pd.path
	vm := &VM{id: id, dir: dir, private: pd, stderr: newTailBuffer(8 << 10), exited: make(chan struct{})}
	sock := filepath.Join(dir, "ctl.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		pd.close()
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	defer ln.Close()
	if err := pd.handOver("ctl.sock"); err != nil {
		pd.close()
		return nil, err
	}

	args := append(m.args(dir, memBackend), extra...)
	cmd := exec.Command(m.QEMU, args...)
	cmd.Stdin = nil
	cmd.Env = qemuEnv()
	cmd.Stdout = vm.stderr
	cmd.Stderr = vm.stderr
	cmd.ExtraFiles = files
	cmd.SysProcAttr = pd.sysProcAttr()
	if err := hugePageGuard.without(cmd.Start); err != nil {
		pd.close()
		return nil, fmt.Errorf("start %s: %w", m.QEMU, err)
	}
	vm.cmd = cmd
	go func() {
		vm.exitErr = cmd.Wait()
		close(vm.exited)
	}()

	type accepted struct {
		c   net.Conn
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		acc <- accepted{c, err}
	}()
	select {
	case a := <-acc:
		if a.err != nil {
			vm.Close()
			return nil, fmt.Errorf("accept control connection: %w", a.err)
		}
		vm.conn = a.c
	case <-vm.exited:
		vm.Close()
		return nil, fmt.Errorf("%w before connecting: %v: %s", ErrVMExited, vm.exitErr, vm.stderr.String())
	case <-ctx.Done():
		vm.Close()
		return nil, fmt.Errorf("qemu did not connect: %w", ctx.Err())
	}
	vm.r = bufio.NewReaderSize(vm.conn, 64<<10)
	// Reads must stop when QEMU dies, whatever the guest was doing.
	go func() {
		<-vm.exited
		vm.conn.Close()
	}()
	return vm, nil
}

// withDeadline makes the connection honour ctx for the duration of fn:
// when ctx ends, pending reads and writes fail at once, and the error says
// it was ctx (checked after the fact, so a deadline is never mistaken for a
// broken VM).
func (vm *VM) withDeadline(ctx context.Context, fn func() error) error {
	stop := context.AfterFunc(ctx, func() { _ = vm.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_ = vm.conn.SetDeadline(time.Time{})
	err := fn()
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	select {
	case <-vm.exited:
		if err != nil {
			return fmt.Errorf("%w: %v: %s", ErrVMExited, vm.exitErr, vm.stderr.String())
		}
	default:
	}
	return err
}

// readFrame reads the next frame; an Error frame from the agent becomes an error.
func (vm *VM) readFrame(limit int) (protocol.FrameType, []byte, error) {
	t, payload, err := protocol.ReadFrame(vm.r, limit)
	if err != nil {
		return 0, nil, err
	}
	if t == protocol.FrameError {
		var m protocol.ErrorMessage
		_ = json.Unmarshal(payload, &m)
		return t, nil, fmt.Errorf("guest agent: %s", m.Message)
	}
	return t, payload, nil
}

// awaitHello waits for a freshly booted agent's Hello.
func (vm *VM) awaitHello(ctx context.Context) (protocol.Hello, error) {
	var h protocol.Hello
	err := vm.withDeadline(ctx, func() error {
		t, payload, err := vm.readFrame(protocol.MaxControlFrame)
		if err != nil {
			return fmt.Errorf("wait for agent: %w", err)
		}
		if t != protocol.FrameHello {
			return fmt.Errorf("wait for agent: got a %s frame", t)
		}
		if err := json.Unmarshal(payload, &h); err != nil {
			return fmt.Errorf("decode hello: %w", err)
		}
		if h.Version != protocol.Version {
			return fmt.Errorf("agent speaks protocol %d, host speaks %d: rebuild the image", h.Version, protocol.Version)
		}
		return nil
	})
	return h, err
}

// handshake gives the agent its token, fresh entropy and the time, and
// checks the token comes back.
func (vm *VM) handshake(ctx context.Context) error {
	vm.token = randomHex(24)
	entropy := make([]byte, 64)
	if _, err := rand.Read(entropy); err != nil {
		return fmt.Errorf("entropy: %w", err)
	}
	return vm.withDeadline(ctx, func() error {
		hs := protocol.Handshake{Version: protocol.Version, Token: vm.token, Entropy: entropy, UnixNanos: time.Now().UnixNano()}
		if err := protocol.WriteJSON(vm.conn, protocol.FrameHandshake, hs); err != nil {
			return err
		}
		t, payload, err := vm.readFrame(protocol.MaxControlFrame)
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		var ready protocol.Ready
		if t != protocol.FrameReady || json.Unmarshal(payload, &ready) != nil {
			return fmt.Errorf("handshake: unexpected %s frame", t)
		}
		if subtle.ConstantTimeCompare([]byte(ready.Token), []byte(vm.token)) != 1 {
			return errors.New("handshake: the agent answered with the wrong token")
		}
		vm.Ready = time.Now()
		return nil
	})
}

// jobEntropyBytes is how much fresh entropy the host sends with each job.
const jobEntropyBytes = 32

// freshEntropy returns jobEntropyBytes random bytes for the guest's pool.
func freshEntropy() ([]byte, error) {
	b := make([]byte, jobEntropyBytes)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("entropy: %w", err)
	}
	return b, nil
}

// Warm has the agent run a throwaway job in a throwaway Lua process, so
// that the real job finds the guest's code paths already translated (TCG)
// and cached. It costs about one job's time, spent before the VM is handed out.
// The warm-up gets entropy and the time like a real job, so that the agent
// runs the same code for them too.
func (vm *VM) Warm(ctx context.Context) error {
	entropy, err := freshEntropy()
	if err != nil {
		return err
	}
	return vm.withDeadline(ctx, func() error {
		w := protocol.Warm{Entropy: entropy, UnixNanos: time.Now().UnixNano()}
		if err := protocol.WriteJSON(vm.conn, protocol.FrameWarm, w); err != nil {
			return err
		}
		t, _, err := vm.readFrame(protocol.MaxControlFrame)
		if err != nil {
			return fmt.Errorf("warm: %w", err)
		}
		if t != protocol.FrameWarmed {
			return fmt.Errorf("warm: unexpected %s frame", t)
		}
		return nil
	})
}

// Job is what a VM runs: Lua source or a module, args and packages.
type Job struct {
	Source  string
	Require string
	Args    []json.RawMessage
	// Packages are zips by name (the zip's stem).
	Packages []jobspec.Package
	Limits   protocol.Limits
	// Runtime names the Lua interpreter: "" or "luajit" (the default), or
	// "lua5.4" (see protocol.Job).
	Runtime string
}

// encode builds the Job frame payload, with the fields set in base (the
// session settings), a fresh seed, fresh entropy and the host's time, which
// the agent sets the guest's clock to before user code runs. Call it just
// before sending the frame.
func (job Job) encode(base protocol.Job) ([]byte, error) {
	spec := base
	spec.Source, spec.Require, spec.Args, spec.Limits = job.Source, job.Require, job.Args, job.Limits
	spec.Runtime = job.Runtime
	spec.Seed = int64(randomUint64() >> 1)
	entropy, err := freshEntropy()
	if err != nil {
		return nil, err
	}
	spec.Entropy = entropy
	spec.UnixNanos = time.Now().UnixNano()
	zips := make([][]byte, len(job.Packages))
	for i, p := range job.Packages {
		spec.Packages = append(spec.Packages, protocol.PackageHeader{Name: p.Name})
		zips[i] = p.Data
	}
	return protocol.EncodeJob(spec, zips)
}

// Result is how a job ended, with its captured output.
type Result struct {
	Reason      protocol.Reason `json:"reason"`
	Value       json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	Traceback   string          `json:"traceback,omitempty"`
	Stdout      string          `json:"stdout"`
	Stderr      string          `json:"stderr"`
	OutputBytes int64           `json:"output_bytes"`
	// Delivered says the guest has the job: the whole job frame reached
	// its channel. A run that ends after that is the user's (and charged,
	// whatever its reason); one that ends before it never ran.
	Delivered bool `json:"-"`
	// Timings in milliseconds: unpacking and running in the guest, the
	// agent's whole handling of the job, and the host's round trip.
	UnpackMillis float64 `json:"unpack_ms"`
	RunMillis    float64 `json:"run_ms"`
	AgentMillis  float64 `json:"agent_ms"`
	TotalMillis  float64 `json:"total_ms"`
}

// OutputFunc receives output as the guest produces it, already cut at the cap.
type OutputFunc func(stream protocol.Stream, data []byte)

// hostMargin is how long past the job's wall-clock limit the host waits for
// the agent's own verdict before ending QEMU itself.
const hostMargin = 2 * time.Second

// Run sends the job and waits for its result. It enforces the wall-clock
// limit and the output cap from outside the guest: a VM that overruns is
// ended. A VM runs one job only; Run closes it in the background when
// done (Exited tells when QEMU has ended).
func (vm *VM) Run(ctx context.Context, job Job, onOutput OutputFunc) (*Result, error) {
	// Ending QEMU takes a few milliseconds: do it off the caller's path.
	defer func() { go vm.Close() }()
	if vm.used {
		return nil, errors.New("vm already used")
	}
	vm.used = true
	start := time.Now()
	payload, err := job.encode(protocol.Job{})
	if err != nil {
		return nil, err
	}
	wall := time.Duration(job.Limits.WallMillis) * time.Millisecond
	runCtx := ctx
	if wall > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, wall+hostMargin)
		defer cancel()
	}
	var stdout, stderr strings.Builder
	var seen int64
	capHit := false
	var agentRes protocol.Result
	delivered := false
	frameLimit := jobFrameLimit(job.Limits)
	err = vm.withDeadline(runCtx, func() error {
		if err := protocol.WriteFrame(vm.conn, protocol.FrameJob, payload); err != nil {
			return err
		}
		delivered = true
		for {
			t, payload, err := vm.readFrame(frameLimit)
			if err != nil {
				return err
			}
			switch t {
			case protocol.FrameOutput:
				if len(payload) < 1 {
					return errors.New("empty output frame")
				}
				data := payload[1:]
				if c := job.Limits.OutputBytes; c > 0 && seen+int64(len(data)) > c {
					data = data[:max(0, c-seen)]
					capHit = true
				}
				seen += int64(len(data))
				if protocol.Stream(payload[0]) == protocol.Stderr {
					stderr.Write(data)
				} else {
					stdout.Write(data)
				}
				if onOutput != nil && len(data) > 0 {
					onOutput(protocol.Stream(payload[0]), data)
				}
				if capHit {
					return nil
				}
			case protocol.FrameResult:
				if err := json.Unmarshal(payload, &agentRes); err != nil {
					return fmt.Errorf("decode result: %w", err)
				}
				if subtle.ConstantTimeCompare([]byte(agentRes.Token), []byte(vm.token)) != 1 {
					return errors.New("result carries the wrong token")
				}
				return nil
			default:
				return fmt.Errorf("unexpected %s frame during a job", t)
			}
		}
	})
	res := &Result{Stdout: stdout.String(), Stderr: stderr.String(), OutputBytes: seen, Delivered: delivered}
	res.TotalMillis = float64(time.Since(start).Microseconds()) / 1000
	switch {
	case capHit:
		res.Reason = protocol.ReasonOutputCap
		res.Error = fmt.Sprintf("output exceeded the cap of %d bytes", job.Limits.OutputBytes)
	case err == nil:
		res.Reason = agentRes.Reason
		res.Value = agentRes.Value
		res.Error = agentRes.Error
		res.Traceback = agentRes.Traceback
		res.UnpackMillis = agentRes.UnpackMillis
		res.RunMillis = agentRes.RunMillis
		res.AgentMillis = agentRes.AgentMillis
		if agentRes.OutputBytes > res.OutputBytes {
			res.OutputBytes = agentRes.OutputBytes
		}
		capResult(res, job.Limits.OutputBytes)
	case runCtx.Err() != nil && ctx.Err() == nil:
		res.Reason = protocol.ReasonTimeout
		res.Error = fmt.Sprintf("run exceeded its wall-clock limit of %s; the VM was ended", wall)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("run: %w", ctx.Err())
	default:
		res.Reason = protocol.ReasonCrash
		res.Error = "the VM ended during the run: " + err.Error()
	}
	return res, nil
}

// jobFrameLimit bounds the frames the host accepts from a guest during a
// job: output comes in chunks far below it, and the result frame holds at
// most a result, an error and a traceback each within the output cap (plus
// their JSON escaping), so a guest cannot make the host buffer more.
func jobFrameLimit(l protocol.Limits) int {
	c := max(l.OutputBytes, l.ResultBytes, 64<<10)
	return int(min(8*c+64<<10, protocol.MaxFrame))
}

// capResult holds what the guest reported to the output cap: the host does
// not trust the guest to have done it. A result over the cap is refused as
// output_cap; an error or traceback over it is cut. A reason the protocol
// does not know is the VM's failure.
func capResult(res *Result, outputCap int64) {
	if !res.Reason.Valid() {
		res.Reason, res.Value = protocol.ReasonCrash, nil
		res.Error, res.Traceback = "the guest reported an unknown reason", ""
		return
	}
	if outputCap <= 0 {
		return
	}
	if int64(len(res.Value)) > outputCap {
		res.Reason, res.Value = protocol.ReasonOutputCap, nil
		res.Error = fmt.Sprintf("the result is larger than the output cap of %d bytes", outputCap)
	}
	res.Error = cutUTF8(res.Error, outputCap)
	res.Traceback = cutUTF8(res.Traceback, outputCap)
}

// cutUTF8 shortens s to at most n bytes without splitting a character.
func cutUTF8(s string, n int64) string {
	if int64(len(s)) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// pause stops the VM's vCPUs and its virtual clock (QMP stop), so that a
// VM waiting in the pool costs no CPU: under TCG an idle guest's timer
// ticks are emulated, and they are most of what an idle VM costs. The
// guest notices nothing but time standing still, and the agent sets the
// clock from each job. resume undoes it.
func (vm *VM) pause(ctx context.Context) error {
	vm.qmpMu.Lock()
	defer vm.qmpMu.Unlock()
	if vm.paused {
		return nil
	}
	if vm.qmp == nil {
		q, err := dialQMP(ctx, filepath.Join(vm.dir, "qmp.sock"))
		if err != nil {
			return fmt.Errorf("pause: %w", err)
		}
		vm.qmp = q
	}
	if _, err := vm.qmp.execute(ctx, "stop", nil); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	vm.paused = true
	return nil
}

// The settling of a guest before it is paused: it counts as idle once its
// QEMU ran or waited to run for less than settleQuiet over settleWindow,
// and is paused anyway after settleLongest.
const (
	settleWindow  = 10 * time.Millisecond
	settleQuiet   = time.Millisecond
	settleLongest = 500 * time.Millisecond
)

// settle waits until the guest has finished what its warm-up (or
// handshake) left running, such as the throwaway Lua process's exit: about
// 20-30 ms of emulated work. Paused before that, the guest would do it
// after resuming, during the job (measured: 26 ms of CPU for the run of
// `return 2 + 2` instead of 12). QEMU's threads count as busy while they
// run and while they wait for a CPU, so a busy host does not pass for an
// idle guest.
func (vm *VM) settle(ctx context.Context) error {
	pid := vm.Pid()
	prev, err := busyTime(pid)
	if err != nil {
		return fmt.Errorf("settle: %w", err)
	}
	deadline := time.Now().Add(settleLongest)
	tick := time.NewTicker(settleWindow)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("settle: %w", ctx.Err())
		case <-vm.exited:
			return fmt.Errorf("settle: %w: %v: %s", ErrVMExited, vm.exitErr, vm.stderr.String())
		case now := <-tick.C:
			cur, err := busyTime(pid)
			if err != nil {
				return fmt.Errorf("settle: %w", err)
			}
			if cur-prev < settleQuiet || now.After(deadline) {
				return nil
			}
			prev = cur
		}
	}
}

// busyTime is how long the threads of process pid have run plus waited
// to run, from their /proc schedstat.
func busyTime(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read QEMU's threads: %w", err)
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return 0, fmt.Errorf("%s/%s/schedstat: %q", dir, t.Name(), b)
		}
		for _, v := range f[:2] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s/%s/schedstat: %w", dir, t.Name(), err)
			}
			sum += time.Duration(n)
		}
	}
	return sum, nil
}

// resume restarts a paused VM's vCPUs (QMP cont); it does nothing to a VM
// that is not paused. The QMP connection stays open for the VM's life, so
// resuming is one round trip to QEMU's main loop.
func (vm *VM) resume(ctx context.Context) error {
	vm.qmpMu.Lock()
	defer vm.qmpMu.Unlock()
	if !vm.paused {
		return nil
	}
	if _, err := vm.qmp.execute(ctx, "cont", nil); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	vm.paused = false
	return nil
}

// Close ends QEMU and removes the VM's private directory. It is safe to
// call more than once.
func (vm *VM) Close() error {
	vm.closeOnce.Do(func() {
		if vm.conn != nil {
			vm.conn.Close()
		}
		if vm.cmd != nil && vm.cmd.Process != nil {
			_ = vm.cmd.Process.Signal(syscall.SIGKILL)
			<-vm.exited
		}
		// After QEMU's end, so that a pause or resume waiting on a hung
		// QEMU has returned and released the lock.
		vm.qmpMu.Lock()
		if vm.qmp != nil {
			vm.qmp.close()
		}
		vm.qmpMu.Unlock()
		vm.private.close() // removes dir, then frees QEMU's uid
		if vm.onClose != nil {
			vm.onClose()
		}
	})
	return nil
}

// Exited is closed when QEMU has ended.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// StderrTail returns the end of QEMU's stderr, for diagnostics.
func (vm *VM) StderrTail() string { return vm.stderr.String() }

// consoleTail returns the end of the guest's serial console log.
func (vm *VM) consoleTail() string {
	return vm.private.tail("console.log", 4096)
}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// tailBuffer keeps the last n bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	n   int
	buf []byte
}

func newTailBuffer(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.n:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

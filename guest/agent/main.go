//go:build linux

// Command agent is the guest's /init. It prepares the VM, starts LuaJIT
// (and Lua 5.4, for jobs of that runtime) under an unprivileged uid in a
// sandbox, and serves exactly one job from the host over the virtio-serial
// control port (see package protocol), then powers off.
//
// User code never holds the control port: only this process opens it, the
// device node is root-only, and the Lua process runs as another uid. The
// Lua process also runs with no_new_privs, a seccomp filter and rlimits,
// set by this same binary started again as the sandbox (see sandbox.go),
// and nothing in the guest may create a user namespace.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/guest/unpack"
)

// jobTmpfsBytes bounds the /job tmpfs; package limits are checked inside it.
const jobTmpfsBytes = 256 << 20

func main() {
	if sandboxInvoked(os.Args) {
		sandboxMain(os.Args)
		return
	}
	if err := serve(); err != nil {
		fmt.Fprintln(os.Stderr, "lualambda agent:", err)
	}
	powerOff()
}

// conn is the control port with serialised writes: output pumps and the
// main flow both write frames.
type conn struct {
	mu sync.Mutex
	f  *os.File
	r  *bufio.Reader
}

func (c *conn) write(t protocol.FrameType, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return protocol.WriteFrame(c.f, t, payload)
}

func (c *conn) writeJSON(t protocol.FrameType, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", t, err)
	}
	return c.write(t, b)
}

// expect reads the next frame and requires it to be of type want.
func (c *conn) expect(want protocol.FrameType, limit int) ([]byte, error) {
	t, payload, err := protocol.ReadFrame(c.r, limit)
	if err != nil {
		return nil, err
	}
	if t != want {
		return nil, fmt.Errorf("expected a %s frame, got %s", want, t)
	}
	return payload, nil
}

// fail reports a fatal error to the host before the agent powers off.
func (c *conn) fail(err error) error {
	_ = c.writeJSON(protocol.FrameError, protocol.ErrorMessage{Message: err.Error()})
	return err
}

func serve() error {
	if err := mountAll(jobTmpfsBytes); err != nil {
		return err
	}
	// The initramfs has no /dev/console node; now devtmpfs does.
	if con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		os.Stderr = con
	}
	if err := loadModules(); err != nil {
		return err
	}
	dev, err := findPort(10 * time.Second)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open control port: %w", err)
	}
	if err := os.Chmod(dev, 0o600); err != nil {
		return fmt.Errorf("restrict control port: %w", err)
	}
	c := &conn{f: f, r: bufio.NewReaderSize(f, 64<<10)}

	// The package directory stays root's; the rest of /job is the user's
	// scratch space.
	if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		return c.fail(fmt.Errorf("create package dir: %w", err))
	}
	if err := os.Chown(jobDir, userID, userID); err != nil {
		return c.fail(fmt.Errorf("give /job to the user: %w", err))
	}
	// Nothing in the guest needs a user namespace; user code must not make
	// one (set before the snapshot, so every clone has it).
	if err := disableUserNamespaces(); err != nil {
		return c.fail(err)
	}
	// Both Lua processes get the same address-space layout, so that code the
	// warm-up translates (TCG) is found again at the same addresses when the
	// job runs.
	if err := sameLayout(); err != nil {
		return c.fail(err)
	}
	lua, err := startLua()
	if err != nil {
		return c.fail(err)
	}
	// The warm-up's process is started now too, so that a snapshot clone
	// warms up without spawning a process and loading LuaJIT.
	warmer, err := startLua()
	if err != nil {
		lua.kill()
		return c.fail(err)
	}
	// A Lua 5.4 process waits too, for jobs of that runtime; whichever of
	// the two a job does not use is ended when it arrives.
	lua54, err := startHarness(lua54Binary)
	if err != nil {
		lua.kill()
		warmer.kill()
		return c.fail(err)
	}
	// A snapshot is taken right after Hello: let the processes finish
	// loading first, or every clone would finish it again, untranslated.
	lua.awaitIdle(idleTimeout)
	warmer.awaitIdle(idleTimeout)
	lua54.awaitIdle(idleTimeout)
	primeCodecs()
	if err := c.writeJSON(protocol.FrameHello, protocol.Hello{Version: protocol.Version, BootMillis: bootMillis()}); err != nil {
		return err
	}

	// A snapshot clone resumes here, waiting for its own handshake.
	payload, err := c.expect(protocol.FrameHandshake, protocol.MaxControlFrame)
	if err != nil {
		return c.fail(err)
	}
	var hs protocol.Handshake
	if err := json.Unmarshal(payload, &hs); err != nil {
		return c.fail(fmt.Errorf("decode handshake: %w", err))
	}
	if hs.Version != protocol.Version {
		return c.fail(fmt.Errorf("host speaks protocol %d, agent speaks %d", hs.Version, protocol.Version))
	}
	if err := refresh(hs.Entropy, hs.UnixNanos); err != nil {
		return c.fail(err)
	}
	if err := c.writeJSON(protocol.FrameReady, protocol.Ready{Token: hs.Token}); err != nil {
		return err
	}

	for {
		t, p, err := protocol.ReadFrame(c.r, protocol.MaxFrame)
		if err != nil {
			return c.fail(err)
		}
		if t == protocol.FrameJob {
			payload = p
			break
		}
		if t != protocol.FrameWarm {
			return c.fail(fmt.Errorf("expected a job, got a %s frame", t))
		}
		var w protocol.Warm
		if len(p) > 0 {
			if err := json.Unmarshal(p, &w); err != nil {
				return c.fail(fmt.Errorf("decode warm: %w", err))
			}
		}
		warm(warmer, w)
		warmer = nil
		if err := c.write(protocol.FrameWarmed, nil); err != nil {
			return err
		}
	}
	arrived := time.Now()
	if warmer != nil {
		warmer.kill()
	}
	job, zips, err := protocol.DecodeJob(payload)
	if err != nil {
		lua.kill()
		lua54.kill()
		return c.fail(err)
	}
	// The job runs in the process of its runtime; the other one ends
	// before user code runs.
	if _, err := binaryFor(job.Runtime); err != nil {
		lua.kill()
		lua54.kill()
		res := protocol.Result{Reason: protocol.ReasonError, Error: err.Error(), Token: hs.Token}
		return c.writeJSON(protocol.FrameResult, res)
	}
	if job.Runtime == protocol.RuntimeLua54 {
		lua.kill()
		lua = lua54
	} else {
		lua54.kill()
	}
	// The VM may have waited long in the pool since its handshake: take
	// the host's entropy and time again before user code runs.
	if err := refresh(job.Entropy, job.UnixNanos); err != nil {
		return c.fail(err)
	}
	res := runJob(c, lua, job, zips)
	res.Token = hs.Token
	res.AgentMillis = float64(time.Since(arrived).Microseconds()) / 1000
	return c.writeJSON(protocol.FrameResult, res)
}

// refresh mixes host entropy into the kernel's pool (reseeding it) and sets
// the clock to the host's time. The handshake and every job call it.
func refresh(entropy []byte, unixNanos int64) error {
	if err := addEntropy(entropy); err != nil {
		return err
	}
	return setClock(unixNanos)
}

// warmJob exercises what a real job does: decoding, compiling, printing,
// tables, strings, every limit, encoding the result, and a loop hot enough
// for LuaJIT's trace compiler, so that under TCG a user's first hot loop
// does not pay for translating the compiler (about 20 ms).
var warmJob = protocol.Job{
	Source: `local t = {} for i = 1, 3 do t[i] = {i, tostring(i) .. "x"} end
print("warm") io.stderr:write("warm\n")
return function(args) return {n = #t, s = string.format("%d", #t), a = args[1]} end`,
	Args: []json.RawMessage{json.RawMessage(`"warm"`)},
	Seed: 1,
	Limits: protocol.Limits{WallMillis: 5000, CPUSeconds: 5, MemoryBytes: 256 << 20,
		OutputBytes: 1 << 10, ResultBytes: 1 << 10},
}

// warm runs warmJob in p, a throwaway Lua process, or in a new one when p
// is nil, after taking w's entropy and time the way a real job does. Under
// TCG every code path is slow the first time it runs, and a restored
// snapshot starts with none translated; this moves that cost off the
// request path. The job goes through the same decoding and its result
// through the same encoding as a real one (the JSON codecs build their
// per-type state on first use). The process and its output are discarded;
// the real Lua process is untouched.
func warm(p *luaProc, w protocol.Warm) {
	if p == nil {
		var err error
		if p, err = startLua(); err != nil {
			return
		}
	}
	job := warmJob
	job.Entropy, job.UnixNanos = w.Entropy, w.UnixNanos
	if payload, err := protocol.EncodeJob(job, nil); err == nil {
		if decoded, _, err := protocol.DecodeJob(payload); err == nil {
			job = decoded
		}
	}
	// A failure here would fail the real job the same way, and be reported then.
	_ = refresh(job.Entropy, job.UnixNanos)
	res := p.run(job, func(protocol.Stream, []byte) error { return nil })
	res.Token = "warm"
	_, _ = json.Marshal(res)
}

// primeCodecs has encoding/json build its per-type state (found by
// reflection on first use) for every message the agent decodes or encodes
// after Hello. Built before the snapshot, that state is in the template's
// memory, and no clone spends its handshake and warm-up building it again
// through untranslated code (TCG).
func primeCodecs() {
	if b, err := json.Marshal(protocol.Handshake{Token: "t", Entropy: []byte{0}}); err == nil {
		var hs protocol.Handshake
		_ = json.Unmarshal(b, &hs)
	}
	_, _ = json.Marshal(protocol.Ready{})
	if b, err := json.Marshal(protocol.Warm{Entropy: []byte{0}, UnixNanos: 1}); err == nil {
		var w protocol.Warm
		_ = json.Unmarshal(b, &w)
	}
	primed := warmJob
	primed.Entropy, primed.UnixNanos = []byte{0}, 1
	if payload, err := protocol.EncodeJob(primed, nil); err == nil {
		_, _, _ = protocol.DecodeJob(payload)
	}
	_, _ = json.Marshal(harnessJob{})
	var hr harnessResult
	_ = json.Unmarshal([]byte(`{"ok":true,"result":1,"reason":"ok","error":"","traceback":""}`), &hr)
	_, _ = json.Marshal(protocol.Result{})
}

// runJob unpacks the packages and runs the job. Bad packages are the
// caller's error, reported as reason error without running anything.
func runJob(c *conn, lua *luaProc, job protocol.Job, zips [][]byte) protocol.Result {
	start := time.Now()
	u := unpack.New(pkgDir, unpack.Limits{Bytes: job.Limits.PackageBytes, Files: job.Limits.PackageFiles})
	for i, p := range job.Packages {
		if err := u.Unpack(p.Name, zips[i]); err != nil {
			lua.kill()
			return protocol.Result{Reason: protocol.ReasonError, Error: err.Error()}
		}
	}
	unpackMillis := float64(time.Since(start).Microseconds()) / 1000
	if job.Session {
		lua.kill()
		res := runSession(c, job)
		res.UnpackMillis = unpackMillis
		return res
	}
	res := lua.run(job, func(s protocol.Stream, b []byte) error {
		payload := make([]byte, 1+len(b))
		payload[0] = byte(s)
		copy(payload[1:], b)
		return c.write(protocol.FrameOutput, payload)
	})
	res.UnpackMillis = unpackMillis
	return res
}

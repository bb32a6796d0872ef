package vmpool_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/jobspec"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// runtimeDir holds every VM of this test binary, so leftovers can be found.
var runtimeDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmpool-test-")
	if err != nil {
		panic(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil { // QEMU runs as nobody
		panic(err)
	}
	runtimeDir = dir
	code := m.Run()
	if tpl != nil {
		tpl.Remove()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// testMemoryMiB is the VM size of the tests: 64 MiB for Lua plus the
// guest's overhead.
const testMemoryMiB = 64 + 96

func machine(t testing.TB) vmpool.Machine {
	m := vmpool.Machine{Image: testenv.Image(t), Accel: vmpool.AccelTCG, MemoryMiB: testMemoryMiB, RuntimeDir: runtimeDir}
	// LUALAMBDA_TEST_TCG_CACHE_MIB sets the translation cache, for comparing
	// sizes with the benchmarks.
	if s := os.Getenv("LUALAMBDA_TEST_TCG_CACHE_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("LUALAMBDA_TEST_TCG_CACHE_MIB=%q: want a positive number", s)
		}
		m.TCGCacheMiB = n
	}
	return m
}

var (
	tplOnce sync.Once
	tpl     *vmpool.Template
	tplErr  error
)

// clone returns a fresh, warmed VM restored from a template shared by the
// tests of this package.
func clone(t testing.TB) *vmpool.VM {
	t.Helper()
	m := machine(t)
	tplOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tpl, tplErr = vmpool.MakeTemplate(ctx, m, fmt.Sprintf("%s/template", runtimeDir))
	})
	if tplErr != nil {
		t.Fatalf("template: %v", tplErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vm, err := tpl.Clone(ctx)
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	if err := vm.Warm(ctx); err != nil {
		t.Fatalf("warm: %v", err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

// run runs a job on a fresh VM with the test profile's limits.
func run(t testing.TB, job vmpool.Job) *vmpool.Result {
	t.Helper()
	if job.Limits == (protocol.Limits{}) {
		job.Limits = vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 64<<10)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := clone(t).Run(ctx, job, nil)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return res
}

func args(vals ...string) []json.RawMessage {
	var out []json.RawMessage
	for _, v := range vals {
		out = append(out, jobspec.ParseArg(v))
	}
	return out
}

func TestLuaForms(t *testing.T) {
	blah, err := jobspec.LoadPackage(testenv.Root() + "/testdata/packages/blah")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := []jobspec.Package{blah}
	cases := []struct {
		name string
		job  vmpool.Job
		want string
	}{
		{"return", vmpool.Job{Source: "return 2 + 2"}, "4"},
		{"bare expression", vmpool.Job{Source: "2 + 2"}, "4"},
		{"table", vmpool.Job{Source: `return {hello = "world"}`}, `{"hello":"world"}`},
		{"function", vmpool.Job{Source: `return function(args) return "hi " .. args[1] end`, Args: args("Algorand")}, `"hi Algorand"`},
		{"nested module", vmpool.Job{Require: "blah.dorp", Packages: pkgs, Args: args(`{"n": 3}`)}, `{"greeting":"hello dorp","squares":[1,4,9]}`},
		{"package init", vmpool.Job{Require: "blah", Packages: pkgs, Args: args("you")}, `{"greeting":"hello you"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := run(t, c.job)
			if res.Reason != protocol.ReasonOK || string(res.Value) != c.want {
				t.Fatalf("got reason %s value %s error %q, want %s", res.Reason, res.Value, res.Error, c.want)
			}
		})
	}
}

func TestPrintOutputReturned(t *testing.T) {
	res := run(t, vmpool.Job{Source: `print("hello") io.stderr:write("oops\n") return 1`})
	if res.Reason != protocol.ReasonOK || res.Stdout != "hello\n" || res.Stderr != "oops\n" {
		t.Fatalf("got %+v", res)
	}
}

func TestLuaError(t *testing.T) {
	res := run(t, vmpool.Job{Source: `error("boom")`})
	if res.Reason != protocol.ReasonError || res.Error != "input:1: boom" || !strings.Contains(res.Traceback, "stack traceback") {
		t.Fatalf("got %+v", res)
	}
}

func TestTimeout(t *testing.T) {
	limit := 2 * time.Second
	vm := clone(t)
	start := time.Now()
	res, err := vm.Run(context.Background(), vmpool.Job{Source: `while true do end`, Limits: vmpool.LimitsFor(testMemoryMiB, limit, 1<<10)}, nil)
	took := time.Since(start)
	if err != nil || res.Reason != protocol.ReasonTimeout {
		t.Fatalf("got %+v, %v", res, err)
	}
	// The run must end at its limit, not run on (the margin allows for a
	// busy machine; the job would otherwise loop for ever).
	if took > limit+10*time.Second {
		t.Fatalf("timeout took %s for a limit of %s", took, limit)
	}
}

func TestMemory(t *testing.T) {
	res := run(t, vmpool.Job{Source: `local s = string.rep("x", 1024 * 1024 * 1024) return #s`})
	if res.Reason != protocol.ReasonMemory {
		t.Fatalf("a 1 GiB allocation: got %+v", res)
	}
	res = run(t, vmpool.Job{Source: `local t = {} for i = 1, 1e9 do t[i] = i end return #t`})
	if res.Reason != protocol.ReasonMemory {
		t.Fatalf("a growing table: got %+v", res)
	}
}

func TestOutputCap(t *testing.T) {
	limits := vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1000)
	res := run(t, vmpool.Job{Source: `for i = 1, 100000 do print("line " .. i) end return 1`, Limits: limits})
	if res.Reason != protocol.ReasonOutputCap || len(res.Stdout) > 1000 || len(res.Stdout) < 900 {
		t.Fatalf("got reason %s with %d bytes of stdout", res.Reason, len(res.Stdout))
	}
}

// zipOf builds a zip from name → content; a name ending in "@" is a symlink.
func zipOf(t *testing.T, files map[string]string, method uint16) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range files {
		h := &zip.FileHeader{Name: strings.TrimSuffix(name, "@"), Method: method}
		if strings.HasSuffix(name, "@") {
			h.SetMode(os.ModeSymlink | 0o777)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBadPackages(t *testing.T) {
	bomb := zipOf(t, map[string]string{"bomb/init.lua": strings.Repeat("0", 80<<20)}, zip.Deflate)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"malformed", []byte("PK\x03\x04 this is not a zip"), "not a valid zip"},
		{"traversal", zipOf(t, map[string]string{"../evil.lua": "return 1"}, zip.Store), "path traversal"},
		{"symlink", zipOf(t, map[string]string{"p/link@": "/etc/passwd"}, zip.Store), "links are not allowed"},
		{"bomb", bomb, "package limit exceeded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := run(t, vmpool.Job{Require: "p", Packages: []jobspec.Package{{Name: "p", Data: c.data}}})
			if res.Reason != protocol.ReasonError || !strings.Contains(res.Error, c.want) {
				t.Fatalf("got %s: %q, want an error containing %q", res.Reason, res.Error, c.want)
			}
		})
	}
}

func TestIsolation(t *testing.T) {
	t.Run("control port", func(t *testing.T) {
		res := run(t, vmpool.Job{Source: `
			local out = {}
			for _, p in ipairs({"/dev/vport0p1", "/dev/vport1p1", "/dev/vport0p0"}) do
				local f, err = io.open(p, "r+")
				if f then f:close() out[#out + 1] = p .. ": opened" else out[#out + 1] = err end
			end
			return out`})
		if res.Reason != protocol.ReasonOK {
			t.Fatalf("got %+v", res)
		}
		var msgs []string
		_ = json.Unmarshal(res.Value, &msgs)
		denied := 0
		for _, m := range msgs {
			if strings.Contains(m, "opened") {
				t.Fatalf("user code opened the control port: %v", msgs)
			}
			if strings.Contains(m, "Permission denied") {
				denied++
			}
		}
		if denied == 0 {
			t.Fatalf("expected the control port to exist and be refused: %v", msgs)
		}
	})
	t.Run("network", func(t *testing.T) {
		res := run(t, vmpool.Job{Source: `
			local names = {}
			for line in io.lines("/proc/net/dev") do
				local name = line:match("^%s*([%w_.-]+):")
				if name then names[#names + 1] = name end
			end
			return names`})
		if res.Reason != protocol.ReasonOK || (string(res.Value) != `["lo"]` && string(res.Value) != `[]`) {
			t.Fatalf("interfaces: got %s %s", res.Value, res.Error)
		}
	})
	t.Run("user is unprivileged", func(t *testing.T) {
		res := run(t, vmpool.Job{Source: `
			local ffi = require("ffi")
			ffi.cdef("int getuid(void);")
			return ffi.C.getuid()`})
		if res.Reason != protocol.ReasonOK || string(res.Value) != "65534" {
			t.Fatalf("uid: got %s %s", res.Value, res.Error)
		}
	})
	t.Run("agent survives killing everything", func(t *testing.T) {
		res := run(t, vmpool.Job{Source: `
			local ffi = require("ffi")
			ffi.cdef("int kill(int pid, int sig);")
			ffi.C.kill(-1, 9) -- every other process of the user
			ffi.C.kill(0, 9)  -- and its own process group
			return "unreachable"`})
		if res.Reason != protocol.ReasonExit || !strings.Contains(res.Error, "signal killed") {
			t.Fatalf("got %+v", res)
		}
	})
}

func TestVMRunsOnce(t *testing.T) {
	vm := clone(t)
	ctx := context.Background()
	if _, err := vm.Run(ctx, vmpool.Job{Source: "return 1", Limits: vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1024)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Run(ctx, vmpool.Job{Source: "return 1", Limits: vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1024)}, nil); err == nil {
		t.Fatal("a VM must refuse a second job")
	}
	select {
	case <-vm.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("QEMU still runs after its job")
	}
}

func TestEntropyDiffersBetweenClones(t *testing.T) {
	src := `local f = assert(io.open("/dev/urandom", "rb")) local b = f:read(16) f:close()
		return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))`
	a := run(t, vmpool.Job{Source: src})
	b := run(t, vmpool.Job{Source: src})
	if a.Reason != protocol.ReasonOK || b.Reason != protocol.ReasonOK || string(a.Value) == string(b.Value) {
		t.Fatalf("clones of one snapshot must not share randomness: %s %s", a.Value, b.Value)
	}
	clock := run(t, vmpool.Job{Source: `return os.time()`})
	var guest int64
	_ = json.Unmarshal(clock.Value, &guest)
	if d := time.Now().Unix() - guest; d < -5 || d > 5 {
		t.Fatalf("guest clock is %d s off the host's", d)
	}
}

// guestClockSrc returns the guest's CLOCK_REALTIME in milliseconds, read
// through LuaJIT's FFI (os.time has only whole seconds).
const guestClockSrc = `local ffi = require("ffi")
ffi.cdef("typedef struct { long sec; long nsec; } lualambda_ts; int clock_gettime(int, lualambda_ts *);")
local ts = ffi.new("lualambda_ts")
assert(ffi.C.clock_gettime(0, ts) == 0)
return tonumber(ts.sec) * 1000 + math.floor(tonumber(ts.nsec) / 1e6)`

// TestClockSetAtJobTime holds a warm VM's clock still (QMP stop) for longer
// than the tolerance, as a VM that waited long in the pool under emulation
// would drift, and checks that the job still sees the host's time: the
// agent sets the clock when the job arrives, not only at the handshake.
func TestClockSetAtJobTime(t *testing.T) {
	vm := clone(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const pause = 4 * time.Second
	if err := vmpool.PauseGuest(ctx, vm, pause); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	res, err := vm.Run(ctx, vmpool.Job{Source: guestClockSrc, Limits: vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1<<10)}, nil)
	after := time.Now()
	if err != nil || res.Reason != protocol.ReasonOK {
		t.Fatalf("got %+v, %v", res, err)
	}
	var guestMs int64
	if err := json.Unmarshal(res.Value, &guestMs); err != nil {
		t.Fatalf("result %s: %v", res.Value, err)
	}
	guest := time.UnixMilli(guestMs)
	// The guest reads its clock after the job was sent and before its result
	// came back; allow a second either side for the send and the clock's
	// granularity.
	if guest.Before(before.Add(-time.Second)) || guest.After(after.Add(time.Second)) {
		t.Fatalf("guest clock %s is outside the host's job window [%s, %s] (%s behind the start) after a %s pause",
			guest.Format(time.RFC3339Nano), before.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano), before.Sub(guest), pause)
	}
}

func TestColdBoot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vm, err := vmpool.Boot(ctx, machine(t))
	if err != nil {
		t.Fatal(err)
	}
	res, err := vm.Run(ctx, vmpool.Job{Source: "return 6 * 7", Limits: vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1024)}, nil)
	if err != nil || res.Reason != protocol.ReasonOK || string(res.Value) != "42" {
		t.Fatalf("got %+v, %v", res, err)
	}
}

// TestHungGuestEndedByHost freezes QEMU mid-run, as a guest that hangs
// would look from outside: the host ends the VM at the wall-clock limit
// plus its margin, whatever the agent does.
func TestHungGuestEndedByHost(t *testing.T) {
	vm := clone(t)
	limit := 2 * time.Second
	done := make(chan *vmpool.Result, 1)
	start := time.Now()
	running := make(chan struct{})
	var once sync.Once
	go func() {
		res, _ := vm.Run(context.Background(), vmpool.Job{Source: `io.write("running\n") io.stdout:flush() local t0 = os.clock() while os.clock() - t0 < 60 do end`, Limits: vmpool.LimitsFor(testMemoryMiB, limit, 1<<10)},
			func(protocol.Stream, []byte) { once.Do(func() { close(running) }) })
		done <- res
	}()
	select {
	case <-running:
	case <-time.After(30 * time.Second):
		t.Fatal("the job never started")
	}
	if err := syscall.Kill(vm.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		took := time.Since(start)
		if res == nil || res.Reason != protocol.ReasonTimeout {
			t.Fatalf("a frozen guest: got %+v, want reason timeout", res)
		}
		if took < limit || took > limit+10*time.Second {
			t.Fatalf("ended after %s for a limit of %s", took, limit)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the host never ended the frozen VM")
	}
	select {
	case <-vm.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("QEMU still runs")
	}
}

// TestBootDeadline kills a boot that does not reach the agent in time and
// leaves nothing behind.
func TestBootDeadline(t *testing.T) {
	m := machine(t)
	dir, err := os.MkdirTemp(runtimeDir, "deadline-")
	if err != nil {
		t.Fatal(err)
	}
	m.RuntimeDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := vmpool.Boot(ctx, m); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("a boot past its deadline: got %v", err)
	}
	testenv.WaitNoQEMU(t, dir)
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

//go:build linux

package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// These tests run the agent as it ships: in the guest image built from this
// checkout, in real QEMU VMs cloned from a snapshot template.

// vmMemoryMiB is the VM size of these tests.
const vmMemoryMiB = 64 + 96

var (
	vmOnce    sync.Once
	vmTpl     *vmpool.Template
	vmTplErr  error
	vmRuntime string
)

func TestMain(m *testing.M) {
	// The sandbox tests start this binary as the sandbox, as the agent
	// starts itself.
	if sandboxInvoked(os.Args) {
		sandboxMain(os.Args)
		return
	}
	code := m.Run()
	if vmTpl != nil {
		vmTpl.Remove()
	}
	if vmRuntime != "" {
		os.RemoveAll(vmRuntime)
	}
	os.Exit(code)
}

// cloneVM returns a fresh VM cloned from the template these tests share.
func cloneVM(t *testing.T) *vmpool.VM {
	t.Helper()
	vmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "agent-test-")
		if err != nil {
			vmTplErr = err
			return
		}
		if err := os.Chmod(dir, 0o711); err != nil { // QEMU may run as nobody
			vmTplErr = err
			return
		}
		vmRuntime = dir
		m := vmpool.Machine{Image: testenv.Image(t), Accel: vmpool.AccelTCG, MemoryMiB: vmMemoryMiB, RuntimeDir: dir}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		vmTpl, vmTplErr = vmpool.MakeTemplate(ctx, m, dir+"/template")
	})
	if vmTplErr != nil {
		t.Fatalf("template: %v", vmTplErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := vmTpl.Clone(ctx)
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

// runVM runs job in a fresh VM with the test limits unless job has its own.
func runVM(t *testing.T, job vmpool.Job) *vmpool.Result {
	t.Helper()
	vm := cloneVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if job.Limits == (protocol.Limits{}) {
		job.Limits = vmpool.LimitsFor(vmMemoryMiB, 10*time.Second, 64<<10)
	}
	res, err := vm.Run(ctx, job, nil)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return res
}

// TestLuaEndingItselfIsExit: a Lua process that ends itself (os.exit, a
// signal it sends itself, a segfault through the FFI) is the user's doing,
// reason exit, with its output kept; crash is left to host/VM failures.
func TestLuaEndingItselfIsExit(t *testing.T) {
	cases := []struct {
		name, source, stdout, msg string
	}{
		{"os.exit(0)", `print("x") os.exit(0)`, "x\n", "exit code 0"},
		{"os.exit(3)", `io.write("y") io.stdout:flush() os.exit(3)`, "y", "exit code 3"},
		{"kill itself", `local ffi = require("ffi") ffi.cdef("int kill(int pid, int sig);") print("z") io.stdout:flush() ffi.C.kill(0, 9) return 1`, "z\n", "signal killed"},
		{"segfault", `local ffi = require("ffi") return ffi.cast("int *", 0)[0]`, "", "signal segmentation fault"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := runVM(t, vmpool.Job{Source: c.source})
			if res.Reason != protocol.ReasonExit || res.Stdout != c.stdout || !strings.Contains(res.Error, c.msg) {
				t.Fatalf("got reason %q stdout %q error %q; want reason exit, stdout %q, error with %q", res.Reason, res.Stdout, res.Error, c.stdout, c.msg)
			}
			if strings.Contains(res.Error, "harness") || strings.Contains(res.Traceback, "harness") {
				t.Fatalf("the message shows the harness: %q %q", res.Error, res.Traceback)
			}
		})
	}
}

// TestGuestSandbox: the Lua process runs with no_new_privs and a seccomp
// filter, cannot make user namespaces, and cannot write a file larger than
// the job's package byte limit; LuaJIT's JIT still works under the filter.
func TestGuestSandbox(t *testing.T) {
	limits := vmpool.LimitsFor(vmMemoryMiB, 10*time.Second, 64<<10)
	limits.PackageBytes = 1 << 20
	res := runVM(t, vmpool.Job{Limits: limits, Source: `
		local ffi = require("ffi")
		ffi.cdef[[
		int unshare(int flags);
		int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
		int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const void *data);
		long ptrace(long req, int pid, void *addr, void *data);
		long syscall(long number, ...);
		]]
		local out = {}
		-- CLONE_NEWUSER, then CLONE_NEWNET
		out.unshare_user = ffi.C.unshare(0x10000000) .. " " .. ffi.errno()
		out.unshare_net = ffi.C.unshare(0x40000000) .. " " .. ffi.errno()
		-- PR_GET_NO_NEW_PRIVS
		out.no_new_privs = ffi.C.prctl(39, 0, 0, 0, 0)
		-- PR_GET_SECCOMP: 2 is filter mode
		out.seccomp = ffi.C.prctl(21, 0, 0, 0, 0)
		out.ptrace = tonumber(ffi.C.ptrace(16, 1, nil, nil)) .. " " .. ffi.errno() -- PTRACE_ATTACH to pid 1
		out.bpf = tonumber(ffi.C.syscall(321, ffi.new("long", 0), ffi.new("long", 0), ffi.new("long", 0))) .. " " .. ffi.errno()
		local f = io.open("/proc/sys/user/max_user_namespaces")
		out.max_user_namespaces = f and f:read("*l") or "unreadable"
		if f then f:close() end
		-- A file of 1 MiB may be written, one byte more may not.
		local big = assert(io.open("/tmp/big", "wb"))
		local ok1 = big:write(string.rep("a", 1024 * 1024)) and big:flush()
		local ok2, err2 = big:write("b")
		if ok2 then ok2, err2 = big:flush() end
		big:close()
		out.fsize = tostring(not not ok1) .. " " .. tostring(not not ok2) .. " " .. tostring(err2)
		-- The JIT still compiles a hot loop.
		local s = 0 for i = 1, 1e6 do s = s + i % 7 end
		out.jit = jit.status() and s or "off"
		return out`})
	if res.Reason != protocol.ReasonOK {
		t.Fatalf("got reason %s error %q stderr %q", res.Reason, res.Error, res.Stderr)
	}
	var out map[string]any
	if err := json.Unmarshal(res.Value, &out); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"unshare_user":        "-1 1", // EPERM
		"unshare_net":         "-1 1",
		"no_new_privs":        float64(1),
		"seccomp":             float64(2),
		"ptrace":              "-1 1",
		"bpf":                 "-1 1",
		"max_user_namespaces": "0",
		"jit":                 float64(2999998),
	}
	for k, v := range want {
		if out[k] != v {
			t.Errorf("%s: got %v, want %v (all: %s)", k, out[k], v, res.Value)
		}
	}
	if fs, _ := out["fsize"].(string); !strings.HasPrefix(fs, "true false ") || !strings.Contains(fs, "File too large") {
		t.Errorf("fsize: got %q, want the first MiB written and the next byte refused (File too large)", fs)
	}
}

// TestLimitsStillApplyInSandbox: the job's own limits still reach the
// sandboxed process, with their own reasons.
func TestLimitsStillApplyInSandbox(t *testing.T) {
	res := runVM(t, vmpool.Job{Source: `local s = string.rep("x", 1024 * 1024 * 1024) return #s`})
	if res.Reason != protocol.ReasonMemory {
		t.Fatalf("a 1 GiB allocation: got reason %s error %q", res.Reason, res.Error)
	}
	res = runVM(t, vmpool.Job{Source: `error("boom")`})
	if res.Reason != protocol.ReasonError || res.Error != "input:1: boom" || strings.Contains(res.Traceback, "harness") {
		t.Fatalf("error: got reason %s error %q traceback %q", res.Reason, res.Error, res.Traceback)
	}
	res = runVM(t, vmpool.Job{Source: `return 2 + 2`})
	if res.Reason != protocol.ReasonOK || string(res.Value) != "4" {
		t.Fatalf("ok: got reason %s value %s error %q", res.Reason, res.Value, res.Error)
	}
}

// TestSessionSandboxed: the session REPL runs in the same sandbox.
func TestSessionSandboxed(t *testing.T) {
	vm := cloneVM(t)
	var mu sync.Mutex
	var out strings.Builder
	limits := vmpool.LimitsFor(vmMemoryMiB, 20*time.Second, 64<<10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := vm.StartSession(ctx, vmpool.Job{Limits: limits}, 24, 200, func(_ protocol.Stream, b []byte) {
		mu.Lock()
		out.Write(b)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	input := `ffi = require("ffi") ffi.cdef("int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long); int unshare(int);")` + "\n" +
		`print("nnp=" .. ffi.C.prctl(39, 0, 0, 0, 0) .. " seccomp=" .. ffi.C.prctl(21, 0, 0, 0, 0) .. " unshare=" .. ffi.C.unshare(0x10000000) .. "/" .. ffi.errno())` + "\n" +
		`os.exit(0)` + "\n"
	if err := s.Input([]byte(input)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("the session did not end")
	}
	mu.Lock()
	got := out.String()
	mu.Unlock()
	if !strings.Contains(got, "nnp=1 seccomp=2 unshare=-1/1") {
		t.Fatalf("session output %q lacks the sandbox's marks; result %+v", got, s.Result())
	}
}

//go:build linux

package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSandboxOnHost runs the host's LuaJIT through the sandbox exactly as
// the agent does (this test binary stands in for the agent binary) and
// checks what the Lua code can do. TestGuestSandbox checks the same inside
// a VM.
func TestSandboxOnHost(t *testing.T) {
	luajit, err := exec.LookPath("luajit")
	if err != nil {
		t.Fatalf("luajit is required on the host (scripts/setup installs it): %v", err)
	}
	cmd := exec.Command(luajit, "-e", `
		local ffi = require("ffi")
		ffi.cdef[[
		int unshare(int flags);
		int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
		int personality(unsigned long p);
		]]
		local r = ffi.C.unshare(0x10000000)
		io.write("unshare ", r, " ", ffi.errno(), "\n")
		io.write("nnp ", ffi.C.prctl(39, 0, 0, 0, 0), "\n")
		io.write("seccomp ", ffi.C.prctl(21, 0, 0, 0, 0), "\n")
		io.write("personality-query ", ffi.C.personality(0xffffffff) >= 0 and "ok" or "refused", "\n")
		io.write("personality-set ", ffi.C.personality(0), " ", ffi.errno(), "\n")
		local s = 0 for i = 1, 1e6 do s = s + i % 7 end
		io.write("jit ", s, "\n")
		local path = os.getenv("TMPFILE")
		local f = assert(io.open(path, "wb"))
		local ok1 = f:write(string.rep("a", 4096)) and f:flush()
		local ok2, err2 = f:write("b")
		if ok2 then ok2, err2 = f:flush() end
		f:close()
		io.write("fsize ", tostring(not not ok1), " ", tostring(not not ok2), " ", tostring(err2), "\n")
	`)
	cmd.Env = []string{"TMPFILE=" + t.TempDir() + "/big"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := startSandboxed(cmd, sandboxLimits{FileBytes: 4096}, (*exec.Cmd).Start); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("luajit: %v; stderr %s", err, stderr.String())
	}
	want := []string{
		"unshare -1 1",
		"nnp 1",
		"seccomp 2",
		"personality-query ok",
		"personality-set -1 1",
		"jit 2999998",
		"fsize true false File too large",
	}
	got := stdout.String()
	for _, w := range want {
		if !strings.Contains(got, w+"\n") {
			t.Errorf("want %q in:\n%s", w, got)
		}
	}
}

// TestSandboxReportsFailure: a sandbox that cannot execute its program
// says so to the agent instead of leaving a process that never reports.
func TestSandboxReportsFailure(t *testing.T) {
	cmd := exec.Command("/nonexistent/luajit")
	err := startSandboxed(cmd, sandboxLimits{}, (*exec.Cmd).Start)
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("got %v, want the sandbox's exec error", err)
	}
}

// TestSeccompFilterShape: every jump of the filter lands inside it.
func TestSeccompFilterShape(t *testing.T) {
	ins, err := seccompFilter()
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range ins {
		if in.Code&0x07 == unix.BPF_JMP && i+1+int(in.Jt) >= len(ins) {
			t.Fatalf("instruction %d jumps past the end", i)
		}
	}
	if last := ins[len(ins)-1]; last.Code != unix.BPF_RET|unix.BPF_K {
		t.Fatal("the filter does not end with a return")
	}
}

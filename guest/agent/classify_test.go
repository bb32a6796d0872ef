//go:build linux

package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
)

// waitOf runs a real shell command and returns how it ended.
func waitOf(t *testing.T, script string) error {
	t.Helper()
	return exec.Command("/bin/sh", "-c", script).Run()
}

func TestClassify(t *testing.T) {
	never := func() bool { return false }
	always := func() bool { return true }
	wall := 5 * time.Second
	killed := waitOf(t, "kill -9 $$")
	segv := waitOf(t, "kill -11 $$")
	xcpu := waitOf(t, "kill -XCPU $$")
	cases := []struct {
		name     string
		raw      string
		ended    bool
		waitErr  error
		timedOut bool
		capped   bool
		oom      func() bool
		reason   protocol.Reason
		msg      string
	}{
		{"ok", `{"ok":true,"result":4}`, true, nil, false, false, never, protocol.ReasonOK, ""},
		{"lua error", `{"ok":false,"reason":"error","error":"boom"}`, true, nil, false, false, never, protocol.ReasonError, "boom"},
		{"memory report", `{"ok":false,"reason":"memory","error":"not enough memory"}`, true, nil, false, false, never, protocol.ReasonMemory, "not enough memory"},
		{"os.exit(0)", ``, true, nil, false, false, never, protocol.ReasonExit, "exit code 0"},
		{"os.exit(3)", ``, true, waitOf(t, "exit 3"), false, false, never, protocol.ReasonExit, "exit code 3"},
		{"killed itself", ``, true, killed, false, false, never, protocol.ReasonExit, "signal killed"},
		{"segfault", ``, true, segv, false, false, never, protocol.ReasonExit, "signal segmentation fault"},
		{"oom killer", ``, true, killed, false, false, always, protocol.ReasonMemory, "out of memory"},
		{"cpu limit", ``, true, xcpu, false, false, never, protocol.ReasonTimeout, "CPU time"},
		{"wall clock", ``, true, killed, true, false, never, protocol.ReasonTimeout, "wall-clock"},
		{"output cap", `{"ok":true,"result":4}`, true, killed, false, true, never, protocol.ReasonOutputCap, "cap"},
		{"spoiled report", `{"ok":tr`, true, nil, false, false, never, protocol.ReasonError, "malformed result"},
		{"not seen to end", ``, false, nil, false, false, never, protocol.ReasonCrash, "without a result"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := classify(protocol.Result{}, []byte(c.raw), c.ended, c.waitErr, c.timedOut, c.capped, c.oom, wall)
			if res.Reason != c.reason || !strings.Contains(res.Error, c.msg) {
				t.Fatalf("got reason %q error %q, want %q with %q", res.Reason, res.Error, c.reason, c.msg)
			}
			if !res.Reason.Valid() {
				t.Fatalf("reason %q is not valid", res.Reason)
			}
		})
	}
}

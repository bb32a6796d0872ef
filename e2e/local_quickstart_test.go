package e2e

import (
	"strings"
	"testing"
)

// TestLocalQuickStart runs LuaLambda's quick start as its users type it:
// --local-test, and a package directory holding hello.lua (no init.lua),
// in a real VM.
func TestLocalQuickStart(t *testing.T) {
	out, errOut, code := cli(t, "", nil, "invoke", "--local-test", "--accel", "tcg", "-e", "return 2 + 2")
	if code != 0 || strings.TrimSpace(out) != "4" {
		t.Fatalf("--local-test: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = cli(t, "", nil, "invoke", "--local-test", "--accel", "tcg", "--pkg", "./examples/hello", "--require", "hello", "--arg", "Ada")
	if code != 0 || strings.TrimSpace(out) != `{"greeting":"hello Ada"}` || !strings.Contains(errOut, "greeting Ada") {
		t.Fatalf("the hello package: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// --require defaults to the one package's name.
	out, errOut, code = cli(t, "", nil, "invoke", "--local", "--accel", "tcg", "--pkg", "examples/hello")
	if code != 0 || strings.TrimSpace(out) != `{"greeting":"hello world"}` {
		t.Fatalf("the hello package without --require: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A module that is not there: where it was looked for, in the user's
	// terms, with no frame or path of the harness.
	out, errOut, code = cli(t, "", nil, "invoke", "--local", "--accel", "tcg", "--pkg", "./examples/hello", "--require", "nope")
	want := "module 'nope' not found: no package named nope with init.lua or nope.lua at its top"
	if code != 1 || out != "" || !strings.Contains(errOut, want) {
		t.Fatalf("a missing module: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
	for _, s := range []string{"harness", "/job/pkg", "stack traceback"} {
		if strings.Contains(errOut, s) {
			t.Fatalf("the missing module's message names %q: %s", s, errOut)
		}
	}
}

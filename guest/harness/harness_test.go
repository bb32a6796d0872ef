package harness

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// result is the harness's report on fd 3.
type result struct {
	OK        bool            `json:"ok"`
	Result    json.RawMessage `json:"result"`
	Reason    string          `json:"reason"`
	Error     string          `json:"error"`
	Traceback string          `json:"traceback"`
}

// runtimes are the host interpreters the harness tests run on: luajit,
// which is required, and lua5.4 when the host has it (scripts/setup
// installs both).
func runtimes(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("luajit"); err != nil {
		t.Fatalf("luajit is required on the host (scripts/setup installs it): %v", err)
	}
	rts := []string{"luajit"}
	if _, err := exec.LookPath("lua5.4"); err == nil {
		rts = append(rts, "lua5.4")
	} else {
		t.Log("lua5.4 is not installed on the host: the harness runs on luajit only (scripts/setup installs it)")
	}
	return rts
}

// forEachRuntime runs f as a subtest on every host runtime.
func forEachRuntime(t *testing.T, f func(t *testing.T, rt string)) {
	for _, rt := range runtimes(t) {
		t.Run(rt, func(t *testing.T) { f(t, rt) })
	}
}

// runHarnessOn runs the harness with the host's interpreter rt (luajit or
// lua5.4) exactly as the agent does: the job on stdin, the result on fd 3.
// prefix may wrap the command (e.g. prlimit).
func runHarnessOn(t *testing.T, rt, job string, prefix ...string) (result, string) {
	t.Helper()
	interp, err := exec.LookPath(rt)
	if err != nil {
		t.Fatalf("%s is required on the host (scripts/setup installs it): %v", rt, err)
	}
	script := filepath.Join(t.TempDir(), "harness.lua")
	if err := os.WriteFile(script, Source, 0o644); err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, prefix...), interp, script)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(job)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var raw bytes.Buffer
	_, _ = raw.ReadFrom(r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("harness exited with %v; stderr: %s", err, stderr.String())
	}
	var res result
	if err := json.Unmarshal(raw.Bytes(), &res); err != nil {
		t.Fatalf("result %q is not JSON: %v (stderr %s)", raw.String(), err, stderr.String())
	}
	return res, stdout.String()
}

func pkgdir(t *testing.T) string {
	abs, err := filepath.Abs("../../testdata/packages")
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func TestForms(t *testing.T) {
	cases := []struct {
		name, job, want string
	}{
		{"return", `{"source":"return 2 + 2"}`, `4`},
		{"bare expression", `{"source":"2 + 2"}`, `4`},
		{"bare expression with comment", `{"source":"2 + 2 -- four"}`, `4`},
		{"object", `{"source":"return {hello = \"world\"}"}`, `{"hello":"world"}`},
		{"function form", `{"source":"return function(args) return \"hi \" .. args[1] end","args":["Algorand"]}`, `"hi Algorand"`},
		{"varargs", `{"source":"local a, b = ... return b","args":[1,{"x":[1,2]}]}`, `{"x":[1,2]}`},
		{"statements only", `{"source":"x = 1"}`, `null`},
		{"first of several values", `{"source":"return 1, 2"}`, `1`},
		{"nested module", `{"require":"blah.dorp","pkgdir":"PKG","args":[{"n":4}]}`, `{"greeting":"hello dorp","squares":[1,4,9,16]}`},
		{"init module", `{"require":"blah","pkgdir":"PKG","args":["Algorand"]}`, `{"greeting":"hello Algorand"}`},
		{"source requiring a package", `{"source":"return require('blah.util').greet('x')","pkgdir":"PKG"}`, `"hello x"`},
		{"json null arg", `{"source":"return {...}","args":[null,2]}`, `[null,2]`},
	}
	forEachRuntime(t, func(t *testing.T, rt string) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				res, _ := runHarnessOn(t, rt, strings.ReplaceAll(c.job, "PKG", pkgdir(t)))
				if !res.OK || string(res.Result) != c.want {
					t.Fatalf("got ok=%v result=%s error=%q, want %s", res.OK, res.Result, res.Error, c.want)
				}
			})
		}
	})
}

func TestJSONRules(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string) {
		cases := JSONCases
		if rt == "lua5.4" {
			cases = append(append([]JSONCase{}, JSONCases...), Lua54Cases...)
		}
		for _, c := range cases {
			t.Run(c.Name, func(t *testing.T) {
				job, _ := json.Marshal(map[string]any{"source": c.Source})
				res, _ := runHarnessOn(t, rt, string(job))
				if c.WantErr != "" {
					if res.OK || res.Reason != "error" || !strings.Contains(res.Error, c.WantErr) {
						t.Fatalf("got ok=%v reason=%q error=%q, want an error containing %q", res.OK, res.Reason, res.Error, c.WantErr)
					}
					return
				}
				if !res.OK || string(res.Result) != c.Want {
					t.Fatalf("got ok=%v result=%s error=%q, want %s", res.OK, res.Result, res.Error, c.Want)
				}
			})
		}
	})
}

// TestLua54Args: on Lua 5.4, integral JSON numbers in args arrive as
// integers, others as floats; on LuaJIT all are numbers.
func TestLua54Args(t *testing.T) {
	if _, err := exec.LookPath("lua5.4"); err != nil {
		t.Skip("lua5.4 is not installed on the host (scripts/setup installs it)")
	}
	job := `{"source":"return function(a) return {math.type(a[1]), a[1] // 2, math.type(a[2]), math.type(a[3].n[1]), a[3].n[1] + 1, math.type(a[4])} end","args":[7,7.5,{"n":[41]},1e300]}`
	res, _ := runHarnessOn(t, "lua5.4", job)
	if want := `["integer",3,"float","integer",42,"float"]`; !res.OK || string(res.Result) != want {
		t.Fatalf("got ok=%v result=%s error=%q, want %s", res.OK, res.Result, res.Error, want)
	}
}

func TestErrors(t *testing.T) {
	forEachRuntime(t, testErrors)
}

func testErrors(t *testing.T, rt string) {
	runHarness := func(t *testing.T, job string) (result, string) {
		t.Helper()
		return runHarnessOn(t, rt, job)
	}
	res, _ := runHarness(t, `{"source":"local function f() error('boom') end\nf()"}`)
	if res.OK || res.Reason != "error" || res.Error != "input:1: boom" {
		t.Fatalf("got %+v", res)
	}
	// LuaJIT says "in function 'f'", Lua 5.4 "in local 'f'".
	if !strings.Contains(res.Traceback, "input:1: in function 'f'") && !strings.Contains(res.Traceback, "input:1: in local 'f'") ||
		strings.Contains(res.Traceback, "harness.lua") {
		t.Fatalf("traceback should show the user's frames only: %q", res.Traceback)
	}
	res, _ = runHarness(t, `{"source":"error({code = 1})"}`)
	if res.OK || res.Error != `{"code":1}` {
		t.Fatalf("table error: got %+v", res)
	}
	res, _ = runHarness(t, `{"source":"return 1 +"}`)
	if res.OK || res.Reason != "error" || !strings.Contains(res.Error, "input:1:") {
		t.Fatalf("syntax error: got %+v", res)
	}
	res, _ = runHarness(t, `{}`)
	if res.OK || !strings.Contains(res.Error, "neither source nor require") {
		t.Fatalf("empty job: got %+v", res)
	}
	res, _ = runHarness(t, `not json`)
	if res.OK || !strings.Contains(res.Error, "malformed job") {
		t.Fatalf("malformed job: got %+v", res)
	}
	res, _ = runHarness(t, `{"require":"nope","pkgdir":"/nonexistent"}`)
	if res.OK || !strings.Contains(res.Error, "module 'nope' not found") {
		t.Fatalf("missing module: got %+v", res)
	}
	res, _ = runHarness(t, `{"source":"return string.rep('x', 100)","max_result_bytes":50}`)
	if res.OK || !strings.Contains(res.Error, "larger than the limit of 50 bytes") {
		t.Fatalf("result cap: got %+v", res)
	}
}

func TestPrintGoesToStdout(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string) {
		res, stdout := runHarnessOn(t, rt, `{"source":"print('hello') io.write('world') return 1"}`)
		if !res.OK || string(res.Result) != "1" || stdout != "hello\nworld" {
			t.Fatalf("got result %s, stdout %q", res.Result, stdout)
		}
	})
}

func TestSeed(t *testing.T) {
	job := `{"source":"return {math.random(1000000), math.random(1000000)}","seed":12345}`
	forEachRuntime(t, func(t *testing.T, rt string) {
		a, _ := runHarnessOn(t, rt, job)
		b, _ := runHarnessOn(t, rt, job)
		c, _ := runHarnessOn(t, rt, strings.Replace(job, "12345", "54321", 1))
		if !a.OK || string(a.Result) != string(b.Result) || string(a.Result) == string(c.Result) {
			t.Fatalf("same seed must repeat and another must differ: %s %s %s (%s)", a.Result, b.Result, c.Result, a.Error)
		}
		// A seed as large as the host sends (up to 2^63-1) works too.
		big, _ := runHarnessOn(t, rt, strings.Replace(job, "12345", "9223372036854775807", 1))
		if !big.OK {
			t.Fatalf("a large seed: %+v", big)
		}
	})
}

func TestMemory(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatalf("prlimit (util-linux) is required: %v", err)
	}
	forEachRuntime(t, func(t *testing.T, rt string) {
		res, _ := runHarnessOn(t, rt, `{"source":"local t = {} for i = 1, 1e9 do t[i] = i end return #t"}`, prlimit, "--as=268435456")
		if res.OK || res.Reason != "memory" {
			t.Fatalf("got %+v, want reason memory", res)
		}
	})
}

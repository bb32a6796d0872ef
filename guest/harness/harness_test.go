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

// runHarness runs the harness with the host's luajit exactly as the agent
// does: the job on stdin, the result on fd 3. prefix may wrap the command
// (e.g. prlimit).
func runHarness(t *testing.T, job string, prefix ...string) (result, string) {
	t.Helper()
	luajit, err := exec.LookPath("luajit")
	if err != nil {
		t.Fatalf("luajit is required on the host (scripts/setup installs it): %v", err)
	}
	script := filepath.Join(t.TempDir(), "harness.lua")
	if err := os.WriteFile(script, Source, 0o644); err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, prefix...), luajit, script)
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
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, _ := runHarness(t, strings.ReplaceAll(c.job, "PKG", pkgdir(t)))
			if !res.OK || string(res.Result) != c.want {
				t.Fatalf("got ok=%v result=%s error=%q, want %s", res.OK, res.Result, res.Error, c.want)
			}
		})
	}
}

func TestJSONRules(t *testing.T) {
	cases := []struct {
		name, source, want, wantErr string
	}{
		{"empty table is an array", `return {}`, `[]`, ""},
		{"marked object", `return lualambda.object({})`, `{}`, ""},
		{"marked array", `return lualambda.array({1, 2})`, `[1,2]`, ""},
		{"sparse array becomes object", `return {[1] = 1, [3] = 3}`, `{"1":1,"3":3}`, ""},
		{"mixed keys", `return {a = 1, [2] = 3}`, `{"2":3,"a":1}`, ""},
		{"sorted keys", `return {b = 1, a = 2, c = 3}`, `{"a":2,"b":1,"c":3}`, ""},
		{"integers", `return {1, -2, 2^53 - 1}`, `[1,-2,9007199254740991]`, ""},
		{"floats", `return {0.1, 1.5, 1/3}`, `[0.1,1.5,0.3333333333333333]`, ""},
		{"escapes", `return "a\"b\\c\n\1"`, `"a\"b\\c\n\u0001"`, ""},
		{"invalid utf-8", `return "a\255b"`, `"a` + "\uFFFD" + `b"`, ""},
		{"valid utf-8", `return "héllo ✓"`, `"héllo ✓"`, ""},
		{"null", `return {lualambda.null}`, `[null]`, ""},
		{"nan", `return 0/0`, "", "cannot encode NaN or infinity"},
		{"inf", `return {x = math.huge}`, "", "cannot encode NaN or infinity as JSON (at $.x)"},
		{"cycle", `local t = {} t.t = t return t`, "", "cycle detected (at $.t)"},
		{"depth", `local t = {} local c = t for i = 1, 200 do c.x = {} c = c.x end return t`, "", "nesting deeper than 128"},
		{"boolean key", `return {[true] = 1}`, "", "cannot use a boolean as a JSON object key"},
		{"function", `return {f = print}`, "", "cannot encode function as JSON (at $.f)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			job, _ := json.Marshal(map[string]any{"source": c.source})
			res, _ := runHarness(t, string(job))
			if c.wantErr != "" {
				if res.OK || res.Reason != "error" || !strings.Contains(res.Error, c.wantErr) {
					t.Fatalf("got ok=%v reason=%q error=%q, want an error containing %q", res.OK, res.Reason, res.Error, c.wantErr)
				}
				return
			}
			if !res.OK || string(res.Result) != c.want {
				t.Fatalf("got ok=%v result=%s error=%q, want %s", res.OK, res.Result, res.Error, c.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	res, _ := runHarness(t, `{"source":"local function f() error('boom') end\nf()"}`)
	if res.OK || res.Reason != "error" || res.Error != "input:1: boom" {
		t.Fatalf("got %+v", res)
	}
	if !strings.Contains(res.Traceback, "input:1: in function 'f'") || strings.Contains(res.Traceback, "harness.lua") {
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
	res, stdout := runHarness(t, `{"source":"print('hello') io.write('world') return 1"}`)
	if !res.OK || string(res.Result) != "1" || stdout != "hello\nworld" {
		t.Fatalf("got result %s, stdout %q", res.Result, stdout)
	}
}

func TestSeed(t *testing.T) {
	job := `{"source":"return {math.random(1000000), math.random(1000000)}","seed":12345}`
	a, _ := runHarness(t, job)
	b, _ := runHarness(t, job)
	c, _ := runHarness(t, strings.Replace(job, "12345", "54321", 1))
	if string(a.Result) != string(b.Result) || string(a.Result) == string(c.Result) {
		t.Fatalf("same seed must repeat and another must differ: %s %s %s", a.Result, b.Result, c.Result)
	}
}

func TestMemory(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatalf("prlimit (util-linux) is required: %v", err)
	}
	res, _ := runHarness(t, `{"source":"local t = {} for i = 1, 1e9 do t[i] = i end return #t"}`, prlimit, "--as=268435456")
	if res.OK || res.Reason != "memory" {
		t.Fatalf("got %+v, want reason memory", res)
	}
}

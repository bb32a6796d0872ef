package harness

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/lualambda/caddy-lualambda/guest/unpack"
)

// unpackedPackages unpacks packages (name → file → content) as the guest
// does and returns the directory.
func unpackedPackages(t *testing.T, pkgs map[string]map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	u := unpack.New(dir, unpack.Limits{Bytes: 1 << 20, Files: 100})
	for name, files := range pkgs {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for path, content := range files {
			w, err := zw.Create(path)
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
		if err := u.Unpack(name, buf.Bytes()); err != nil {
			t.Fatalf("unpack %s: %v", name, err)
		}
	}
	return dir
}

// job encodes a harness job.
func job(t *testing.T, fields map[string]any) string {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestModuleLayouts: the module "hello" is hello/init.lua or, in package
// hello, hello.lua at its top (the layout of LuaLambda's quick start), both
// as the job's module and when code requires it.
func TestModuleLayouts(t *testing.T) {
	dir := unpackedPackages(t, map[string]map[string]string{
		"hello": {"hello.lua": `return function(a) return "hi " .. a[1] .. " " .. require("hello.util") end`, "util.lua": `return "and util"`},
		"blah":  {"init.lua": `return function(a) return "blah " .. a[1] end`},
	})
	forEachRuntime(t, func(t *testing.T, rt string) {
		for _, c := range []struct{ name, job, want string }{
			{"top-level name.lua", job(t, map[string]any{"require": "hello", "pkgdir": dir, "args": []any{"Ada"}}), `"hi Ada and util"`},
			{"init.lua", job(t, map[string]any{"require": "blah", "pkgdir": dir, "args": []any{"Ada"}}), `"blah Ada"`},
			{"required by code", job(t, map[string]any{"source": `return require("hello")({"Bo"})`, "pkgdir": dir}), `"hi Bo and util"`},
		} {
			t.Run(c.name, func(t *testing.T) {
				res, _ := runHarnessOn(t, rt, c.job)
				if !res.OK || string(res.Result) != c.want {
					t.Fatalf("got %+v, want %s", res, c.want)
				}
			})
		}
	})
}

// TestModuleNotFound: a module that is not there is named with where it
// was looked for, in packages and their files: no harness frame, no guest
// path.
func TestModuleNotFound(t *testing.T) {
	dir := unpackedPackages(t, map[string]map[string]string{"blah": {"init.lua": "return 1"}})
	forEachRuntime(t, func(t *testing.T, rt string) {
		for _, c := range []struct{ name, job, want string }{
			{"job's module", job(t, map[string]any{"require": "hello", "pkgdir": dir}),
				"module 'hello' not found: no package named hello with init.lua or hello.lua at its top"},
			{"job's module in a package", job(t, map[string]any{"require": "blah.nope", "pkgdir": dir}),
				"module 'blah.nope' not found: package blah has no nope.lua or nope/init.lua"},
			{"job's module in no package", job(t, map[string]any{"require": "gone.nope", "pkgdir": dir}),
				"module 'gone.nope' not found: no package named gone"},
		} {
			t.Run(c.name, func(t *testing.T) {
				res, _ := runHarnessOn(t, rt, c.job)
				if res.OK || res.Reason != "error" || res.Error != c.want || res.Traceback != "" {
					t.Fatalf("got %+v, want error %q and no traceback", res, c.want)
				}
			})
		}
		t.Run("required by code", func(t *testing.T) {
			res, _ := runHarnessOn(t, rt, job(t, map[string]any{"source": "local m = require('hello')\nreturn m", "pkgdir": dir}))
			if res.OK || !strings.Contains(res.Error, "input:1:") || !strings.Contains(res.Error, "module 'hello' not found:") ||
				!strings.Contains(res.Error, "no package named hello with init.lua or hello.lua at its top") {
				t.Fatalf("got %+v", res)
			}
			for _, s := range []string{"harness", dir, "preload", "no file"} {
				if strings.Contains(res.Error, s) || strings.Contains(res.Traceback, s) {
					t.Fatalf("the error names %q: %+v", s, res)
				}
			}
		})
	})
}

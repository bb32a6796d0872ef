package vmpool_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/harness"
	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// lua54 is the runtime name of Lua 5.4 jobs.
const lua54 = protocol.RuntimeLua54

// TestLua54Run: a job of runtime lua5.4 runs on Lua 5.4 (floor division,
// utf8, integers), and a job that names no runtime still runs on LuaJIT.
func TestLua54Run(t *testing.T) {
	res := run(t, vmpool.Job{Runtime: lua54, Source: `return 7 // 2, utf8.char(72)`})
	if res.Reason != protocol.ReasonOK || string(res.Value) != "3" {
		t.Fatalf("lua5.4: got reason %s value %s error %q", res.Reason, res.Value, res.Error)
	}
	res = run(t, vmpool.Job{Runtime: lua54, Source: `return {7 // 2, utf8.char(72), _VERSION, math.type(1), jit == nil}`})
	if res.Reason != protocol.ReasonOK || string(res.Value) != `[3,"H","Lua 5.4","integer",true]` {
		t.Fatalf("lua5.4: got reason %s value %s error %q", res.Reason, res.Value, res.Error)
	}
	res = run(t, vmpool.Job{Runtime: lua54, Source: `return function(a) return {a[1] // 2, math.type(a[1]), math.type(a[2])} end`, Args: args("7", "7.5")})
	if res.Reason != protocol.ReasonOK || string(res.Value) != `[3,"integer","float"]` {
		t.Fatalf("lua5.4 args: got reason %s value %s error %q", res.Reason, res.Value, res.Error)
	}
	res = run(t, vmpool.Job{Runtime: lua54, Source: `print("hello") io.stderr:write("oops\n") return 1`})
	if res.Reason != protocol.ReasonOK || res.Stdout != "hello\n" || res.Stderr != "oops\n" {
		t.Fatalf("lua5.4 output: got %+v", res)
	}
	res = run(t, vmpool.Job{Source: `return {_VERSION, type(jit)}`})
	if res.Reason != protocol.ReasonOK || string(res.Value) != `["Lua 5.1","table"]` {
		t.Fatalf("default runtime: got reason %s value %s error %q", res.Reason, res.Value, res.Error)
	}
	res = run(t, vmpool.Job{Runtime: protocol.RuntimeLuaJIT, Source: `return 7 // 2`})
	if res.Reason != protocol.ReasonError || !strings.Contains(res.Error, "input:1:") {
		t.Fatalf("luajit has no floor division: got reason %s value %s error %q", res.Reason, res.Value, res.Error)
	}
}

// TestLua54UnknownRuntime: a runtime the guest does not have is the
// caller's error, and no Lua runs.
func TestLua54UnknownRuntime(t *testing.T) {
	res := run(t, vmpool.Job{Runtime: "lua5.9", Source: `return 1`})
	if res.Reason != protocol.ReasonError || !strings.Contains(res.Error, `unknown runtime "lua5.9"`) {
		t.Fatalf("got reason %s value %s error %q", res.Reason, res.Value, res.Error)
	}
}

// TestLua54JSONRules runs the README's JSON rules in a guest on both
// runtimes, and Lua 5.4's own integer cases on Lua 5.4.
func TestLua54JSONRules(t *testing.T) {
	for _, rt := range []string{protocol.RuntimeLuaJIT, lua54} {
		t.Run(rt, func(t *testing.T) {
			cases := harness.JSONCases
			if rt == lua54 {
				cases = append(append([]harness.JSONCase{}, harness.JSONCases...), harness.Lua54Cases...)
			}
			for _, c := range cases {
				t.Run(c.Name, func(t *testing.T) {
					res := run(t, vmpool.Job{Runtime: rt, Source: c.Source})
					if c.WantErr != "" {
						if res.Reason != protocol.ReasonError || !strings.Contains(res.Error, c.WantErr) {
							t.Fatalf("got reason %s error %q, want an error containing %q", res.Reason, res.Error, c.WantErr)
						}
						return
					}
					if res.Reason != protocol.ReasonOK || string(res.Value) != c.Want {
						t.Fatalf("got reason %s value %s error %q, want %s", res.Reason, res.Value, res.Error, c.Want)
					}
				})
			}
		})
	}
}

// TestLua54Limits: the wall clock, memory and output cap hold on Lua 5.4.
func TestLua54Limits(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		limit := 2 * time.Second
		start := time.Now()
		res := run(t, vmpool.Job{Runtime: lua54, Source: `while true do end`, Limits: vmpool.LimitsFor(testMemoryMiB, limit, 1<<10)})
		if res.Reason != protocol.ReasonTimeout {
			t.Fatalf("got %+v", res)
		}
		if took := time.Since(start); took > limit+10*time.Second {
			t.Fatalf("timeout took %s for a limit of %s", took, limit)
		}
	})
	t.Run("memory", func(t *testing.T) {
		res := run(t, vmpool.Job{Runtime: lua54, Source: `local s = string.rep("x", 1024 * 1024 * 1024) return #s`})
		if res.Reason != protocol.ReasonMemory {
			t.Fatalf("a 1 GiB allocation: got %+v", res)
		}
		res = run(t, vmpool.Job{Runtime: lua54, Source: `local t = {} for i = 1, 1e9 do t[i] = i end return #t`})
		if res.Reason != protocol.ReasonMemory {
			t.Fatalf("a growing table: got %+v", res)
		}
	})
	t.Run("output cap", func(t *testing.T) {
		limits := vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 1000)
		res := run(t, vmpool.Job{Runtime: lua54, Source: `for i = 1, 100000 do print("line " .. i) end return 1`, Limits: limits})
		if res.Reason != protocol.ReasonOutputCap || len(res.Stdout) > 1000 || len(res.Stdout) < 900 {
			t.Fatalf("got reason %s with %d bytes of stdout", res.Reason, len(res.Stdout))
		}
	})
	t.Run("result cap", func(t *testing.T) {
		limits := vmpool.LimitsFor(testMemoryMiB, 5*time.Second, 64<<10)
		limits.ResultBytes = 1000
		res := run(t, vmpool.Job{Runtime: lua54, Source: `return string.rep("x", 5000)`, Limits: limits})
		if res.Reason != protocol.ReasonError || !strings.Contains(res.Error, "larger than the limit of 1000 bytes") {
			t.Fatalf("got %+v", res)
		}
	})
}

// TestLua54Sandboxed: the Lua 5.4 process runs as nobody with no_new_privs,
// the seccomp filter and the sandbox's rlimits, and the LuaJIT process that
// waited beside it is gone.
func TestLua54Sandboxed(t *testing.T) {
	res := run(t, vmpool.Job{Runtime: lua54, Source: `
local function read(p) local f = io.open(p) if not f then return "" end local s = f:read("a") f:close() return s end
local st, lim = read("/proc/self/status"), read("/proc/self/limits")
local luajits = 0
for pid = 1, 1000 do
  if read("/proc/" .. pid .. "/cmdline"):find("luajit", 1, true) then luajits = luajits + 1 end
end
return {
  uid = st:match("Uid:%s+(%d+)"),
  nnp = st:match("NoNewPrivs:%s+(%d+)"),
  seccomp = st:match("Seccomp:%s+(%d+)"),
  nofile = lim:match("Max open files%s+(%d+)"),
  luajits = luajits,
}`})
	if res.Reason != protocol.ReasonOK || string(res.Value) != `{"luajits":0,"nnp":"1","nofile":"64","seccomp":"2","uid":"65534"}` {
		t.Fatalf("got reason %s value %s error %q", res.Reason, res.Value, res.Error)
	}
}

// TestLua54Session: a session of runtime lua5.4 is a Lua 5.4 REPL.
func TestLua54Session(t *testing.T) {
	vm := clone(t)
	var mu sync.Mutex
	var out strings.Builder
	limits := vmpool.LimitsFor(testMemoryMiB, 20*time.Second, 64<<10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := vm.StartSession(ctx, vmpool.Job{Runtime: lua54, Limits: limits}, 24, 200, func(_ protocol.Stream, b []byte) {
		mu.Lock()
		out.Write(b)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Input([]byte("print('got ' .. 7 // 2 .. utf8.char(72))\nos.exit(0)\n")); err != nil {
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
	if !strings.Contains(got, "got 3H") || !strings.Contains(got, "Lua 5.4") {
		t.Fatalf("session output %q lacks Lua 5.4's answer; result %+v", got, s.Result())
	}
}

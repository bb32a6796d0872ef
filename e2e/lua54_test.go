package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// lua54Site has a LuaJIT profile (the default) and a Lua 5.4 one.
const lua54Site = `
	handle_path /invoke/* {
		lualambda {
			acquire_timeout 60s
			profile jit {
				memory 64MiB
				timeout 5s
				output_cap 4KiB
				warm 0
			}
			profile five {
				memory 64MiB
				timeout 1m
				output_cap 4KiB
				warm 0
				runtime lua5.4
			}
		}
	}`

// TestLua54Profile: a profile with runtime lua5.4 runs Lua 5.4 through
// the API, discovery names each profile's runtime, and LuaJIT stays the
// default.
func TestLua54Profile(t *testing.T) {
	s := startCaddy(t, serverConfig{site: lua54Site})

	r := do(t, http.MethodGet, s.URL+"/invoke/", "", nil)
	if r.status != 200 {
		t.Fatalf("discovery: %d %s", r.status, r.body)
	}
	runtimes := map[string]any{}
	profiles, _ := r.json["profiles"].([]any)
	for _, p := range profiles {
		m, _ := p.(map[string]any)
		runtimes[m["name"].(string)] = m["runtime"]
	}
	if runtimes["jit"] != "luajit" || runtimes["five"] != "lua5.4" {
		t.Fatalf("discovery must name each profile's runtime: %s", r.body)
	}

	r = runLua(t, s, "l54-1", "five", `return 7 // 2, utf8.char(72)`)
	if r.status != 200 || r.str("reason") != "ok" || string(mustJSON(t, r.json["result"])) != "3" {
		t.Fatalf("lua5.4 run: %d %s", r.status, r.body)
	}
	r = runLua(t, s, "l54-2", "five", `return {7 // 2, utf8.char(72), _VERSION}`)
	if r.status != 200 || string(mustJSON(t, r.json["result"])) != `[3,"H","Lua 5.4"]` {
		t.Fatalf("lua5.4 run: %d %s", r.status, r.body)
	}
	r = do(t, http.MethodPost, s.URL+"/invoke/l54-3/five?arg=7", "text/x-lua",
		strings.NewReader(`return function(a) return {a[1] // 2, math.type(a[1])} end`))
	if r.status != 200 || string(mustJSON(t, r.json["result"])) != `[3,"integer"]` {
		t.Fatalf("lua5.4 args: %d %s", r.status, r.body)
	}
	r = runLua(t, s, "l54-4", "five", `for i = 1, 10000 do print(i) end`)
	if r.status != 200 || r.str("reason") != "output_cap" || len(r.str("stdout")) > 4096 {
		t.Fatalf("lua5.4 output cap: %d %.300s", r.status, r.body)
	}
	r = runLua(t, s, "jit-1", "jit", `return _VERSION`)
	if r.status != 200 || r.json["result"] != "Lua 5.1" {
		t.Fatalf("the default runtime is LuaJIT: %d %s", r.status, r.body)
	}
}

// TestLua54BadRuntime: a runtime other than luajit or lua5.4 is refused,
// in a Caddyfile and in JSON config, with a message that names the choices.
func TestLua54BadRuntime(t *testing.T) {
	dir := t.TempDir()
	caddyfile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte("http://127.0.0.1:1 {\n\tlualambda {\n\t\tprofile p {\n\t\t\truntime lua5.9\n\t\t}\n\t}\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "caddy"), "adapt", "--config", caddyfile, "--adapter", "caddyfile").CombinedOutput()
	// caddy logs the error as JSON, its quotes escaped.
	if err == nil || !strings.Contains(string(out), `profile p: runtime \"lua5.9\": want luajit or lua5.4`) {
		t.Fatalf("caddy adapt: %v\n%s", err, out)
	}
	config := filepath.Join(dir, "caddy.json")
	cfg := `{"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:1"], "routes": [{"handle": [
		{"handler": "lualambda", "profiles": [{"name": "p", "runtime": "lua5.9"}]}]}]}}}}}`
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "caddy"), "validate", "--config", config)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `profile p: runtime \"lua5.9\": want luajit or lua5.4`) {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
}

// TestInvokeLocalLua54: lualambda invoke --local --runtime lua5.4.
func TestInvokeLocalLua54(t *testing.T) {
	out, errOut, code := cli(t, "", nil, "invoke", "--local", "--accel", "tcg", "--runtime", "lua5.4", "-e", `return {7 // 2, utf8.char(72)}`)
	if code != 0 || strings.TrimSpace(out) != `[3,"H"]` {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	_, errOut, code = cli(t, "", nil, "invoke", "--local", "--runtime", "lua6", "-e", "1")
	if code != 2 || !strings.Contains(errOut, `--runtime "lua6": want luajit or lua5.4`) {
		t.Fatalf("a bad runtime: exit %d, stderr %q", code, errOut)
	}
}

// TestLua54Session: a session on a lua5.4 profile is a Lua 5.4 REPL,
// started and typed into through the API with the CLI, as a person would.
func TestLua54Session(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is required (scripts/setup installs it)")
	}
	s := startCaddy(t, serverConfig{site: lua54Site})
	env := fmt.Sprintf("LUALAMBDA_SERVER=%s/invoke XDG_CONFIG_HOME=%s", s.URL, t.TempDir())
	a := newPane(t, env)
	a.typeLine("lualambda invoke --attach --profile five --id s54")
	a.waitFor("Lua 5.4", 1)
	a.typeLine("print('got ' .. 7 // 2 .. utf8.char(72))")
	a.waitFor("got 3H", 1)
	a.typeLine("os.exit(0)")
	a.waitFor("session s54 ended: ok", 1)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

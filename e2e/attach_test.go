package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// sessionSite has a profile for sessions and one with a short wall clock.
const sessionSite = `
	handle_path /invoke/* {
		lualambda {
			session_idle 1m
			profile s {
				memory 64MiB
				timeout 2m
				warm 1
			}
			profile short {
				memory 64MiB
				timeout 4s
				warm 0
			}
		}
	}`

// pane is a tmux session running a shell, driven like a person would.
type pane struct {
	t    *testing.T
	name string
}

func newPane(t *testing.T, env string) *pane {
	t.Helper()
	p := &pane{t: t, name: fmt.Sprintf("e2e-%d", time.Now().UnixNano())}
	if out, err := exec.Command("tmux", "new-session", "-d", "-s", p.name, "-x", "120", "-y", "40").CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("tmux", "kill-session", "-t", p.name).Run() })
	p.keys("cd "+testenv.Root()+" && export "+env+" PATH="+bin+":$PATH", "Enter")
	return p
}

func (p *pane) keys(keys ...string) {
	p.t.Helper()
	if out, err := exec.Command("tmux", append([]string{"send-keys", "-t", p.name}, keys...)...).CombinedOutput(); err != nil {
		p.t.Fatalf("send-keys: %v %s", err, out)
	}
}

// typeLine types a line of text literally and presses Enter.
func (p *pane) typeLine(s string) {
	p.t.Helper()
	p.keys("-l", s)
	p.keys("Enter")
}

func (p *pane) screen() string {
	out, _ := exec.Command("tmux", "capture-pane", "-p", "-t", p.name, "-S", "-200").Output()
	return string(out)
}

// waitFor waits until the pane shows want n times or more.
func (p *pane) waitFor(want string, n int) {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Count(p.screen(), want) >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("pane never showed %q (%d times):\n%s", want, n, p.screen())
}

func TestAttach(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is required (scripts/setup installs it)")
	}
	s := startCaddy(t, serverConfig{site: sessionSite})
	env := fmt.Sprintf("LUALAMBDA_SERVER=%s/invoke XDG_CONFIG_HOME=%s", s.URL, t.TempDir())

	a := newPane(t, env)
	a.typeLine("lualambda invoke --attach --profile s --id s1 --pkg testdata/packages/blah")
	a.waitFor("\n>", 1)
	a.typeLine("print(1 + 1)")
	a.waitFor("\n2\n", 1)
	a.typeLine("print(require('blah.util').greet('tmux'))")
	a.waitFor("hello tmux", 1)

	b := newPane(t, env)
	b.typeLine("lualambda attach s1")
	b.waitFor("hello tmux", 1) // the scrollback
	b.typeLine("print(40 + 2)")
	a.waitFor("\n42", 1)
	b.waitFor("\n42", 1)

	// Detach B: the session goes on, B's terminal is back to normal.
	b.keys("C-]")
	b.waitFor("detached from s1", 1)
	b.typeLine("stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo SANE-END")
	b.waitFor("icanon echo SANE-END", 1)
	a.typeLine("print(6 * 7 + 1)")
	a.waitFor("\n43", 1)

	// Re-attach: the scrollback shows what happened meanwhile.
	b.typeLine("lualambda attach s1")
	b.waitFor("\n43", 1)

	// No token, or a wrong one, is refused before any upgrade.
	if r := do(t, "GET", s.URL+"/invoke/s1/attach", "", nil); r.status != 401 {
		t.Fatalf("attach without a token: %d %s", r.status, r.body)
	}
	out, err := exec.Command(filepath.Join(bin, "lualambda"), "attach", "s1", "--server", s.URL+"/invoke", "--token", "wrong").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "403") {
		t.Fatalf("attach with a wrong token: %v %s", err, out)
	}

	// Ending the REPL ends the session for everyone, with its reason.
	a.typeLine("os.exit(0)")
	a.waitFor("session s1 ended: ok", 1)
	b.waitFor("session s1 ended: ok", 1)
	st := do(t, "GET", s.URL+"/invoke/s1", "", nil)
	if st.str("state") != "done" || st.str("reason") != "ok" {
		t.Fatalf("status after the session: %s", st.body)
	}
}

func TestAttachWallClock(t *testing.T) {
	s := startCaddy(t, serverConfig{site: sessionSite})
	env := fmt.Sprintf("LUALAMBDA_SERVER=%s/invoke XDG_CONFIG_HOME=%s", s.URL, t.TempDir())
	a := newPane(t, env)
	a.typeLine("lualambda invoke --attach --profile short --id s2")
	a.waitFor("\n>", 1)
	a.waitFor("session s2 ended: timeout", 1)
	r := do(t, "GET", s.URL+"/invoke/s2/attach", "", nil, "Authorization", "Bearer x")
	if r.status != 403 && r.status != 410 {
		t.Fatalf("attach after the end: %d %s", r.status, r.body)
	}
}

func TestAttachLocal(t *testing.T) {
	a := newPane(t, "XDG_CONFIG_HOME="+t.TempDir())
	a.typeLine("lualambda invoke --local --accel tcg --attach --pkg testdata/packages/blah --pkg examples/hello")
	a.waitFor("\n>", 1)
	a.typeLine("print(require('blah.util').greet('local'))")
	a.waitFor("\nhello local", 1)
	// A package holding hello.lua and no init.lua is the module hello.
	a.typeLine("print(require('hello')({'session'}).greeting)")
	a.waitFor("\nhello session", 1)
	a.keys("C-]")
	// The user ended their own session: it says so, and calls it no crash.
	a.waitFor("[session ended: you ended it (Ctrl-])]", 1)
	if strings.Contains(a.screen(), "crash") {
		t.Fatalf("a session the user ended reads as a crash:\n%s", a.screen())
	}
	a.typeLine("echo back-$((1+1))")
	a.waitFor("back-2", 1)
}

func TestAttachIdle(t *testing.T) {
	s := startCaddy(t, serverConfig{site: `
	handle_path /invoke/* {
		lualambda {
			session_idle 3s
			profile s {
				memory 64MiB
				timeout 2m
				warm 1
			}
		}
	}`})
	env := fmt.Sprintf("LUALAMBDA_SERVER=%s/invoke XDG_CONFIG_HOME=%s", s.URL, t.TempDir())
	a := newPane(t, env)
	a.typeLine("lualambda invoke --attach --profile s --id idle1")
	a.waitFor("\n>", 1)
	a.waitFor("session idle1 ended: idle", 1)
	st := do(t, "GET", s.URL+"/invoke/idle1", "", nil)
	if st.str("state") != "done" || st.str("reason") != "idle" {
		t.Fatalf("status after an idle session: %s", st.body)
	}
}

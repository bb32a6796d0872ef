package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// cli runs the lualambda binary and returns stdout, stderr and the exit code.
func cli(t *testing.T, stdin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "lualambda"), args...)
	cmd.Dir = testenv.Root()
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestInvokeLocal(t *testing.T) {
	cases := []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"stdin", "return 2 + 2", nil, "4"},
		{"bare expression", "", []string{"-e", "2 + 2"}, "4"},
		{"function with arg", "", []string{"-e", `return function(a) return "hi " .. a[1] end`, "--arg", "Algorand"}, `"hi Algorand"`},
		{"package", "", []string{"--pkg", "testdata/packages/blah", "--require", "blah.dorp", "--arg", `{"n": 2}`}, `{"greeting":"hello dorp","squares":[1,4]}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, code := cli(t, c.stdin, nil, append([]string{"invoke", "--local", "--accel", "tcg"}, c.args...)...)
			if code != 0 || strings.TrimSpace(out) != c.want {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %s", code, out, errOut, c.want)
			}
		})
	}
	t.Run("print goes to stderr, -v adds timings", func(t *testing.T) {
		out, errOut, code := cli(t, "", nil, "invoke", "--local", "--accel", "tcg", "-v", "-e", `print("hello") return true`)
		if code != 0 || strings.TrimSpace(out) != "true" || !strings.Contains(errOut, "hello") || !strings.Contains(errOut, "boot:") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("lua error exits 1", func(t *testing.T) {
		out, errOut, code := cli(t, "", nil, "invoke", "--local", "--accel", "tcg", "-e", `error("boom")`)
		if code != 1 || out != "" || !strings.Contains(errOut, "boom") || !strings.Contains(errOut, "stack traceback") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("bad usage exits 2", func(t *testing.T) {
		for _, args := range [][]string{
			{"invoke", "--local", "--no-such-flag"},
			{"invoke", "--local", "--pkg", "/no/such/dir", "-e", "1"},
			{"invoke", "--local", "--require", "bad name!"},
			{"invoke", "--local", "--accel", "fast", "-e", "1"},
		} {
			_, errOut, code := cli(t, "", nil, args...)
			if code != 2 || !strings.HasPrefix(errOut, "lualambda: ") {
				t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
			}
		}
	})
}

func TestCLIAgainstServer(t *testing.T) {
	s := startCaddy(t, serverConfig{site: apiSite})
	env := []string{"LUALAMBDA_SERVER=" + s.URL + "/invoke", "XDG_CONFIG_HOME=" + t.TempDir()}
	out, errOut, code := cli(t, "", env, "invoke", "--profile", "t", "--id", "cli-1", "-e", `print("from the VM") return {n = 1}`)
	if code != 0 || strings.TrimSpace(out) != `{"n":1}` || !strings.Contains(errOut, "from the VM") {
		t.Fatalf("invoke: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, _, code = cli(t, "", env, "status", "cli-1")
	if code != 0 || !strings.Contains(out, `"state": "done"`) || strings.Contains(out, `"n"`) {
		t.Fatalf("status: exit %d, %s", code, out)
	}
	out, _, code = cli(t, "", env, "output", "cli-1")
	if code != 0 || strings.TrimSpace(out) != `{"n":1}` {
		t.Fatalf("output with the saved token: exit %d, %q", code, out)
	}
	_, errOut, code = cli(t, "", env, "invoke", "--profile", "t", "--id", "cli-1", "-e", `return 2`)
	if code != 1 || !strings.Contains(errOut, "already run") {
		t.Fatalf("second run of an id: exit %d, %q", code, errOut)
	}
	out, _, code = cli(t, "", env, "profiles")
	if code != 0 || !strings.Contains(out, "0.001") || !strings.Contains(out, "PROFILE") {
		t.Fatalf("profiles: exit %d, %q", code, out)
	}
	// Default ids are random: the same code twice is two runs, and an id
	// cannot be guessed from the code.
	_, errOut1, code := cli(t, "return 40 + 2", env, "invoke", "--profile", "t", "-v")
	_, errOut2, code2 := cli(t, "return 40 + 2", env, "invoke", "--profile", "t", "-v")
	idOf := func(s string) string {
		m := regexp.MustCompile(`(?m)^id: (\S+)`).FindStringSubmatch(s)
		if m == nil {
			return ""
		}
		return m[1]
	}
	if code != 0 || code2 != 0 || idOf(errOut1) == "" || idOf(errOut1) == idOf(errOut2) {
		t.Fatalf("default ids: exits %d %d, ids %q %q\n%s\n%s", code, code2, idOf(errOut1), idOf(errOut2), errOut1, errOut2)
	}
}

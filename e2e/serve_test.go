package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// proc is a long-running process of a test: a server started with the real
// binaries, stopped with SIGINT (a user's Ctrl-C) when the test ends.
type proc struct {
	t        testing.TB
	cmd      *exec.Cmd
	out, err *testenv.Buffer
	done     chan struct{}
}

// startProc runs the binary name (caddy or lualambda) in the repository's
// root with args and extra environment until the test ends. Caddy's
// storage goes to a temporary directory.
func startProc(t testing.TB, env []string, name string, args ...string) *proc {
	t.Helper()
	home := t.TempDir()
	p := &proc{t: t, out: &testenv.Buffer{}, err: &testenv.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(bin, name), args...)
	p.cmd.Dir = testenv.Root()
	p.cmd.Env = append(os.Environ(), append([]string{"XDG_DATA_HOME=" + home, "XDG_CONFIG_HOME=" + home}, env...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.err
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s %v\nstdout:\n%s\nstderr:\n%s", name, args, tail(p.out.String(), 3000), tail(p.err.String(), 6000))
		}
	})
	return p
}

// waitOutput waits until the process's standard output holds want.
func (p *proc) waitOutput(want string, limit time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(p.out.String(), want) {
		select {
		case <-p.done:
			p.t.Fatalf("%s exited before printing %q", p.cmd.Path, want)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not print %q in %s", p.cmd.Path, want, limit)
		}
	}
}

// waitHTTP waits until url answers.
func (p *proc) waitHTTP(url string, limit time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited before answering on %s", p.cmd.Path, url)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not answer on %s in %s: %v", p.cmd.Path, url, limit, err)
		}
	}
}

// stop sends SIGINT and waits for the process to end.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("%s did not stop on SIGINT", p.cmd.Path)
	}
}

// needFreeAddr fails the test when addr is taken: a shipped file or a
// default names a fixed port.
func needFreeAddr(t testing.TB, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s is taken, and the config under test listens there: %v", addr, err)
	}
	l.Close()
}

// vmsDir makes a runtime directory QEMU (running as nobody) can reach,
// removed when the test ends after checking no QEMU process is left in it.
func vmsDir(t testing.TB) string {
	t.Helper()
	return testenv.VMsDir(t, "e2e-vms-")
}

// discover reads GET /invoke/ and returns the names of its profiles, and
// checks that GET /invoke sends clients there with a 308.
func discover(t *testing.T, base string) []string {
	t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(base + "/invoke")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "/invoke/" {
		t.Fatalf("GET /invoke: %s, Location %q; want 308 to /invoke/", resp.Status, resp.Header.Get("Location"))
	}
	r := do(t, http.MethodGet, base+"/invoke/", "", nil)
	var doc struct {
		Service  string `json:"service"`
		Profiles []struct {
			Name string `json:"name"`
		} `json:"profiles"`
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &doc) != nil || doc.Service != "lualambda" {
		t.Fatalf("GET /invoke/: %d %s", r.status, r.body)
	}
	var names []string
	for _, p := range doc.Profiles {
		names = append(names, p.Name)
	}
	return names
}

// paysOnlyUSDC makes a funded wallet with the CLI and pays for two runs
// of profile at api, which cost price µUSDC each: the receiver gets
// exactly the price of both, and the payer holds the same ALGO before and
// after (the server's fee payer paid the fees).
func paysOnlyUSDC(t *testing.T, c *paidChain, api, profile string, price uint64) {
	t.Helper()
	env := c.cliEnv(t, api)
	addr := c.newFundedWallet(t, env, "1")
	payer, err := types.DecodeAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	before, merchant0 := c.Balance(payer), c.USDC(c.merchant.Address)
	for i := range 2 {
		out, errOut, code := cli(t, "", env, "invoke", "--server", api, "--profile", profile, "-e", "return 6 * 7 + "+strconv.Itoa(i))
		if code != 0 || strings.TrimSpace(out) != strconv.Itoa(42+i) {
			t.Fatalf("paid run %d: exit %d, stdout %q\n%s", i, code, out, errOut)
		}
	}
	after, merchant1 := c.Balance(payer), c.USDC(c.merchant.Address)
	if after.MicroAlgos != before.MicroAlgos {
		t.Errorf("the payer spent ALGO on fees: %d -> %d µALGO", before.MicroAlgos, after.MicroAlgos)
	}
	if after.USDC != before.USDC-2*price || merchant1 != merchant0+2*price {
		t.Errorf("USDC: payer %d -> %d, receiver %d -> %d; want -%d and +%d", before.USDC, after.USDC, merchant0, merchant1, 2*price, 2*price)
	}
}

// TestServeCommandsServePaidRuns runs `lualambda serve` and `caddy
// lualambda-server` with the same flags, paid on a devnet with the default
// fee payer (funded from the faucet), and pays for runs with the CLI.
func TestServeCommandsServePaidRuns(t *testing.T) {
	for _, c := range []struct{ name, bin string }{
		{"lualambda serve", "lualambda"},
		{"caddy lualambda-server", "caddy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			chain := newPaidChain(t)
			port := freePort(t)
			args := []string{"serve"}
			if c.bin == "caddy" {
				args = []string{"lualambda-server"}
			}
			args = append(args, "--listen", "127.0.0.1:"+strconv.Itoa(port), "--pay-to", chain.merchant.Address.String(),
				"--algod", chain.Dev.URL(), "--algod-token", chain.Dev.Token(),
				"--profile", "nano", "--price", "nano=0.003", "--warm", "1", "--accel", "tcg", "--runtime-dir", vmsDir(t))
			p := startProc(t, nil, c.bin, args...)
			p.waitOutput("lualambda invoke --server", 60*time.Second)
			if strings.Contains(p.err.String(), "warning: algod") {
				t.Errorf("the preflight did not find the running devnet:\n%s", p.err.String())
			}
			base := "http://127.0.0.1:" + strconv.Itoa(port)
			out := p.out.String()
			for _, want := range []string{
				"caddy-lualambda serving " + base + "/invoke/",
				"paid, in USDC on devnet",
				"receiver:    " + chain.merchant.Address.String(),
				"facilitator: builtin, algod " + chain.Dev.URL(),
				"sponsored by a fee payer funded from the devnet's faucet",
				"nano   0.003 USDC",
				"mcp:         " + base + "/mcp (tools run_lua, list_profiles, get_output; paid per call",
				"curl -s " + base + "/invoke/",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("the server's description lacks %q:\n%s", want, out)
				}
			}
			if names := discover(t, base); strings.Join(names, ",") != "nano" {
				t.Errorf("profiles served: %v; want nano", names)
			}
			paysOnlyUSDC(t, chain, base+"/invoke", "nano", 3000)
			// The same runs as MCP tools, paid per call at the same price.
			sess := mcpConnect(t, base+"/mcp")
			pr := paymentRequired(t, mcpCall(t, sess, "run_lua", map[string]any{"code": "return 1"}, nil))
			if pr.Accepts[0].Amount != "3000" || pr.Accepts[0].PayTo != chain.merchant.Address.String() {
				t.Errorf("run_lua's requirements: %+v", pr.Accepts[0])
			}
		})
	}
}

// TestServeUsage checks that bad flags are refused with a message that
// names them, and echo no secret.
func TestServeUsage(t *testing.T) {
	const addr = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAY5HFKQ"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--pay-to", "nope"}, "--pay-to"},
		{[]string{"--price", "nano=1"}, "--price needs --pay-to"},
		{[]string{"--pay-to", addr, "--price", "huge=1"}, `profile "huge" is not served`},
		{[]string{"--profile", "giant"}, "not a reference profile"},
		{[]string{"--pay-to", addr, "--network", "testnet", "--fee-payer", "faucet"}, "only on a devnet"},
		{[]string{"--pay-to", addr, "--fee-payer", "abandon ability able"}, "never the words themselves"},
		{[]string{"--listen", "nowhere"}, "--listen"},
		{[]string{"--domain", "bad domain"}, "--domain"},
	} {
		out, errOut, code := cli(t, "", nil, append([]string{"serve"}, c.args...)...)
		if code != 2 || !strings.Contains(errOut, c.want) || out != "" || strings.Contains(errOut, "ability") {
			t.Errorf("serve %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, out, errOut, c.want)
		}
	}
}

// TestServeHelpsAgree checks that `lualambda serve --help` and `caddy
// lualambda-server --help` document the same flags, with the same words.
func TestServeHelpsAgree(t *testing.T) {
	flags := func(out string) []string {
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "--") {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		return lines
	}
	out, errOut, code := cli(t, "", nil, "serve", "--help")
	if code != 0 {
		t.Fatalf("lualambda serve --help: exit %d\n%s", code, errOut)
	}
	caddyOut, err := exec.Command(filepath.Join(bin, "caddy"), "lualambda-server", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("caddy lualambda-server --help: %v\n%s", err, caddyOut)
	}
	ours, theirs := flags(out), flags(string(caddyOut))
	if len(ours) < 14 || strings.Join(ours, "\n") != strings.Join(theirs, "\n") {
		t.Fatalf("the helps differ:\nlualambda serve:\n%s\n\ncaddy lualambda-server:\n%s", strings.Join(ours, "\n"), strings.Join(theirs, "\n"))
	}
	for _, want := range []string{"--pay-to", "--network", "--facilitator", "--algod", "--algod-token", "--fee-payer", "--price", "--profile", "--warm", "--listen", "--domain", `":8402"`} {
		if !strings.Contains(out, want) || !strings.Contains(string(caddyOut), want) {
			t.Errorf("a help lacks %s", want)
		}
	}
}

package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/wallet"
)

// The shipped Caddyfiles listen on :8080 with the admin API on
// localhost:2019; they are served as written, from the repository's root.
const (
	shippedSite  = "127.0.0.1:8080"
	shippedAdmin = "127.0.0.1:2019"
)

// TestCaddyfileExampleServes runs `caddy run --config Caddyfile.example`
// as its comment says: /invoke redirects, discovery lists the reference
// profiles, and a free run works with the CLI's default server.
func TestCaddyfileExampleServes(t *testing.T) {
	needFreeAddr(t, shippedSite)
	needFreeAddr(t, shippedAdmin)
	// TMPDIR holds the default runtime directory (lualambda-vms in the
	// temp dir), checked for QEMU processes left when the test ends.
	p := startProc(t, []string{"TMPDIR=" + vmsDir(t)}, "caddy", "run", "--config", "Caddyfile.example")
	p.waitHTTP("http://"+shippedSite+"/", 60*time.Second)
	if names := discover(t, "http://"+shippedSite); strings.Join(names, ",") != "nano,small,med" {
		t.Errorf("profiles: %v; want nano,small,med", names)
	}
	// The CLI's default server is http://localhost:8080/invoke.
	out, errOut, code := cli(t, "", []string{"LUALAMBDA_SERVER=", "XDG_CONFIG_HOME=" + t.TempDir()}, "invoke", "-e", "return 6 * 7")
	if code != 0 || strings.TrimSpace(out) != "42" {
		t.Fatalf("free run on Caddyfile.example: exit %d, stdout %q\n%s", code, out, errOut)
	}
	// Discovery links the MCP endpoint, where an MCP client finds the
	// tools and runs Lua free.
	if d := do(t, http.MethodGet, "http://"+shippedSite+"/invoke/", "", nil); d.str("mcp") != "/mcp" {
		t.Fatalf("discovery's mcp link: %s", d.body)
	}
	sess := mcpConnect(t, "http://"+shippedSite+"/mcp")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tools, err := sess.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if slices.Sort(names); strings.Join(names, ",") != "get_output,list_profiles,run_lua" {
		t.Fatalf("tools on Caddyfile.example's /mcp: %v", names)
	}
	run := runOK(t, mcpCall(t, sess, "run_lua", map[string]any{"code": "return 6 * 7", "profile": "nano"}, nil))
	if string(run.Result) != "42" {
		t.Fatalf("run_lua on Caddyfile.example: %+v", run)
	}
}

// TestCaddyfileDevnetServes runs Caddyfile.devnet as its comment says
// (PAY_TO set, LUALAMBDA_ALGOD naming the devnet) and pays for two runs
// with the CLI: the payer spends USDC only, its ALGO stays the same (the
// fee payer, funded from the devnet's faucet, pays the fees).
func TestCaddyfileDevnetServes(t *testing.T) {
	needFreeAddr(t, shippedSite)
	needFreeAddr(t, shippedAdmin)
	chain := &paidChain{Chain: devnettest.Start(t, devnet.Config{Token: wallet.DevnetToken})}
	chain.merchant = chain.NewAccount(5_000_000, true, 0)
	p := startProc(t, []string{"PAY_TO=" + chain.merchant.Address.String(), "LUALAMBDA_ALGOD=" + chain.Dev.URL(), "TMPDIR=" + vmsDir(t)},
		"caddy", "run", "--config", "Caddyfile.devnet")
	p.waitHTTP("http://"+shippedSite+"/", 60*time.Second)
	if names := discover(t, "http://"+shippedSite); strings.Join(names, ",") != "nano,small" {
		t.Errorf("profiles: %v; want nano,small", names)
	}
	paysOnlyUSDC(t, chain, "http://localhost:8080/invoke", "nano", 1000)
}

// TestFeePayerFaucetOnlyOnDevnet checks that `fee_payer faucet` is refused,
// with a clear error, on a network that is not a devnet.
func TestFeePayerFaucetOnlyOnDevnet(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	const cf = `{
	admin off
}
http://127.0.0.1:9 {
	x402pay {
		pay_to AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAY5HFKQ
		network testnet
		price 0.01
		facilitator builtin {
			algod https://testnet-api.algonode.cloud
			fee_payer faucet
		}
	}
	respond "ok"
}
`
	if err := os.WriteFile(path, []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "caddy"), "validate", "--config", path, "--adapter", "caddyfile").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "fee_payer faucet works only on a devnet") {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
}

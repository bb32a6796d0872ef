package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/types"
)

// TestSeedReadmeExamples runs the LuaLambda CLI's examples (its README:
// serve --pay-to, invoke --local-test, invoke --server ... --profile nano,
// status, output, profiles) as written against this product, paid on a
// devnet. The user's environment names the devnet (LUALAMBDA_ALGOD and
// its token, as the wallet uses them); the server listens on its default,
// :8402, as LuaLambda's did. The payer ends with the ALGO it started with.
func TestSeedReadmeExamples(t *testing.T) {
	needFreeAddr(t, "127.0.0.1:8402")
	c := newPaidChain(t)
	const api = "http://localhost:8402/invoke"
	env := c.cliEnv(t, api)
	// lualambda serve --pay-to ADDRESS (TMPDIR holds the VMs' default
	// runtime directory, checked for QEMU processes left at the end).
	srv := startProc(t, []string{"LUALAMBDA_ALGOD=" + c.Dev.URL(), "LUALAMBDA_ALGOD_TOKEN=" + c.Dev.Token(), "TMPDIR=" + vmsDir(t)}, "lualambda", "serve", "--pay-to", c.merchant.Address.String())
	srv.waitOutput("lualambda invoke --server "+api, 90*time.Second)
	if out := srv.out.String(); !strings.Contains(out, "caddy-lualambda serving "+api+"/") || !strings.Contains(out, "curl -s "+api+"/") {
		t.Fatalf("serve did not say where it serves:\n%s", out)
	}
	discover(t, "http://localhost:8402")

	// lualambda invoke --local-test: no server, no payment.
	out, errOut, code := cli(t, "", env, "invoke", "--local-test", "-e", "return 1 + 1")
	if code != 0 || strings.TrimSpace(out) != "2" {
		t.Fatalf("invoke --local-test: exit %d, stdout %q\n%s", code, out, errOut)
	}

	addr := c.newFundedWallet(t, env, "1")
	payer, err := types.DecodeAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	before := c.Balance(payer)

	// lualambda invoke --server ... --profile nano: paid at nano's price.
	out, errOut, code = cli(t, "", env, "invoke", "--server", api, "--profile", "nano", "--id", "seed-1", "-e", `print("hi") return {n = 6 * 7}`)
	if code != 0 || strings.TrimSpace(out) != `{"n":42}` || !strings.Contains(errOut, "hi") {
		t.Fatalf("paid invoke: exit %d, stdout %q\n%s", code, out, errOut)
	}
	if out, _, code := cli(t, "", env, "status", "seed-1"); code != 0 || !strings.Contains(out, `"state": "done"`) {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	if out, _, code := cli(t, "", env, "output", "seed-1"); code != 0 || strings.TrimSpace(out) != `{"n":42}` {
		t.Fatalf("output: exit %d %q", code, out)
	}
	out, _, code = cli(t, "", env, "profiles")
	for _, want := range []string{"PROFILE", "nano", "0.001", "small", "0.005", "med", "0.02"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("profiles: exit %d, lacks %q:\n%s", code, want, out)
		}
	}
	after := c.Balance(payer)
	if after.MicroAlgos != before.MicroAlgos || after.USDC != before.USDC-1000 {
		t.Fatalf("payer: %d µALGO, %d µUSDC -> %d µALGO, %d µUSDC; want the same ALGO and 1000 µUSDC less",
			before.MicroAlgos, before.USDC, after.MicroAlgos, after.USDC)
	}
}

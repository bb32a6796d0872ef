package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
)

// npmServerContent is what server.cjs serves on its paid route.
const npmServerContent = "paid content from express"

// serverStack is one npm server stack of server.cjs.
type serverStack struct {
	stack, network, client string
}

// serverStacks are the npm server stacks server.cjs runs, each with the
// CAIP-2 form of testnet it is built around (upstream: the truncated one;
// GoPlausible: the full genesis hash, which its facilitator compares with
// the transactions' gh as text) and the npm client stack that goes with it.
var serverStacks = []serverStack{
	// @x402/express + @x402/core + @x402/avm 2.26.
	{"upstream", x402.AlgorandTestnet.CAIP2Short(), "upstream"},
	// @x402-avm/express + @x402-avm/core + @x402-avm/avm 2.6.1.
	{"goplausible", x402.AlgorandTestnet.CAIP2(), "goplausible"},
	// @x402/express 2.21.0 with @x402-avm/avm's scheme: the upstream
	// server packages with GoPlausible's AVM scheme. From @x402/core 2.22.0
	// on, x402HTTPResourceServer.validateRouteConfiguration reads
	// schemeServer.paymentFlows[schemeServer.defaultAssetTransferMethod]
	// (dist/cjs/server/index.js), which @x402-avm/avm 2.6.1's ExactAvmScheme
	// does not define, so paymentMiddleware throws "Cannot read properties
	// of undefined (reading 'undefined')" at start; 2.21.0 is the newest
	// that runs it.
	{"mixed", x402.AlgorandTestnet.CAIP2(), "goplausible"},
}

// startNPMServer runs server.cjs with the stack, its /paid route selling
// npmServerContent for the price to receiver; facilitator is the
// environment that names the route's facilitator (ownFacilitator, or
// FACILITATOR_URL).
func startNPMServer(t *testing.T, modules string, tc serverStack, receiver account, facilitator ...string) *nodeServer {
	t.Helper()
	env := append([]string{
		"X402_SERVER_STACK=" + tc.stack,
		"PAY_TO=" + receiver.Addr,
		"NETWORK=" + tc.network,
		"PRICE=$" + price,
	}, facilitator...)
	return startNodeServer(t, modules, env...)
}

// ownFacilitator is the environment of server.cjs that runs the stack's own
// npm facilitator in the server process, settling on the devnet with
// feePayer paying the fees.
func ownFacilitator(c *chain, feePayer account) []string {
	return []string{
		"FACILITATOR_KEY=" + feePayer.KeyBase64(),
		"ALGOD_URL=" + c.Dev.URL(),
		"ALGOD_TOKEN=" + c.Dev.Token(),
	}
}

// stackRun is one subtest of a server stack: its server.cjs (node) selling
// to receiver, with the stack's own npm facilitator paying the fees from
// feePayer, and a payer holding USDC, on the devnet c.
type stackRun struct {
	modules                   string
	c                         *chain
	tc                        serverStack
	node                      *nodeServer
	receiver, feePayer, payer account
}

// forEachServerStack runs test in a subtest for each of serverStacks, on one
// devnet with one receiver; each subtest has its own fee payer, payer and
// server.
func forEachServerStack(t *testing.T, test func(t *testing.T, r stackRun)) {
	t.Helper()
	modules := npmModules(t)
	c := startChain(t)
	receiver := c.newReceiver(t)
	for _, tc := range serverStacks {
		t.Run(tc.stack, func(t *testing.T) {
			r := stackRun{modules: modules, c: c, tc: tc, receiver: receiver, feePayer: c.newFeePayer(t), payer: c.newPayer(t)}
			r.node = startNPMServer(t, modules, tc, receiver, ownFacilitator(c, r.feePayer)...)
			test(t, r)
		})
	}
}

// writeWallet writes a key file for `lualambda` holding the account, with
// the mode the CLI demands, and returns its path.
func writeWallet(t *testing.T, a account) string {
	t.Helper()
	w := map[string]any{
		"version":  1,
		"network":  "testnet",
		"address":  a.Addr,
		"mnemonic": devnettest.Mnemonic(t, a.Account),
	}
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "lualambda")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "wallet.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// payResult is one run of `lualambda pay`.
type payResult struct {
	code           int
	stdout, stderr string
}

// lualambdaPay runs `lualambda pay` with the wallet against the devnet,
// which it knows as testnet (the devnet impersonates it), bounded in time.
func lualambdaPay(t *testing.T, c *chain, wallet string, args ...string) payResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nodeRunTimeout)
	defer cancel()
	argv := append([]string{"pay", "--network", "testnet", "--algod", c.Dev.URL()}, args...)
	cmd := exec.CommandContext(ctx, binary(t, "lualambda"), argv...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"LUALAMBDA_WALLET="+wallet,
		"LUALAMBDA_ALGOD_TOKEN="+c.Dev.Token(),
		"HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home,
	)
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = dieWithUs()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("lualambda %s did not finish within %v:\n%s", strings.Join(argv, " "), nodeRunTimeout, stderr.String())
	}
	r := payResult{stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("lualambda pay: %v", err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

// settledLine is what server.cjs prints after each settlement.
type settledLine struct {
	Settled *struct {
		Success     bool   `json:"success"`
		Transaction string `json:"transaction"`
		Payer       string `json:"payer"`
		Network     string `json:"network"`
		ErrorReason string `json:"errorReason"`
	} `json:"settled"`
}

// TestLualambdaPaysNPMServer: `lualambda pay` pays a route protected by the
// published npm x402 server stacks (Express middleware, x402ResourceServer,
// the AVM exact scheme) whose facilitator is the stack's own, running in the
// server process with algod = the devnet and its own fee payer. The body
// must be the route's, the server must report a successful settlement of a
// committed transaction, and the balances must move by exactly the price
// (fees paid by the npm facilitator's fee payer).
func TestLualambdaPaysNPMServer(t *testing.T) {
	forEachServerStack(t, func(t *testing.T, r stackRun) {
		checkPaidByLualambda(t, r.c, r.node, r.payer, r.receiver, r.feePayer)
	})
}

// checkPaidByLualambda pays srv's /paid with `lualambda pay` and checks the
// body, the server's settlement, the receipt our client got and the
// balances.
func checkPaidByLualambda(t *testing.T, c *chain, srv *nodeServer, payer, receiver, feePayer account) {
	t.Helper()
	resp, body := get(t, srv.URL+"/paid")
	if resp.StatusCode != 402 || resp.Header.Get(x402.HeaderPaymentRequired) == "" {
		t.Fatalf("unpaid GET: %d %q, want 402 with %s", resp.StatusCode, body, x402.HeaderPaymentRequired)
	}
	p := c.watch(t, payer, receiver, feePayer)
	r := lualambdaPay(t, c, writeWallet(t, payer), "-v", "--max-price", "0.01", srv.URL+"/paid")
	if r.code != 0 {
		t.Fatalf("lualambda pay exited %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if strings.TrimSpace(r.stdout) != npmServerContent {
		t.Fatalf("lualambda pay printed %q, want %q (stderr %s)", r.stdout, npmServerContent, r.stderr)
	}
	settlements := func(lines []string) []settledLine {
		var settled []settledLine
		for _, l := range lines {
			var s settledLine
			if json.Unmarshal([]byte(l), &s) == nil && s.Settled != nil {
				settled = append(settled, s)
			}
		}
		return settled
	}
	// The server prints its settlement after it has answered: wait for it.
	settled := settlements(srv.awaitOutput(t, func(lines []string) bool { return len(settlements(lines)) > 0 }))
	if len(settled) != 1 || !settled[0].Settled.Success || settled[0].Settled.Transaction == "" {
		t.Fatalf("server settlements %+v, want one success", srv.output())
	}
	txid := settled[0].Settled.Transaction
	// -v prints the receipt the server sent back: it must name the same
	// transaction.
	if got := receiptTxID(t, r.stderr); got != txid {
		t.Errorf("lualambda pay -v reports transaction %s, the server settled %s", got, txid)
	}
	c.checkPaid(t, p, txid)
}

// receiptTxID returns the transaction id that `lualambda pay -v` reports as
// settled on standard error.
func receiptTxID(t *testing.T, stderr string) string {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		if txid, ok := strings.CutPrefix(line, "settled: "); ok {
			return strings.TrimSpace(txid)
		}
	}
	t.Fatalf("lualambda pay -v reports no settled transaction:\n%s", stderr)
	return ""
}

// TestNPMStackOnDevnet: the npm client of each stack pays the npm server of
// the same stack, whose npm facilitator settles on the devnet. Nothing of
// ours takes part but the devnet, so this shows that the devnet serves the
// algod API the npm AVM packages use (params, simulate, raw transaction,
// pending transaction) the way they expect.
func TestNPMStackOnDevnet(t *testing.T) {
	forEachServerStack(t, func(t *testing.T, r stackRun) {
		p := r.c.watch(t, r.payer, r.receiver, r.feePayer)
		res := payWithNPM(t, r.modules, r.c, r.tc.client, r.node.URL+"/paid", r.payer)
		checkNPMPaid(t, r.c, res, npmServerContent, p)
	})
}

// TestLualambdaPaysNPMServerWithOurFacilitator: as
// TestLualambdaPaysNPMServer, but the npm server verifies and settles through
// our built-in facilitator, served over HTTP by the caddy binary's
// x402facilitator handler, which the npm HTTPFacilitatorClient calls
// (/supported at start, then /verify and /settle). Its fee payer pays the
// fees.
func TestLualambdaPaysNPMServerWithOurFacilitator(t *testing.T) {
	modules := npmModules(t)
	c := startChain(t)
	receiver := c.newReceiver(t)
	feePayer := c.newFeePayer(t)
	const token = "interop-facilitator-token-0123456789"
	fac := startCaddy(t, "", fmt.Sprintf(`route /facilitator/* {
		x402facilitator {
			token %s
			network testnet
			algod %s
			algod_token %s
			fee_payer {file.%s}
		}
	}`, token, c.Dev.URL(), c.Dev.Token(), devnettest.MnemonicFile(t, feePayer.Account)))

	for _, tc := range serverStacks {
		t.Run(tc.stack, func(t *testing.T) {
			payer := c.newPayer(t)
			srv := startNPMServer(t, modules, tc, receiver, "FACILITATOR_URL="+fac.URL+"/facilitator", "FACILITATOR_TOKEN="+token)
			checkPaidByLualambda(t, c, srv, payer, receiver, feePayer)
		})
	}
}

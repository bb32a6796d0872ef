package interop

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
)

// Every paid route here costs 0.001 USDC (1000 base units).
const (
	price      = "0.001"
	priceUnits = 1000
	// feePayerFee is what a fee payer pays per two-transaction group: both
	// transactions' minimum fees, pooled on its own.
	feePayerFee = 2 * 1000
)

// clientResult is what client.cjs prints.
type clientResult struct {
	OK               bool   `json:"ok"`
	Error            string `json:"error"`
	Stack            string `json:"stack"`
	Payer            string `json:"payer"`
	Status           int    `json:"status"`
	Body             string `json:"body"`
	PaymentResponse  string `json:"paymentResponse"`
	XPaymentResponse string `json:"xPaymentResponse"`
	Settle           *struct {
		Success     bool   `json:"success"`
		ErrorReason string `json:"errorReason"`
		Payer       string `json:"payer"`
		Transaction string `json:"transaction"`
		Network     string `json:"network"`
	} `json:"settle"`
	Requests []struct {
		Method           string `json:"method"`
		URL              string `json:"url"`
		PaymentSignature bool   `json:"paymentSignature"`
		XPayment         bool   `json:"xPayment"`
	} `json:"requests"`
}

// payWithNPM runs client.cjs: stack pays url with the payer's key.
func payWithNPM(t *testing.T, modules string, c *chain, stack, url string, payer account) clientResult {
	t.Helper()
	var res clientResult
	err := runNode(t, modules, "client.cjs", &res,
		"X402_URL="+url,
		"X402_STACK="+stack,
		"AVM_PRIVATE_KEY="+payer.KeyBase64(),
		"ALGOD_URL="+c.Dev.URL(),
		"ALGOD_TOKEN="+c.Dev.Token(),
	)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// x402paySite is a Caddy site whose /paid route ("paid content") is guarded
// by x402pay. facilitator is "builtin", the built-in facilitator on the
// devnet co-signing as fee payer with the mnemonic in the file feePayer, or
// the URL of a remote facilitator.
func x402paySite(c *chain, payTo, network, facilitator, feePayer string) string {
	fac := "facilitator " + facilitator
	if facilitator == "builtin" {
		fac = fmt.Sprintf(`facilitator builtin {
				algod %s
				algod_token %s
				fee_payer {file.%s}
			}`, c.Dev.URL(), c.Dev.Token(), feePayer)
	}
	return fmt.Sprintf(`route /paid {
		x402pay {
			pay_to %s
			network %s
			price %s
			description "interop test content"
			%s
		}
		respond "paid content" 200
	}
	respond /health "ok" 200`, payTo, network, price, fac)
}

// checkNPMPaid checks what client.cjs reports of a paid v2 request: the
// content, one unpaid request then one with PAYMENT-SIGNATURE, and a receipt
// of a successful settlement by the payer on testnet, whose transaction must
// have moved exactly the price.
func checkNPMPaid(t *testing.T, c *chain, res clientResult, content string, p *payment) {
	t.Helper()
	if !res.OK {
		t.Fatalf("npm client failed: %s\n%s", res.Error, res.Stack)
	}
	if res.Payer != p.payer.Addr {
		t.Errorf("the npm signer made address %s of the key, want %s", res.Payer, p.payer.Addr)
	}
	if res.Status != http.StatusOK || res.Body != content {
		t.Fatalf("got %d %q, want 200 %q (result %+v)", res.Status, res.Body, content, res)
	}
	if len(res.Requests) != 2 || res.Requests[0].PaymentSignature || !res.Requests[1].PaymentSignature || res.Requests[1].XPayment {
		t.Errorf("want one unpaid request, then one with PAYMENT-SIGNATURE only (v2); got %+v", res.Requests)
	}
	if res.PaymentResponse == "" {
		t.Fatalf("no PAYMENT-RESPONSE header on the paid answer")
	}
	s := res.Settle
	if s == nil || !s.Success || s.Transaction == "" {
		t.Fatalf("receipt %+v: want success with a transaction id", s)
	}
	if s.Payer != p.payer.Addr {
		t.Errorf("receipt payer %q, want %q", s.Payer, p.payer.Addr)
	}
	if !x402.AlgorandTestnet.Matches(s.Network) {
		t.Errorf("receipt network %q is not testnet", s.Network)
	}
	c.checkPaid(t, p, s.Transaction)
}

// checkFeeRefused checks what client.cjs reports of a payment whose
// transaction has fee 0 (what): a 402 without the content, whose error names
// the fee.
func checkFeeRefused(t *testing.T, res clientResult, what string) {
	t.Helper()
	if res.Status != http.StatusPaymentRequired || strings.Contains(res.Body, "paid content") {
		t.Fatalf("%s got %d %q; want 402 without the content", what, res.Status, res.Body)
	}
	var refusal x402.PaymentRequiredV1
	if err := json.Unmarshal([]byte(res.Body), &refusal); err != nil || !strings.Contains(refusal.Error, "fee") {
		t.Errorf("the 402 should name the fee as the reason; got %q (%v)", res.Body, err)
	}
	t.Logf("%s refused as it must be: %s", what, refusal.Error)
}

// TestNPMClientsPayCaddy: the published npm x402 clients pay an x402pay route
// of the real caddy binary, whose built-in facilitator settles on the devnet
// and pays the fees. Each must get the content and a receipt naming a
// committed transaction; the payer's USDC must fall and the receiver's rise
// by exactly the price.
func TestNPMClientsPayCaddy(t *testing.T) {
	modules := npmModules(t)
	c := startChain(t)
	receiver := c.newReceiver(t)
	feePayer := c.newFeePayer(t)

	// The two CAIP-2 spellings of testnet: upstream offers and echoes the
	// truncated one, GoPlausible's the full genesis hash. Our server must
	// take either, and the clients must pay either.
	for _, network := range []string{x402.AlgorandTestnet.CAIP2Short(), x402.AlgorandTestnet.CAIP2()} {
		srv := startCaddy(t, "", x402paySite(c, receiver.Addr, network, "builtin", devnettest.MnemonicFile(t, feePayer.Account)))
		for _, stack := range []string{"upstream", "goplausible"} {
			t.Run(stack+"/"+network, func(t *testing.T) {
				payer := c.newPayer(t)
				p := c.watch(t, payer, receiver, feePayer)
				res := payWithNPM(t, modules, c, stack, srv.URL+"/paid", payer)
				checkNPMPaid(t, c, res, "paid content", p)
			})
		}
	}
}

// TestNPMClientV1PathCaddy runs GoPlausible's v1 client path (X-PAYMENT)
// against the same route. @x402-avm/avm 2.6.1's ExactAvmSchemeV1 ignores the
// offered fee payer and sets the fee of its single transaction from algod's
// per-byte fee field (dist/cjs/exact/client/index.js line 267, in
// ExactAvmSchemeV1.createPaymentPayload: `fee: suggestedParams.fee ??
// suggestedParams.minFee ?? BigInt(1e3)`),
// which is 0 on an uncongested network. A real ledger refuses such a
// transaction, so the only correct answer is a 402 that names the fee, with
// no content, no settlement and no balance change; the test checks exactly
// that.
func TestNPMClientV1PathCaddy(t *testing.T) {
	modules := npmModules(t)
	c := startChain(t)
	receiver := c.newReceiver(t)
	feePayer := c.newFeePayer(t)
	payer := c.newPayer(t)
	srv := startCaddy(t, "", x402paySite(c, receiver.Addr, "testnet", "builtin", devnettest.MnemonicFile(t, feePayer.Account)))

	p := c.watch(t, payer, receiver, feePayer)
	res := payWithNPM(t, modules, c, "goplausible-v1", srv.URL+"/paid", payer)
	if !res.OK {
		t.Fatalf("client failed: %s\n%s", res.Error, res.Stack)
	}
	if len(res.Requests) != 2 || !res.Requests[1].XPayment || res.Requests[1].PaymentSignature {
		t.Fatalf("want the paid request to carry X-PAYMENT only (the v1 path); got %+v", res.Requests)
	}
	checkFeeRefused(t, res, "a fee-0 v1 payment")
	c.checkUnchanged(t, p)
}

// TestCaddyWithNPMFacilitator: x402pay uses an npm facilitator over HTTP
// (each stack's x402Facilitator with its AVM exact scheme, served by
// server.cjs under /facilitator, settling on the devnet with its own fee
// payer). Our remote facilitator client must read the fee payer from its
// /supported, and both an npm client and `lualambda pay` must get the
// content with the price moved on chain.
func TestCaddyWithNPMFacilitator(t *testing.T) {
	forEachServerStack(t, func(t *testing.T, r stackRun) {
		c, payer, receiver, feePayer := r.c, r.payer, r.receiver, r.feePayer
		srv := startCaddy(t, "", x402paySite(c, receiver.Addr, r.tc.network, r.node.URL+"/facilitator", ""))

		p := c.watch(t, payer, receiver, feePayer)
		res := payWithNPM(t, r.modules, c, r.tc.client, srv.URL+"/paid", payer)
		checkNPMPaid(t, c, res, "paid content", p)

		p = c.watch(t, payer, receiver, feePayer)
		pay := lualambdaPay(t, c, writeWallet(t, payer), "-v", "--max-price", "0.01", srv.URL+"/paid")
		if pay.code != 0 || strings.TrimSpace(pay.stdout) != "paid content" {
			t.Fatalf("lualambda pay: exit %d, stdout %q\nstderr: %s", pay.code, pay.stdout, pay.stderr)
		}
		c.checkPaid(t, p, receiptTxID(t, pay.stderr))
	})
}

// TestNPMClientsWithoutFeePayer: x402pay's built-in facilitator without a
// fee payer offers none, so each client pays its own fee. Upstream's
// @x402/avm sets the normal fee (1000 µALGO) and must be served, the payer
// paying price and fee. GoPlausible's @x402-avm/avm 2.6.1 sets the fee from
// algod's per-byte fee field, 0 on an uncongested network
// (dist/cjs/exact/client/index.js line 154, in
// ExactAvmScheme.createPaymentPayload: `const assetTransferFee = feePayer ?
// BigInt(0) : suggestedParams.fee ?? minFee`), and
// a ledger refuses a fee-0 transaction: it must get a 402 that names the fee,
// with nothing moved. This is why the built-in facilitator should be given a
// fee payer.
func TestNPMClientsWithoutFeePayer(t *testing.T) {
	modules := npmModules(t)
	c := startChain(t)
	receiver := c.newReceiver(t)
	srv := startCaddy(t, "", fmt.Sprintf(`route /paid {
		x402pay {
			pay_to %s
			network testnet
			price %s
			facilitator builtin {
				algod %s
				algod_token %s
			}
		}
		respond "paid content" 200
	}`, receiver.Addr, price, c.Dev.URL(), c.Dev.Token()))

	t.Run("upstream", func(t *testing.T) {
		payer := c.newPayer(t)
		before := [2]devnettest.Balance{c.balance(t, payer), c.balance(t, receiver)}
		res := payWithNPM(t, modules, c, "upstream", srv.URL+"/paid", payer)
		if !res.OK || res.Status != http.StatusOK || res.Body != "paid content" {
			t.Fatalf("upstream client without fee payer: %+v", res)
		}
		if res.Settle == nil || !res.Settle.Success {
			t.Fatalf("receipt %+v", res.Settle)
		}
		info := c.confirmed(t, res.Settle.Transaction)
		if info.Transaction.Txn.Fee != 1000 || info.Transaction.Txn.Sender.String() != payer.Addr {
			t.Errorf("payment transaction %+v: want the payer's own, with fee 1000", info.Transaction.Txn)
		}
		after := [2]devnettest.Balance{c.balance(t, payer), c.balance(t, receiver)}
		want := [2]devnettest.Balance{
			{MicroAlgos: before[0].MicroAlgos - 1000, USDC: before[0].USDC - priceUnits},
			{MicroAlgos: before[1].MicroAlgos, USDC: before[1].USDC + priceUnits},
		}
		if after != want {
			t.Errorf("balances [payer receiver] %+v -> %+v, want %+v", before, after, want)
		}
	})
	t.Run("goplausible", func(t *testing.T) {
		payer := c.newPayer(t)
		before := [2]devnettest.Balance{c.balance(t, payer), c.balance(t, receiver)}
		res := payWithNPM(t, modules, c, "goplausible", srv.URL+"/paid", payer)
		if !res.OK {
			t.Fatalf("client failed: %s\n%s", res.Error, res.Stack)
		}
		checkFeeRefused(t, res, "a fee-0 payment")
		if after := [2]devnettest.Balance{c.balance(t, payer), c.balance(t, receiver)}; after != before {
			t.Errorf("balances [payer receiver] moved: %+v -> %+v", before, after)
		}
	})
}

package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/devnet"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// chain is an in-process devnet with a receiver (opted in to USDC), a
// payer holding USDC and a fee payer, as x402pay tests need.
type chain struct {
	t        testing.TB
	ctx      context.Context
	dev      *devnet.Devnet
	ledger   *avm.Algod
	payTo    crypto.Account
	payer    crypto.Account
	feePayer crypto.Account
	// feePayerFile holds the fee payer's mnemonic, for {file.*}.
	feePayerFile string
}

// newChain starts a devnet and funds the accounts; the payer gets usdc
// base units.
func newChain(t testing.TB, usdc uint64) *chain {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dev, err := devnet.Start(ctx, devnet.Config{})
	if err != nil {
		t.Fatalf("devnet: %v", err)
	}
	t.Cleanup(dev.Close)
	ledger, err := avm.NewAlgod(dev.URL(), dev.Token())
	if err != nil {
		t.Fatal(err)
	}
	c := &chain{t: t, ctx: ctx, dev: dev, ledger: ledger, payTo: crypto.GenerateAccount(), payer: crypto.GenerateAccount(), feePayer: crypto.GenerateAccount()}
	c.fund(c.payTo, 1_000_000, 0, true)
	c.fund(c.payer, 1_000_000, usdc, true)
	c.fund(c.feePayer, 10_000_000, 0, false)
	words, err := mnemonic.FromPrivateKey(c.feePayer.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	c.feePayerFile = filepath.Join(t.TempDir(), "fee-payer")
	if err := os.WriteFile(c.feePayerFile, []byte(words+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// fund gives an account ALGO, opts it in to USDC when optIn, then gives
// it usdc.
func (c *chain) fund(a crypto.Account, algos, usdc uint64, optIn bool) {
	c.t.Helper()
	if err := c.dev.Fund(c.ctx, a.Address, algos, 0); err != nil {
		c.t.Fatalf("fund %s: %v", a.Address, err)
	}
	if optIn {
		txn, err := transaction.MakeAssetAcceptanceTxn(a.Address.String(), nil, c.params(), c.dev.USDC())
		if err != nil {
			c.t.Fatal(err)
		}
		c.submit(avm.AccountSigner(a), txn)
	}
	if usdc > 0 {
		if err := c.dev.Fund(c.ctx, a.Address, 0, usdc); err != nil {
			c.t.Fatalf("fund %s with USDC: %v", a.Address, err)
		}
	}
}

// submit signs txn and waits until it is committed.
func (c *chain) submit(signer avm.Signer, txn types.Transaction) {
	c.t.Helper()
	stx, err := signer.Sign(c.ctx, txn)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.ledger.Submit(c.ctx, []types.SignedTxn{stx}); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.ledger.WaitConfirmed(c.ctx, crypto.GetTxID(txn), 10); err != nil {
		c.t.Fatal(err)
	}
}

func (c *chain) params() types.SuggestedParams {
	c.t.Helper()
	p, err := c.ledger.SuggestedParams(c.ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// usdc returns an account's USDC balance.
func (c *chain) usdc(a types.Address) uint64 {
	c.t.Helper()
	h, err := c.ledger.AssetHolding(c.ctx, a, c.dev.USDC())
	if err != nil {
		c.t.Fatal(err)
	}
	return h.Amount
}

// required returns the v2 and v1 requirements of a 402 answer.
func required(t testing.TB, r response) (x402.PaymentRequired, x402.PaymentRequiredV1) {
	t.Helper()
	if r.status != http.StatusPaymentRequired {
		t.Fatalf("status %d, want 402: %s", r.status, r.body)
	}
	var v2 x402.PaymentRequired
	if err := x402.DecodeHeader(r.header.Get(x402.HeaderPaymentRequired), &v2); err != nil {
		t.Fatalf("PAYMENT-REQUIRED: %v", err)
	}
	var v1 x402.PaymentRequiredV1
	if r.json != nil {
		if err := json.Unmarshal(r.body, &v1); err != nil {
			t.Fatalf("402 body: %v", err)
		}
	}
	return v2, v1
}

// build makes the payment for a requirement with signer, after letting
// mutate change the scheme-level requirement the group is built for and
// the suggested params (nil: none).
func (c *chain) build(signer avm.Signer, r x402.Requirement, mutate func(*avm.Requirement, *types.SuggestedParams)) avm.ExactPayload {
	c.t.Helper()
	req, err := avm.ParseRequirement(r.Terms())
	if err != nil {
		c.t.Fatal(err)
	}
	params := c.params()
	if mutate != nil {
		mutate(&req, &params)
	}
	payload, err := avm.BuildPayment(c.ctx, params, signer, req)
	if err != nil {
		c.t.Fatal(err)
	}
	return payload
}

// rebuild decodes a built payload, lets edit change its transactions and
// signs the payment member again with signer (unsigned members stay
// unsigned). With regroup the group id is computed again.
func (c *chain) rebuild(p avm.ExactPayload, signer avm.Signer, regroup bool, edit func(txns []types.Transaction, idx int)) avm.ExactPayload {
	c.t.Helper()
	members, err := avm.DecodeGroup(p)
	if err != nil {
		c.t.Fatal(err)
	}
	txns := make([]types.Transaction, len(members))
	for i, m := range members {
		txns[i] = m.Txn.Txn
	}
	edit(txns, p.PaymentIndex)
	if regroup && len(txns) > 1 {
		for i := range txns {
			txns[i].Group = types.Digest{}
		}
		gid, err := crypto.ComputeGroupID(txns)
		if err != nil {
			c.t.Fatal(err)
		}
		for i := range txns {
			txns[i].Group = gid
		}
	}
	out := avm.ExactPayload{PaymentIndex: p.PaymentIndex, PaymentGroup: make([]string, len(txns))}
	for i, txn := range txns {
		if i != p.PaymentIndex {
			out.PaymentGroup[i] = avm.EncodeMember(types.SignedTxn{Txn: txn}, false)
			continue
		}
		if signer == nil {
			out.PaymentGroup[i] = avm.EncodeMember(types.SignedTxn{Txn: txn}, false)
			continue
		}
		stx, err := signer.Sign(c.ctx, txn)
		if err != nil {
			c.t.Fatal(err)
		}
		out.PaymentGroup[i] = avm.EncodeMember(stx, true)
	}
	return out
}

// header encodes a payment for requirement r (v1 or v2) as the value of
// its request header, and names the header.
func paymentHeader(t testing.TB, r x402.Requirement, resource *x402.ResourceInfo, p avm.ExactPayload) (string, string) {
	t.Helper()
	pay, err := avm.NewPayment(r, resource, p)
	if err != nil {
		t.Fatal(err)
	}
	v, err := x402.EncodeHeader(pay)
	if err != nil {
		t.Fatal(err)
	}
	if r.V1 != nil {
		return x402.HeaderXPayment, v
	}
	return x402.HeaderPaymentSignature, v
}

// settleResponse decodes PAYMENT-RESPONSE (or X-PAYMENT-RESPONSE).
func settleResponse(t testing.TB, r response, name string) x402.SettleResponse {
	t.Helper()
	var sr x402.SettleResponse
	v := r.header.Get(name)
	if v == "" {
		t.Fatalf("no %s header (status %d, body %s)", name, r.status, r.body)
	}
	if err := x402.DecodeHeader(v, &sr); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return sr
}

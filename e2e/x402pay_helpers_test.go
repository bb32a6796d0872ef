package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// chain is an in-process devnet with a receiver (opted in to USDC), a
// payer holding USDC and a fee payer, as x402pay tests need.
type chain struct {
	*devnettest.Parties
	t   testing.TB
	ctx context.Context
	// feePayerFile holds the fee payer's mnemonic, for {file.*}.
	feePayerFile string
}

// newChain starts a devnet and funds the accounts; the payer gets usdc
// base units.
func newChain(t testing.TB, usdc uint64) *chain {
	t.Helper()
	p := devnettest.New(t, devnettest.Options{PayerUSDC: usdc})
	return &chain{Parties: p, t: t, ctx: t.Context(), feePayerFile: devnettest.MnemonicFile(t, p.FeePayer)}
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
	params := c.Params()
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

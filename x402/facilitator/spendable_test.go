package facilitator

import (
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"

	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// TestSpendable reads a payer's balance through algod, before and after a
// settlement, and 0 for an account that cannot spend the asset.
func TestSpendable(t *testing.T) {
	c := newChain(t)
	usdc := c.network.USDC
	got, err := c.builtin.Spendable(c.ctx, c.Payer.Address.String(), usdc)
	if err != nil || got != 10*price {
		t.Fatalf("spendable = %d, %v; want %d", got, err, 10*price)
	}
	r := c.requirementV2(c.network.CAIP2(), price, true)
	fees := c.Balance(c.FeePayer.Address).MicroAlgos
	c.expectSettled(c.builtin, c.pay(avm.AccountSigner(c.Payer), r), r)
	// The fee payer paid the minimum fee of the two members, no more.
	if paid := fees - c.Balance(c.FeePayer.Address).MicroAlgos; paid != 2*avm.MinTxnFee {
		t.Fatalf("the fee payer paid %d µAlgo, want %d", paid, 2*avm.MinTxnFee)
	}
	if got, err = c.builtin.Spendable(c.ctx, c.Payer.Address.String(), usdc); err != nil || got != 9*price {
		t.Fatalf("spendable after paying = %d, %v; want %d", got, err, 9*price)
	}
	// The fee payer holds ALGO only: not opted in, nothing to spend.
	if got, err = c.builtin.Spendable(c.ctx, c.FeePayer.Address.String(), usdc); err != nil || got != 0 {
		t.Fatalf("spendable of an account not opted in = %d, %v", got, err)
	}
	if got, err = c.builtin.Spendable(c.ctx, crypto.GenerateAccount().Address.String(), usdc); err != nil || got != 0 {
		t.Fatalf("spendable of an unknown account = %d, %v", got, err)
	}
	for _, bad := range []struct {
		payer string
		asset uint64
	}{{"NOTANADDRESS", usdc}, {c.Payer.Address.String(), 0}} {
		if _, err := c.builtin.Spendable(c.ctx, bad.payer, bad.asset); err == nil {
			t.Errorf("spendable(%q, %d) did not fail", bad.payer, bad.asset)
		}
	}
}

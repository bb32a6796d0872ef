package facilitator

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"

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

// holdingReads is a Ledger that counts its balance reads.
type holdingReads struct {
	avm.Ledger
	mu sync.Mutex
	n  int
}

func (h *holdingReads) AssetHolding(ctx context.Context, addr types.Address, asset uint64) (avm.Holding, error) {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	return h.Ledger.AssetHolding(ctx, addr, asset)
}

func (h *holdingReads) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// TestSpendableReusesAReadLessWhatLeft: a balance read answers Spendable
// again without a read, less every payment the facilitator submitted for
// the payer since, and less a payment that was submitted but unconfirmed
// when the read was made (the read did not include it) once it confirms:
// the reused answer never exceeds the ledger's balance.
func TestSpendableReusesAReadLessWhatLeft(t *testing.T) {
	l := &lookups{}
	c := newChainOn(t, devnet.Config{WaitTimeout: 20 * time.Millisecond, OnPendingLookup: l.seen})
	reads := &holdingReads{Ledger: c.Algod}
	b, err := NewBuiltin(BuiltinConfig{Ledger: reads, Network: c.network, FeePayerMnemonic: devnettest.Mnemonic(t, c.FeePayer)})
	if err != nil {
		t.Fatal(err)
	}
	b.spend.ttl = time.Hour // no read expires during the test
	payer, usdc := c.Payer.Address.String(), c.network.USDC
	expect := func(want uint64, wantReads int) {
		t.Helper()
		got, err := b.Spendable(c.ctx, payer, usdc)
		if err != nil || got != want {
			t.Fatalf("spendable = %d, %v; want %d", got, err, want)
		}
		if onLedger := c.USDC(c.Payer.Address); got > onLedger {
			t.Fatalf("spendable %d exceeds the ledger's balance %d", got, onLedger)
		}
		if n := reads.count(); n != wantReads {
			t.Fatalf("%d balance reads, want %d", n, wantReads)
		}
	}
	expect(10*price, 1)
	r := c.requirementV2(c.network.CAIP2(), price, true)
	for i := range 3 {
		c.expectSettled(b, c.pay(avm.AccountSigner(c.Payer), r), r)
		expect(uint64(9-i)*price, 1)
	}

	// A settlement waits for its confirmation while a new read is made.
	p := c.pay(avm.AccountSigner(c.Payer), r)
	if v, err := b.Verify(c.ctx, p, r); err != nil || !v.IsValid {
		t.Fatalf("verify = %+v, %v", v, err)
	}
	var payload avm.ExactPayload
	if err := json.Unmarshal(p.SchemePayload(), &payload); err != nil {
		t.Fatal(err)
	}
	txid, err := payload.PaymentTxID()
	if err != nil {
		t.Fatal(err)
	}
	waiting := l.watch(txid, 1)
	c.Dev.HoldGroups(true)
	settled := make(chan x402.SettleResponse, 1)
	go func() {
		s, _ := b.Settle(c.ctx, p, r)
		settled <- s
	}()
	select {
	case <-waiting:
	case <-c.ctx.Done():
		t.Fatal("the settlement never looked its payment up")
	}
	b.spend.mu.Lock()
	for _, s := range b.spend.states {
		s.readAt = time.Time{} // the read is old: the next one goes to the ledger
	}
	b.spend.mu.Unlock()
	expect(7*price, 2) // the held payment is not on the ledger yet
	c.Dev.HoldGroups(false)
	if err := c.Dev.ReleaseHeld(); err != nil {
		t.Fatal(err)
	}
	if s := <-settled; !s.Success {
		t.Fatalf("settle = %+v", s)
	}
	expect(6*price, 2) // it is now, and the read did not include it
}

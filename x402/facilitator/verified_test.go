package facilitator

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/transaction"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

func TestVerifiedCacheBoundsAndMatching(t *testing.T) {
	c := newVerifiedCache()
	now := time.Now()
	raw := func(i int) []byte { return []byte(fmt.Sprintf(`{"paymentGroup":["fee","m%d"],"paymentIndex":1}`, i)) }
	decoded := map[int]*avm.Decoded{}
	payload := func(i int) *avm.Decoded {
		if decoded[i] == nil {
			decoded[i] = &avm.Decoded{}
		}
		return decoded[i]
	}
	verified := func(i int) *avm.Verified { return &avm.Verified{PaymentTxID: fmt.Sprint("tx", i)} }
	req := avm.Requirement{Asset: 1, Amount: 1000}
	for i := range verifiedMax + 100 {
		c.put(raw(i), req, payload(i), verified(i), now)
	}
	if n := c.len(); n != verifiedMax {
		t.Fatalf("%d entries, want %d", n, verifiedMax)
	}
	if _, _, ok := c.lookup(raw(0)); ok {
		t.Fatal("the oldest entry survived the bound")
	}
	last := verifiedMax + 99
	p, id, ok := c.lookup(raw(last))
	if !ok || id != fmt.Sprint("tx", last) || p != payload(last) {
		t.Fatalf("lookup = %+v, %q, %v", p, id, ok)
	}
	// Another requirement does not match, and the entry is gone after.
	other := req
	other.Amount++
	if v := c.take(raw(last), other, now); v != nil {
		t.Fatal("an entry matched another requirement")
	}
	if v := c.take(raw(last), req, now); v != nil {
		t.Fatal("an entry was taken twice")
	}
	// Another encoding of the payload is another key.
	c.put(raw(5000), req, payload(5000), verified(5000), now)
	if v := c.take([]byte(` `+string(raw(5000))), req, now); v != nil {
		t.Fatal("an entry matched other bytes")
	}
	// An expired entry does not match.
	if v := c.take(raw(5000), req, now.Add(verifiedTTL)); v != nil {
		t.Fatal("an expired entry matched")
	}
	c.put(raw(5000), req, payload(5000), verified(5000), now)
	if v := c.take(raw(5000), req, now.Add(verifiedTTL/2)); v == nil || v.PaymentTxID != "tx5000" {
		t.Fatalf("take = %+v", v)
	}
	// Taken keys do not pile up in the eviction order.
	for i := range 3 * verifiedMax {
		c.put(raw(i), req, payload(i), verified(i), now)
		c.take(raw(i), req, now)
	}
	if len(c.order) > 2*verifiedMax+1 {
		t.Fatalf("order holds %d keys", len(c.order))
	}
}

// Settle reuses Verify's verification: the group is submitted as verified,
// the node still judges it, and the reuse needs the same requirement.
func TestChainSettleReusesVerification(t *testing.T) {
	c := newChain(t)
	r := c.requirementV2(c.network.CAIP2(), price, true)
	c.expectSettled(c.builtin, c.pay(avm.AccountSigner(c.Payer), r), r)
	if n := c.builtin.verified.len(); n != 0 {
		t.Fatalf("%d verifications left after settling", n)
	}

	// Verified, then the payer spends its USDC elsewhere: the node refuses
	// the group at settlement, and nothing is recorded as settled.
	p := c.pay(avm.AccountSigner(c.Payer), r)
	v, err := c.builtin.Verify(c.ctx, p, r)
	if err != nil || !v.IsValid {
		t.Fatalf("verify = %+v, %v", v, err)
	}
	if n := c.builtin.verified.len(); n != 1 {
		t.Fatalf("%d verifications cached, want 1", n)
	}
	left := c.USDC(c.Payer.Address)
	drain, err := transaction.MakeAssetTransferTxn(c.Payer.Address.String(), c.PayTo.Address.String(), left, nil, c.Params(), "", c.network.USDC)
	if err != nil {
		t.Fatal(err)
	}
	c.Submit(avm.AccountSigner(c.Payer), drain)
	s, err := c.builtin.Settle(c.ctx, p, r)
	if err != nil || s.Success || s.ErrorReason != avm.ReasonSettlementFailed || s.Transaction != "" {
		t.Fatalf("settle of a spent payment = %+v, %v", s, err)
	}
	// Verified again now, it is refused for what it is.
	c.expectInvalid(c.builtin, p, r, avm.ReasonInsufficientFunds)

	// A verification is not reused for another requirement: the payment is
	// checked again against it.
	c.Fund(c.Payer.Address, 0, 10*price)
	p = c.pay(avm.AccountSigner(c.Payer), r)
	if v, err := c.builtin.Verify(c.ctx, p, r); err != nil || !v.IsValid {
		t.Fatalf("verify = %+v, %v", v, err)
	}
	more := c.requirementV2(c.network.CAIP2(), 2*price, true)
	s, err = c.builtin.Settle(c.ctx, p, more)
	if err != nil || s.Success || s.ErrorReason != avm.ReasonPayload {
		t.Fatalf("settle against another requirement = %+v, %v", s, err)
	}
}

// An avm.Algod made as a literal goes through the SDK client for every
// call, and settles alike.
func TestChainLiteralAlgodLedger(t *testing.T) {
	c := newChain(t)
	b, err := NewBuiltin(BuiltinConfig{Ledger: &avm.Algod{Client: c.Algod.Client}, Network: c.network, FeePayerMnemonic: devnettest.Mnemonic(t, c.FeePayer)})
	if err != nil {
		t.Fatal(err)
	}
	r := c.requirementV2(c.network.CAIP2(), price, true)
	c.expectSettled(b, c.pay(avm.AccountSigner(c.Payer), r), r)
	noCheck, err := NewBuiltin(BuiltinConfig{Ledger: &avm.Algod{Client: c.Algod.Client}, Network: c.network, FeePayerMnemonic: devnettest.Mnemonic(t, c.FeePayer), SkipBalanceCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	r = c.requirementV2(c.network.CAIP2(), 100*price, true)
	c.expectInvalid(noCheck, c.pay(avm.AccountSigner(c.Payer), r), r, avm.ReasonSimulationFailed)
}

// sameV2 is only a shortcut: whatever it calls identical, x402.MatchV2
// matches too, whatever the extra holds.
func TestSameV2ImpliesMatchV2(t *testing.T) {
	base := x402.PaymentRequirements{Scheme: x402.SchemeExact, Network: "algorand:SGO1GKSzyE7IEPItTxCByw9x8FmnrCDe", Asset: "10458941", Amount: "1000", PayTo: "X", MaxTimeoutSeconds: 60}
	for _, extra := range []string{"", "null", "{}", `{"feePayer":"F"}`, `{"a":[1,{"b":null}]}`, `"text"`, `[1,2]`, `not json`, ` {"feePayer":"F"} `} {
		a := base
		if extra != "" {
			a.Extra = json.RawMessage(extra)
		}
		b := a
		b.Extra = append(json.RawMessage(nil), a.Extra...)
		if !sameV2(a, b) {
			t.Fatalf("extra %q: not the same", extra)
		}
		if i := x402.MatchV2(a, []x402.PaymentRequirements{b}, x402.NewNetworks()); i != 0 {
			t.Fatalf("extra %q: sameV2 but MatchV2 = %d", extra, i)
		}
	}
	other := base
	other.Amount = "1001"
	if sameV2(base, other) {
		t.Fatal("different amounts are the same")
	}
}

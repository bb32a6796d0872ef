package facilitator

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// TestPaymentKeyDecodesOnceForVerify: PaymentKey answers the payment's
// transaction id as avm computes it, hands its decode to the Verify of
// that very payment only (another payment is decoded afresh and judged on
// its own), and refuses a malformed payload with the avm reason.
func TestPaymentKeyDecodesOnceForVerify(t *testing.T) {
	c := newChain(t)
	r := c.requirementV2(c.network.CAIP2(), price, true)
	p := c.pay(avm.AccountSigner(c.Payer), r)
	var payload avm.ExactPayload
	if err := json.Unmarshal(p.SchemePayload(), &payload); err != nil {
		t.Fatal(err)
	}
	want, err := payload.PaymentTxID()
	if err != nil {
		t.Fatal(err)
	}
	key, err := c.builtin.PaymentKey(p)
	if err != nil || key != want {
		t.Fatalf("PaymentKey = %q, %v; want %q", key, err, want)
	}
	// A payment for another amount, keyed too: each Verify judges its own.
	wrong := c.requirementV2(c.network.CAIP2(), price+1, true)
	other := c.pay(avm.AccountSigner(c.Payer), wrong)
	other.V2.Accepted = *r.V2
	if _, err := c.builtin.PaymentKey(other); err != nil {
		t.Fatal(err)
	}
	if v, err := c.builtin.Verify(c.ctx, other, r); err != nil || v.IsValid || v.InvalidReason != avm.ReasonAmountMismatch {
		t.Fatalf("verify of the other payment against r = %+v, %v", v, err)
	}
	if v, err := c.builtin.Verify(c.ctx, p, r); err != nil || !v.IsValid {
		t.Fatalf("verify = %+v, %v", v, err)
	}
	if n := len(c.builtin.decoded.entries); n != 0 {
		t.Fatalf("%d decoded payments kept after their verification", n)
	}
	c.expectSettled(c.builtin, p, r)

	bad := x402.Payment{V2: &x402.PaymentPayload{X402Version: 2, Accepted: *r.V2, Payload: json.RawMessage(`{"paymentGroup":["!!"],"paymentIndex":0}`)}}
	var ae *avm.Error
	if _, err := c.builtin.PaymentKey(bad); !errors.As(err, &ae) || ae.Reason != avm.ReasonInvalidTransaction {
		t.Fatalf("PaymentKey of a malformed payload = %v", err)
	}
}

// TestDecodedCacheBounds: a decode is taken once, expires, and the cache
// stays within its bound.
func TestDecodedCacheBounds(t *testing.T) {
	c := newDecodedCache()
	now := time.Now()
	d := &avm.Decoded{}
	c.put([]byte("a"), d, now)
	if got := c.take([]byte("b"), now); got != nil {
		t.Fatal("another payload's decode was taken")
	}
	if got := c.take([]byte("a"), now); got != d {
		t.Fatal("the decode was not kept")
	}
	if got := c.take([]byte("a"), now); got != nil {
		t.Fatal("a decode was taken twice")
	}
	c.put([]byte("a"), d, now)
	if got := c.take([]byte("a"), now.Add(decodedTTL)); got != nil {
		t.Fatal("an expired decode was taken")
	}
	for i := range decodedMax * 3 {
		c.put([]byte{byte(i), byte(i >> 8)}, d, now)
		if len(c.entries) > decodedMax {
			t.Fatalf("%d decodes kept, bound %d", len(c.entries), decodedMax)
		}
	}
}

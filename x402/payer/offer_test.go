package payer

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// countSigner counts the signatures of a real signer.
type countSigner struct {
	avm.Signer
	n atomic.Int32
}

func (s *countSigner) Sign(ctx context.Context, txn types.Transaction) (types.SignedTxn, error) {
	s.n.Add(1)
	return s.Signer.Sign(ctx, txn)
}

// TestSignOffer: SignOffer signs an acceptable offer of a challenge that
// came outside HTTP into a v2 payment the facilitator verifies, and refuses
// an offer Evaluate refused without signing.
func TestSignOffer(t *testing.T) {
	e := newChainEnv(t)
	g, _ := e.newGate(t, false, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	acct, _ := e.account(ctx)
	signer := &countSigner{Signer: acct.Signer}
	resource := &x402.ResourceInfo{URL: "mcp://tool/run_lua"}
	ch := challengeV2(x402.PaymentRequired{X402Version: 2, Resource: *resource, Accepts: g.offers})

	refused := Evaluate(ch, acct.Chains, 999)
	if _, _, err := SignOffer(ctx, signer, refused[0], resource); err == nil {
		t.Fatal("SignOffer signed an offer over the cap")
	}
	if n := signer.n.Load(); n != 0 {
		t.Fatalf("the signer signed %d times for a refused offer", n)
	}

	offers := Evaluate(ch, acct.Chains, 1000)
	p, txid, err := SignOffer(ctx, signer, offers[Choose(offers)], resource)
	if err != nil {
		t.Fatal(err)
	}
	if p.V2 == nil || p.V2.Resource == nil || p.V2.Resource.URL != resource.URL || p.V2.Accepted.Amount != strconv.Itoa(1000) || txid == "" {
		t.Fatalf("payment %+v, txid %q", p.V2, txid)
	}
	vr, err := e.fac.Verify(ctx, p, g.requirements()[0])
	if err != nil || !vr.IsValid {
		t.Fatalf("the facilitator does not verify the payment: %v %+v", err, vr)
	}
}

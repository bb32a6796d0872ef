package facilitator

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// TestParsedTermsAreTheTerms: the cache of parsed requirements answers, for
// terms that differ in any one field (extra's fee payer included), exactly
// what parsing them answers, also past its bound, and keeps no failure.
func TestParsedTermsAreTheTerms(t *testing.T) {
	b, err := NewBuiltin(BuiltinConfig{AlgodURL: "http://127.0.0.1:1", Network: x402.Network{Name: "t", GenesisHash: [32]byte{1}}})
	if err != nil {
		t.Fatal(err)
	}
	payTo, feePayer, other := crypto.GenerateAccount().Address.String(), crypto.GenerateAccount().Address.String(), crypto.GenerateAccount().Address.String()
	extra := func(fp string) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"feePayer":%q}`, fp)) }
	base := x402.Terms{Version: 2, Scheme: x402.SchemeExact, Network: "t", Asset: "7", Amount: "1000", PayTo: payTo, MaxTimeoutSeconds: 60, Extra: extra(feePayer)}
	variants := []x402.Terms{base}
	for _, change := range []func(*x402.Terms){
		func(t *x402.Terms) { t.Network = "u" },
		func(t *x402.Terms) { t.Asset = "8" },
		func(t *x402.Terms) { t.Amount = "1001" },
		func(t *x402.Terms) { t.PayTo = other },
		func(t *x402.Terms) { t.MaxTimeoutSeconds = 61 },
		func(t *x402.Terms) { t.Extra = extra(other) },
		func(t *x402.Terms) { t.Extra = nil },
		func(t *x402.Terms) { t.PayTo = "not an address" },
		func(t *x402.Terms) { t.Extra = extra("not an address") },
	} {
		v := base
		change(&v)
		variants = append(variants, v)
	}
	for i := range maxParsedTerms + 10 {
		v := base
		v.Amount = fmt.Sprint(2000 + i)
		variants = append(variants, v)
	}
	for round := range 3 {
		for i, v := range variants {
			want, wantErr := avm.ParseRequirement(v)
			got, err := b.parseTerms(v)
			if (err == nil) != (wantErr == nil) || got != want {
				t.Fatalf("round %d, terms %d %+v: cached %+v, %v; parsed %+v, %v", round, i, v, got, err, want, wantErr)
			}
		}
	}
	if n := len(b.parsed); n > maxParsedTerms {
		t.Fatalf("%d parsed terms kept, bound %d", n, maxParsedTerms)
	}
}

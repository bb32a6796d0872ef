package payer

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"

	"github.com/lualambda/caddy-lualambda/x402"
)

// testnetChain is a chain on testnet; choosing never calls its algod.
func testnetChain() []Chain { return []Chain{{Network: x402.AlgorandTestnet}} }

func offerV2(network, asset, amount, payTo string) x402.Requirement {
	return x402.Requirement{V2: &x402.PaymentRequirements{
		Scheme: x402.SchemeExact, Network: network, Asset: asset, Amount: amount, PayTo: payTo, MaxTimeoutSeconds: 60,
	}}
}

func TestChooseCheapestUnderCap(t *testing.T) {
	to := crypto.GenerateAccount().Address.String()
	tn := x402.AlgorandTestnet
	ch := &Challenge{Version: 2, Offers: []x402.Requirement{
		offerV2(tn.CAIP2(), "10458941", "5000", to),
		offerV2(tn.CAIP2Short(), "10458941", "1000", to), // cheapest, truncated CAIP-2 form
		offerV2(tn.CAIP2(), "10458941", "1000", to),      // as cheap, later: not chosen
		offerV2(x402.AlgorandMainnet.CAIP2(), "31566704", "1", to),
		offerV2(tn.CAIP2(), "12345", "1", to),
	}}
	offers := Evaluate(ch, testnetChain(), 5000)
	i := Choose(offers)
	if i != 1 {
		t.Fatalf("chose %d, want 1; offers: %v", i, offers)
	}
	if offers[i].Parsed.Amount != 1000 || offers[i].Chain == nil || offers[i].Price() != "0.001 USDC" {
		t.Fatalf("chosen offer: %+v, price %q", offers[i].Parsed, offers[i].Price())
	}
	if !strings.Contains(offers[3].Refusal, "not a network this wallet pays on") {
		t.Errorf("mainnet offer with a testnet wallet: refusal %q", offers[3].Refusal)
	}
	if !strings.Contains(offers[4].Refusal, "is not USDC") {
		t.Errorf("other asset: refusal %q", offers[4].Refusal)
	}
	for _, j := range []int{0, 1, 2} {
		if !offers[j].Acceptable() {
			t.Errorf("offer %d at or under the cap refused: %s", j, offers[j].Refusal)
		}
	}
}

func TestChooseRefusesOverCap(t *testing.T) {
	to := crypto.GenerateAccount().Address.String()
	ch := &Challenge{Version: 2, Offers: []x402.Requirement{
		offerV2(x402.AlgorandTestnet.CAIP2(), "10458941", "20000", to),
		offerV2(x402.AlgorandTestnet.CAIP2(), "10458941", "10000", to),
	}}
	offers := Evaluate(ch, testnetChain(), 9999)
	if i := Choose(offers); i != -1 {
		t.Fatalf("chose %d over the cap", i)
	}
	err := &RefusedError{Offers: offers, MaxAmount: 9999}
	msg := err.Error()
	if !strings.Contains(msg, "nothing was signed") || !strings.Contains(msg, "0.01 USDC") || !strings.Contains(msg, "0.02 USDC") ||
		!strings.Contains(msg, "over the max price of 0.009999 USDC") {
		t.Fatalf("message: %s", msg)
	}
	if o, ok := err.Cheapest(); !ok || o.Parsed.Amount != 10000 {
		t.Fatalf("cheapest refused offer: %v %v", o, ok)
	}
	// At exactly the price, it is paid.
	if i := Choose(Evaluate(ch, testnetChain(), 10000)); i != 1 {
		t.Fatalf("at the cap: chose %d, want 1", i)
	}
}

func TestChooseRefusesMalformed(t *testing.T) {
	to := crypto.GenerateAccount().Address.String()
	tn := x402.AlgorandTestnet.CAIP2()
	bad := []x402.Requirement{
		{V2: &x402.PaymentRequirements{Scheme: "upto", Network: tn, Asset: "10458941", Amount: "1", PayTo: to}},
		offerV2(tn, "10458941", "-1", to),
		offerV2(tn, "10458941", "1", "not-an-address"),
		offerV2("eip155:8453", "10458941", "1", to),
		offerV2("algorand:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "10458941", "1", to),
	}
	offers := Evaluate(&Challenge{Version: 2, Offers: bad}, testnetChain(), 1<<40)
	for i, o := range offers {
		if o.Acceptable() {
			t.Errorf("offer %d accepted: %+v", i, o.Terms)
		}
	}
	if Choose(offers) != -1 {
		t.Fatal("a malformed offer was chosen")
	}
	if Choose(nil) != -1 {
		t.Fatal("chose from no offers")
	}
}

func TestParseChallengeV2Header(t *testing.T) {
	to := crypto.GenerateAccount().Address.String()
	pr := x402.PaymentRequired{
		X402Version: 2, Error: "payment required",
		Resource: x402.ResourceInfo{URL: "http://127.0.0.1/invoke/x/nano", Description: "a run"},
		Accepts: []x402.PaymentRequirements{
			*offerV2(x402.AlgorandTestnet.CAIP2(), "10458941", "1000", to).V2,
		},
	}
	v, err := x402.EncodeHeader(pr)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(x402.HeaderPaymentRequired, v)
	// A v1 body next to the header is ignored: the header comes first.
	v1body := `{"x402Version":1,"error":"x","accepts":[{"scheme":"exact","network":"algorand-testnet","maxAmountRequired":"999","payTo":"` + to + `","asset":"10458941","resource":"r","description":"d","maxTimeoutSeconds":60}]}`
	ch, err := ParseChallenge(h, []byte(v1body))
	if err != nil {
		t.Fatal(err)
	}
	if ch.Version != 2 || len(ch.Offers) != 1 || ch.Offers[0].V2 == nil || ch.Offers[0].V2.Amount != "1000" ||
		ch.Resource == nil || ch.Resource.URL != pr.Resource.URL || ch.Error != "payment required" {
		t.Fatalf("challenge: %+v", ch)
	}
}

func TestParseChallengeV1Body(t *testing.T) {
	to := crypto.GenerateAccount().Address.String()
	body, _ := json.Marshal(x402.PaymentRequiredV1{X402Version: 1, Error: "X-PAYMENT header is required", Accepts: []x402.PaymentRequirementsV1{{
		Scheme: "exact", Network: "algorand-testnet", MaxAmountRequired: "2500", PayTo: to, Asset: "10458941",
		Resource: "http://127.0.0.1/f", Description: "file", MaxTimeoutSeconds: 60,
	}}})
	ch, err := ParseChallenge(http.Header{}, body)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Version != 1 || len(ch.Offers) != 1 || ch.Offers[0].V1 == nil || ch.Resource != nil {
		t.Fatalf("challenge: %+v", ch)
	}
	offers := Evaluate(ch, testnetChain(), 2500)
	if i := Choose(offers); i != 0 || offers[0].Parsed.Amount != 2500 {
		t.Fatalf("v1 offer with the v1 network name: chose %d, %v", i, offers)
	}
}

func TestParseChallengeV2Body(t *testing.T) {
	to := crypto.GenerateAccount().Address.String()
	body, _ := json.Marshal(x402.PaymentRequired{X402Version: 2, Accepts: []x402.PaymentRequirements{
		*offerV2(x402.AlgorandTestnet.CAIP2(), "10458941", "7", to).V2,
	}})
	ch, err := ParseChallenge(http.Header{}, body)
	if err != nil || ch.Version != 2 || len(ch.Offers) != 1 || ch.Offers[0].V2.Amount != "7" {
		t.Fatalf("challenge %+v, err %v", ch, err)
	}
}

func TestParseChallengeRefusesOthers(t *testing.T) {
	bad := http.Header{}
	bad.Set(x402.HeaderPaymentRequired, "!!!not base64")
	cases := []struct {
		name string
		h    http.Header
		body string
	}{
		{"no header, html body", http.Header{}, "<html>pay me</html>"},
		{"no header, json without version", http.Header{}, `{"error":"pay"}`},
		{"no header, unknown version", http.Header{}, `{"x402Version":3,"accepts":[]}`},
		{"bad header", bad, ""},
	}
	for _, c := range cases {
		if ch, err := ParseChallenge(c.h, []byte(c.body)); err == nil {
			t.Errorf("%s: parsed %+v", c.name, ch)
		}
	}
}

package x402

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const (
	mainnetFull  = "algorand:wGHE2Pwdvd7S12BL5FaOP20EGYesN73ktiC1qzkkit8="
	mainnetShort = "algorand:wGHE2Pwdvd7S12BL5FaOP20EGYesN73k"
	testnetFull  = "algorand:SGO1GKSzyE7IEPItTxCByw9x8FmnrCDexi9/cOUJOiI="
	testnetShort = "algorand:SGO1GKSzyE7IEPItTxCByw9x8FmnrCDe"
)

func TestNetworkForms(t *testing.T) {
	if got := AlgorandMainnet.CAIP2(); got != mainnetFull {
		t.Errorf("mainnet CAIP2 = %q", got)
	}
	if got := AlgorandMainnet.CAIP2Short(); got != mainnetShort {
		t.Errorf("mainnet CAIP2Short = %q", got)
	}
	if got := AlgorandTestnet.CAIP2Short(); got != testnetShort {
		t.Errorf("testnet CAIP2Short = %q", got)
	}
	for _, id := range []string{testnetFull, testnetShort, "algorand-testnet"} {
		if NormalizeNetwork(id) != testnetShort {
			t.Errorf("NormalizeNetwork(%q) = %q", id, NormalizeNetwork(id))
		}
		if !AlgorandTestnet.Matches(id) || AlgorandMainnet.Matches(id) {
			t.Errorf("Matches(%q) wrong", id)
		}
	}
	if !SameNetwork(mainnetFull, mainnetShort) || SameNetwork(mainnetFull, testnetShort) {
		t.Error("SameNetwork wrong")
	}
	if got := NormalizeNetwork("eip155:8453"); got != "eip155:8453" {
		t.Errorf("non-Algorand id changed: %q", got)
	}
	h, ok := GenesisHashOf(testnetShort)
	if !ok || h != AlgorandTestnet.GenesisHash {
		t.Error("GenesisHashOf(testnet short) failed")
	}
	if _, ok := GenesisHashOf("algorand:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); ok {
		t.Error("GenesisHashOf found an unknown truncated id")
	}
	if got := AlgorandTestnet.ExplorerURL("TX"); !strings.HasSuffix(got, "/testnet/transaction/TX") {
		t.Errorf("ExplorerURL = %q", got)
	}
}

func TestNetworksRegisterDevnet(t *testing.T) {
	ns := NewNetworks()
	var h [32]byte
	for i := range h {
		h[i] = byte(i * 7)
	}
	dev := Network{Name: "algorand-devnet", GenesisHash: h, GenesisID: "devnet-v1", USDC: 1001}
	if err := ns.Register(dev); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{dev.CAIP2(), dev.CAIP2Short(), "algorand-devnet"} {
		got, ok := ns.Lookup(id)
		if !ok || got.USDC != 1001 {
			t.Errorf("Lookup(%q) = %+v, %v", id, got, ok)
		}
	}
	if !ns.Same("algorand-devnet", dev.CAIP2()) {
		t.Error("registered v1 name not normalised")
	}
	if err := ns.Register(Network{Name: "algorand-devnet", GenesisHash: [32]byte{1}}); err == nil {
		t.Error("a second network with the same name was accepted")
	}
	if _, ok := ns.ByGenesisHash(h); !ok {
		t.Error("ByGenesisHash failed")
	}
	var nilSet *Networks
	if _, ok := nilSet.Lookup("algorand-mainnet"); !ok {
		t.Error("nil Networks does not know mainnet")
	}
}

func TestParsePrice(t *testing.T) {
	good := []struct {
		in   string
		dec  int
		want uint64
	}{
		{"0.001", 6, 1000}, {"$0.001", 6, 1000}, {" $1 ", 6, 1000000}, {"1.5", 6, 1500000},
		{"0.000001", 6, 1}, {"0.0010000", 6, 1000}, {"18446744073709.551615", 6, 18446744073709551615},
		{"7", 0, 7}, {"0", 6, 0}, {".5", 6, 500000},
	}
	for _, c := range good {
		got, err := ParsePrice(c.in, c.dec)
		if err != nil || got != c.want {
			t.Errorf("ParsePrice(%q, %d) = %d, %v; want %d", c.in, c.dec, got, err, c.want)
		}
	}
	for _, in := range []string{"", "$", "-1", "1e3", "0.0000001", "1,000", "1.", ".", "abc", "18446744073709.551616", "$$1", "0x10"} {
		if got, err := ParsePrice(in, 6); err == nil {
			t.Errorf("ParsePrice(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatAmount(t *testing.T) {
	cases := map[uint64]string{0: "0", 1: "0.000001", 1000: "0.001", 1000000: "1", 1500000: "1.5", 123456789: "123.456789"}
	for units, want := range cases {
		if got := FormatAmount(units, 6); got != want {
			t.Errorf("FormatAmount(%d) = %q, want %q", units, got, want)
		}
		back, err := ParsePrice(want, 6)
		if err != nil || back != units {
			t.Errorf("round trip of %d via %q gave %d, %v", units, want, back, err)
		}
	}
	if got := FormatAmount(42, 0); got != "42" {
		t.Errorf("FormatAmount(42, 0) = %q", got)
	}
}

func TestHeaderCodec(t *testing.T) {
	in := SettleResponse{Success: true, Transaction: "TX", Network: testnetFull, Payer: "P"}
	enc, err := EncodeHeader(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := base64.StdEncoding.DecodeString(enc); err != nil {
		t.Fatalf("output is not padded standard base64: %v", err)
	}
	raw, _ := json.Marshal(in)
	variants := map[string]string{
		"std":      enc,
		"unpadded": base64.RawStdEncoding.EncodeToString(raw),
		"url":      base64.URLEncoding.EncodeToString(raw),
		"rawurl":   base64.RawURLEncoding.EncodeToString(raw),
		"spaces":   "  " + enc + "\t",
	}
	for name, v := range variants {
		var out SettleResponse
		if err := DecodeHeader(v, &out); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if out.Transaction != "TX" || out.Network != testnetFull || !out.Success {
			t.Errorf("%s: decoded %+v", name, out)
		}
	}
	// The "transaction" key is always present, also on failure.
	failure, _ := EncodeHeader(SettleResponse{Network: "n"})
	data, _ := DecodeHeaderBytes(failure)
	if !strings.Contains(string(data), `"transaction":""`) {
		t.Errorf("failure response lacks transaction: %s", data)
	}

	bad := map[string]string{
		"empty":     "",
		"not b64":   "!!!!",
		"mixed":     "ab+c-d",
		"padding":   "YQ===",
		"trailing":  base64.StdEncoding.EncodeToString([]byte(`{"success":true} {}`)),
		"not json":  base64.StdEncoding.EncodeToString([]byte(`hello`)),
		"too large": strings.Repeat("A", MaxHeaderSize+4),
	}
	for name, v := range bad {
		var out SettleResponse
		if err := DecodeHeader(v, &out); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := DecodeHeaderBytes(strings.Repeat("A", MaxHeaderSize+4)); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("oversized header: %v", err)
	}
}

const v2PayloadJSON = `{
  "x402Version": 2,
  "scheme": "exact",
  "network": "algorand:wGHE2Pwdvd7S12BL5FaOP20EGYesN73ktiC1qzkkit8=",
  "resource": {"url": "https://example.net/signup", "description": "$5 registration payment", "mimeType": "text/html"},
  "accepted": {
    "scheme": "exact",
    "network": "algorand:wGHE2Pwdvd7S12BL5FaOP20EGYesN73ktiC1qzkkit8=",
    "amount": "5000000",
    "payTo": "RESOURCESERVERADDRESSAAAAAAAAAAAAAAAAAAAAAAAAAAAAAALTSRPAE",
    "maxTimeoutSeconds": 60,
    "asset": "31566704",
    "extra": {"feePayer": "FACILITATORADDRESSAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAALQCXBZE", "future": {"a": [1, 2]}}
  },
  "extensions": {"bazaar": {"info": {"x": 1}}},
  "outputSchema": null,
  "payload": {"paymentIndex": 1, "paymentGroup": ["AA==", "AQ=="], "unknownKey": true}
}`

func TestPaymentPayloadVersions(t *testing.T) {
	var p Payment
	if err := json.Unmarshal([]byte(v2PayloadJSON), &p); err != nil {
		t.Fatal(err)
	}
	if p.Version() != 2 || p.Scheme() != "exact" || p.Network() != mainnetFull {
		t.Fatalf("v2 payload decoded as version %d scheme %q network %q", p.Version(), p.Scheme(), p.Network())
	}
	if got := (Requirement{V2: &p.V2.Accepted}).Terms().FeePayer(); got != "FACILITATORADDRESSAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAALQCXBZE" {
		t.Errorf("FeePayer = %q", got)
	}
	// Unknown keys inside extra, payload and extensions survive a round trip.
	hdr, err := EncodeHeader(p)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodePaymentHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"future":{"a":[1,2]}`, `"unknownKey":true`, `"bazaar"`} {
		all := string(back.V2.Accepted.Extra) + string(back.V2.Payload) + string(back.V2.Extensions)
		if !strings.Contains(strings.ReplaceAll(all, " ", ""), want) {
			t.Errorf("lost %s in %s", want, all)
		}
	}

	v1 := `{"x402Version":1,"scheme":"exact","network":"algorand-testnet","payload":{"paymentGroup":["AA=="],"paymentIndex":0}}`
	if err := json.Unmarshal([]byte(v1), &p); err != nil {
		t.Fatal(err)
	}
	if p.Version() != 1 || p.V2 != nil || p.Network() != "algorand-testnet" {
		t.Fatalf("v1 payload decoded as %+v", p)
	}
	for _, bad := range []string{`{"x402Version":3,"payload":{}}`, `{"scheme":"exact"}`, `{"x402Version":2,"accepted":{}}`, `[]`} {
		if err := json.Unmarshal([]byte(bad), &p); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestFacilitatorRequestRoundTrip(t *testing.T) {
	var p Payment
	if err := json.Unmarshal([]byte(v2PayloadJSON), &p); err != nil {
		t.Fatal(err)
	}
	req := p.V2.Accepted
	fr, err := NewFacilitatorRequest(p, Requirement{V2: &req})
	if err != nil {
		t.Fatal(err)
	}
	if fr.X402Version != 2 {
		t.Errorf("x402Version = %d", fr.X402Version)
	}
	p2, r2, err := fr.Decode()
	if err != nil {
		t.Fatal(err)
	}
	if r2.V2 == nil || r2.V2.Amount != "5000000" || p2.V2 == nil {
		t.Fatalf("decoded %+v %+v", p2, r2)
	}
	if _, err := NewFacilitatorRequest(p, Requirement{V1: &PaymentRequirementsV1{}}); err == nil {
		t.Error("mixed versions accepted")
	}
	fr.X402Version = 1
	if _, _, err := fr.Decode(); err == nil {
		t.Error("a request whose version differs from its payload's was accepted")
	}
}

func TestMatchV2(t *testing.T) {
	offer := PaymentRequirements{
		Scheme: "exact", Network: testnetShort, Asset: "10458941", Amount: "1000",
		PayTo: "PAYTO", MaxTimeoutSeconds: 60, Extra: json.RawMessage(`{"feePayer":"FP","decimals":6}`),
	}
	other := offer
	other.Amount = "5000"
	offers := []PaymentRequirements{other, offer}

	accepted := offer
	accepted.Network = testnetFull
	accepted.Extra = json.RawMessage(`{"decimals":6,"feePayer":"FP","added":"by client"}`)
	if i := MatchV2(accepted, offers, nil); i != 1 {
		t.Errorf("match = %d, want 1", i)
	}
	p := Payment{V2: &PaymentPayload{X402Version: 2, Accepted: accepted, Payload: json.RawMessage(`{}`)}}
	m, err := MatchRequirement(p, []Requirement{{V2: &other}, {V2: &offer}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.V2.Network != testnetFull || m.V2.Amount != "1000" || string(m.V2.Extra) != string(offer.Extra) {
		t.Errorf("matched %+v: want the offer with the client's network string", m.V2)
	}
	if offer.Network != testnetShort {
		t.Error("MatchRequirement changed the offer")
	}

	mutations := map[string]func(*PaymentRequirements){
		"scheme":  func(r *PaymentRequirements) { r.Scheme = "upto" },
		"network": func(r *PaymentRequirements) { r.Network = mainnetFull },
		"asset":   func(r *PaymentRequirements) { r.Asset = "31566704" },
		"amount":  func(r *PaymentRequirements) { r.Amount = "999" },
		"payTo":   func(r *PaymentRequirements) { r.PayTo = "OTHER" },
		"timeout": func(r *PaymentRequirements) { r.MaxTimeoutSeconds = 61 },
		"extra":   func(r *PaymentRequirements) { r.Extra = json.RawMessage(`{"feePayer":"FP"}`) },
		"feePayer": func(r *PaymentRequirements) {
			r.Extra = json.RawMessage(`{"feePayer":"EVIL","decimals":6}`)
		},
	}
	for name, mutate := range mutations {
		a := accepted
		mutate(&a)
		if i := MatchV2(a, offers, nil); i != -1 {
			t.Errorf("%s changed, still matched offer %d", name, i)
		}
	}
	if _, err := MatchRequirement(Payment{V2: &PaymentPayload{Accepted: PaymentRequirements{Scheme: "x"}}}, []Requirement{{V2: &offer}}, nil); !errors.Is(err, ErrNoMatch) {
		t.Errorf("err = %v", err)
	}
}

func TestMatchV1(t *testing.T) {
	offers := []PaymentRequirementsV1{
		{Scheme: "exact", Network: "algorand-mainnet", MaxAmountRequired: "1"},
		{Scheme: "exact", Network: "algorand-testnet", MaxAmountRequired: "2"},
	}
	p := PaymentPayloadV1{X402Version: 1, Scheme: "exact", Network: testnetFull}
	if i := MatchV1(p, offers, nil); i != 1 {
		t.Errorf("match = %d", i)
	}
	m, err := MatchRequirement(Payment{V1: &p}, []Requirement{{V1: &offers[0]}, {V1: &offers[1]}}, nil)
	if err != nil || m.V1.MaxAmountRequired != "2" || m.V1.Network != testnetFull {
		t.Errorf("matched %+v, %v", m.V1, err)
	}
	p.Scheme = "upto"
	if i := MatchV1(p, offers, nil); i != -1 {
		t.Errorf("wrong scheme matched %d", i)
	}
}

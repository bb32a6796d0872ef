package x402

import (
	"encoding/base64"
	"encoding/json"
	"testing"
)

// FuzzDecodePaymentHeader feeds arbitrary header values to the payment
// decoder: it must never panic, and whatever it accepts must encode again and
// decode to the same version, scheme and network.
func FuzzDecodePaymentHeader(f *testing.F) {
	f.Add(base64.StdEncoding.EncodeToString([]byte(v2PayloadJSON)))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(v2PayloadJSON)))
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"x402Version":1,"scheme":"exact","network":"algorand-testnet","payload":{"paymentGroup":["AA=="],"paymentIndex":0}}`)))
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"x402Version":2,"payload":null}`)))
	f.Add("")
	f.Add("====")
	f.Fuzz(func(t *testing.T, value string) {
		p, err := DecodePaymentHeader(value)
		if err != nil {
			return
		}
		if p.Version() != 1 && p.Version() != 2 {
			t.Fatalf("accepted version %d", p.Version())
		}
		enc, err := EncodeHeader(p)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		q, err := DecodePaymentHeader(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if q.Version() != p.Version() || q.Scheme() != p.Scheme() || q.Network() != p.Network() {
			t.Fatalf("round trip changed the payment: %+v vs %+v", p, q)
		}
	})
}

// FuzzDecodeHeader checks the generic decoder on settle responses and 402
// messages: no panics, and no input above the size bound is decoded.
func FuzzDecodeHeader(f *testing.F) {
	ok, _ := EncodeHeader(SettleResponse{Success: true, Transaction: "T", Network: "algorand-testnet"})
	f.Add(ok)
	req, _ := EncodeHeader(PaymentRequired{X402Version: 2, Accepts: []PaymentRequirements{{Scheme: "exact"}}})
	f.Add(req)
	f.Add("e30")
	f.Fuzz(func(t *testing.T, value string) {
		var s SettleResponse
		err := DecodeHeader(value, &s)
		if err == nil && len(value) > MaxHeaderSize {
			t.Fatal("decoded an oversized value")
		}
		var r PaymentRequired
		_ = DecodeHeader(value, &r)
	})
}

// FuzzFacilitatorRequest feeds arbitrary /verify and /settle bodies to the
// facilitator request decoder: no panics, and what it accepts is a payment
// and a requirement of one version that encode again into a request that
// decodes to the same version, scheme and network.
func FuzzFacilitatorRequest(f *testing.F) {
	f.Add([]byte(`{"x402Version":2,"paymentPayload":` + v2PayloadJSON + `,"paymentRequirements":{"scheme":"exact","network":"algorand:wGHE2Pwdvd7S12BL5FaOP20EGYesN73ktiC1qzkkit8=","amount":"1000","asset":"31566704","payTo":"X","maxTimeoutSeconds":60}}`))
	f.Add([]byte(`{"x402Version":1,"paymentPayload":{"x402Version":1,"scheme":"exact","network":"algorand-testnet","payload":{}},"paymentRequirements":{"scheme":"exact","maxAmountRequired":"1"}}`))
	f.Add([]byte(`{"paymentPayload":{"x402Version":3},"paymentRequirements":{}}`))
	f.Add([]byte(`{"x402Version":2,"paymentPayload":null,"paymentRequirements":[]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var fr FacilitatorRequest
		if json.Unmarshal(body, &fr) != nil {
			return
		}
		p, r, err := fr.Decode()
		if err != nil {
			return
		}
		if p.Version() != r.Version() || (p.Version() != Version1 && p.Version() != Version2) {
			t.Fatalf("decoded payment v%d with requirement v%d", p.Version(), r.Version())
		}
		_ = r.Terms()
		_ = p.SchemePayload()
		again, err := NewFacilitatorRequest(p, r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		q, s, err := again.Decode()
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if q.Version() != p.Version() || q.Scheme() != p.Scheme() || q.Network() != p.Network() || s.Terms().Network != r.Terms().Network {
			t.Fatalf("round trip changed the request")
		}
	})
}

package facilitator

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"

	"github.com/lualambda/caddy-lualambda/x402"
)

// supportedServer answers /supported with 429 for the first failures calls.
func supportedServer(t *testing.T, failures int32, calls *atomic.Int32) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/facilitator/supported" || r.Header.Get("X-Api-Key") != "k" {
			http.Error(w, "wrong request", http.StatusBadRequest)
			return
		}
		n := calls.Add(1)
		if n <= failures {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		_, _ = w.Write([]byte(`{"kinds":[{"x402Version":2,"scheme":"exact","network":"algorand:SGO1GKSzyE7IEPItTxCByw9x8FmnrCDexi9/cOUJOiI=","extra":{"feePayer":"FP"}}],"extensions":[],"signers":{"algorand:*":["FP"]}}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRemoteSupportedRetriesAndCaches(t *testing.T) {
	var calls atomic.Int32
	srv := supportedServer(t, 2, &calls)
	r, err := NewRemote(RemoteConfig{URL: srv.URL + "/facilitator", Header: http.Header{"X-Api-Key": {"k"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fp, err := r.FeePayer(ctx, 2, "exact", "algorand:SGO1GKSzyE7IEPItTxCByw9x8FmnrCDe")
	if err != nil {
		t.Fatal(err)
	}
	if fp != "FP" {
		t.Errorf("fee payer %q (both CAIP-2 forms must match)", fp)
	}
	if calls.Load() != 3 {
		t.Errorf("%d calls, want 2 refused + 1 answered", calls.Load())
	}
	s, err := r.Supported(ctx)
	if err != nil || len(s.Kinds) != 1 || calls.Load() != 3 {
		t.Errorf("second Supported: %d calls, %v", calls.Load(), err)
	}
	if k, ok := FindKind(s, 2, "exact", "algorand-testnet"); !ok || k.Network != "algorand:SGO1GKSzyE7IEPItTxCByw9x8FmnrCDexi9/cOUJOiI=" {
		t.Errorf("FindKind = %+v, %v", k, ok)
	}
}

func TestRemoteSupportedGivesUpOn429(t *testing.T) {
	var calls atomic.Int32
	srv := supportedServer(t, 100, &calls)
	r, _ := NewRemote(RemoteConfig{URL: srv.URL + "/facilitator", Header: http.Header{"X-Api-Key": {"k"}}, SupportedRetries: 1})
	if _, err := r.Supported(context.Background()); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("err = %v", err)
	}
	if calls.Load() != 2 {
		t.Errorf("%d calls, want 2", calls.Load())
	}
}

func TestRemoteNon200Answers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var fr x402.FacilitatorRequest
		if err := json.NewDecoder(r.Body).Decode(&fr); err != nil || fr.X402Version != 1 {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/verify":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"isValid":false,"invalidReason":"invalid_exact_avm_amount_mismatch","payer":"P"}`))
		case "/settle":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"boom"}`))
		}
	}))
	defer srv.Close()
	r, _ := NewRemote(RemoteConfig{URL: srv.URL, Timeout: 5 * time.Second})
	p := x402.Payment{V1: &x402.PaymentPayloadV1{X402Version: 1, Scheme: "exact", Network: "algorand-testnet", Payload: json.RawMessage(`{}`)}}
	req := x402.Requirement{V1: &x402.PaymentRequirementsV1{Scheme: "exact", Network: "algorand-testnet"}}
	v, err := r.Verify(context.Background(), p, req)
	if err != nil || v.IsValid || v.InvalidReason != "invalid_exact_avm_amount_mismatch" {
		t.Errorf("verify = %+v, %v", v, err)
	}
	if _, err := r.Settle(context.Background(), p, req); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("settle err = %v", err)
	}
	if _, err := NewRemote(RemoteConfig{URL: "ftp://x"}); err == nil {
		t.Error("accepted a non-HTTP URL")
	}
}

func TestHandlerRejectsMalformedRequests(t *testing.T) {
	words, _ := mnemonic.FromPrivateKey(crypto.GenerateAccount().PrivateKey)
	b, err := NewBuiltin(BuiltinConfig{AlgodURL: "http://127.0.0.1:1", Network: x402.AlgorandTestnet, FeePayerMnemonic: words})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(b))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/x/supported")
	if err != nil {
		t.Fatal(err)
	}
	var s x402.SupportedResponse
	_ = json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(s.Kinds) != 3 || FeePayer(s, 1, "exact", "algorand-testnet") != b.FeePayerAddress() {
		t.Errorf("supported: %d %+v", resp.StatusCode, s)
	}
	if s.Kinds[0].Network != x402.AlgorandTestnet.CAIP2() || s.Kinds[1].Network != x402.AlgorandTestnet.CAIP2Short() {
		t.Errorf("kinds %+v", s.Kinds)
	}
	if got := s.Signers["algorand:*"]; len(got) != 1 || got[0] != b.FeePayerAddress() {
		t.Errorf("signers %+v", s.Signers)
	}

	cases := []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/verify", "", 405},
		{"POST", "/supported", "", 405},
		{"POST", "/verify", "{", 400},
		{"POST", "/verify", `{"x402Version":2}`, 400},
		{"POST", "/settle", `{"x402Version":2,"paymentPayload":{"x402Version":9,"payload":{}},"paymentRequirements":{}}`, 400},
		{"POST", "/verify", `{"x402Version":2,"paymentPayload":{"x402Version":2,"payload":{}` + strings.Repeat(" ", maxRequestSize) + `},"paymentRequirements":{}}`, 413},
		{"GET", "/nothing", "", 404},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.status || body["error"] == nil {
			t.Errorf("%s %s: %d %v, want %d with an error", c.method, c.path, resp.StatusCode, body, c.status)
		}
	}
}

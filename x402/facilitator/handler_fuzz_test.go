package facilitator

import (
	"bytes"
	"context"
	"time"

	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// fuzzToken is the handler's bearer token in FuzzHandlerRequest.
const fuzzToken = "fuzz-facilitator-token-0123456789"

// FuzzHandlerRequest sends arbitrary requests (credential, endpoint, body)
// to the facilitator handler over a devnet's built-in facilitator: no
// panics; without the token 401; with it a JSON answer that is 200 (an
// answer, isValid or success), 400 (malformed) or 413 (too large), never a
// server error. Each input costs devnet calls, so run it with a short
// -fuzzminimizetime (e.g. 5s): the default minute per interesting input
// leaves little time for fuzzing.
func FuzzHandlerRequest(f *testing.F) {
	c := newChain(f)
	h := &Handler{Facilitator: c.builtin, Token: fuzzToken}
	r := c.requirementV2(c.network.CAIP2(), price, true)
	p := c.pay(avm.AccountSigner(c.Payer), r)
	good, err := x402.NewFacilitatorRequest(p, r)
	if err != nil {
		f.Fatal(err)
	}
	body, _ := json.Marshal(good)
	f.Add("Bearer "+fuzzToken, uint8(0), body)
	f.Add("Bearer "+fuzzToken, uint8(2), []byte(`{"x402Version":1,"paymentPayload":{"x402Version":1,"scheme":"exact","network":"algorand-devnet","payload":{"paymentGroup":["gaN0eG6A"],"paymentIndex":0}},"paymentRequirements":{"scheme":"exact","network":"algorand-devnet","maxAmountRequired":"0","asset":"1","payTo":"A"}}`))
	f.Add("Bearer "+fuzzToken, uint8(1), []byte(`{}`))
	f.Add("bearer "+fuzzToken, uint8(0), []byte(`{"paymentPayload":{"x402Version":2}}`))
	f.Add("Bearer x", uint8(0), body)
	f.Add("", uint8(1), []byte(nil))
	endpoints := []string{"/verify", "/settle", "/supported"}
	f.Fuzz(func(t *testing.T, auth string, endpoint uint8, body []byte) {
		path := endpoints[int(endpoint)%len(endpoints)]
		method := http.MethodPost
		if path == "/supported" {
			method = http.MethodGet
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, method, "http://facilitator"+path, bytes.NewReader(body))
		req.Header.Set("Authorization", auth)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var answer map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
			t.Fatalf("%s: answer %d is not JSON: %q", path, w.Code, w.Body)
		}
		if !h.authorized(req) {
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("%s without the token: %d", path, w.Code)
			}
			return
		}
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("%s: status %d: %s", path, w.Code, w.Body)
		}
		if w.Code == http.StatusOK && path != "/supported" && answer["isValid"] == nil && answer["success"] == nil {
			t.Fatalf("%s: a 200 that is no answer: %s", path, w.Body)
		}
	})
}

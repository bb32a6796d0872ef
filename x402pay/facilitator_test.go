package x402pay

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/facilitator"
)

// facilitatorToken is a bearer token for the tests.
const facilitatorToken = "s3cret-facilitator-token-0123456789"

// newMnemonic returns a fresh account's 25 words.
func newMnemonic(t *testing.T) string {
	t.Helper()
	words, err := mnemonic.FromPrivateKey(crypto.GenerateAccount().PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return words
}

// provisionFacilitator provisions f and returns the error.
func provisionFacilitator(t *testing.T, f *X402Facilitator) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	err := f.Provision(ctx)
	t.Cleanup(func() { _ = f.Cleanup() })
	return err
}

// TestX402FacilitatorNeedsToken: a facilitator with a fee payer does not
// start without a bearer token, and `public` is only for one without.
func TestX402FacilitatorNeedsToken(t *testing.T) {
	t.Setenv("X402_TEST_EMPTY_TOKEN", "  \n")
	fp := newMnemonic(t)
	cases := []struct {
		f    X402Facilitator
		want string
	}{
		{X402Facilitator{Algod: "http://127.0.0.1:9", FeePayer: fp}, "needs a token"},
		{X402Facilitator{Algod: "http://127.0.0.1:9"}, "needs a token"},
		{X402Facilitator{Algod: "http://127.0.0.1:9", FeePayer: fp, Token: "{env.X402_TEST_EMPTY_TOKEN}"}, "token is empty"},
		{X402Facilitator{Algod: "http://127.0.0.1:9", FeePayer: fp, Token: "{env.X402_TEST_UNSET_TOKEN}"}, "token is empty"},
		{X402Facilitator{Algod: "http://127.0.0.1:9", FeePayer: fp, Token: "s3cr3t"}, "at least"},
		{X402Facilitator{Algod: "http://127.0.0.1:9", FeePayer: fp, Public: true}, "public"},
		{X402Facilitator{Algod: "http://127.0.0.1:9", Public: true, Token: facilitatorToken}, "not both"},
	}
	for _, c := range cases {
		f := c.f
		err := provisionFacilitator(t, &f)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("token %q public %v fee payer %v: got %v, want an error containing %q", c.f.Token, c.f.Public, c.f.FeePayer != "", err, c.want)
		}
		if err != nil && c.f.Token != "" && strings.Contains(err.Error(), c.f.Token) {
			t.Errorf("the error quotes the token: %v", err)
		}
	}
	// Without a fee payer, public is the operator's explicit choice.
	f := X402Facilitator{Algod: "http://127.0.0.1:9", Public: true}
	if err := provisionFacilitator(t, &f); err != nil {
		t.Fatalf("public facilitator without fee payer: %v", err)
	}
}

// TestX402FacilitatorMnemonicTypo: a mistyped fee_payer word is refused
// without being echoed, in x402facilitator and in x402pay's builtin.
func TestX402FacilitatorMnemonicTypo(t *testing.T) {
	list := strings.Fields(newMnemonic(t))
	list[11] += "qzx"
	t.Setenv("X402_TEST_FEE_PAYER", strings.Join(list, " "))
	f := X402Facilitator{Algod: "http://127.0.0.1:9", FeePayer: "{env.X402_TEST_FEE_PAYER}", Token: facilitatorToken}
	err := provisionFacilitator(t, &f)
	if err == nil || !strings.Contains(err.Error(), "fee_payer") {
		t.Fatalf("got %v, want a fee_payer error", err)
	}
	h := X402Pay{PayTo: testPayTo, Facilitator: &FacilitatorConfig{Builtin: &BuiltinFacilitator{Algod: "http://127.0.0.1:9", FeePayer: "{env.X402_TEST_FEE_PAYER}"}}}
	err2 := provisioned(t, &h)
	if err2 == nil {
		t.Fatal("x402pay accepted the mistyped mnemonic")
	}
	for _, e := range []error{err, err2} {
		if strings.Contains(e.Error(), "qzx") {
			t.Errorf("the error echoes the mistyped word: %v", e)
		}
	}
}

// serveFacilitator provisions f and serves it over real HTTP.
func serveFacilitator(t *testing.T, f *X402Facilitator) *httptest.Server {
	t.Helper()
	if err := provisionFacilitator(t, f); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = caddyhttp.NewTestReplacer(r)
		if err := f.ServeHTTP(w, r, nil); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestX402FacilitatorBearerToken: without the token every endpoint answers
// 401 JSON; our remote client with an Authorization header gets through.
func TestX402FacilitatorBearerToken(t *testing.T) {
	t.Setenv("X402_TEST_FAC_TOKEN", facilitatorToken+"\n")
	f := &X402Facilitator{Algod: "http://127.0.0.1:9", FeePayer: newMnemonic(t), Token: "{env.X402_TEST_FAC_TOKEN}"}
	srv := serveFacilitator(t, f)

	for _, auth := range []string{"", "Bearer", "Bearer wrong", "Basic " + facilitatorToken, "Bearer " + facilitatorToken + "x", facilitatorToken} {
		for _, ep := range []struct{ method, path string }{{"GET", "/supported"}, {"POST", "/verify"}, {"POST", "/settle"}} {
			req, _ := http.NewRequestWithContext(t.Context(), ep.method, srv.URL+"/facilitator"+ep.path, strings.NewReader(`{}`))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]string
			derr := json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || derr != nil || body["error"] == "" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%s %s with %q: %d %v %v, want 401 with a JSON error", ep.method, ep.path, auth, resp.StatusCode, body, derr)
			}
			if strings.Contains(body["error"], facilitatorToken) {
				t.Fatal("the 401 echoes the token")
			}
		}
	}

	remote := func(header http.Header) *facilitator.Remote {
		r, err := facilitator.NewRemote(facilitator.RemoteConfig{URL: srv.URL + "/facilitator", Header: header, SupportedRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if _, err := remote(nil).Supported(t.Context()); err == nil {
		t.Fatal("the remote client without a token was served")
	}
	authed := remote(http.Header{"Authorization": {"Bearer " + facilitatorToken}})
	s, err := authed.Supported(t.Context())
	if err != nil || len(s.Kinds) == 0 || facilitator.FeePayer(s, x402.Version2, x402.SchemeExact, x402.AlgorandTestnet.CAIP2()) == "" {
		t.Fatalf("supported with the token = %+v, %v", s, err)
	}
	// The scheme name is case-insensitive, as HTTP says.
	lower := remote(http.Header{"Authorization": {"bearer " + facilitatorToken}})
	if _, err := lower.Supported(t.Context()); err != nil {
		t.Fatalf("lower-case scheme: %v", err)
	}
}

// TestX402FacilitatorCaddyfileToken reads token and public.
func TestX402FacilitatorCaddyfileToken(t *testing.T) {
	var f X402Facilitator
	in := "x402facilitator {\n\talgod http://a\n\ttoken {env.X402_FACILITATOR_TOKEN}\n}"
	if err := f.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if f.Token != "{env.X402_FACILITATOR_TOKEN}" || f.Public {
		t.Fatalf("parsed %+v", f)
	}
	var p X402Facilitator
	if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser("x402facilitator {\n\talgod http://a\n\tpublic\n}")); err != nil || !p.Public {
		t.Fatalf("public: %+v, %v", p, err)
	}
	for in, want := range map[string]string{
		"x402facilitator {\n\talgod a\n\ttoken\n}":              "wrong argument count",
		"x402facilitator {\n\talgod a\n\ttoken a b\n}":          "wrong argument count",
		"x402facilitator {\n\talgod a\n\tpublic yes\n}":         "wrong argument count",
		"x402facilitator {\n\talgod a\n\ttoken a\n\ttoken b\n}": "token already specified",
	} {
		var f X402Facilitator
		err := f.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", in, err, want)
		}
	}
}

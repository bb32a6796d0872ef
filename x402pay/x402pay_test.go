package x402pay

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/x402"
)

// testPayTo is a valid Algorand address.
const testPayTo = "6E5IRHZSH7PM45QTQQHVNIU34KJUQRWSIYTRPCAPZCQBAPXUIKTO2U6XAI"

func TestX402PayCaddyfileErrors(t *testing.T) {
	cases := []struct{ input, want string }{
		{"x402pay extra", "wrong argument count"},
		{"x402pay {\n\tfacilitator builtin {\n\t\talgod http://a\n\t}\n}", "x402pay needs pay_to"},
		{"x402pay {\n\tpay_to X\n}", "x402pay needs a facilitator"},
		{"x402pay {\n\tpay_to X\n\tpay_to Y\n}", "pay_to already specified, at Testfile:3"},
		{"x402pay {\n\tcolour red\n}", "unrecognized subdirective 'colour', at Testfile:2"},
		{"x402pay {\n\tnetwork moon\n}", "network \"moon\""},
		{"x402pay {\n\tnetwork algorand:short\n}", "not an Algorand CAIP-2 id"},
		{"x402pay {\n\tmax_timeout soon\n}", "bad duration"},
		{"x402pay {\n\tmax_buffer lots\n}", "bad size"},
		{"x402pay {\n\tprice\n}", "wrong argument count"},
		{"x402pay {\n\tdecimals -1\n}", "non-negative integer"},
		{"x402pay {\n\tfacilitator\n}", "wrong argument count"},
		{"x402pay {\n\tfacilitator builtin {\n\t}\n}", "facilitator builtin needs algod"},
		{"x402pay {\n\tfacilitator builtin {\n\t\talgod a b\n\t}\n}", "wrong argument count"},
		{"x402pay {\n\tfacilitator builtin {\n\t\tkey k\n\t}\n}", "unrecognized facilitator builtin subdirective 'key'"},
		{"x402pay {\n\tfacilitator builtin {\n\t\talgod a\n\t\talgod b\n\t}\n}", "algod already specified in facilitator builtin"},
		{"x402pay {\n\tfacilitator http://f {\n\t\theader X\n\t}\n}", "wrong argument count"},
		{"x402pay {\n\tfacilitator http://f {\n\t\ttimeout 1s\n\t}\n}", "unrecognized facilitator subdirective 'timeout'"},
	}
	for _, c := range cases {
		var h X402Pay
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.input, err, c.want)
		}
	}
}

func TestX402FacilitatorCaddyfile(t *testing.T) {
	var f X402Facilitator
	in := "x402facilitator {\n\tnetwork devnet\n\talgod http://127.0.0.1:4001\n\talgod_token {env.T}\n\tfee_payer {file./k}\n}"
	if err := f.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if f.Network != "devnet" || f.Algod != "http://127.0.0.1:4001" || f.AlgodToken != "{env.T}" || f.FeePayer != "{file./k}" {
		t.Fatalf("parsed %+v", f)
	}
	for in, want := range map[string]string{
		"x402facilitator {\n\tnetwork devnet\n}":                                   "x402facilitator needs algod",
		"x402facilitator {\n\talgod a\n\tnetwork mars\n}":                          "network \"mars\"",
		"x402facilitator {\n\talgod a\n\talgod b\n}":                               "algod already specified",
		"x402facilitator {\n\talgod a\n\tprice 1\n}":                               "unrecognized subdirective 'price'",
		"x402facilitator x":                                                        "wrong argument count",
		"x402facilitator {\n\talgod a\n\tnetwork testnet\n\tnetwork mainnet\n}":    "network already specified",
		"x402facilitator {\n\talgod a\n\tfee_payer one two\n}":                     "wrong argument count",
		"x402facilitator {\n\talgod a\n\talgod_token\n}":                           "wrong argument count",
		"x402facilitator {\n\talgod a\n\tnetwork algorand:toolongxxxxxxxxxxxx+\n}": "not an Algorand CAIP-2 id",
	} {
		var f X402Facilitator
		err := f.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", in, err, want)
		}
	}
}

// provisioned returns a provisioned X402Pay, or the Provision error.
func provisioned(t *testing.T, h *X402Pay) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	err := h.Provision(ctx)
	if err == nil {
		err = h.Validate()
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	return err
}

func builtinAt(url string) *FacilitatorConfig {
	return &FacilitatorConfig{Builtin: &BuiltinFacilitator{Algod: url}}
}

func TestX402PayProvisionErrors(t *testing.T) {
	cases := []struct {
		h    X402Pay
		want string
	}{
		{X402Pay{Facilitator: builtinAt("http://127.0.0.1:9")}, "pay_to is required"},
		{X402Pay{PayTo: "NOTANADDRESS", Facilitator: builtinAt("http://127.0.0.1:9")}, "not an Algorand address"},
		{X402Pay{PayTo: testPayTo}, "no facilitator configured"},
		{X402Pay{PayTo: testPayTo, Facilitator: &FacilitatorConfig{URL: "http://f", Builtin: &BuiltinFacilitator{Algod: "a"}}}, "either a URL or builtin"},
		{X402Pay{PayTo: testPayTo, Network: "devnet", Facilitator: &FacilitatorConfig{URL: "http://f"}}, "network devnet needs the builtin facilitator"},
		{X402Pay{PayTo: testPayTo, Network: "algorand:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", Facilitator: &FacilitatorConfig{URL: "http://f"}}, "set asset"},
		{X402Pay{PayTo: testPayTo, Price: "free", Facilitator: builtinAt("http://127.0.0.1:9")}, "price"},
		{X402Pay{PayTo: testPayTo, Price: "0.0000001", Facilitator: builtinAt("http://127.0.0.1:9")}, "price"},
		{X402Pay{PayTo: testPayTo, Asset: "gold", Facilitator: builtinAt("http://127.0.0.1:9")}, "asset \"gold\""},
		{X402Pay{PayTo: testPayTo, Facilitator: &FacilitatorConfig{Builtin: &BuiltinFacilitator{Algod: "http://a", FeePayer: "not a mnemonic"}}}, "fee_payer"},
		{X402Pay{PayTo: testPayTo, Facilitator: &FacilitatorConfig{URL: "ftp://f"}}, "not an http(s) URL"},
		{X402Pay{PayTo: testPayTo, MaxBuffer: -1, Facilitator: builtinAt("http://127.0.0.1:9")}, "max_buffer"},
	}
	for _, c := range cases {
		h := c.h
		err := provisioned(t, &h)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error containing %q", c.h, err, c.want)
		}
	}
}

// quoter is a next handler that answers quotes with price (or ignores
// them when it is nil) and otherwise answers 200 "served".
type quoter struct {
	price  *string
	served int
}

func (q *quoter) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	if qt := payhook.QuoteFrom(r.Context()); qt != nil && q.price != nil {
		qt.SetPrice(*q.price)
		return nil
	}
	q.served++
	_, _ = w.Write([]byte("served"))
	return nil
}

func serve(t *testing.T, h *X402Pay, next caddyhttp.Handler, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://example.com/invoke/x/t", nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	_ = caddyhttp.NewTestReplacer(r)
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestX402PayOffline checks what needs no chain: quotes, free requests,
// the 402 and header errors (a testnet builtin facilitator lists what it
// supports without contacting algod).
func TestX402PayOffline(t *testing.T) {
	h := &X402Pay{PayTo: testPayTo, Facilitator: builtinAt("http://127.0.0.1:9")}
	if err := provisioned(t, h); err != nil {
		t.Fatal(err)
	}
	price := func(s string) *string { return &s }

	// Quoted free ("" or "0"): served without payment.
	for _, p := range []string{"", "0", "0.000"} {
		q := &quoter{price: price(p)}
		if w := serve(t, h, q); w.Code != 200 || w.Body.String() != "served" || q.served != 1 {
			t.Errorf("quote %q: %d %s", p, w.Code, w.Body)
		}
	}
	// No quote at all: refused, never served for free.
	q := &quoter{}
	if w := serve(t, h, q); w.Code != 500 || !strings.Contains(w.Body.String(), "does not quote") || q.served != 1 {
		t.Errorf("unquoted: %d %s (served %d, the quote run only)", w.Code, w.Body, q.served)
	}
	// A bad quoted price is a server error.
	if w := serve(t, h, &quoter{price: price("cheap")}); w.Code != 500 {
		t.Errorf("bad quote: %d %s", w.Code, w.Body)
	}

	// A quoted price asks for payment in both versions.
	q = &quoter{price: price("0.005")}
	w := serve(t, h, q)
	if w.Code != 402 || q.served != 0 {
		t.Fatalf("priced: %d %s", w.Code, w.Body)
	}
	var pr x402.PaymentRequired
	if err := x402.DecodeHeader(w.Header().Get(x402.HeaderPaymentRequired), &pr); err != nil {
		t.Fatal(err)
	}
	a := pr.Accepts[0]
	if a.Amount != "5000" || a.Asset != "10458941" || a.Network != x402.AlgorandTestnet.CAIP2() || a.PayTo != testPayTo || a.MaxTimeoutSeconds != 60 || len(a.Extra) != 0 {
		t.Fatalf("accepts %+v", a)
	}
	if pr.Resource.URL != "http://example.com/invoke/x/t" {
		t.Fatalf("resource %+v", pr.Resource)
	}
	if !strings.Contains(w.Body.String(), `"network":"algorand-testnet"`) || !strings.Contains(w.Body.String(), `"maxAmountRequired":"5000"`) {
		t.Fatalf("v1 body %s", w.Body)
	}

	// Undecodable or misplaced headers: 400 with a JSON error.
	for _, hv := range [][2]string{
		{x402.HeaderPaymentSignature, "!!"},
		{x402.HeaderXPayment, strings.Repeat("A", x402.MaxHeaderSize+4)},
		{x402.HeaderXPayment, "eyJ4NDAyVmVyc2lvbiI6Mn0="},
	} {
		w := serve(t, h, &quoter{price: price("0.005")}, hv[0], hv[1])
		if w.Code != 400 || !strings.Contains(w.Body.String(), `"error":"invalid payment header`) {
			t.Errorf("%s %.20s: %d %s", hv[0], hv[1], w.Code, w.Body)
		}
	}
}

func TestPaymentLocks(t *testing.T) {
	l := newPaymentLocks()
	if r := l.claim("a"); r != "" {
		t.Fatal(r)
	}
	if r := l.claim("a"); !strings.Contains(r, "another request") {
		t.Fatalf("second claim: %q", r)
	}
	l.release("a", false, false)
	if r := l.claim("a"); r != "" {
		t.Fatalf("a payment that bought nothing can be used again: %q", r)
	}
	l.release("a", true, false)
	if r := l.claim("a"); !strings.Contains(r, "used already") {
		t.Fatalf("used: %q", r)
	}
	if r := l.claim("b"); r != "" {
		t.Fatal(r)
	}
	l.release("b", true, true)
	if r := l.claim("b"); !strings.Contains(r, "settled already") {
		t.Fatalf("settled: %q", r)
	}
}

// TestPayerInFlightIsBoundedByBalance: many payments of one payer may be in
// flight only while its balance covers them all; without a balance to read,
// one at a time.
func TestPayerInFlightIsBoundedByBalance(t *testing.T) {
	l := newPaymentLocks()
	balance := func(b uint64) func() (uint64, bool, error) {
		return func() (uint64, bool, error) { return b, true, nil }
	}
	var leaves []func()
	for i := range 3 {
		leave, why, err := l.enterPayer("P", 1, 1000, balance(3000))
		if err != nil || why != "" {
			t.Fatalf("payment %d within the balance: %q %v", i, why, err)
		}
		leaves = append(leaves, leave)
	}
	if _, why, err := l.enterPayer("P", 1, 1000, balance(3000)); err != nil || why == "" {
		t.Fatalf("a fourth payment beyond the balance was let in: %v", err)
	}
	// Another payer, or another asset, is not held back.
	if leave, why, _ := l.enterPayer("Q", 1, 1000, balance(0)); why != "" {
		t.Fatalf("another payer: %q", why)
	} else {
		leave()
	}
	leaves[0]()
	leaves[0]() // leaving twice gives back one slot only
	leave, why, _ := l.enterPayer("P", 1, 1000, balance(3000))
	if why != "" {
		t.Fatalf("after one settled: %q", why)
	}
	if _, why, _ := l.enterPayer("P", 1, 1000, balance(3000)); why == "" {
		t.Fatal("leaving twice gave back two slots")
	}
	leave()
	for _, f := range leaves[1:] {
		f()
	}
	unknown := func() (uint64, bool, error) { return 0, false, nil }
	first, why, _ := l.enterPayer("R", 1, 1, unknown)
	if why != "" {
		t.Fatalf("a first payment needs no balance: %q", why)
	}
	if _, why, _ := l.enterPayer("R", 1, 1, unknown); why == "" {
		t.Fatal("without a balance to read, a second payment in flight was let in")
	}
	first()
}

func TestBufferedResponse(t *testing.T) {
	b := newBufferedResponse(http.Header{"Server": {"Caddy"}}, 8)
	b.Header().Set("X-A", "1")
	b.WriteHeader(http.StatusEarlyHints)
	b.WriteHeader(http.StatusCreated)
	b.WriteHeader(http.StatusTeapot)
	if n, err := b.Write([]byte("12345")); n != 5 || err != nil {
		t.Fatal(n, err)
	}
	w := httptest.NewRecorder()
	w.Header().Set("X-Gone", "1")
	b.writeTo(w)
	if w.Code != 201 || w.Body.String() != "12345" || w.Header().Get("X-A") != "1" || w.Header().Get("Server") != "Caddy" || w.Header().Get("X-Gone") != "" || w.Header().Get("Content-Length") != "5" {
		t.Fatalf("%d %q %v", w.Code, w.Body, w.Header())
	}
	if _, err := b.Write([]byte("6789")); err == nil || !b.overflow {
		t.Fatal("a write past the limit must fail")
	}
}

// FuzzX402PayHeaders feeds arbitrary payment headers to the middleware's
// decoding: it must never panic, and what it accepts has the version of
// its header and a payment key or a reason.
func FuzzX402PayHeaders(f *testing.F) {
	f.Add("eyJ4NDAyVmVyc2lvbiI6Mn0=", "")
	f.Add("", "eyJ4NDAyVmVyc2lvbiI6MSwic2NoZW1lIjoiZXhhY3QiLCJuZXR3b3JrIjoiYWxnb3JhbmQtdGVzdG5ldCIsInBheWxvYWQiOnsicGF5bWVudEdyb3VwIjpbIkFBIl0sInBheW1lbnRJbmRleCI6MH19")
	f.Add("!!", "x")
	f.Fuzz(func(t *testing.T, sig, xpay string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if sig != "" {
			r.Header.Set(x402.HeaderPaymentSignature, sig)
		}
		if xpay != "" {
			r.Header.Set(x402.HeaderXPayment, xpay)
		}
		p, version, err := paymentFrom(r)
		if err != nil {
			return
		}
		if version != p.Version() {
			t.Fatalf("version %d, payment version %d", version, p.Version())
		}
		if version == 2 && sig == "" || version == 1 && (xpay == "" || sig != "") {
			t.Fatalf("version %d from sig %q xpay %q", version, sig, xpay)
		}
		if version != 0 {
			_, _ = paymentKey(p)
		}
	})
}

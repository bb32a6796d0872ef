package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// testFacilitatorToken is the bearer token of the test's x402facilitator.
const testFacilitatorToken = "e2e-facilitator-token-0123456789"

// payServer runs caddy with x402pay routes in front of respond, against
// the chain's devnet:
//
//	/paid      0.001 USDC, builtin facilitator with a fee payer
//	/own-fee   0.001 USDC, builtin facilitator without a fee payer
//	/fail      like /paid, but the handler answers 500
//	/unopted   pays to an account not opted in to USDC
//	/vars      the price comes from a placeholder (0.002)
//	/big       a 4 KiB response with max_buffer 1KiB
//	/remote    through the remote facilitator /facilitator/ of this server
func payServer(t *testing.T, c *chain, unopted types.Address, admin int) *server {
	t.Helper()
	port := freePort(t)
	t.Setenv("X402_TEST_ALGOD_TOKEN", c.Dev.Token())
	t.Setenv("X402_TEST_FACILITATOR_TOKEN", testFacilitatorToken)
	builtin := fmt.Sprintf(`facilitator builtin {
				algod %s
				algod_token {env.X402_TEST_ALGOD_TOKEN}
				fee_payer {file.%s}
			}`, c.Dev.URL(), c.feePayerFile)
	noFeePayer := fmt.Sprintf(`facilitator builtin {
				algod %s
				algod_token {env.X402_TEST_ALGOD_TOKEN}
			}`, c.Dev.URL())
	gate := func(payTo types.Address, extra, fac string) string {
		return fmt.Sprintf(`x402pay {
			pay_to %s
			network devnet
			%s
			%s
		}`, payTo, extra, fac)
	}
	site := fmt.Sprintf(`
	log
	handle /paid {
		header >X-Paid-By {http.x402.payer}
		header >X-Paid-Tx {http.x402.txid}
		%s
		respond "paid content" 200
	}
	handle /own-fee {
		%s
		respond "own fee content" 200
	}
	handle /fail {
		%s
		respond "broken" 500
	}
	handle /unopted {
		%s
		respond "unopted content" 200
	}
	handle /vars {
		vars price 0.002
		%s
		respond "vars content" 200
	}
	handle /big {
		%s
		respond "%s" 200
	}
	handle /remote {
		x402pay {
			pay_to %s
			network %s
			asset %d
			price 0.001
			facilitator http://127.0.0.1:%d/facilitator {
				header Authorization "Bearer {env.X402_TEST_FACILITATOR_TOKEN}"
			}
		}
		respond "remote content" 200
	}
	handle /facilitator/* {
		x402facilitator {
			token {env.X402_TEST_FACILITATOR_TOKEN}
			network devnet
			algod %s
			algod_token {env.X402_TEST_ALGOD_TOKEN}
			fee_payer {file.%s}
		}
	}`,
		gate(c.PayTo.Address, `price 0.001
			description "Tom & Jerry <b>"`, builtin),
		gate(c.PayTo.Address, "price 0.001", noFeePayer),
		gate(c.PayTo.Address, "price 0.001", builtin),
		gate(unopted, "price 0.001", builtin),
		gate(c.PayTo.Address, "price {http.vars.price}", builtin),
		gate(c.PayTo.Address, "price 0.001\n\t\t\tmax_buffer 1KiB", builtin), strings.Repeat("x", 4096),
		c.PayTo.Address, c.Dev.Network(), c.Dev.USDC(), port,
		c.Dev.URL(), c.feePayerFile)
	return startCaddy(t, serverConfig{site: site, port: port, admin: admin})
}

// offered fetches a route's 402 and returns its v2 and v1 requirements.
func offered(t *testing.T, s *server, path string) (x402.PaymentRequired, x402.PaymentRequiredV1) {
	t.Helper()
	return required(t, do(t, http.MethodGet, s.URL+path, "", nil))
}

// payment builds a v2 payment for path's first offer, with mutate applied
// to what is built (nil: a good payment).
func (c *chain) payment(t *testing.T, s *server, path string, signer avm.Signer, mutate func(*avm.Requirement, *types.SuggestedParams)) (x402.Requirement, avm.ExactPayload) {
	t.Helper()
	pr, _ := offered(t, s, path)
	r := x402.Requirement{V2: &pr.Accepts[0]}
	return r, c.build(signer, r, mutate)
}

// send requests path with a payment header.
func send(t *testing.T, s *server, path string, r x402.Requirement, p avm.ExactPayload) response {
	t.Helper()
	name, value := paymentHeader(t, r, &x402.ResourceInfo{URL: s.URL + path}, p)
	return do(t, http.MethodGet, s.URL+path, "", nil, name, value)
}

// expectRejected checks a 402 whose v2 and v1 error is reason.
func expectRejected(t *testing.T, resp response, reason string) {
	t.Helper()
	pr, v1 := required(t, resp)
	if pr.Error != reason || v1.Error != reason {
		t.Fatalf("402 errors %q / %q, want %q", pr.Error, v1.Error, reason)
	}
	if len(pr.Accepts) == 0 {
		t.Fatal("a rejection must repeat the requirements")
	}
}

func TestX402Pay(t *testing.T) {
	c := newChain(t, 1_000_000)
	// Rounds well past the validity windows tests move back from.
	if err := c.Dev.AdvanceRounds(300); err != nil {
		t.Fatal(err)
	}
	unopted := crypto.GenerateAccount()
	c.Prepare(unopted, 1_000_000, false, 0)
	admin := freePort(t)
	s := payServer(t, c, unopted.Address, admin)
	startPayTo := c.USDC(c.PayTo.Address)
	payer := avm.AccountSigner(c.Payer)
	usdc := strconv.FormatUint(c.Dev.USDC(), 10)

	// balances checks that payer and receiver moved by exactly delta
	// since the last call.
	lastPayer, lastPayTo := c.USDC(c.Payer.Address), c.USDC(c.PayTo.Address)
	balances := func(t *testing.T, delta uint64) {
		t.Helper()
		p, r := c.USDC(c.Payer.Address), c.USDC(c.PayTo.Address)
		if lastPayer-p != delta || r-lastPayTo != delta {
			t.Fatalf("payer paid %d, receiver got %d; want %d", int64(lastPayer)-int64(p), int64(r)-int64(lastPayTo), delta)
		}
		lastPayer, lastPayTo = p, r
	}

	t.Run("402", func(t *testing.T) {
		resp := do(t, http.MethodGet, s.URL+"/paid", "", nil)
		pr, v1 := required(t, resp)
		if pr.X402Version != 2 || pr.Error != "Payment required" || pr.Resource.URL != s.URL+"/paid" || pr.Resource.Description != "Tom & Jerry <b>" {
			t.Fatalf("PAYMENT-REQUIRED %+v", pr)
		}
		want := x402.PaymentRequirements{Scheme: "exact", Network: c.Dev.Network(), Asset: usdc, Amount: "1000", PayTo: c.PayTo.Address.String(), MaxTimeoutSeconds: 60}
		got := pr.Accepts[0]
		if len(pr.Accepts) != 1 || x402.ExtraString(got.Extra, "feePayer") != c.FeePayer.Address.String() {
			t.Fatalf("accepts %+v", pr.Accepts)
		}
		got.Extra = nil
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("accepts[0] = %+v, want %+v", got, want)
		}
		if v1.X402Version != 1 || v1.Error != "Payment required" || len(v1.Accepts) != 1 {
			t.Fatalf("v1 body %s", resp.body)
		}
		a := v1.Accepts[0]
		if a.Network != "algorand-devnet" || a.MaxAmountRequired != "1000" || a.Asset != usdc || a.PayTo != want.PayTo || a.Resource != s.URL+"/paid" || x402.ExtraString(a.Extra, "feePayer") != c.FeePayer.Address.String() {
			t.Fatalf("v1 accepts %+v", a)
		}
		if resp.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(resp.header.Get("Content-Type"), "application/json") ||
			!strings.Contains(resp.header.Get("Access-Control-Expose-Headers"), "PAYMENT-RESPONSE") {
			t.Fatalf("headers %v", resp.header)
		}
		own, _ := offered(t, s, "/own-fee")
		if len(own.Accepts[0].Extra) != 0 {
			t.Fatalf("no fee payer configured, yet extra %s", own.Accepts[0].Extra)
		}
		balances(t, 0)
	})

	t.Run("v2 pays once", func(t *testing.T) {
		r, p := c.payment(t, s, "/paid", payer, nil)
		resp := send(t, s, "/paid", r, p)
		if resp.status != 200 || string(resp.body) != "paid content" {
			t.Fatalf("paid request: %d %s", resp.status, resp.body)
		}
		txid, _ := p.PaymentTxID()
		sr := settleResponse(t, resp, x402.HeaderPaymentResponse)
		if !sr.Success || sr.Transaction != txid || sr.Payer != c.Payer.Address.String() || sr.Network != c.Dev.Network() {
			t.Fatalf("PAYMENT-RESPONSE %+v, want txid %s", sr, txid)
		}
		// Placeholders reach later handlers (a deferred header here).
		if resp.header.Get("X-Paid-By") != c.Payer.Address.String() || resp.header.Get("X-Paid-Tx") != txid {
			t.Fatalf("placeholders: X-Paid-By %q X-Paid-Tx %q", resp.header.Get("X-Paid-By"), resp.header.Get("X-Paid-Tx"))
		}
		balances(t, 1000)
		// A replay is refused and moves nothing.
		expectRejected(t, send(t, s, "/paid", r, p), avm.ReasonDuplicateSettlement+": the payment was settled already")
		balances(t, 0)
	})

	t.Run("v1 pays", func(t *testing.T) {
		_, v1 := offered(t, s, "/paid")
		r := x402.Requirement{V1: &v1.Accepts[0]}
		p := c.build(payer, r, nil)
		resp := send(t, s, "/paid", r, p)
		if resp.status != 200 || string(resp.body) != "paid content" {
			t.Fatalf("v1 paid request: %d %s", resp.status, resp.body)
		}
		if resp.header.Get(x402.HeaderPaymentResponse) != "" {
			t.Fatal("a v1 client got a v2 PAYMENT-RESPONSE")
		}
		sr := settleResponse(t, resp, x402.HeaderXPaymentResponse)
		if !sr.Success || sr.Network != "algorand-devnet" {
			t.Fatalf("X-PAYMENT-RESPONSE %+v", sr)
		}
		balances(t, 1000)
	})

	t.Run("truncated CAIP-2", func(t *testing.T) {
		pr, _ := offered(t, s, "/paid")
		accepted := pr.Accepts[0]
		short := c.Dev.NetworkInfo().CAIP2Short()
		accepted.Network = short
		r := x402.Requirement{V2: &accepted}
		resp := send(t, s, "/paid", r, c.build(payer, r, nil))
		if resp.status != 200 {
			t.Fatalf("short form: %d %s", resp.status, resp.body)
		}
		if sr := settleResponse(t, resp, x402.HeaderPaymentResponse); sr.Network != short {
			t.Fatalf("the receipt names %q, the client sent %q", sr.Network, short)
		}
		balances(t, 1000)
	})

	t.Run("payer pays its own fee", func(t *testing.T) {
		r, p := c.payment(t, s, "/own-fee", payer, nil)
		if len(p.PaymentGroup) != 1 {
			t.Fatalf("group of %d without a fee payer", len(p.PaymentGroup))
		}
		resp := send(t, s, "/own-fee", r, p)
		if resp.status != 200 || string(resp.body) != "own fee content" {
			t.Fatalf("%d %s", resp.status, resp.body)
		}
		balances(t, 1000)
	})

	other := crypto.GenerateAccount()
	broke := crypto.GenerateAccount()
	c.Prepare(broke, 1_000_000, true, 0)
	notOptedIn := crypto.GenerateAccount()
	c.Prepare(notOptedIn, 1_000_000, false, 0)
	round := c.Dev.Round()
	rules := []struct {
		name   string
		path   string
		signer avm.Signer
		mutate func(*avm.Requirement, *types.SuggestedParams)
		edit   func(p avm.ExactPayload) avm.ExactPayload
		reason string
	}{
		{name: "wrong amount", mutate: func(r *avm.Requirement, _ *types.SuggestedParams) { r.Amount-- }, reason: avm.ReasonAmountMismatch},
		{name: "wrong asset", mutate: func(r *avm.Requirement, _ *types.SuggestedParams) { r.Asset++ }, reason: avm.ReasonAssetMismatch},
		{name: "wrong receiver", mutate: func(r *avm.Requirement, _ *types.SuggestedParams) { r.PayTo = other.Address }, reason: avm.ReasonReceiverMismatch},
		{name: "expired", mutate: func(_ *avm.Requirement, p *types.SuggestedParams) {
			p.FirstRoundValid = types.Round(round - 200)
		}, reason: avm.ReasonPaymentExpired},
		{name: "future rounds", mutate: func(_ *avm.Requirement, p *types.SuggestedParams) {
			p.FirstRoundValid = types.Round(round + 100)
		}, reason: avm.ReasonValidityWindow},
		{name: "missing signature", edit: func(p avm.ExactPayload) avm.ExactPayload {
			return c.rebuild(p, nil, false, func([]types.Transaction, int) {})
		}, reason: avm.ReasonPaymentNotSigned},
		{name: "tampered after signing", path: "/own-fee", edit: func(p avm.ExactPayload) avm.ExactPayload {
			members, err := avm.DecodeGroup(p)
			if err != nil {
				t.Fatal(err)
			}
			stx := members[p.PaymentIndex].Txn
			stx.Txn.Note = append(stx.Txn.Note, '!')
			p.PaymentGroup[p.PaymentIndex] = avm.EncodeMember(stx, true)
			return p
		}, reason: avm.ReasonInvalidSignature},
		{name: "wrong key", signer: avm.KeySigner{Sender: c.Payer.Address, Key: other.PrivateKey}, reason: avm.ReasonInvalidSignature},
		{name: "close-to", path: "/own-fee", edit: func(p avm.ExactPayload) avm.ExactPayload {
			return c.rebuild(p, payer, false, func(txns []types.Transaction, i int) { txns[i].AssetCloseTo = c.PayTo.Address })
		}, reason: avm.ReasonInvalidTransaction},
		{name: "rekey", path: "/own-fee", edit: func(p avm.ExactPayload) avm.ExactPayload {
			return c.rebuild(p, payer, false, func(txns []types.Transaction, i int) { txns[i].RekeyTo = other.Address })
		}, reason: avm.ReasonInvalidTransaction},
		{name: "group id mismatch", edit: func(p avm.ExactPayload) avm.ExactPayload {
			return c.rebuild(p, payer, false, func(txns []types.Transaction, i int) { txns[i].Group[0] ^= 0xff })
		}, reason: avm.ReasonInvalidGroupID},
		{name: "insufficient balance", signer: avm.AccountSigner(broke), reason: avm.ReasonInsufficientFunds},
		{name: "payer not opted in", signer: avm.AccountSigner(notOptedIn), reason: avm.ReasonInsufficientFunds},
		{name: "receiver not opted in", path: "/unopted", reason: avm.ReasonReceiverNotOptedIn},
	}
	for _, rule := range rules {
		t.Run(rule.name, func(t *testing.T) {
			path := rule.path
			if path == "" {
				path = "/paid"
			}
			signer := rule.signer
			if signer == nil {
				signer = payer
			}
			r, p := c.payment(t, s, path, signer, rule.mutate)
			if rule.edit != nil {
				p = rule.edit(p)
			}
			expectRejected(t, send(t, s, path, r, p), rule.reason)
			balances(t, 0)
		})
	}

	t.Run("rekeyed payer", func(t *testing.T) {
		rekeyed, authKey := crypto.GenerateAccount(), crypto.GenerateAccount()
		c.Prepare(rekeyed, 1_000_000, true, 5000)
		txn, err := transaction.MakePaymentTxn(rekeyed.Address.String(), rekeyed.Address.String(), 0, nil, "", c.Params())
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.Rekey(authKey.Address.String()); err != nil {
			t.Fatal(err)
		}
		c.Submit(avm.AccountSigner(rekeyed), txn)
		// Its own key no longer signs for it.
		r, p := c.payment(t, s, "/paid", avm.AccountSigner(rekeyed), nil)
		expectRejected(t, send(t, s, "/paid", r, p), avm.ReasonInvalidSignature)
		// The auth key does.
		before := c.USDC(rekeyed.Address)
		r, p = c.payment(t, s, "/paid", avm.KeySigner{Sender: rekeyed.Address, Key: authKey.PrivateKey}, nil)
		resp := send(t, s, "/paid", r, p)
		if resp.status != 200 {
			t.Fatalf("rekeyed payer: %d %s", resp.status, resp.body)
		}
		if sr := settleResponse(t, resp, x402.HeaderPaymentResponse); sr.Payer != rekeyed.Address.String() {
			t.Fatalf("payer %s, want %s", sr.Payer, rekeyed.Address)
		}
		if got := before - c.USDC(rekeyed.Address); got != 1000 {
			t.Fatalf("rekeyed payer paid %d", got)
		}
		lastPayTo += 1000
		balances(t, 0)
	})

	t.Run("no matching requirements", func(t *testing.T) {
		pr, _ := offered(t, s, "/paid")
		accepted := pr.Accepts[0]
		accepted.Amount = "1"
		r := x402.Requirement{V2: &accepted}
		expectRejected(t, send(t, s, "/paid", r, c.build(payer, r, nil)), "No matching payment requirements")
		balances(t, 0)
	})

	t.Run("undecodable header", func(t *testing.T) {
		for _, h := range [][2]string{
			{x402.HeaderPaymentSignature, "%%% not base64"},
			{x402.HeaderPaymentSignature, "eyJ4NDAyVmVyc2lvbiI6Mn0"}, // {"x402Version":2}, no accepted
			{x402.HeaderXPayment, "bm90IGpzb24="},                    // "not json"
		} {
			resp := do(t, http.MethodGet, s.URL+"/paid", "", nil, h[0], h[1])
			if resp.status != 400 || !strings.Contains(resp.str("error"), "invalid payment header") {
				t.Errorf("%s: %s → %d %s", h[0], h[1], resp.status, resp.body)
			}
		}
		// A v2 payment in the v1 header is refused too.
		r, p := c.payment(t, s, "/paid", payer, nil)
		_, v2 := paymentHeader(t, r, nil, p)
		resp := do(t, http.MethodGet, s.URL+"/paid", "", nil, x402.HeaderXPayment, v2)
		if resp.status != 400 || !strings.Contains(resp.str("error"), "want 1") {
			t.Fatalf("v2 payload in X-PAYMENT: %d %s", resp.status, resp.body)
		}
		balances(t, 0)
	})

	t.Run("same payment concurrently", func(t *testing.T) {
		r, p := c.payment(t, s, "/paid", payer, nil)
		name, value := paymentHeader(t, r, nil, p)
		const n = 6
		var wg sync.WaitGroup
		results := make([]response, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = do(t, http.MethodGet, s.URL+"/paid", "", nil, name, value)
			}()
		}
		wg.Wait()
		ok := 0
		for _, resp := range results {
			switch {
			case resp.status == 200 && string(resp.body) == "paid content":
				ok++
			case resp.status == 402:
				pr, _ := required(t, resp)
				if !strings.HasPrefix(pr.Error, avm.ReasonDuplicateSettlement) {
					t.Errorf("a duplicate got %q", pr.Error)
				}
			default:
				t.Errorf("unexpected answer %d %s", resp.status, resp.body)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d concurrent uses of one payment succeeded, want 1", ok, n)
		}
		balances(t, 1000)
	})

	t.Run("failing handler is not charged", func(t *testing.T) {
		r, p := c.payment(t, s, "/fail", payer, nil)
		resp := send(t, s, "/fail", r, p)
		if resp.status != 500 || string(resp.body) != "broken" || resp.header.Get(x402.HeaderPaymentResponse) != "" {
			t.Fatalf("failing handler: %d %s %v", resp.status, resp.body, resp.header)
		}
		balances(t, 0)
		// The payment bought its one answer, charged or not: sent again it
		// buys nothing, and nothing moves.
		resp = send(t, s, "/paid", r, p)
		if resp.status != 402 || bytes.Contains(resp.body, []byte("paid content")) {
			t.Fatalf("a payment whose answer was not charged, sent again: %d %s", resp.status, resp.body)
		}
		balances(t, 0)
	})

	t.Run("too large to sell", func(t *testing.T) {
		r, p := c.payment(t, s, "/big", payer, nil)
		resp := send(t, s, "/big", r, p)
		if resp.status != 500 || !strings.Contains(resp.str("error"), "max_buffer") || bytes.Contains(resp.body, []byte("xxxx")) {
			t.Fatalf("oversized response: %d %.200s", resp.status, resp.body)
		}
		balances(t, 0)
	})

	t.Run("price from a placeholder", func(t *testing.T) {
		r, p := c.payment(t, s, "/vars", payer, nil)
		if r.V2.Amount != "2000" {
			t.Fatalf("amount %s, want 2000", r.V2.Amount)
		}
		if resp := send(t, s, "/vars", r, p); resp.status != 200 || string(resp.body) != "vars content" {
			t.Fatalf("%d %s", resp.status, resp.body)
		}
		balances(t, 2000)
	})

	t.Run("browser", func(t *testing.T) {
		resp := do(t, http.MethodGet, s.URL+"/paid", "", nil, "Accept", "text/html,application/xhtml+xml", "User-Agent", "Mozilla/5.0 (X11; Linux x86_64)")
		page := string(resp.body)
		if resp.status != 402 || !strings.HasPrefix(resp.header.Get("Content-Type"), "text/html") || resp.header.Get(x402.HeaderPaymentRequired) == "" {
			t.Fatalf("browser: %d %v", resp.status, resp.header)
		}
		for _, want := range []string{"0.001 USDC", c.PayTo.Address.String(), c.Dev.Network(), "ASA " + usdc, "lualambda pay " + s.URL + "/paid", "window.x402 = {", "Tom &amp; Jerry &lt;b&gt;"} {
			if !strings.Contains(page, want) {
				t.Errorf("the page lacks %q", want)
			}
		}
		if strings.Contains(page, "<b>") {
			t.Error("the description was not escaped")
		}
		// window.x402 carries the requirements as data.
		js := page[strings.Index(page, "window.x402 = ")+len("window.x402 = "):]
		js = js[:strings.Index(js, ";</script>")]
		var data struct {
			Amount          string               `json:"amount"`
			PayTo           string               `json:"payTo"`
			PaymentRequired x402.PaymentRequired `json:"paymentRequired"`
		}
		if err := json.Unmarshal([]byte(js), &data); err != nil {
			t.Fatalf("window.x402 is not JSON: %v\n%s", err, js)
		}
		if data.Amount != "0.001" || data.PayTo != c.PayTo.Address.String() || data.PaymentRequired.Accepts[0].Amount != "1000" {
			t.Fatalf("window.x402 = %+v", data)
		}
	})

	t.Run("remote facilitator", func(t *testing.T) {
		// The facilitator's fee payer pays for what it settles: nobody
		// without the token may use it.
		for _, path := range []string{"/facilitator/supported", "/facilitator/verify", "/facilitator/settle"} {
			if r := do(t, http.MethodPost, s.URL+path, "application/json", strings.NewReader("{}")); r.status != 401 || r.str("error") == "" {
				t.Fatalf("%s without the token: %d %s", path, r.status, r.body)
			}
		}
		auth := []string{"Authorization", "Bearer " + testFacilitatorToken}
		sup := do(t, http.MethodGet, s.URL+"/facilitator/supported", "", nil, auth...)
		if sup.status != 200 || !strings.Contains(string(sup.body), c.Dev.Network()) || !strings.Contains(string(sup.body), c.FeePayer.Address.String()) {
			t.Fatalf("/supported: %d %s", sup.status, sup.body)
		}
		if bad := do(t, http.MethodPost, s.URL+"/facilitator/verify", "application/json", strings.NewReader("{"), auth...); bad.status != 400 || bad.str("error") == "" {
			t.Fatalf("bad /verify: %d %s", bad.status, bad.body)
		}
		pr, _ := offered(t, s, "/remote")
		if pr.Accepts[0].Network != c.Dev.Network() || x402.ExtraString(pr.Accepts[0].Extra, "feePayer") != c.FeePayer.Address.String() {
			t.Fatalf("remote offer %+v", pr.Accepts[0])
		}
		r, p := c.payment(t, s, "/remote", payer, nil)
		resp := send(t, s, "/remote", r, p)
		if resp.status != 200 || string(resp.body) != "remote content" {
			t.Fatalf("remote: %d %s", resp.status, resp.body)
		}
		if sr := settleResponse(t, resp, x402.HeaderPaymentResponse); !sr.Success {
			t.Fatalf("remote receipt %+v", sr)
		}
		balances(t, 1000)
		expectRejected(t, send(t, s, "/remote", r, p), avm.ReasonDuplicateSettlement+": the payment was settled already")
		balances(t, 0)
	})

	t.Run("metrics", func(t *testing.T) {
		metrics := string(do(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", admin), "", nil).body)
		value := func(series string) float64 {
			m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`).FindStringSubmatch(metrics)
			if m == nil {
				t.Errorf("no %s in /metrics", series)
				return 0
			}
			v, _ := strconv.ParseFloat(m[1], 64)
			return v
		}
		for _, outcome := range []string{"required", "settled", "invalid", "duplicate", "no_match", "bad_header", "not_charged", "error"} {
			if v := value(`caddy_x402pay_requests_total{outcome="` + outcome + `"}`); v < 1 {
				t.Errorf("outcome %s counted %v times, want at least once", outcome, v)
			}
		}
		// Every settled base unit went to payTo, and nothing else did.
		var settled float64
		for _, m := range regexp.MustCompile(`(?m)^caddy_x402pay_settled_base_units_total\{[^}]*\} ([0-9.e+]+)$`).FindAllStringSubmatch(metrics, -1) {
			v, _ := strconv.ParseFloat(m[1], 64)
			settled += v
		}
		if got := c.USDC(c.PayTo.Address) - startPayTo; settled != float64(got) {
			t.Errorf("metrics count %v base units settled, the receiver got %d", settled, got)
		}
		if value("caddy_x402pay_settle_seconds_count") < 1 || value("caddy_x402pay_verify_seconds_count") < value("caddy_x402pay_settle_seconds_count") {
			t.Errorf("verify/settle histograms: %s", metrics)
		}
	})

	t.Run("access log", func(t *testing.T) {
		r, p := c.payment(t, s, "/paid", payer, nil)
		if resp := send(t, s, "/paid", r, p); resp.status != 200 {
			t.Fatalf("%d %s", resp.status, resp.body)
		}
		balances(t, 1000)
		txid, _ := p.PaymentTxID()
		s.stop()
		log := s.log.String()
		for _, want := range []string{`"x402_txid":"` + txid + `"`, `"x402_payer":"` + c.Payer.Address.String() + `"`, `"x402_amount":"1000"`} {
			if !strings.Contains(log, want) {
				t.Errorf("the access log lacks %s", want)
			}
		}
	})
}

// lualambdaGate is an x402pay block with no price of its own (lualambda
// quotes it), paying c's receiver through the built-in facilitator.
func (c *chain) lualambdaGate(t *testing.T) string {
	t.Setenv("X402_TEST_ALGOD_TOKEN", c.Dev.Token())
	return fmt.Sprintf(`x402pay {
			pay_to %s
			network devnet
			facilitator builtin {
				algod %s
				algod_token {env.X402_TEST_ALGOD_TOKEN}
				fee_payer {file.%s}
			}
		}`, c.PayTo.Address, c.Dev.URL(), c.feePayerFile)
}

// TestX402PayLualambda gates the invocation API with x402pay and no price
// of its own: lualambda quotes the profile's price, real VMs run the Lua.
func TestX402PayLualambda(t *testing.T) {
	c := newChain(t, 1_000_000)
	gate := c.lualambdaGate(t)
	site := fmt.Sprintf(paidLua, gate, "0.0015")
	s := startCaddy(t, serverConfig{site: site})
	payer := avm.AccountSigner(c.Payer)

	// Discovery, status and unknown profiles stay free.
	disc := do(t, http.MethodGet, s.URL+"/invoke/", "", nil)
	if disc.status != 200 {
		t.Fatalf("discovery behind x402pay: %d %s", disc.status, disc.body)
	}
	var d struct {
		Profiles []struct{ Name, Price string }
	}
	if err := json.Unmarshal(disc.body, &d); err != nil || len(d.Profiles) != 1 {
		t.Fatalf("discovery %s: %v", disc.body, err)
	}
	if r := runLua(t, s, "x", "nope", "return 1"); r.status != 404 {
		t.Fatalf("unknown profile: %d %s", r.status, r.body)
	}
	if r := do(t, http.MethodGet, s.URL+"/invoke/nothing", "", nil); r.status != 404 {
		t.Fatalf("status of an unknown id: %d %s", r.status, r.body)
	}

	// The 402 asks for the price discovery shows.
	want, err := x402.ParsePrice(d.Profiles[0].Price, 6)
	if err != nil {
		t.Fatal(err)
	}
	pr, _ := required(t, runLua(t, s, "lua-error", "t", "error('boom')"))
	if pr.Accepts[0].Amount != strconv.FormatUint(want, 10) || want != 1500 {
		t.Fatalf("402 asks %s, discovery says %s", pr.Accepts[0].Amount, d.Profiles[0].Price)
	}
	// The 402 says how to call a run and what it answers (x402's bazaar
	// extension), for catalogues and agents.
	var ext struct {
		Bazaar struct {
			Info struct {
				Input struct {
					Type, Method, BodyType string
					Body                   map[string]any
				}
				Output struct{ Type string }
			}
			Schema map[string]any
		}
	}
	if err := json.Unmarshal(pr.Extensions, &ext); err != nil {
		t.Fatalf("the 402's extensions %s: %v", pr.Extensions, err)
	}
	if in := ext.Bazaar.Info.Input; in.Type != "http" || in.Method != "POST" || in.BodyType != "json" || in.Body["source"] == nil ||
		ext.Bazaar.Info.Output.Type != "json" || ext.Bazaar.Schema["$schema"] == nil {
		t.Fatalf("the 402's bazaar extension: %s", pr.Extensions)
	}

	var lastHeader [2]string
	payRun := func(id, src string) (response, string) {
		t.Helper()
		pr, _ := required(t, runLua(t, s, id, "t", src))
		r := x402.Requirement{V2: &pr.Accepts[0]}
		p := c.build(payer, r, nil)
		name, value := paymentHeader(t, r, &pr.Resource, p)
		lastHeader = [2]string{name, value}
		txid, _ := p.PaymentTxID()
		return do(t, http.MethodPost, s.URL+"/invoke/"+id+"/t", "text/x-lua", strings.NewReader(src), name, value), txid
	}
	payerBefore, payToBefore := c.USDC(c.Payer.Address), c.USDC(c.PayTo.Address)
	moved := func(want uint64) {
		t.Helper()
		p, r := c.USDC(c.Payer.Address), c.USDC(c.PayTo.Address)
		if payerBefore-p != want || r-payToBefore != want {
			t.Fatalf("payer paid %d, receiver got %d; want %d", payerBefore-p, r-payToBefore, want)
		}
	}

	// A Lua error is the user's: the run happened and is charged.
	resp, txid := payRun("lua-error", "error('boom')")
	if resp.status != 200 || !strings.Contains(resp.str("error"), "boom") {
		t.Fatalf("paid Lua error: %d %s", resp.status, resp.body)
	}
	if sr := settleResponse(t, resp, x402.HeaderPaymentResponse); !sr.Success || sr.Transaction != txid {
		t.Fatalf("receipt %+v", sr)
	}
	moved(1500)
	status := do(t, http.MethodGet, s.URL+"/invoke/lua-error", "", nil)
	if status.status != 200 || status.json["paid"] != true {
		t.Fatalf("status after a paid run: %d %s", status.status, status.body)
	}

	// A taken id is refused before the run and not charged.
	resp, _ = payRun("lua-error", "return 1")
	if resp.status != 409 || resp.header.Get(x402.HeaderPaymentResponse) != "" {
		t.Fatalf("taken id: %d %s", resp.status, resp.body)
	}
	moved(1500)

	// A good run.
	resp, _ = payRun("four", "return 2 + 2")
	if resp.status != 200 || resp.json["result"] != float64(4) {
		t.Fatalf("paid run: %d %s", resp.status, resp.body)
	}
	moved(3000)

	// A paid session keeps its receipt: it settles while the session runs,
	// and the session's end must not undo it.
	sessURL := s.URL + "/invoke/paid-session/t?mode=session"
	spr, _ := required(t, do(t, http.MethodPost, sessURL, "", nil))
	sreq := x402.Requirement{V2: &spr.Accepts[0]}
	sp := c.build(payer, sreq, nil)
	sname, svalue := paymentHeader(t, sreq, &spr.Resource, sp)
	stxid, _ := sp.PaymentTxID()
	sess := do(t, http.MethodPost, sessURL, "", nil, sname, svalue)
	if sess.status != 200 || sess.str("token") == "" {
		t.Fatalf("paid session: %d %s", sess.status, sess.body)
	}
	moved(4500)
	// The profile's 5 s wall clock ends it.
	deadline := time.Now().Add(time.Minute)
	var st response
	for st = do(t, http.MethodGet, s.URL+"/invoke/paid-session", "", nil); st.str("state") == "running"; st = do(t, http.MethodGet, s.URL+"/invoke/paid-session", "", nil) {
		if time.Now().After(deadline) {
			t.Fatalf("the session did not end: %s", st.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.str("state") != "done" || st.json["paid"] != true {
		t.Fatalf("a paid session after its end: %s", st.body)
	}
	out := do(t, http.MethodGet, s.URL+"/invoke/paid-session/output", "", nil, "Authorization", "Bearer "+sess.str("token"))
	rc, _ := out.json["receipt"].(map[string]any)
	if out.status != 200 || rc == nil || rc["txid"] != stxid {
		t.Fatalf("a paid session's output lost its receipt %s: %d %s", stxid, out.status, out.body)
	}
	charged := uint64(4500)

	// Lua ending its own process is the user's doing: reason exit, charged
	// once; the same payment sent again for another id gets no output and
	// moves nothing.
	for i, src := range []string{`print("x") os.exit(0)`, `print("x") io.stdout:flush() local ffi = require("ffi") ffi.cdef("int kill(int, int);") ffi.C.kill(0, 9)`} {
		id := fmt.Sprintf("exits-%d", i)
		resp, txid = payRun(id, src)
		if resp.status != 200 || resp.str("reason") != "exit" || resp.str("stdout") != "x\n" || resp.str("token") == "" {
			t.Fatalf("a paid run that exits: %d %s", resp.status, resp.body)
		}
		if sr := settleResponse(t, resp, x402.HeaderPaymentResponse); !sr.Success || sr.Transaction != txid {
			t.Fatalf("receipt of a run that exits: %+v", sr)
		}
		charged += 1500
		moved(charged)
		again := do(t, http.MethodPost, s.URL+"/invoke/"+id+"-again/t", "text/x-lua", strings.NewReader(src), lastHeader[0], lastHeader[1])
		if again.status != 402 || again.str("stdout") != "" || again.str("token") != "" || bytes.Contains(again.body, []byte(`"x\n"`)) {
			t.Fatalf("the same payment again: %d %s", again.status, again.body)
		}
		moved(charged)
		if st := do(t, http.MethodGet, s.URL+"/invoke/"+id+"-again", "", nil); st.status != 404 {
			t.Fatalf("a refused payment ran: %d %s", st.status, st.body)
		}
	}
}

// TestPayerCannotRunBeyondItsBalance sends many distinct signed payments of
// one payer at once against a balance that covers two: at most two run
// (and both settle); the rest are refused before anything runs.
func TestPayerCannotRunBeyondItsBalance(t *testing.T) {
	c := newChain(t, 1_000_000)
	gate := c.lualambdaGate(t)
	s := startCaddy(t, serverConfig{site: fmt.Sprintf(paidLua, gate, "0.0015")})
	poor := c.NewAccount(1_000_000, true, 3000) // two runs' worth
	signer := avm.AccountSigner(poor)
	const src = `local t0 = os.clock() while os.clock() - t0 < 2 do end return 1`
	const n = 5
	type attempt struct {
		id, name, value string
	}
	attempts := make([]attempt, n)
	for i := range attempts {
		id := fmt.Sprintf("poor-%d", i)
		pr, _ := required(t, runLua(t, s, id, "t", src))
		r := x402.Requirement{V2: &pr.Accepts[0]}
		p := c.build(signer, r, func(_ *avm.Requirement, sp *types.SuggestedParams) { sp.FirstRoundValid -= types.Round(i) })
		name, value := paymentHeader(t, r, &pr.Resource, p)
		attempts[i] = attempt{id, name, value}
	}
	before := c.USDC(poor.Address)
	results := make([]response, n)
	var wg sync.WaitGroup
	for i, a := range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = do(t, http.MethodPost, s.URL+"/invoke/"+a.id+"/t", "text/x-lua", strings.NewReader(src), a.name, a.value)
		}()
	}
	wg.Wait()
	ran, served := 0, 0
	for i, a := range attempts {
		if results[i].status == 200 {
			served++
		}
		if st := do(t, http.MethodGet, s.URL+"/invoke/"+a.id, "", nil); st.status != 404 {
			ran++
		}
	}
	spent := before - c.USDC(poor.Address)
	if ran > 2 || uint64(ran)*1500 != spent || served != ran {
		t.Fatalf("%d runs happened, %d were served, %d µUSDC were paid: a payer ran beyond its balance (answers %v)", ran, served, spent, statuses(results))
	}
	if ran == 0 {
		t.Fatalf("no run happened: %v", statuses(results))
	}
}

// statuses lists the status codes of responses, for messages.
func statuses(rs []response) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.status
	}
	return out
}

// TestX402PayWithoutQuoteReachesNoBackend puts x402pay without a price in
// front of reverse_proxy, which cannot quote: no request may reach the
// backend unpaid, and the operator gets a clear error.
func TestX402PayWithoutQuoteReachesNoBackend(t *testing.T) {
	c := newPaidChain(t)
	var hits atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "backend content")
	}))
	defer backend.Close()
	site := fmt.Sprintf(`route /proxied/* {
		%s
		reverse_proxy %s
	}`, c.gate(""), strings.TrimPrefix(backend.URL, "http://"))
	s := startCaddy(t, serverConfig{site: site})
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		r := do(t, method, s.URL+"/proxied/x", "text/plain", strings.NewReader("body"))
		if r.status != 500 || !strings.Contains(r.str("error"), "set price") || bytes.Contains(r.body, []byte("backend content")) {
			t.Fatalf("%s without a price in front of reverse_proxy: %d %s", method, r.status, r.body)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the backend got %d unpaid requests", n)
	}
}

// TestPriceFormsAgree writes one price three ways: the Caddyfile accepts
// each, discovery shows one form, and the 402 asks the same amount.
func TestPriceFormsAgree(t *testing.T) {
	c := newPaidChain(t)
	site := fmt.Sprintf(`handle_path /invoke/* {
		%s
		lualambda {
			profile a {
				memory 64MiB
				price .5
			}
			profile b {
				memory 64MiB
				price 0.50
			}
			profile c {
				memory 64MiB
				price $0.5
			}
		}
	}`, c.gate(""))
	s := startCaddy(t, serverConfig{site: site})
	disc := do(t, http.MethodGet, s.URL+"/invoke/", "", nil)
	var d struct {
		Profiles []struct{ Name, Price string }
	}
	if err := json.Unmarshal(disc.body, &d); err != nil || len(d.Profiles) != 3 {
		t.Fatalf("discovery: %s %v", disc.body, err)
	}
	for _, p := range d.Profiles {
		if p.Price != "0.5" {
			t.Errorf("discovery shows profile %s at %q, want 0.5", p.Name, p.Price)
		}
		pr, _ := required(t, runLua(t, s, "price-"+p.Name, p.Name, "return 1"))
		if pr.Accepts[0].Amount != "500000" {
			t.Errorf("the 402 of profile %s asks %s, want 500000", p.Name, pr.Accepts[0].Amount)
		}
	}
}

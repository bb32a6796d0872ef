package payer

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
	"github.com/lualambda/caddy-lualambda/x402/facilitator"
)

// chainEnv is a devnet with a merchant (PayTo, opted in to USDC), a
// facilitator fee payer and a funded, opted-in payer.
type chainEnv struct {
	*devnettest.Parties
	fac *facilitator.Builtin
}

func newChainEnv(t *testing.T) *chainEnv {
	t.Helper()
	p := devnettest.New(t, devnettest.Options{FeePayerMicroAlgos: 1_000_000, PayerUSDC: 1_000_000})
	fac, err := facilitator.NewBuiltin(facilitator.BuiltinConfig{
		AlgodURL: p.Dev.URL(), AlgodToken: p.Dev.Token(), Network: p.Dev.NetworkInfo(), FeePayerMnemonic: devnettest.Mnemonic(t, p.FeePayer),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &chainEnv{Parties: p, fac: fac}
}

// account is the payer's Account for the devnet.
func (e *chainEnv) account(context.Context) (*Account, error) {
	return &Account{Signer: avm.AccountSigner(e.Payer), Chains: []Chain{{Network: e.Dev.NetworkInfo(), Algod: e.Algod}}}, nil
}

// gate is a paywalled HTTP resource: it answers 402 with its offers, and
// verifies and settles a payment through the built-in facilitator on the
// devnet before answering "paid:" and the request body.
type gate struct {
	e       *chainEnv
	offers  []x402.PaymentRequirements
	v1Only  bool
	paid    atomic.Int32 // requests that carried a payment
	settled atomic.Int32
}

func (e *chainEnv) newGate(t *testing.T, v1Only bool, amounts ...uint64) (*gate, *httptest.Server) {
	t.Helper()
	extra, _ := json.Marshal(map[string]string{"feePayer": e.fac.FeePayerAddress()})
	g := &gate{e: e, v1Only: v1Only}
	for _, a := range amounts {
		network := e.Dev.Network()
		if v1Only {
			network = devnet.NetworkName
		}
		g.offers = append(g.offers, x402.PaymentRequirements{
			Scheme: x402.SchemeExact, Network: network, Asset: strconv.FormatUint(e.Dev.USDC(), 10),
			Amount: strconv.FormatUint(a, 10), PayTo: e.PayTo.Address.String(), MaxTimeoutSeconds: 60, Extra: extra,
		})
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv
}

func (g *gate) requirements() []x402.Requirement {
	var rs []x402.Requirement
	for i := range g.offers {
		o := g.offers[i]
		if g.v1Only {
			rs = append(rs, x402.Requirement{V1: &x402.PaymentRequirementsV1{
				Scheme: o.Scheme, Network: o.Network, MaxAmountRequired: o.Amount, Resource: "/r", Description: "test",
				PayTo: o.PayTo, MaxTimeoutSeconds: o.MaxTimeoutSeconds, Asset: o.Asset, Extra: o.Extra,
			}})
		} else {
			rs = append(rs, x402.Requirement{V2: &o})
		}
	}
	return rs
}

func (g *gate) challenge(w http.ResponseWriter, reason string) {
	var v1 []x402.PaymentRequirementsV1
	for _, r := range g.requirements() {
		if r.V1 != nil {
			v1 = append(v1, *r.V1)
		}
	}
	if !g.v1Only {
		v, _ := x402.EncodeHeader(x402.PaymentRequired{X402Version: 2, Error: reason, Resource: x402.ResourceInfo{URL: "/r"}, Accepts: g.offers})
		w.Header().Set(x402.HeaderPaymentRequired, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusPaymentRequired)
	_ = json.NewEncoder(w).Encode(x402.PaymentRequiredV1{X402Version: 1, Error: reason, Accepts: v1})
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	value, respHeader := r.Header.Get(x402.HeaderPaymentSignature), x402.HeaderPaymentResponse
	if g.v1Only {
		value, respHeader = r.Header.Get(x402.HeaderXPayment), x402.HeaderXPaymentResponse
	}
	if value == "" {
		g.challenge(w, "payment required")
		return
	}
	g.paid.Add(1)
	p, err := x402.DecodePaymentHeader(value)
	if err != nil {
		g.challenge(w, err.Error())
		return
	}
	ns := x402.NewNetworks()
	_ = ns.Register(g.e.Dev.NetworkInfo())
	req, err := x402.MatchRequirement(p, g.requirements(), ns)
	if err != nil {
		g.challenge(w, err.Error())
		return
	}
	vr, err := g.e.fac.Verify(r.Context(), p, req)
	if err != nil || !vr.IsValid {
		g.challenge(w, "invalid payment: "+vr.InvalidReason+" "+vr.InvalidMessage)
		return
	}
	sr, err := g.e.fac.Settle(r.Context(), p, req)
	if err != nil || !sr.Success {
		g.challenge(w, "settlement failed: "+sr.ErrorReason)
		return
	}
	g.settled.Add(1)
	v, _ := x402.EncodeHeader(sr)
	w.Header().Set(respHeader, v)
	body, _ := io.ReadAll(r.Body)
	_, _ = io.WriteString(w, "paid:"+string(body))
}

func TestPayV2OnDevnet(t *testing.T) {
	e := newChainEnv(t)
	g, srv := e.newGate(t, false, 3000, 1000, 2000)
	c := &Client{MaxAmount: 1000, Account: e.account}
	payerBefore, merchantBefore := e.USDC(e.Payer.Address), e.USDC(e.PayTo.Address)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/r", strings.NewReader("the body"))
	res, err := c.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Response.Body)
	res.Response.Body.Close()
	if res.Response.StatusCode != 200 || string(body) != "paid:the body" {
		t.Fatalf("answer %d %q", res.Response.StatusCode, body)
	}
	if !res.Paid || res.Offer == nil || res.Offer.Parsed.Amount != 1000 || res.Offer.Terms.Version != 2 {
		t.Fatalf("paid offer: %+v", res.Offer)
	}
	r := res.Receipt
	if r == nil || !r.Success || r.Version != 2 || r.Transaction != res.PaymentTxID || r.Payer != e.Payer.Address.String() || !x402.SameNetwork(r.Network, e.Dev.Network()) {
		t.Fatalf("receipt %+v, payment %s", r, res.PaymentTxID)
	}
	if res.Timings.Challenge <= 0 || res.Timings.Sign <= 0 || res.Timings.Paid <= 0 {
		t.Fatalf("timings %+v", res.Timings)
	}
	if got := e.USDC(e.Payer.Address); got != payerBefore-1000 {
		t.Fatalf("payer USDC %d -> %d, want -1000", payerBefore, got)
	}
	if got := e.USDC(e.PayTo.Address); got != merchantBefore+1000 {
		t.Fatalf("merchant USDC %d -> %d, want +1000", merchantBefore, got)
	}
	if g.settled.Load() != 1 {
		t.Fatalf("settled %d times", g.settled.Load())
	}
}

func TestPayV1OnDevnet(t *testing.T) {
	e := newChainEnv(t)
	g, srv := e.newGate(t, true, 2500)
	c := &Client{MaxAmount: 2500, Account: e.account}
	before := e.USDC(e.PayTo.Address)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/r", nil)
	res, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	res.Response.Body.Close()
	if res.Response.StatusCode != 200 || res.Receipt == nil || !res.Receipt.Success || res.Receipt.Version != 1 || res.Offer.Terms.Version != 1 {
		t.Fatalf("v1 payment: %d %+v", res.Response.StatusCode, res.Receipt)
	}
	if got := e.USDC(e.PayTo.Address); got != before+2500 || g.settled.Load() != 1 {
		t.Fatalf("merchant USDC %d -> %d", before, got)
	}
}

func TestRefuseWithoutSigning(t *testing.T) {
	e := newChainEnv(t)
	g, srv := e.newGate(t, false, 5000, 2000)
	signed := false
	c := &Client{MaxAmount: 1999, Account: func(ctx context.Context) (*Account, error) {
		a, err := e.account(ctx)
		if err != nil {
			return nil, err
		}
		a.Signer = countingSigner{Signer: a.Signer, signed: &signed}
		return a, nil
	}}
	round, before := e.Dev.Round(), e.USDC(e.Payer.Address)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/r", nil)
	res, err := c.Do(context.Background(), req)
	var refused *RefusedError
	if !errors.As(err, &refused) || res != nil {
		t.Fatalf("over the cap: %v %v", res, err)
	}
	if o, ok := refused.Cheapest(); !ok || o.Parsed.Amount != 2000 || !strings.Contains(err.Error(), "0.002 USDC") {
		t.Fatalf("refusal: %v", err)
	}
	if signed || g.paid.Load() != 0 || e.Dev.Round() != round || e.USDC(e.Payer.Address) != before {
		t.Fatalf("something was signed or sent: signed %v, paid requests %d, round %d -> %d", signed, g.paid.Load(), round, e.Dev.Round())
	}
}

func TestFreeAnswerNeedsNoWallet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "free") }))
	defer srv.Close()
	c := &Client{Account: func(context.Context) (*Account, error) { return nil, errors.New("the wallet was read") }}
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	res, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Response.Body)
	res.Response.Body.Close()
	if string(b) != "free" || res.Paid || res.Receipt != nil {
		t.Fatalf("free answer: %q %+v", b, res)
	}
}

func TestRejectedPayment(t *testing.T) {
	e := newChainEnv(t)
	g, srv := e.newGate(t, false, 1000)
	// The payer spends its USDC elsewhere: the facilitator refuses.
	poor := crypto.GenerateAccount()
	c := &Client{MaxAmount: 1000, Account: func(ctx context.Context) (*Account, error) {
		return &Account{Signer: avm.AccountSigner(poor), Chains: []Chain{{Network: e.Dev.NetworkInfo(), Algod: e.Algod}}}, nil
	}}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/r", nil)
	res, err := c.Do(context.Background(), req)
	var rejected *RejectedError
	if !errors.As(err, &rejected) || rejected.PaymentTxID == "" || !strings.Contains(rejected.Reason, "invalid payment") {
		t.Fatalf("payment from an unfunded account: %v", err)
	}
	if res == nil || !res.Paid || res.Receipt != nil || g.settled.Load() != 0 || g.paid.Load() != 1 {
		t.Fatalf("result %+v, settled %d, paid requests %d", res, g.settled.Load(), g.paid.Load())
	}
}

// countingSigner records whether it signed.
type countingSigner struct {
	avm.Signer
	signed *bool
}

func (s countingSigner) Sign(ctx context.Context, txn types.Transaction) (types.SignedTxn, error) {
	*s.signed = true
	return s.Signer.Sign(ctx, txn)
}

// hostileAccount is an account whose signer records any signature and whose
// chain (testnet) has no algod: no hostile challenge may get that far.
func hostileAccount(signed *bool) func(context.Context) (*Account, error) {
	return func(context.Context) (*Account, error) {
		return &Account{
			Signer: countingSigner{Signer: avm.AccountSigner(crypto.GenerateAccount()), signed: signed},
			Chains: []Chain{{Network: x402.AlgorandTestnet}},
		}, nil
	}
}

func TestHostileChallengesSignNothing(t *testing.T) {
	to := crypto.GenerateAccount().Address.String()
	tn := x402.AlgorandTestnet.CAIP2()
	v2 := func(reqs ...x402.PaymentRequirements) string {
		v, err := x402.EncodeHeader(x402.PaymentRequired{X402Version: 2, Accepts: reqs})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	offer := func(network, amount, payTo string) x402.PaymentRequirements {
		return x402.PaymentRequirements{Scheme: x402.SchemeExact, Network: network, Asset: "10458941", Amount: amount, PayTo: payTo}
	}
	many := make([]x402.PaymentRequirements, 2000)
	for i := range many {
		many[i] = offer(tn, "18446744073709551615", to)
	}
	manyBody, err := json.Marshal(x402.PaymentRequired{X402Version: 2, Accepts: many})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		header string
		body   string
		want   string // in the error
	}{
		{"huge body", "", `{"x402Version":1,"accepts":[` + strings.Repeat(`{"scheme":"exact"},`, 200_000) + `{}]}`, "over 1 MiB"},
		{"huge header", strings.Repeat("A", x402.MaxHeaderSize+1), "", "too large"},
		{"not JSON", "", "{not json", "no x402 payment requirements"},
		{"wrong JSON types", "", `{"x402Version":1,"accepts":{"scheme":"exact"}}`, "decode the v1 402 body"},
		{"accepts null", v2(), `{"x402Version":2,"accepts":null}`, "offers no way to pay"},
		{"absurd amount", v2(offer(tn, "99999999999999999999999", to)), "", "not a base-unit integer"},
		{"max uint64 amount", v2(offer(tn, "18446744073709551615", to)), "", "over the max price"},
		{"negative amount", v2(offer(tn, "-5", to)), "", "not a base-unit integer"},
		{"payTo not an address", v2(offer(tn, "1", "ALICE")), "", "not an Algorand address"},
		{"unknown network", v2(offer("algorand:"+strings.Repeat("B", 43)+"=", "1", to)), "", "not a network this wallet pays on"},
		{"another chain", v2(offer("eip155:8453", "1", to)), "", "not a network this wallet pays on"},
		{"terminal escapes", v2(offer(tn+"\x1b[2J", "1", to)), "", "?[2J"},
		{"thousands of offers", "", string(manyBody), "and 1990 more"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if tc.header != "" {
					w.Header().Set(x402.HeaderPaymentRequired, tc.header)
				}
				w.WriteHeader(http.StatusPaymentRequired)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			signed := false
			c := &Client{MaxAmount: 1_000_000, Account: hostileAccount(&signed)}
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			res, err := c.Do(context.Background(), req)
			if err == nil || res != nil {
				t.Fatalf("paid a hostile challenge: %+v", res)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.ContainsRune(err.Error(), '\x1b') || len(err.Error()) > 10_000 {
				t.Errorf("error is unsafe or unbounded for a terminal: %d bytes", len(err.Error()))
			}
			if signed || requests.Load() != 1 {
				t.Fatalf("signed %v, %d requests", signed, requests.Load())
			}
		})
	}
}

func TestPaidRequestFollowsNoRedirect(t *testing.T) {
	e := newChainEnv(t)
	g, _ := e.newGate(t, false, 1000)
	var trapped atomic.Int32
	trap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		trapped.Add(1)
		if r.Header.Get(x402.HeaderPaymentSignature) != "" {
			t.Error("the signed payment followed a redirect to another server")
		}
		g.challenge(w, "pay again")
	}))
	defer trap.Close()
	var paidRequests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(x402.HeaderPaymentSignature) == "" {
			g.challenge(w, "payment required")
			return
		}
		paidRequests.Add(1)
		http.Redirect(w, r, trap.URL+"/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	c := &Client{MaxAmount: 1000, Account: e.account}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/r", strings.NewReader("x"))
	res, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	res.Response.Body.Close()
	if res.Response.StatusCode != http.StatusTemporaryRedirect || !res.Paid || res.Receipt != nil {
		t.Fatalf("answer %d, paid %v, receipt %+v", res.Response.StatusCode, res.Paid, res.Receipt)
	}
	if paidRequests.Load() != 1 || trapped.Load() != 0 {
		t.Fatalf("paid requests %d, requests to the redirect target %d", paidRequests.Load(), trapped.Load())
	}
}

// With AllowCrossOrigin, a 402 behind a redirect to another origin is paid
// there, if the redirect kept the request's method.
func TestPayWhereTheChallengeCameFrom(t *testing.T) {
	e := newChainEnv(t)
	g, gateSrv := e.newGate(t, false, 1000)
	var front atomic.Int32
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusFound} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			front.Add(1)
			http.Redirect(w, r, gateSrv.URL+"/r", code)
		}))
		defer srv.Close()
		front.Store(0)
		before := g.paid.Load()
		c := &Client{MaxAmount: 1000, Account: e.account, AllowCrossOrigin: true}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/old", strings.NewReader("the body"))
		res, err := c.Do(context.Background(), req)
		if code == http.StatusFound {
			// A 302 turns the POST into a GET: paying for it would buy
			// something else than what was asked.
			if err == nil || !strings.Contains(err.Error(), "nothing was signed") || g.paid.Load() != before {
				t.Fatalf("302: %v, paid requests %d -> %d", err, before, g.paid.Load())
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Response.Body)
		res.Response.Body.Close()
		if string(body) != "paid:the body" || res.Receipt == nil || !res.Receipt.Success {
			t.Fatalf("307: answer %q, receipt %+v", body, res.Receipt)
		}
		if front.Load() != 1 || g.paid.Load() != before+1 {
			t.Fatalf("307: front saw %d requests, gate %d paid requests", front.Load(), g.paid.Load()-before)
		}
	}
}

// A redirect of the unpaid request to another origin is refused: nothing
// is sent there and nothing is signed, so a server the user named cannot
// send them to pay someone else.
func TestCrossOriginRedirectSignsNothing(t *testing.T) {
	e := newChainEnv(t)
	g, _ := e.newGate(t, false, 1000)
	var foreign atomic.Int32
	foreignSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		foreign.Add(1)
		g.ServeHTTP(w, r)
	}))
	defer foreignSrv.Close()
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, foreignSrv.URL+"/r", code)
		}))
		defer front.Close()
		signed := false
		c := &Client{MaxAmount: 1000, Account: func(ctx context.Context) (*Account, error) {
			a, err := e.account(ctx)
			if err != nil {
				return nil, err
			}
			a.Signer = countingSigner{Signer: a.Signer, signed: &signed}
			return a, nil
		}}
		round, before := e.Dev.Round(), e.USDC(e.Payer.Address)
		req, _ := http.NewRequest(http.MethodPost, front.URL+"/r", strings.NewReader("the body"))
		res, err := c.Do(context.Background(), req)
		var co *CrossOriginError
		if !errors.As(err, &co) || res != nil {
			t.Fatalf("%d to another origin: result %+v, error %v; want a *CrossOriginError", code, res, err)
		}
		if !strings.Contains(err.Error(), foreignSrv.URL) || !strings.Contains(err.Error(), "nothing was signed") {
			t.Errorf("%d: error %q does not name the other origin and say nothing was signed", code, err)
		}
		if signed || foreign.Load() != 0 || g.paid.Load() != 0 || e.Dev.Round() != round || e.USDC(e.Payer.Address) != before {
			t.Fatalf("%d: signed %v, requests to the other origin %d, paid requests %d, round %d -> %d",
				code, signed, foreign.Load(), g.paid.Load(), round, e.Dev.Round())
		}
	}
}

// Redirects within the origin the user named are followed and paid.
func TestSameOriginRedirectIsPaid(t *testing.T) {
	e := newChainEnv(t)
	g, _ := e.newGate(t, false, 1000)
	var moved atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			moved.Add(1)
			http.Redirect(w, r, "/r", http.StatusPermanentRedirect)
			return
		}
		g.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := &Client{MaxAmount: 1000, Account: e.account}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/old", strings.NewReader("the body"))
	res, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Response.Body)
	res.Response.Body.Close()
	if string(body) != "paid:the body" || res.Receipt == nil || !res.Receipt.Success || moved.Load() != 1 || g.paid.Load() != 1 {
		t.Fatalf("answer %q, receipt %+v, redirects %d, paid requests %d", body, res.Receipt, moved.Load(), g.paid.Load())
	}
}

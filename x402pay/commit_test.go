package x402pay

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// Commit through the real middleware, its built-in facilitator and an
// in-process devnet, over real HTTP. The guarded handler steps in lock step
// with the test: it tells the test where it is (at) and waits for the test
// to let it go on (proceed), so that the test's chain calls stay on the
// test's goroutine.

// commitPrice is what the tests' route costs, in USDC base units.
const commitPrice = 1000

// commitServer serves next behind an x402pay gate on the devnet of p.
func commitServer(t *testing.T, p *devnettest.Parties, next caddyhttp.Handler) *httptest.Server {
	t.Helper()
	h := &X402Pay{
		PayTo: p.PayTo.Address.String(), Network: "devnet", Price: "0.001",
		Facilitator: &FacilitatorConfig{Builtin: &BuiltinFacilitator{
			Algod: p.Dev.URL(), AlgodToken: p.Dev.Token(), FeePayer: devnettest.Mnemonic(t, p.FeePayer),
		}},
	}
	if err := provisioned(t, h); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = caddyhttp.NewTestReplacer(r)
		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// paidRequest asks srv for its 402, pays it with p's payer and returns the
// paid request, and the payment's transaction id.
func paidRequest(t *testing.T, p *devnettest.Parties, srv *httptest.Server) (*http.Request, string) {
	t.Helper()
	resp, err := http.Post(srv.URL+"/run", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var pr x402.PaymentRequired
	if err := x402.DecodeHeader(resp.Header.Get(x402.HeaderPaymentRequired), &pr); err != nil || resp.StatusCode != http.StatusPaymentRequired {
		t.Fatalf("402: %d %v", resp.StatusCode, err)
	}
	r := x402.Requirement{V2: &pr.Accepts[0]}
	req, err := avm.ParseRequirement(r.Terms())
	if err != nil {
		t.Fatal(err)
	}
	payload, err := avm.BuildPayment(t.Context(), p.Params(), avm.AccountSigner(p.Payer), req)
	if err != nil {
		t.Fatal(err)
	}
	txid, _ := payload.PaymentTxID()
	pay, err := avm.NewPayment(r, &pr.Resource, payload)
	if err != nil {
		t.Fatal(err)
	}
	v, err := x402.EncodeHeader(pay)
	if err != nil {
		t.Fatal(err)
	}
	paid, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/run", nil)
	if err != nil {
		t.Fatal(err)
	}
	paid.Header.Set(x402.HeaderPaymentSignature, v)
	return paid, txid
}

// step waits for the handler to reach where, failing after a minute.
func step(t *testing.T, at <-chan string, where string) {
	t.Helper()
	select {
	case got := <-at:
		if got != where {
			t.Fatalf("the handler is at %q, want %q", got, where)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the handler never reached %q", where)
	}
}

// TestCommitSettlesBeforeTheFirstByte: after Commit returns nil the
// payment has moved on chain, before the handler writes anything; what it
// writes then reaches the client while the handler is still running, with
// the payment's response header.
func TestCommitSettlesBeforeTheFirstByte(t *testing.T) {
	p := devnettest.New(t, devnettest.Options{PayerUSDC: 1_000_000})
	at, proceed := make(chan string), make(chan struct{})
	wait := func() bool {
		select {
		case <-proceed:
			return true
		case <-time.After(time.Minute):
			return false
		}
	}
	srv := commitServer(t, p, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if payhook.QuoteFrom(r.Context()) != nil {
			return nil
		}
		w.Header().Set("Content-Type", "text/plain")
		if err := payhook.From(r.Context()).Commit(r.Context()); err != nil {
			at <- "commit failed: " + err.Error()
			return nil
		}
		at <- "committed"
		if !wait() {
			return nil
		}
		_, _ = io.WriteString(w, "first\n")
		_ = http.NewResponseController(w).Flush()
		at <- "wrote first"
		if !wait() { // the client has read the first line
			return nil
		}
		_, _ = io.WriteString(w, "second\n")
		return nil
	}))
	before := p.USDC(p.PayTo.Address)
	req, txid := paidRequest(t, p, srv)
	type answer struct {
		resp *http.Response
		err  error
	}
	answers := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		answers <- answer{resp, err}
	}()

	step(t, at, "committed")
	if got := p.USDC(p.PayTo.Address) - before; got != commitPrice {
		t.Fatalf("after Commit the receiver got %d, want %d: not settled before the first byte", got, commitPrice)
	}
	proceed <- struct{}{}
	step(t, at, "wrote first")
	var a answer
	select {
	case a = <-answers:
	case <-time.After(time.Minute):
		t.Fatal("the client got no answer while the handler runs: the committed answer is held back")
	}
	if a.err != nil {
		t.Fatal(a.err)
	}
	defer a.resp.Body.Close()
	var sr x402.SettleResponse
	if err := x402.DecodeHeader(a.resp.Header.Get(x402.HeaderPaymentResponse), &sr); err != nil || !sr.Success || sr.Transaction != txid {
		t.Fatalf("PAYMENT-RESPONSE %+v (%v), want the settlement of %s", sr, err, txid)
	}
	br := bufio.NewReader(a.resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" || a.resp.StatusCode != http.StatusOK {
		t.Fatalf("first line %q (%v), status %d", line, err, a.resp.StatusCode)
	}
	proceed <- struct{}{}
	rest, _ := io.ReadAll(br)
	if string(rest) != "second\n" {
		t.Fatalf("rest %q", rest)
	}
	if got := p.USDC(p.PayTo.Address) - before; got != commitPrice {
		t.Fatalf("the receiver got %d in all, want %d once", got, commitPrice)
	}
}

// TestCommitSettlementFails: when the payer has spent its USDC between
// verification and Commit, Commit fails, and the client gets a 402 with
// none of what the handler would have sent.
func TestCommitSettlementFails(t *testing.T) {
	p := devnettest.New(t, devnettest.Options{PayerUSDC: 1_000_000})
	at, proceed := make(chan string), make(chan struct{})
	srv := commitServer(t, p, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if payhook.QuoteFrom(r.Context()) != nil {
			return nil
		}
		at <- "verified"
		select {
		case <-proceed:
		case <-time.After(time.Minute):
			return nil
		}
		w.Header().Set("X-Secret", "yes")
		if err := payhook.From(r.Context()).Commit(r.Context()); err != nil {
			if errors.Is(err, payhook.ErrNotCommitted) {
				at <- "not settled at Commit"
			} else {
				at <- "commit failed"
			}
			return nil // as payhook says: write nothing
		}
		_, _ = io.WriteString(w, "the content")
		at <- "committed"
		return nil
	}))
	req, _ := paidRequest(t, p, srv)
	type answer struct {
		resp *http.Response
		body []byte
		err  error
	}
	answers := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answers <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		answers <- answer{resp, b, err}
	}()

	step(t, at, "verified")
	// The payer spends everything it has, so that the payment cannot settle.
	held := p.USDC(p.Payer.Address)
	txn, err := transaction.MakeAssetTransferTxn(p.Payer.Address.String(), p.PayTo.Address.String(), held, nil, p.Params(), "", p.Dev.USDC())
	if err != nil {
		t.Fatal(err)
	}
	before := p.USDC(p.PayTo.Address)
	p.Submit(avm.AccountSigner(p.Payer), txn)
	proceed <- struct{}{}
	step(t, at, "commit failed")
	var a answer
	select {
	case a = <-answers:
	case <-time.After(time.Minute):
		t.Fatal("no answer")
	}
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.resp.StatusCode != http.StatusPaymentRequired || strings.Contains(string(a.body), "the content") ||
		a.resp.Header.Get("X-Secret") != "" || !strings.Contains(string(a.body), "settlement failed") {
		t.Fatalf("a failed settlement at Commit: %d %v %s", a.resp.StatusCode, a.resp.Header, a.body)
	}
	if got := p.USDC(p.PayTo.Address) - before; got != held {
		t.Fatalf("the receiver got %d, want only the %d the payer sent itself", got, held)
	}
}

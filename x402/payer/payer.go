package payer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// MaxChallengeBody bounds how much of a 402 body is read: a longer body is
// refused unless the challenge is in the PAYMENT-REQUIRED header.
const MaxChallengeBody = 1 << 20

// Account is what pays: a signer and the chains it may pay on.
type Account struct {
	Signer avm.Signer
	Chains []Chain
}

// Client sends requests and pays the 402 answers it may pay.
type Client struct {
	// HTTP sends the requests; nil means http.DefaultClient.
	HTTP *http.Client
	// MaxAmount is the most the client pays for one request, in USDC base
	// units (6 decimals): 50000 is 0.05 USDC.
	MaxAmount uint64
	// Account returns the paying account. It is called only when a server
	// asks for payment, so requests to free servers need no wallet.
	Account func(ctx context.Context) (*Account, error)
	// AllowCrossOrigin lets the unpaid request follow a redirect to another
	// origin (scheme, host and port) than the request's, and pays a 402
	// answered there. By default such a redirect is not followed: Do
	// returns a *CrossOriginError with nothing sent to that origin and
	// nothing signed, so only the origin asked for is ever paid.
	AllowCrossOrigin bool
}

// Timings are the phases of a paid request.
type Timings struct {
	// Challenge is the first round trip, ending with the 402.
	Challenge time.Duration
	// Sign covers choosing an offer, reading transaction parameters from
	// algod, building and signing the payment.
	Sign time.Duration
	// Paid is the paid request's round trip, to its response headers.
	Paid time.Duration
}

// Receipt is a server's settlement answer (PAYMENT-RESPONSE or
// X-PAYMENT-RESPONSE).
type Receipt struct {
	x402.SettleResponse
	// Version is the protocol version of the header it came in.
	Version int
	// ExplorerURL links to the transaction, when the network has an
	// explorer.
	ExplorerURL string
}

// Result is the answer to a request, paid or not.
type Result struct {
	// Response is the final answer; its body is unread and the caller
	// must close it.
	Response *http.Response
	// Paid says whether a payment was sent (the final answer may still be
	// an error that did not settle it, such as a 409).
	Paid bool
	// Offer is the offer paid; nil when nothing was paid.
	Offer *Offer
	// PaymentTxID is the id of the signed payment transaction; settled
	// only when Receipt says so.
	PaymentTxID string
	// Receipt is the server's settlement answer; nil when it sent none.
	Receipt *Receipt
	// Timings of the phases; Sign and Paid are zero without payment.
	Timings Timings
}

// RejectedError reports a payment the server refused: it answered the paid
// request with another 402.
type RejectedError struct {
	// Reason is the server's explanation.
	Reason string
	// PaymentTxID is the id of the refused payment transaction.
	PaymentTxID string
}

// Error says the payment was refused and why (the server's reason
// shortened and stripped of control characters).
func (e *RejectedError) Error() string {
	msg := "the server refused the payment"
	if e.Reason != "" {
		msg += ": " + Printable(e.Reason, 400)
	}
	return msg
}

// Do sends req and, when the server answers 402, pays the cheapest
// acceptable offer and sends req once more with the payment. A request body
// must be replayable: req.GetBody set (as http.NewRequest does for byte and
// string readers), or it is read into memory first. The unpaid request
// follows redirects within req's origin only, unless AllowCrossOrigin is
// set; a redirect elsewhere gives a *CrossOriginError. Offers it may not
// pay give a *RefusedError with nothing signed; a refused payment a
// *RejectedError.
func (c *Client) Do(ctx context.Context, req *http.Request) (*Result, error) {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("payer: read the request body: %w", err)
		}
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		req.Body, _ = req.GetBody()
	}
	res := &Result{}
	start := time.Now()
	first, err := send(ctx, c.unpaidClient(), req, "", "")
	if co, ok := asCrossOrigin(err); ok {
		return nil, co
	}
	if err != nil {
		return nil, err
	}
	if first.StatusCode != http.StatusPaymentRequired {
		res.Response = first
		res.Timings.Challenge = time.Since(start)
		return res, nil
	}
	body, err := io.ReadAll(io.LimitReader(first.Body, MaxChallengeBody+1))
	first.Body.Close()
	res.Timings.Challenge = time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("payer: read the 402 answer: %w", err)
	}
	if len(body) > MaxChallengeBody && first.Header.Get(x402.HeaderPaymentRequired) == "" {
		return nil, fmt.Errorf("payer: the 402 answer's body is over %d MiB: not an x402 challenge", MaxChallengeBody>>20)
	}
	ch, err := ParseChallenge(first.Header, body)
	if err != nil {
		return nil, err
	}
	// The paid request goes where the 402 came from. When the first request
	// was redirected, that is only the same request if the redirect kept
	// its method (307, 308); a 301, 302 or 303 turned it into a GET and
	// the payment would buy something other than what was asked.
	target := req.URL
	if first.Request != nil && first.Request.URL != nil && first.Request.URL.String() != req.URL.String() {
		if first.Request.Method != req.Method {
			return nil, fmt.Errorf("payer: %s %s was redirected to %s %s, which asks for payment: nothing was signed; request that URL directly",
				req.Method, req.URL.Redacted(), first.Request.Method, first.Request.URL.Redacted())
		}
		target = first.Request.URL
	}

	signStart := time.Now()
	if c.Account == nil {
		return nil, errors.New("payer: the server asks for payment and no wallet is configured")
	}
	acct, err := c.Account(ctx)
	if err != nil {
		return nil, fmt.Errorf("payer: the paying account: %w", err)
	}
	if acct == nil || acct.Signer == nil {
		return nil, errors.New("payer: the paying account has no signer")
	}
	offers := Evaluate(ch, acct.Chains, c.MaxAmount)
	i := Choose(offers)
	if i < 0 {
		return nil, &RefusedError{Offers: offers, MaxAmount: c.MaxAmount}
	}
	offer := offers[i]
	header, value, txid, err := pay(ctx, acct.Signer, offer, ch.Resource)
	if err != nil {
		return nil, err
	}
	res.Timings.Sign = time.Since(signStart)
	res.Paid, res.Offer, res.PaymentTxID = true, &offer, txid

	paidStart := time.Now()
	paid := req.Clone(ctx)
	paid.URL, paid.Host = target, ""
	resp, err := c.sendPaid(ctx, paid, header, value)
	res.Timings.Paid = time.Since(paidStart)
	if err != nil {
		return nil, fmt.Errorf("payer: the paid request (payment %s, not settled unless the server got it): %w", txid, err)
	}
	res.Response = resp
	res.Receipt = readReceipt(resp.Header, offer.Chain)
	if resp.StatusCode == http.StatusPaymentRequired {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxChallengeBody))
		resp.Body.Close()
		return res, &RejectedError{Reason: refusalReason(resp.Header, b), PaymentTxID: txid}
	}
	return res, nil
}

// pay builds and signs the payment for an offer and returns the header to
// send it in, the header's value and the payment's transaction id.
func pay(ctx context.Context, signer avm.Signer, o Offer, resource *x402.ResourceInfo) (string, string, string, error) {
	p, txid, err := SignOffer(ctx, signer, o, resource)
	if err != nil {
		return "", "", "", err
	}
	value, err := x402.EncodeHeader(p)
	if err != nil {
		return "", "", "", fmt.Errorf("payer: encode the payment: %w", err)
	}
	header := x402.HeaderPaymentSignature
	if p.Version() == x402.Version1 {
		header = x402.HeaderXPayment
	}
	return header, value, txid, nil
}

// sendPaid sends the paid request. It follows no redirect: a redirect
// would carry the signed payment to another URL, or lose the receipt the
// redirect answer carries, so the 3xx is the final answer.
func (c *Client) sendPaid(ctx context.Context, req *http.Request, header, value string) (*http.Response, error) {
	hc := http.Client{}
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return send(ctx, &hc, req, header, value)
}

// send sends a copy of req through hc, with a payment header when header
// is set.
func send(ctx context.Context, hc *http.Client, req *http.Request, header, value string) (*http.Response, error) {
	r := req.Clone(ctx)
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("payer: replay the request body: %w", err)
		}
		r.Body = body
	}
	if header != "" {
		r.Header.Set(header, value)
	}
	resp, err := hc.Do(r)
	if err != nil {
		return nil, fmt.Errorf("payer: %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	return resp, nil
}

// readReceipt decodes the settlement header, v2 first; nil when there is
// none or it does not decode.
func readReceipt(h http.Header, chain *Chain) *Receipt {
	for _, hv := range []struct {
		name    string
		version int
	}{{x402.HeaderPaymentResponse, x402.Version2}, {x402.HeaderXPaymentResponse, x402.Version1}} {
		v := h.Get(hv.name)
		if v == "" {
			continue
		}
		var sr x402.SettleResponse
		if err := x402.DecodeHeader(v, &sr); err != nil {
			continue
		}
		r := &Receipt{SettleResponse: sr, Version: hv.version}
		if chain != nil && sr.Transaction != "" {
			r.ExplorerURL = chain.Network.ExplorerURL(sr.Transaction)
		}
		return r
	}
	return nil
}

// refusalReason extracts why a server answered a paid request with 402.
func refusalReason(h http.Header, body []byte) string {
	if ch, err := ParseChallenge(h, body); err == nil && ch.Error != "" {
		return ch.Error
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return strings.TrimSpace(string(body))
}

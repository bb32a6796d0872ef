// Package payhook is the contract between a payment gate (the x402pay
// middleware) and the handler it guards.
//
// The gate verifies a payment, puts a Gate in the request's context and
// runs the next handler. That handler may say whether the request should be
// charged: Charge when the work the payment bought happened (for lualambda:
// the run took place, whatever its outcome), NoCharge when it was rejected or
// failed on the server's side (a taken id, no VM). A handler that says
// nothing is charged when it answers with a 2xx status. After settling, the
// gate calls Settled, which runs the hooks handlers registered with
// OnSettled (lualambda stores the receipt with the output).
//
// Before the payment, a gate with no price of its own asks the handler for
// one: it runs the handler with a Quote in the context (WithQuote), and the
// handler answers with SetPrice instead of serving the request.
//
// A handler that streams its answer cannot wait for the gate to settle
// after it returns: it calls Commit before its first byte, and the gate
// settles then (the request is charged) and lets the answer through as it
// is written.
//
// A handler that takes payments in its own requests rather than in HTTP
// headers (an MCP server, whose tool calls carry x402 payments in their
// _meta) answers a quote with SellsItself; the gate then passes its
// requests through and offers a Seller in their context, which sells one
// answer for one payment with the gate's own terms and facilitator.
//
// Without a gate (free mode) From returns nil and every method is a no-op.
package payhook

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"github.com/lualambda/caddy-lualambda/x402"
)

// Receipt describes a settled payment.
type Receipt struct {
	TxID        string `json:"txid"`
	Network     string `json:"network"`
	Payer       string `json:"payer,omitempty"`
	Amount      string `json:"amount,omitempty"`
	Asset       string `json:"asset,omitempty"`
	ExplorerURL string `json:"explorer_url,omitempty"`
}

// Gate carries one request's charging decision between gate and handler.
type Gate struct {
	mu      sync.Mutex
	decided bool
	charge  bool
	reason  string
	payer   string
	hooks   []func(Receipt)
	// commit settles before the answer's first byte (set by the gate);
	// committed and commitErr remember the one call.
	commit    func(context.Context) error
	committed bool
	commitErr error
}

type ctxKey struct{}

// WithGate returns a context carrying a new Gate, for the payment middleware.
func WithGate(ctx context.Context) (context.Context, *Gate) {
	g := &Gate{}
	return context.WithValue(ctx, ctxKey{}, g), g
}

// From returns the request's Gate, or nil when no payment gate is in front.
func From(ctx context.Context) *Gate {
	g, _ := ctx.Value(ctxKey{}).(*Gate)
	return g
}

// SetPayer records who pays, once the gate has verified the payment.
func (g *Gate) SetPayer(payer string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.payer = payer
}

// Payer returns who pays for the request, or "" without a verified payment.
func (g *Gate) Payer() string {
	if g == nil {
		return ""
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.payer
}

// Charge says the paid-for work happened.
func (g *Gate) Charge() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.decided, g.charge, g.reason = true, true, ""
}

// NoCharge says the request must not be charged, and why.
func (g *Gate) NoCharge(reason string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.decided, g.charge, g.reason = true, false, reason
}

// Decision reports what the handler said: whether to charge, whether it said
// anything at all, and its reason for not charging.
func (g *Gate) Decision() (charge, decided bool, reason string) {
	if g == nil {
		return false, false, ""
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.charge, g.decided, g.reason
}

// OnSettled registers fn to run once the payment has settled.
func (g *Gate) OnSettled(fn func(Receipt)) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hooks = append(g.hooks, fn)
}

// Settled runs the registered hooks with the receipt, for the payment middleware.
func (g *Gate) Settled(r Receipt) {
	if g == nil {
		return
	}
	g.mu.Lock()
	hooks := g.hooks
	g.mu.Unlock()
	for _, fn := range hooks {
		fn(r)
	}
}

// ErrNotCommitted is returned by Commit when the gate cannot settle before
// the answer (it holds answers back until the handler returns instead); the
// handler then answers as usual, and the gate settles afterwards.
var ErrNotCommitted = errors.New("payhook: this gate settles after the answer")

// SetCommitter sets the function Commit runs, for the payment middleware:
// it settles the payment and lets the answer through unbuffered.
func (g *Gate) SetCommitter(fn func(context.Context) error) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.commit = fn
}

// Commit says the paid answer is about to start and must be settled first:
// the request is charged and the gate settles now. A nil error means paid:
// what the handler writes from now on goes to the client as it is written.
// Any other error means the payment did not settle: the handler must not
// deliver the answer (it returns without writing, and the gate answers the
// client). Without a gate Commit returns nil at once. A second call returns
// the first one's answer.
func (g *Gate) Commit(ctx context.Context) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	if g.committed {
		defer g.mu.Unlock()
		return g.commitErr
	}
	g.decided, g.charge, g.reason = true, true, ""
	fn := g.commit
	g.mu.Unlock()
	err := ErrNotCommitted
	if fn != nil {
		err = fn(ctx)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.committed, g.commitErr = true, err
	return err
}

// Committed reports whether Commit was called, and its answer.
func (g *Gate) Committed() (bool, error) {
	if g == nil {
		return false, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.committed, g.commitErr
}

// Quote is a price request: before it asks for a payment, a gate without a
// price of its own runs the guarded handler with a Quote in the context and
// a response writer that discards everything. The handler must recognise
// the request (QuoteFrom), set the price the request would cost, and return
// at once without side effects: no body read, no state changed.
type Quote struct {
	mu         sync.Mutex
	answered   bool
	price      string
	sells      bool
	extensions map[string]json.RawMessage
}

type quoteKey struct{}

// WithQuote returns a context that marks a request as a price quote, for
// the payment middleware.
func WithQuote(ctx context.Context) (context.Context, *Quote) {
	q := &Quote{}
	return context.WithValue(ctx, quoteKey{}, q), q
}

// QuoteFrom returns the request's Quote, or nil when the request is a real
// one that the handler must serve.
func QuoteFrom(ctx context.Context) *Quote {
	q, _ := ctx.Value(quoteKey{}).(*Quote)
	return q
}

// SetPrice answers the quote: price is a decimal amount of USD (USDC),
// e.g. "0.001"; "" or "0" means the request is free.
func (q *Quote) SetPrice(price string) {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.answered, q.price = true, price
}

// Price returns the quoted price and whether the handler answered at all.
// A handler that does not know quotes leaves answered false.
func (q *Quote) Price() (price string, answered bool) {
	if q == nil {
		return "", false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.price, q.answered
}

// SetExtension adds an x402 v2 extension to the payment requirements the
// gate sends for this request, e.g. "bazaar" with the request's input and
// output schema for discovery services. value must be JSON.
func (q *Quote) SetExtension(name string, value json.RawMessage) {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.extensions == nil {
		q.extensions = map[string]json.RawMessage{}
	}
	q.extensions[name] = value
}

// Extensions returns the extensions the handler set, as the JSON object of
// a PaymentRequired's "extensions", or nil when it set none.
func (q *Quote) Extensions() json.RawMessage {
	if q == nil {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.extensions) == 0 {
		return nil
	}
	b, err := json.Marshal(q.extensions)
	if err != nil {
		return nil
	}
	return b
}

// SellsItself answers the quote: the request is free at the HTTP level
// because the handler takes its payments inside its requests, through the
// Seller the gate puts in the request's context.
func (q *Quote) SellsItself() {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.answered, q.price, q.sells = true, "", true
}

// Sells reports whether the handler answered with SellsItself.
func (q *Quote) Sells() bool {
	if q == nil {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.sells
}

// Seller sells one answer for one x402 payment that arrived outside HTTP
// headers, with the terms (payee, network, asset) and the facilitator of the
// gate that offers it. Payments are kept once-only exactly as the gate's own.
type Seller interface {
	// Required returns the payment requirements of price, a decimal amount
	// of the gate's asset as in Quote.SetPrice, for the resource, with msg
	// as the reason payment is asked.
	Required(ctx context.Context, price string, resource x402.ResourceInfo, msg string) (x402.PaymentRequired, error)
	// Sell verifies payment (an x402 PaymentPayload, v2 or v1) against the
	// requirements of price for the resource. When it is good, serve runs
	// with a Gate in its context (the same rules as for HTTP: serve says
	// Charge or NoCharge, and may Commit), and the payment is settled when
	// it was charged. An error is a failure of the server's side (the
	// facilitator or the records are unreachable, the payer has too much in
	// flight): nothing was paid.
	Sell(ctx context.Context, payment json.RawMessage, price string, resource x402.ResourceInfo, serve func(context.Context) error) (Sale, error)
}

// Sale is what one Sell did.
type Sale struct {
	// Refused is set when the payment bought nothing: the requirements to
	// pay again, with the reason in its Error. Served tells whether serve
	// ran (it did when the settlement failed after it).
	Refused *x402.PaymentRequired
	// Served reports whether serve ran.
	Served bool
	// Charged reports whether serve's answer was to be charged.
	Charged bool
	// Settlement is the settlement answer of a charged sale; Success tells
	// whether the payment moved.
	Settlement *x402.SettleResponse
	// Receipt describes a settled payment.
	Receipt *Receipt
}

type sellerKey struct{}

// WithSeller returns a context offering s, for the payment middleware.
func WithSeller(ctx context.Context, s Seller) context.Context {
	return context.WithValue(ctx, sellerKey{}, s)
}

// SellerFrom returns the Seller a gate offers, or nil (free mode).
func SellerFrom(ctx context.Context) Seller {
	s, _ := ctx.Value(sellerKey{}).(Seller)
	return s
}

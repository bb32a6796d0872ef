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
// Without a gate (free mode) From returns nil and every method is a no-op.
package payhook

import (
	"context"
	"sync"
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

// Quote is a price request: before it asks for a payment, a gate without a
// price of its own runs the guarded handler with a Quote in the context and
// a response writer that discards everything. The handler must recognise
// the request (QuoteFrom), set the price the request would cost, and return
// at once without side effects: no body read, no state changed.
type Quote struct {
	mu       sync.Mutex
	answered bool
	price    string
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

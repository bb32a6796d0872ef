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

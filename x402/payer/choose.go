package payer

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// ParamsSource gives the parameters of new transactions; *avm.Algod is one.
type ParamsSource interface {
	SuggestedParams(ctx context.Context) (types.SuggestedParams, error)
}

// Chain is a network the payer can pay on: its identity (genesis hash, USDC
// id, explorer) and the algod that gives transaction parameters. USDC is the
// only asset paid.
type Chain struct {
	Network x402.Network
	Algod   ParamsSource
}

// Offer is one offered requirement and the payer's judgement of it.
type Offer struct {
	// Requirement is the offer as the server sent it.
	Requirement x402.Requirement
	// Terms is its version-neutral view.
	Terms x402.Terms
	// Parsed is the Algorand requirement; zero when the offer was refused
	// before parsing.
	Parsed avm.Requirement
	// Chain is the payer's chain for the offer's network, nil when it has
	// none.
	Chain *Chain
	// Refusal says why the offer cannot be paid; empty when it can.
	Refusal string
}

// Acceptable reports whether the offer can be paid.
func (o Offer) Acceptable() bool { return o.Refusal == "" }

// Price renders the offered amount: in USDC when the asset is the chain's
// USDC, else in base units of the asset.
func (o Offer) Price() string {
	amount, err := strconv.ParseUint(o.Terms.Amount, 10, 64)
	if err != nil {
		return fmt.Sprintf("amount %q of asset %s", o.Terms.Amount, o.Terms.Asset)
	}
	if o.Chain != nil && o.Terms.Asset == strconv.FormatUint(o.Chain.Network.USDC, 10) {
		return x402.FormatAmount(amount, x402.USDCDecimals) + " USDC"
	}
	return fmt.Sprintf("%d base units of asset %s", amount, o.Terms.Asset)
}

// String describes the offer and, when refused, why. What the server
// wrote is shortened and stripped of control characters, so that a
// hostile server cannot flood or drive the user's terminal.
func (o Offer) String() string {
	s := fmt.Sprintf("%s %s on %s to %s", o.Terms.Scheme, o.Price(), o.Terms.Network, o.Terms.PayTo)
	if o.Refusal != "" {
		s += ": " + o.Refusal
	}
	return Printable(s, 400)
}

// Printable returns s for a terminal: control and non-printable characters
// replaced with '?', at most max runes (an ellipsis marks a cut).
func Printable(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == max {
			b.WriteString("…")
			break
		}
		if r != ' ' && !unicode.IsPrint(r) {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// Evaluate judges every offer of a challenge against the payer's chains and
// the price cap, in base units of USDC (6 decimals).
func Evaluate(c *Challenge, chains []Chain, maxAmount uint64) []Offer {
	offers := make([]Offer, 0, len(c.Offers))
	for _, r := range c.Offers {
		offers = append(offers, evaluate(r, chains, maxAmount))
	}
	return offers
}

func evaluate(r x402.Requirement, chains []Chain, maxAmount uint64) Offer {
	o := Offer{Requirement: r, Terms: r.Terms()}
	for i := range chains {
		if chains[i].Network.Matches(o.Terms.Network) {
			o.Chain = &chains[i]
			break
		}
	}
	if o.Terms.Scheme != x402.SchemeExact {
		o.Refusal = fmt.Sprintf("scheme %q is not supported (only %q)", o.Terms.Scheme, x402.SchemeExact)
		return o
	}
	if o.Chain == nil {
		var have []string
		for _, c := range chains {
			have = append(have, c.Network.CAIP2())
		}
		o.Refusal = fmt.Sprintf("not a network this wallet pays on (it pays on %s)", strings.Join(have, ", "))
		return o
	}
	if o.Terms.Asset != strconv.FormatUint(o.Chain.Network.USDC, 10) {
		o.Refusal = fmt.Sprintf("asset %s is not USDC (ASA %d on this network)", o.Terms.Asset, o.Chain.Network.USDC)
		return o
	}
	parsed, err := avm.ParseRequirement(o.Terms)
	if err != nil {
		o.Refusal = fmt.Sprintf("malformed requirement: %v", err)
		return o
	}
	o.Parsed = parsed
	if parsed.Amount > maxAmount {
		o.Refusal = fmt.Sprintf("over the max price of %s USDC", x402.FormatAmount(maxAmount, x402.USDCDecimals))
	}
	return o
}

// Choose returns the index of the cheapest acceptable offer (the first one
// among equals), or -1 when none is acceptable.
func Choose(offers []Offer) int {
	best := -1
	for i, o := range offers {
		if o.Acceptable() && (best < 0 || o.Parsed.Amount < offers[best].Parsed.Amount) {
			best = i
		}
	}
	return best
}

// RefusedError reports a 402 whose offers the payer would not pay. Nothing
// was signed.
type RefusedError struct {
	// Offers are the offers with the reasons each was refused.
	Offers []Offer
	// MaxAmount is the price cap in USDC base units.
	MaxAmount uint64
}

// Error lists the offers and why each was refused.
func (e *RefusedError) Error() string {
	if len(e.Offers) == 0 {
		return "the server asks for payment but offers no way to pay"
	}
	var b strings.Builder
	b.WriteString("no acceptable payment offer, nothing was signed; the server offers:")
	for i, o := range e.Offers {
		if i == maxListedOffers {
			fmt.Fprintf(&b, "\n  ... and %d more", len(e.Offers)-i)
			break
		}
		b.WriteString("\n  - ")
		b.WriteString(o.String())
	}
	return b.String()
}

// maxListedOffers bounds how many offers a RefusedError lists.
const maxListedOffers = 10

// Cheapest returns the cheapest offer refused only for its price, if any:
// raising the cap to its price would make it acceptable.
func (e *RefusedError) Cheapest() (Offer, bool) {
	best := -1
	for i, o := range e.Offers {
		if o.Parsed.Amount > e.MaxAmount && !o.Parsed.PayTo.IsZero() && (best < 0 || o.Parsed.Amount < e.Offers[best].Parsed.Amount) {
			best = i
		}
	}
	if best < 0 {
		return Offer{}, false
	}
	return e.Offers[best], true
}

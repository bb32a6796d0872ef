// Package facilitator verifies and settles x402 payments: Remote talks to a
// facilitator over HTTP, Builtin verifies and settles Algorand exact payments
// itself through algod, and Handler serves any Facilitator over HTTP in the
// standard facilitator API (/verify, /settle, /supported).
package facilitator

import (
	"context"

	"github.com/lualambda/caddy-lualambda/x402"
)

// Facilitator verifies and settles payments. A payment that is rejected is
// an answer (IsValid or Success false, with a reason), not an error; an
// error means the facilitator could not give an answer.
type Facilitator interface {
	// Supported lists the (version, scheme, network) kinds handled.
	Supported(ctx context.Context) (x402.SupportedResponse, error)
	// Verify checks a payment against the requirement it was matched to,
	// without moving funds.
	Verify(ctx context.Context, payment x402.Payment, requirement x402.Requirement) (x402.VerifyResponse, error)
	// Settle verifies the payment again and executes it.
	Settle(ctx context.Context, payment x402.Payment, requirement x402.Requirement) (x402.SettleResponse, error)
}

// FeePayer returns extra.feePayer of the first kind in s for the version,
// scheme and network (compared normalised), or "".
func FeePayer(s x402.SupportedResponse, version int, scheme, network string) string {
	k, ok := FindKind(s, version, scheme, network)
	if !ok {
		return ""
	}
	return x402.ExtraString(k.Extra, "feePayer")
}

// FindKind returns the first kind in s for the version, scheme and network
// (compared normalised). Its Network is the facilitator's own spelling, the
// one to put in requirements.
func FindKind(s x402.SupportedResponse, version int, scheme, network string) (x402.SupportedKind, bool) {
	for _, k := range s.Kinds {
		if k.X402Version == version && k.Scheme == scheme && (k.Network == network || x402.SameNetwork(k.Network, network)) {
			return k, true
		}
	}
	return x402.SupportedKind{}, false
}

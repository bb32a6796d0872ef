// Package payer is the client side of x402 on Algorand: it sends a request,
// answers a 402 by choosing the cheapest acceptable payment requirement at or
// under a price cap, builds and signs the Algorand "exact" payment, retries
// the request once with it, and reads the settlement receipt.
//
// It never signs when no offered requirement is acceptable: the scheme must
// be exact, the network one the payer has an algod for, the asset that
// network's USDC, and the amount at most the cap. It pays only the origin
// the request names: the unpaid request follows redirects within that
// origin, and to another only when the client allows it.
package payer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/lualambda/caddy-lualambda/x402"
)

// Challenge is a decoded 402 answer: the requirements a server offers.
type Challenge struct {
	// Version is the protocol version the offers came in: 2 when the
	// PAYMENT-REQUIRED header was present, else 1 (the JSON body).
	Version int
	// Offers are the requirements, all of Version.
	Offers []x402.Requirement
	// Resource is the v2 resource description; nil for v1.
	Resource *x402.ResourceInfo
	// Error is the server's explanation, when it gave one (for instance
	// why a payment was refused).
	Error string
}

// ErrNotX402 reports a 402 answer that carries no x402 challenge.
var ErrNotX402 = errors.New("payer: the 402 answer carries no x402 payment requirements")

// ParseChallenge decodes a 402 answer: the v2 PAYMENT-REQUIRED header when
// present, else a JSON body of either version (v1 servers put their
// PaymentRequired in the body, and some v2 servers repeat theirs there).
func ParseChallenge(h http.Header, body []byte) (*Challenge, error) {
	if v := h.Get(x402.HeaderPaymentRequired); v != "" {
		var pr x402.PaymentRequired
		if err := x402.DecodeHeader(v, &pr); err != nil {
			return nil, fmt.Errorf("payer: decode %s: %w", x402.HeaderPaymentRequired, err)
		}
		if pr.X402Version != x402.Version2 {
			return nil, fmt.Errorf("payer: %s declares x402Version %d: %w", x402.HeaderPaymentRequired, pr.X402Version, x402.ErrVersion)
		}
		return challengeV2(pr), nil
	}
	trimmed := strings.TrimSpace(string(body))
	if !strings.HasPrefix(trimmed, "{") {
		return nil, ErrNotX402
	}
	var probe struct {
		X402Version int             `json:"x402Version"`
		Accepts     json.RawMessage `json:"accepts"`
	}
	if err := json.Unmarshal(body, &probe); err != nil || probe.X402Version == 0 {
		return nil, ErrNotX402
	}
	switch probe.X402Version {
	case x402.Version1:
		var pr x402.PaymentRequiredV1
		if err := json.Unmarshal(body, &pr); err != nil {
			return nil, fmt.Errorf("payer: decode the v1 402 body: %w", err)
		}
		c := &Challenge{Version: x402.Version1, Error: pr.Error}
		for i := range pr.Accepts {
			c.Offers = append(c.Offers, x402.Requirement{V1: &pr.Accepts[i]})
		}
		return c, nil
	case x402.Version2:
		var pr x402.PaymentRequired
		if err := json.Unmarshal(body, &pr); err != nil {
			return nil, fmt.Errorf("payer: decode the v2 402 body: %w", err)
		}
		return challengeV2(pr), nil
	}
	return nil, fmt.Errorf("payer: the 402 body declares x402Version %d: %w", probe.X402Version, x402.ErrVersion)
}

func challengeV2(pr x402.PaymentRequired) *Challenge {
	c := &Challenge{Version: x402.Version2, Error: pr.Error}
	if pr.Resource.URL != "" || pr.Resource.Description != "" || pr.Resource.MimeType != "" {
		res := pr.Resource
		c.Resource = &res
	}
	for i := range pr.Accepts {
		c.Offers = append(c.Offers, x402.Requirement{V2: &pr.Accepts[i]})
	}
	return c
}

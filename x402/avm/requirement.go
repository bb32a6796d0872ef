package avm

import (
	"fmt"
	"strconv"

	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
)

// Requirement is what an Algorand exact payment must satisfy, parsed from
// x402 terms.
type Requirement struct {
	// Network is the network string as the requirement carried it.
	Network string
	// Asset is the ASA id.
	Asset uint64
	// Amount is the exact amount in base units.
	Amount uint64
	// PayTo receives the payment.
	PayTo types.Address
	// FeePayer is extra.feePayer; zero when the payer pays its own fee.
	FeePayer types.Address
	// MaxTimeoutSeconds bounds how long the payment may stay valid.
	MaxTimeoutSeconds int
}

// ParseRequirement checks and converts x402 terms of the exact scheme: asset
// and amount must be decimal uint64, payTo (and feePayer when present) valid
// Algorand addresses.
func ParseRequirement(t x402.Terms) (Requirement, error) {
	if t.Scheme != x402.SchemeExact {
		return Requirement{}, reject(ReasonScheme, "scheme %q is not %q", t.Scheme, x402.SchemeExact)
	}
	asset, err := strconv.ParseUint(t.Asset, 10, 64)
	if err != nil {
		return Requirement{}, rejectErr(ReasonAssetMismatch, err, "asset %q is not an ASA id", t.Asset)
	}
	amount, err := strconv.ParseUint(t.Amount, 10, 64)
	if err != nil {
		return Requirement{}, rejectErr(ReasonAmountMismatch, err, "amount %q is not a base-unit integer", t.Amount)
	}
	payTo, err := types.DecodeAddress(t.PayTo)
	if err != nil {
		return Requirement{}, rejectErr(ReasonReceiverMismatch, err, "payTo %q is not an Algorand address", t.PayTo)
	}
	r := Requirement{Network: t.Network, Asset: asset, Amount: amount, PayTo: payTo, MaxTimeoutSeconds: t.MaxTimeoutSeconds}
	if fp := t.FeePayer(); fp != "" {
		if r.FeePayer, err = types.DecodeAddress(fp); err != nil {
			return Requirement{}, rejectErr(ReasonInvalidFeePayer, err, "extra.feePayer %q is not an Algorand address", fp)
		}
	}
	return r, nil
}

// String describes the requirement for logs.
func (r Requirement) String() string {
	return fmt.Sprintf("%d of ASA %d to %s on %s", r.Amount, r.Asset, r.PayTo, r.Network)
}

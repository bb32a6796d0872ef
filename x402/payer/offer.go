package payer

import (
	"bytes"
	"context"
	"fmt"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// SignOffer builds and signs the payment for an acceptable offer (one of
// Evaluate's, as Choose picks it) and returns the payment, in the
// protocol version of the offer, and the id of its payment transaction.
// It is the signing step of Do for challenges that did not come in an
// HTTP answer, such as an MCP tool result: the caller sends the payment
// in whatever carries it. It checks, as Do does, that the offer's chain
// has an algod of the offer's network, and refuses an offer Evaluate
// refused.
func SignOffer(ctx context.Context, signer avm.Signer, o Offer, resource *x402.ResourceInfo) (x402.Payment, string, error) {
	if !o.Acceptable() {
		return x402.Payment{}, "", fmt.Errorf("payer: the offer is not acceptable: %s", Printable(o.Refusal, 400))
	}
	if signer == nil || o.Chain == nil || o.Chain.Algod == nil {
		return x402.Payment{}, "", fmt.Errorf("payer: no signer or no algod for %s", Printable(o.Terms.Network, 100))
	}
	params, err := o.Chain.Algod.SuggestedParams(ctx)
	if err != nil {
		return x402.Payment{}, "", fmt.Errorf("payer: transaction parameters: %w", err)
	}
	if !bytes.Equal(params.GenesisHash, o.Chain.Network.GenesisHash[:]) {
		return x402.Payment{}, "", fmt.Errorf("payer: the algod for %s serves another network (genesis %s)", o.Terms.Network, params.GenesisID)
	}
	payload, err := avm.BuildPayment(ctx, params, signer, o.Parsed)
	if err != nil {
		return x402.Payment{}, "", fmt.Errorf("payer: %w", err)
	}
	txid, err := payload.PaymentTxID()
	if err != nil {
		return x402.Payment{}, "", fmt.Errorf("payer: %w", err)
	}
	p, err := avm.NewPayment(o.Requirement, resource, payload)
	if err != nil {
		return x402.Payment{}, "", fmt.Errorf("payer: %w", err)
	}
	return p, txid, nil
}

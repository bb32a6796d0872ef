package avm

import (
	"context"
	"errors"
)

// DefaultWaitRounds is how many rounds Settle waits for confirmation by
// default (the upstream facilitator's figure).
const DefaultWaitRounds = 10

// Settlement is a submitted, confirmed payment.
type Settlement struct {
	// TxID is the payment member's transaction id.
	TxID string
	// Round is the round the group was committed in.
	Round uint64
	// Payer sent the payment.
	Payer string
}

// ErrSubmitted marks a settlement error that happened after the group was
// accepted by the node: the payment may still be committed, so it must not
// be offered again.
var ErrSubmitted = errors.New("avm: group was submitted")

// Settle co-signs the fee-payer members of a verified payment with the
// matching signers (or takes v.Group, signed when it was simulated),
// submits the group through the ledger and waits up to waitRounds rounds
// (DefaultWaitRounds when 0) for confirmation. The returned
// Settlement carries TxID whenever the group reached the node, also with an
// error; an error after submission wraps ErrSubmitted.
func Settle(ctx context.Context, ledger Ledger, v *Verified, feePayers []Signer, waitRounds uint64) (Settlement, error) {
	if waitRounds == 0 {
		waitRounds = DefaultWaitRounds
	}
	s := Settlement{Payer: v.Payer.String()}
	group := v.Group
	if len(group) != len(v.Members) {
		var err error
		if group, err = signedGroup(ctx, v, feePayers); err != nil {
			return s, rejectErr(ReasonUnexpectedSettle, err, "cannot sign the fee payer member")
		}
	}
	if err := ledger.Submit(ctx, group); err != nil {
		return s, rejectErr(ReasonSettlementFailed, err, "the network refused the group")
	}
	s.TxID = v.PaymentTxID
	round, err := ledger.WaitConfirmed(ctx, v.PaymentTxID, waitRounds)
	if err != nil {
		return s, rejectErr(ReasonConfirmationFailed, errors.Join(ErrSubmitted, err), "payment %s not confirmed", v.PaymentTxID)
	}
	s.Round = round
	return s, nil
}

package avm

import (
	"context"
	"errors"
	"fmt"
	"math"
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
// (DefaultWaitRounds when 0) for confirmation. When those rounds pass
// without it, the group may still commit: Settle keeps waiting, round by
// round, until the group's last valid round (v.LastValid) has passed, after
// which it can no longer commit, and only then reports the failure; ctx
// bounds the whole wait. The returned Settlement carries TxID whenever the
// group reached the node, also with an error; an error after submission
// wraps ErrSubmitted.
func Settle(ctx context.Context, ledger Ledger, v *Verified, feePayers []Signer, waitRounds uint64) (Settlement, error) {
	if waitRounds == 0 {
		waitRounds = DefaultWaitRounds
	}
	s := Settlement{Payer: v.Payer.String()}
	group := wireGroup{txns: v.Group, wire: v.wire}
	if len(group.txns) != len(v.Members) {
		var err error
		if group, err = signedGroup(ctx, v, feePayers); err != nil {
			return s, rejectErr(ReasonUnexpectedSettle, err, "cannot sign the fee payer member")
		}
	}
	if err := submitGroup(ctx, ledger, group); err != nil {
		return s, rejectErr(ReasonSettlementFailed, err, "the network refused the group")
	}
	s.TxID = v.PaymentTxID
	round, err := ledger.WaitConfirmed(ctx, v.PaymentTxID, waitRounds)
	if errors.Is(err, ErrNotConfirmed) {
		round, err = waitUntilDead(ctx, ledger, v.PaymentTxID, groupLastValid(v))
	}
	if err != nil {
		return s, rejectErr(ReasonConfirmationFailed, errors.Join(ErrSubmitted, err), "payment %s not confirmed", v.PaymentTxID)
	}
	s.Round = round
	return s, nil
}

// waitUntilDead waits, a round at a time, for txid to be committed until
// the round lastValid has passed; then it looks once more, since the group
// may have committed in that very round.
func waitUntilDead(ctx context.Context, ledger Ledger, txid string, lastValid uint64) (uint64, error) {
	for {
		current, err := ledger.LastRound(ctx)
		if err != nil {
			return 0, err
		}
		if current > lastValid {
			round, err := ledger.WaitConfirmed(ctx, txid, 0)
			if errors.Is(err, ErrNotConfirmed) {
				return 0, fmt.Errorf("avm: confirm %s: not committed by its last valid round %d (now %d): it can no longer commit", txid, lastValid, current)
			}
			return round, err
		}
		round, err := ledger.WaitConfirmed(ctx, txid, 1)
		if !errors.Is(err, ErrNotConfirmed) {
			return round, err
		}
	}
}

// groupLastValid returns the smallest last-valid round of the group, the
// round after which none of it can commit.
func groupLastValid(v *Verified) uint64 {
	if v.LastValid != 0 && v.LastValid != math.MaxUint64 {
		return v.LastValid
	}
	lv := uint64(math.MaxUint64)
	for _, m := range v.Members {
		lv = min(lv, uint64(m.Txn.Txn.LastValid))
	}
	return lv
}

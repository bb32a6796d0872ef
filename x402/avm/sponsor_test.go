package avm

import (
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"
)

// selfPay is a signed-able 0-ALGO payment from a to itself with the fee.
func (o *offline) selfPay(t *testing.T, a crypto.Account, fee uint64) types.Transaction {
	t.Helper()
	p := o.params
	p.FlatFee, p.Fee, p.LastRoundValid = true, types.MicroAlgos(fee), testRound+20
	txn, err := transaction.MakePaymentTxn(a.Address.String(), a.Address.String(), 0, []byte("x"), "", p)
	if err != nil {
		t.Fatal(err)
	}
	return txn
}

// TestVerifySponsorsOnlyTheExactGroup: the fee payer pays the fees of the
// payment and of its own transaction, at the minimum fee, and nothing else.
func TestVerifySponsorsOnlyTheExactGroup(t *testing.T) {
	o := newOffline(t)
	noKey := crypto.Account{}

	// The drain: a 16-member group, 80,000 µAlgo of fees on the
	// fee payer, 14 members of an unrelated sender riding along.
	stranger := crypto.GenerateAccount()
	txns := []types.Transaction{o.feeTxn(t, 5000*16), o.axfer(t, 1000, 0)}
	keys := []crypto.Account{noKey, o.payer}
	for range 14 {
		txns = append(txns, o.selfPay(t, stranger, 0))
		keys = append(keys, stranger)
	}
	o.expect(t, assemble(t, txns, keys, 1), ReasonGroupSizeExceeded)

	// One extra member, whoever sends it.
	for _, who := range []crypto.Account{stranger, o.payer} {
		extra := assemble(t, []types.Transaction{o.feeTxn(t, 3000), o.axfer(t, 1000, 0), o.selfPay(t, who, 0)}, []crypto.Account{noKey, o.payer, who}, 1)
		o.expect(t, extra, ReasonGroupSizeExceeded)
	}
	// A second member that is not the fee payer's, in a group of two.
	o.expect(t, assemble(t, []types.Transaction{o.selfPay(t, stranger, 2000), o.axfer(t, 1000, 0)}, []crypto.Account{stranger, o.payer}, 1), ReasonInvalidTransaction)

	// The fee payer's fee is exactly 2 × the minimum: no more, no less.
	for fee, reason := range map[uint64]string{2000: "", 2001: ReasonFeeTooHigh, 5000: ReasonFeeTooHigh, 1999: ReasonFeeTooLow} {
		o.expect(t, assemble(t, []types.Transaction{o.feeTxn(t, fee), o.axfer(t, 1000, 0)}, []crypto.Account{noKey, o.payer}, 1), reason)
	}
	// The payment's own fee is 0 when the fee payer pools the fees.
	o.expect(t, assemble(t, []types.Transaction{o.feeTxn(t, 2000), o.axfer(t, 1000, 1000)}, []crypto.Account{noKey, o.payer}, 1), ReasonFeeTooHigh)

	// The network's minimum fee, as the ledger reports it, sets the figure.
	cfg := o.cfg
	o.cfg.MinFee = 2000
	o.expect(t, assemble(t, []types.Transaction{o.feeTxn(t, 2000), o.axfer(t, 1000, 0)}, []crypto.Account{noKey, o.payer}, 1), ReasonFeeTooLow)
	o.expect(t, assemble(t, []types.Transaction{o.feeTxn(t, 4000), o.axfer(t, 1000, 0)}, []crypto.Account{noKey, o.payer}, 1), "")
	o.cfg = cfg

	// The fee payer pays to itself, not to the zero address.
	zero := o.feeTxn(t, 2000)
	zero.Receiver = types.Address{}
	o.expect(t, assemble(t, []types.Transaction{zero, o.axfer(t, 1000, 0)}, []crypto.Account{noKey, o.payer}, 1), ReasonInvalidFeePayer)
	lease := o.feeTxn(t, 2000)
	lease.Lease = [32]byte{1}
	o.expect(t, assemble(t, []types.Transaction{lease, o.axfer(t, 1000, 0)}, []crypto.Account{noKey, o.payer}, 1), ReasonInvalidFeePayer)

	// The payment may come first: the scheme fixes no order.
	o.expect(t, assemble(t, []types.Transaction{o.axfer(t, 1000, 0), o.feeTxn(t, 2000)}, []crypto.Account{o.payer, noKey}, 0), "")

	// A requirement that offers no fee payer gets no sponsored group.
	req := o.req
	o.req.FeePayer = types.Address{}
	o.expect(t, assemble(t, []types.Transaction{o.feeTxn(t, 2000), o.axfer(t, 1000, 0)}, []crypto.Account{noKey, o.payer}, 1), ReasonInvalidFeePayer)
	// Alone, the payment pays at least the minimum fee itself.
	o.expect(t, assemble(t, []types.Transaction{o.axfer(t, 1000, 1000)}, []crypto.Account{o.payer}, 0), "")
	o.expect(t, assemble(t, []types.Transaction{o.axfer(t, 1000, 999)}, []crypto.Account{o.payer}, 0), ReasonFeeTooLow)
	o.req = req
}

// TestVerifyRefusesEmptyPayments: no zero amount, and no transfer to its
// own sender.
func TestVerifyRefusesEmptyPayments(t *testing.T) {
	o := newOffline(t)
	noKey := crypto.Account{}
	o.req.Amount = 0
	o.expect(t, assemble(t, []types.Transaction{o.feeTxn(t, 2000), o.axfer(t, 0, 0)}, []crypto.Account{noKey, o.payer}, 1), ReasonAmountMismatch)

	o.req.Amount = 1000
	o.req.PayTo = o.payer.Address
	p := o.params
	p.FlatFee, p.Fee, p.LastRoundValid = true, 0, testRound+20
	self, err := transaction.MakeAssetTransferTxn(o.payer.Address.String(), o.payer.Address.String(), 1000, nil, p, "", o.req.Asset)
	if err != nil {
		t.Fatal(err)
	}
	o.expect(t, assemble(t, []types.Transaction{o.feeTxn(t, 2000), self}, []crypto.Account{noKey, o.payer}, 1), ReasonReceiverMismatch)
}

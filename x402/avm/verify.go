package avm

import (
	"context"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/base32"
	"fmt"
	"math"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
)

// DefaultFeeCap is the default cap, in µAlgo, on the fee of a payment that
// pays its own fee (a group of one). A sponsored group has no cap but an
// exact figure: the minimum fee for its two members.
const DefaultFeeCap = 5 * MinTxnFee

// VerifyConfig is what a verifier knows and trusts.
type VerifyConfig struct {
	// GenesisHash is the network's; every member must carry it.
	GenesisHash [32]byte
	// FeePayers are the facilitator's own accounts. A member one of them
	// sends must be the unsigned fee-payer shape; Verify signs it (with
	// Simulate) and Settle co-signs it.
	FeePayers []Signer
	// Ledger, when set, provides the current round and the auth address of
	// every signer, and enables CheckBalances and Simulate. Without it only
	// offline checks run, against CurrentRound, and members signed by an
	// auth address (sgnr) are refused since the rekey cannot be confirmed.
	Ledger Ledger
	// CurrentRound is the last committed round when Ledger is nil.
	CurrentRound uint64
	// CheckBalances checks through Ledger that the payer holds the amount
	// and that both accounts are opted in and not frozen.
	CheckBalances bool
	// Simulate evaluates the group, fee payer signed, through Ledger.
	Simulate bool
	// FeeCap caps the fee of a payment that pays its own fee; 0 means
	// DefaultFeeCap.
	FeeCap uint64
	// MinFee is the network's minimum fee per transaction (algod's
	// suggested params, min-fee); 0 means MinTxnFee. A fee payer's
	// transaction must pay exactly MinFee × 2, a lone payment at least
	// MinFee.
	MinFee uint64
	// Precheck, when set, is called with the payment's transaction id as
	// soon as the group has decoded, before any rule is checked; an error
	// it returns is Verify's answer. A facilitator refuses the payments it
	// settled there, before the chain would report the replay its own way.
	Precheck func(ctx context.Context, paymentTxID string) error
}

// Verified is a payment that passed verification.
type Verified struct {
	// Members is the decoded group, in order.
	Members []Member
	// PaymentIndex is the index of the asset transfer.
	PaymentIndex int
	// Payer sends the asset transfer.
	Payer types.Address
	// PaymentTxID is the id of the asset transfer, the settlement's
	// "transaction". It commits to the group id, so it also names the group:
	// use it as the replay key.
	PaymentTxID string
	// GroupID is the group id, zero for a lone transaction.
	GroupID types.Digest
	// payMsg is the payment member's signed bytes, "TX" + msgpack(txn).
	payMsg []byte
	// FeePayerIndexes lists the members the facilitator must sign.
	FeePayerIndexes []int
	// LastValid is the smallest last-valid round of the group.
	LastValid uint64
	// Group is the group as it was simulated: the client's members with
	// the fee-payer members signed by the facilitator. It is nil when
	// Verify did not simulate. Settle submits it as is instead of signing
	// again, so a Verified must only be settled with the fee payers it was
	// verified with.
	Group []types.SignedTxn
	// wire is Group's msgpack, member by member, as simulated.
	wire [][]byte
}

// Verify checks a payment against req and the config. It applies every
// offline rule: the group decodes, and the index is in range; the payment
// member is an asset transfer of exactly req.Amount (which must be positive)
// of req.Asset to req.PayTo, not to its own sender, without clawback, close
// or rekey; every member carries the network's genesis hash; the group id is
// recomputed and carried by every member; the validity windows contain the
// next round and end at most MaxTxnLife rounds ahead. The group is one of
// the two shapes of the exact scheme, nothing else: the payment alone,
// paying at least the minimum fee and at most the cap itself; or the payment
// and the transaction of the fee payer req names (one of cfg.FeePayers), in
// either order, the fee payer's being an unsigned 0-ALGO payment to itself
// without close, rekey or lease that pays exactly MinFee × 2 while the
// payment pays 0. Every member not the fee payer's is signed (ed25519 or
// multisig) by its sender or, checked through Ledger, the address the
// sender is rekeyed to. Then, with Ledger, it runs the optional balance
// checks and simulation. A rejection is an *Error with an invalid-reason
// code.
//
// With Ledger and Simulate, Verify first takes a fast path: after the
// offline checks it verifies the signatures (by the sender, or by the auth
// address the member names) and simulates the group, one call to the node,
// which checks the rounds, the auth addresses, the balances and opt-ins
// itself. Only when that fails does it run the detailed checks above, each
// with its own calls, to name the precise reason; a simulation failure that
// none of them explains is simulation_failed.
func Verify(ctx context.Context, cfg VerifyConfig, req Requirement, payload ExactPayload) (*Verified, error) {
	d, err := Decode(payload)
	if err != nil {
		return nil, err
	}
	return VerifyDecoded(ctx, cfg, req, d)
}

// Decoded is a payload whose group decoded, with its payment's
// transaction id: the first step of Verify, which a caller that needs the
// id before verifying (to lock the payment) takes once for both.
type Decoded struct {
	members      []Member
	paymentIndex int
	payMsg       []byte
	txid         string
}

// Decode decodes a payload's group (DecodeGroup) and computes its payment's
// transaction id.
func Decode(payload ExactPayload) (*Decoded, error) {
	members, err := DecodeGroup(payload)
	if err != nil {
		return nil, err
	}
	d := &Decoded{members: members, paymentIndex: payload.PaymentIndex}
	d.payMsg = txnMessage(&members[payload.PaymentIndex].Txn.Txn)
	d.txid = txIDOf(d.payMsg)
	return d, nil
}

// PaymentTxID returns the id of the payment's transaction, as
// ExactPayload.PaymentTxID does.
func (d *Decoded) PaymentTxID() string { return d.txid }

// VerifyDecoded is Verify of a decoded payload. d is only read: it may be
// verified again.
func VerifyDecoded(ctx context.Context, cfg VerifyConfig, req Requirement, d *Decoded) (*Verified, error) {
	members := d.members
	v := &Verified{Members: members, PaymentIndex: d.paymentIndex, payMsg: d.payMsg, PaymentTxID: d.txid}
	pay := members[d.paymentIndex].Txn.Txn
	v.Payer = pay.Sender
	v.GroupID = pay.Group
	var err error
	if cfg.Precheck != nil {
		if err := cfg.Precheck(ctx, v.PaymentTxID); err != nil {
			return nil, err
		}
	}

	if err := checkPayment(pay, req); err != nil {
		return nil, err
	}
	if err := checkGroupID(members); err != nil {
		return nil, err
	}
	if err := checkMembers(cfg, req, v); err != nil {
		return nil, err
	}

	var simErr error
	if cfg.Ledger != nil && cfg.Simulate {
		ok, failed, err := fastVerify(ctx, cfg, v)
		switch {
		case err != nil:
			return nil, err
		case ok:
			return v, nil
		}
		simErr = failed
	}

	current := cfg.CurrentRound
	if cfg.Ledger != nil {
		if current, err = cfg.Ledger.LastRound(ctx); err != nil {
			return nil, rejectErr(ReasonUnexpectedVerify, err, "cannot read the current round")
		}
	}
	if err := checkRounds(members, current, v); err != nil {
		return nil, err
	}
	if err := checkSignatures(ctx, cfg.Ledger, v); err != nil {
		return nil, err
	}
	if cfg.Ledger != nil && cfg.CheckBalances {
		if err := checkHoldings(ctx, cfg.Ledger, req, v.Payer); err != nil {
			return nil, err
		}
	}
	if cfg.Ledger != nil && cfg.Simulate {
		if simErr == nil {
			// The fast path stopped before simulating.
			group, err := signedGroup(ctx, v, cfg.FeePayers)
			if err != nil {
				return nil, rejectErr(ReasonUnexpectedVerify, err, "cannot sign the fee payer member")
			}
			if simErr = simulateGroup(ctx, cfg.Ledger, group); simErr == nil {
				v.Group, v.wire = group.txns, group.wire
			}
		}
		if simErr != nil {
			return nil, rejectErr(ReasonSimulationFailed, simErr, "the network would reject the group")
		}
	}
	return v, nil
}

// fastVerify verifies the signatures offline, trusting the auth address a
// member names, then simulates the group, which confirms the auth
// addresses, rounds, balances and opt-ins on the node. It reports ok when
// the payment passed (v.Group and v.LastValid set). Otherwise the detailed
// checks must name the reason: simErr is the simulation's failure when the
// group got that far. err is set only when the fee payer cannot sign.
func fastVerify(ctx context.Context, cfg VerifyConfig, v *Verified) (ok bool, simErr error, err error) {
	v.LastValid = math.MaxUint64
	for _, m := range v.Members {
		fv, lv := uint64(m.Txn.Txn.FirstValid), uint64(m.Txn.Txn.LastValid)
		if lv < fv || lv-fv > MaxTxnLife {
			return false, nil, nil
		}
		v.LastValid = min(v.LastValid, lv)
	}
	for i, m := range v.Members {
		if !m.Signed() {
			continue
		}
		signer := m.Txn.Txn.Sender
		if !m.Txn.AuthAddr.IsZero() {
			signer = m.Txn.AuthAddr
		}
		if verifySignature(m.Txn, signer, v.message(i)) != nil {
			return false, nil, nil
		}
	}
	group, err := signedGroup(ctx, v, cfg.FeePayers)
	if err != nil {
		return false, nil, rejectErr(ReasonUnexpectedVerify, err, "cannot sign the fee payer member")
	}
	if err := simulateGroup(ctx, cfg.Ledger, group); err != nil {
		return false, err, nil
	}
	v.Group, v.wire = group.txns, group.wire
	return true, nil, nil
}

// checkPayment applies the rules of the payment member.
func checkPayment(pay types.Transaction, req Requirement) error {
	if pay.Type != types.AssetTransferTx {
		return reject(ReasonNotAssetTransfer, "payment member is a %q transaction, not an asset transfer", pay.Type)
	}
	if pay.XferAsset != types.AssetIndex(req.Asset) {
		return reject(ReasonAssetMismatch, "payment transfers ASA %d, required %d", pay.XferAsset, req.Asset)
	}
	if req.Amount == 0 {
		return reject(ReasonAmountMismatch, "the required amount is 0; an exact payment moves a positive amount")
	}
	if pay.AssetAmount != req.Amount {
		return reject(ReasonAmountMismatch, "payment transfers %d, required exactly %d", pay.AssetAmount, req.Amount)
	}
	if pay.AssetReceiver != req.PayTo {
		return reject(ReasonReceiverMismatch, "payment goes to %s, required %s", pay.AssetReceiver, req.PayTo)
	}
	if pay.AssetReceiver == pay.Sender {
		return reject(ReasonReceiverMismatch, "payment goes to its own sender %s", pay.Sender)
	}
	if !pay.AssetSender.IsZero() {
		return reject(ReasonInvalidTransaction, "payment is a clawback from %s", pay.AssetSender)
	}
	return nil
}

// checkGroupID recomputes the group id and requires every member to carry it.
// A lone member may carry none.
func checkGroupID(members []Member) error {
	if len(members) == 1 && members[0].Txn.Txn.Group == (types.Digest{}) {
		return nil
	}
	txns := make([]types.Transaction, len(members))
	for i, m := range members {
		txns[i] = m.Txn.Txn
		txns[i].Group = types.Digest{}
	}
	gid := groupID(txns)
	for i, m := range members {
		if m.Txn.Txn.Group != gid {
			return reject(ReasonInvalidGroupID, "member %d carries group id %s, the group's is %s", i, m.Txn.Txn.Group, gid)
		}
	}
	return nil
}

// checkMembers applies the group-shape, per-member, network and fee rules
// and records the fee-payer member in v. The group is the payment alone,
// paying at least the minimum fee itself, or the payment and one
// transaction of a fee payer of cfg (the one req names), in either order:
// the fee payer's 0-ALGO payment to itself, paying exactly the minimum fee
// for both, and the payment paying none. Nothing else is sponsored.
func checkMembers(cfg VerifyConfig, req Requirement, v *Verified) error {
	n := uint64(len(v.Members))
	if n > 2 {
		return reject(ReasonGroupSizeExceeded, "the group has %d members; the exact scheme's group is the payment and at most the fee payer's transaction", n)
	}
	feeCap := cfg.FeeCap
	if feeCap == 0 {
		feeCap = DefaultFeeCap
	}
	minFee := cfg.MinFee
	if minFee == 0 {
		minFee = MinTxnFee
	}
	for i, m := range v.Members {
		txn := m.Txn.Txn
		if txn.Type != types.PaymentTx && txn.Type != types.AssetTransferTx {
			return reject(ReasonInvalidTransaction, "member %d is a %q transaction; only pay and axfer are allowed", i, txn.Type)
		}
		if txn.GenesisHash != types.Digest(cfg.GenesisHash) {
			return reject(ReasonGenesisMismatch, "member %d is for genesis hash %s, not the network's", i, txn.GenesisHash)
		}
		if isFeePayer(cfg.FeePayers, txn.Sender) {
			if i == v.PaymentIndex {
				return reject(ReasonFacilitatorTransferring, "the payment is sent by the facilitator's address %s", txn.Sender)
			}
			if err := checkFeePayerMember(i, m, req); err != nil {
				return err
			}
			v.FeePayerIndexes = append(v.FeePayerIndexes, i)
			continue
		}
		if !m.Signed() {
			if i == v.PaymentIndex {
				return reject(ReasonPaymentNotSigned, "the payment member is not signed")
			}
			return reject(ReasonUnsignedNonFacilitator, "member %d from %s is unsigned and not the facilitator's", i, txn.Sender)
		}
		if i != v.PaymentIndex {
			return reject(ReasonInvalidTransaction, "member %d from %s is neither the payment nor the fee payer's transaction", i, txn.Sender)
		}
		switch {
		case !txn.RekeyTo.IsZero():
			return reject(ReasonInvalidTransaction, "the payment rekeys %s", txn.Sender)
		case !txn.CloseRemainderTo.IsZero():
			return reject(ReasonInvalidTransaction, "the payment closes %s", txn.Sender)
		case !txn.AssetCloseTo.IsZero():
			return reject(ReasonInvalidTransaction, "the payment closes the asset holding of %s", txn.Sender)
		case !txn.AssetSender.IsZero():
			return reject(ReasonInvalidTransaction, "the payment is a clawback")
		}
	}
	pay := v.Members[v.PaymentIndex].Txn.Txn
	if n == 1 {
		// The payer pays its own fee; no fee payer is involved.
		switch {
		case uint64(pay.Fee) < minFee:
			return reject(ReasonFeeTooLow, "the payment pays %d µAlgo in fees, at least %d needed", pay.Fee, minFee)
		case uint64(pay.Fee) > feeCap:
			return reject(ReasonFeeTooHigh, "the payment pays a fee of %d µAlgo, cap %d", pay.Fee, feeCap)
		}
		return nil
	}
	// Two members: the payment and the fee payer's transaction.
	feeTxn := v.Members[v.FeePayerIndexes[0]].Txn.Txn
	want := minFee * n
	switch {
	case pay.Fee != 0:
		return reject(ReasonFeeTooHigh, "the payment pays a fee of %d µAlgo although the fee payer pools the group's fees", pay.Fee)
	case uint64(feeTxn.Fee) > want:
		return reject(ReasonFeeTooHigh, "the fee payer's transaction pays %d µAlgo, exactly %d (the minimum fee for %d members) is sponsored", feeTxn.Fee, want, n)
	case uint64(feeTxn.Fee) < want:
		return reject(ReasonFeeTooLow, "the group pays %d µAlgo in fees, %d needed", feeTxn.Fee, want)
	}
	return nil
}

// checkFeePayerMember requires the fee payer's transaction to be the one
// req offers and to be its unsigned 0-ALGO payment to itself, closing,
// rekeying and leasing nothing.
func checkFeePayerMember(i int, m Member, req Requirement) error {
	txn := m.Txn.Txn
	switch {
	case req.FeePayer != txn.Sender:
		if req.FeePayer.IsZero() {
			return reject(ReasonInvalidFeePayer, "member %d is the fee payer's, but the requirement offers no fee payer", i)
		}
		return reject(ReasonInvalidFeePayer, "member %d is sent by %s, the requirement's fee payer is %s", i, txn.Sender, req.FeePayer)
	case m.Signed() || !m.Txn.AuthAddr.IsZero():
		return reject(ReasonInvalidFeePayer, "fee-payer member %d arrived signed", i)
	case txn.Type != types.PaymentTx:
		return reject(ReasonInvalidFeePayer, "fee-payer member %d is not a payment", i)
	case txn.Amount != 0:
		return reject(ReasonInvalidFeePayer, "fee-payer member %d moves %d µAlgo", i, txn.Amount)
	case txn.Receiver != txn.Sender:
		return reject(ReasonInvalidFeePayer, "fee-payer member %d pays %s, not itself", i, txn.Receiver)
	case !txn.CloseRemainderTo.IsZero():
		return reject(ReasonInvalidFeePayer, "fee-payer member %d closes the account", i)
	case !txn.RekeyTo.IsZero():
		return reject(ReasonInvalidFeePayer, "fee-payer member %d rekeys the account", i)
	case txn.Lease != [32]byte{}:
		return reject(ReasonInvalidFeePayer, "fee-payer member %d takes a lease on the account", i)
	}
	return nil
}

// checkRounds requires every validity window to contain the next round and
// to end at most MaxTxnLife rounds ahead.
func checkRounds(members []Member, current uint64, v *Verified) error {
	next := current + 1
	v.LastValid = math.MaxUint64
	for i, m := range members {
		fv, lv := uint64(m.Txn.Txn.FirstValid), uint64(m.Txn.Txn.LastValid)
		switch {
		case lv < fv || lv-fv > MaxTxnLife:
			return reject(ReasonValidityWindow, "member %d has the validity window %d..%d", i, fv, lv)
		case lv < next:
			return reject(ReasonPaymentExpired, "member %d expired at round %d; next round is %d", i, lv, next)
		case fv > next:
			return reject(ReasonValidityWindow, "member %d is not valid before round %d; next round is %d", i, fv, next)
		case lv-next > MaxTxnLife:
			return reject(ReasonValidityWindow, "member %d stays valid until round %d, too far ahead of %d", i, lv, next)
		}
		v.LastValid = min(v.LastValid, lv)
	}
	return nil
}

// checkSignatures verifies the signature of every signed member.
func checkSignatures(ctx context.Context, ledger Ledger, v *Verified) error {
	for i, m := range v.Members {
		if !m.Signed() {
			continue
		}
		stx := m.Txn
		signer := stx.Txn.Sender
		if !stx.AuthAddr.IsZero() {
			signer = stx.AuthAddr
		}
		if ledger != nil {
			auth, err := ledger.AuthAddr(ctx, stx.Txn.Sender)
			if err != nil {
				return rejectErr(ReasonUnexpectedVerify, err, "cannot read the authorizer of %s", stx.Txn.Sender)
			}
			want := stx.Txn.Sender
			if !auth.IsZero() {
				want = auth
			}
			if signer != want {
				return reject(ReasonInvalidSignature, "member %d is signed by %s but %s is controlled by %s", i, signer, stx.Txn.Sender, want)
			}
		} else if !stx.AuthAddr.IsZero() {
			return reject(ReasonInvalidSignature, "member %d is signed by the auth address %s, which cannot be confirmed offline", i, stx.AuthAddr)
		}
		if err := verifySignature(stx, signer, v.message(i)); err != nil {
			return rejectErr(ReasonInvalidSignature, err, "member %d", i)
		}
	}
	return nil
}

// verifySignature checks the ed25519 or multisig signature of stx by signer
// over message, "TX" + msgpack(txn).
func verifySignature(stx types.SignedTxn, signer types.Address, message []byte) error {
	hasSig := stx.Sig != (types.Signature{})
	hasMsig := !stx.Msig.Blank()
	switch {
	case !stx.Lsig.Blank() || !stx.PQsig.Blank():
		return fmt.Errorf("logic-signature and post-quantum signatures are not accepted")
	case hasSig && hasMsig:
		return fmt.Errorf("both a signature and a multisignature")
	}
	if hasSig {
		if !ed25519.Verify(ed25519.PublicKey(signer[:]), message, stx.Sig[:]) {
			return fmt.Errorf("signature does not verify for %s", signer)
		}
		return nil
	}
	for _, sub := range stx.Msig.Subsigs {
		if len(sub.Key) != ed25519.PublicKeySize {
			return fmt.Errorf("multisignature key of %d bytes", len(sub.Key))
		}
	}
	if !crypto.VerifyMultisig(signer, message, stx.Msig) {
		return fmt.Errorf("multisignature does not verify for %s", signer)
	}
	return nil
}

// checkHoldings requires the payer to hold the amount and both accounts to be
// opted in and unfrozen.
func checkHoldings(ctx context.Context, ledger Ledger, req Requirement, payer types.Address) error {
	from, err := ledger.AssetHolding(ctx, payer, req.Asset)
	if err != nil {
		return rejectErr(ReasonUnexpectedVerify, err, "cannot read the payer's holding")
	}
	switch {
	case !from.OptedIn:
		return reject(ReasonInsufficientFunds, "payer %s is not opted in to ASA %d", payer, req.Asset)
	case from.Frozen:
		return reject(ReasonInsufficientFunds, "payer %s's ASA %d is frozen", payer, req.Asset)
	case from.Amount < req.Amount:
		return reject(ReasonInsufficientFunds, "payer %s holds %d of ASA %d, %d required", payer, from.Amount, req.Asset, req.Amount)
	}
	to, err := ledger.AssetHolding(ctx, req.PayTo, req.Asset)
	if err != nil {
		return rejectErr(ReasonUnexpectedVerify, err, "cannot read the receiver's holding")
	}
	switch {
	case !to.OptedIn:
		return reject(ReasonReceiverNotOptedIn, "receiver %s is not opted in to ASA %d", req.PayTo, req.Asset)
	case to.Frozen:
		return reject(ReasonReceiverNotOptedIn, "receiver %s's ASA %d is frozen", req.PayTo, req.Asset)
	}
	return nil
}

func isFeePayer(feePayers []Signer, addr types.Address) bool {
	return feePayerSigner(feePayers, addr) != nil
}

func feePayerSigner(feePayers []Signer, addr types.Address) Signer {
	for _, s := range feePayers {
		if s != nil && s.Address() == addr {
			return s
		}
	}
	return nil
}

// signedGroup returns the group ready to submit, and its encoding: the
// client's signed members as decoded, the fee-payer members signed by the
// facilitator. Each member's transaction is encoded once, for its
// signature, and its msgpack composed from that.
func signedGroup(ctx context.Context, v *Verified, feePayers []Signer) (wireGroup, error) {
	g := wireGroup{txns: make([]types.SignedTxn, len(v.Members)), wire: make([][]byte, len(v.Members))}
	msgs := make([][]byte, len(v.Members))
	for i, m := range v.Members {
		g.txns[i] = m.Txn
	}
	// Members another Signer signed are encoded as it returned them.
	opaque := make([]bool, len(v.Members))
	for _, i := range v.FeePayerIndexes {
		txn := v.Members[i].Txn.Txn
		s := feePayerSigner(feePayers, txn.Sender)
		if s == nil {
			return wireGroup{}, fmt.Errorf("no key for fee payer %s", txn.Sender)
		}
		var stx types.SignedTxn
		var err error
		if ms, ok := s.(messageSigner); ok {
			msgs[i] = txnMessage(&txn)
			stx, err = ms.signMessage(txn, msgs[i])
		} else {
			stx, err = s.Sign(ctx, txn)
			opaque[i] = true
		}
		if err != nil {
			return wireGroup{}, err
		}
		g.txns[i] = stx
	}
	for i, stx := range g.txns {
		switch {
		case opaque[i]:
			g.wire[i] = msgpack.Encode(stx)
		case msgs[i] != nil:
			g.wire[i] = encodeMember(stx, msgs[i])
		default:
			g.wire[i] = encodeMember(stx, v.message(i))
		}
	}
	return g, nil
}

// txnMessage returns the bytes a transaction's signature and id cover:
// "TX" + msgpack(txn).
func txnMessage(txn *types.Transaction) []byte {
	var buf [txnBufSize]byte
	enc := encodeTxn(buf[:0], txn)
	msg := make([]byte, 2+len(enc))
	copy(msg, "TX")
	copy(msg[2:], enc)
	return msg
}

// txIDOf returns the transaction id of a txnMessage: base32 of its
// SHA-512/256, unpadded.
func txIDOf(message []byte) string {
	sum := sha512.Sum512_256(message)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])
}

// message returns member i's txnMessage, computed once for the payment.
func (v *Verified) message(i int) []byte {
	if i == v.PaymentIndex && v.payMsg != nil {
		return v.payMsg
	}
	return txnMessage(&v.Members[i].Txn.Txn)
}

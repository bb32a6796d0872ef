// Package avm implements the x402 "exact" scheme on Algorand (the AVM):
// building a payment as a client, and verifying and settling one as a
// facilitator. The payment is an atomic group of transactions whose member
// paymentGroup[paymentIndex] is an asset transfer of exactly the required
// amount of the required ASA to the required receiver; an optional first
// member, sent by the facilitator's fee-payer address, pays the pooled fees
// and is signed by the facilitator at settlement.
package avm

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/algorand/go-codec/codec"
)

// MaxGroupSize is the largest atomic group Algorand accepts.
const MaxGroupSize = types.MaxTxGroupSize

// maxEntrySize bounds one decoded group member. A payment or asset transfer
// with the largest note (1 KiB) and a signature is well under 2 KiB.
const maxEntrySize = 4 << 10

// ExactPayload is the scheme payload of an Algorand exact payment: standard
// base64 of msgpack-encoded transactions, and the index of the payment.
type ExactPayload struct {
	PaymentGroup []string `json:"paymentGroup"`
	PaymentIndex int      `json:"paymentIndex"`
}

// ParsePayload decodes the scheme payload JSON object. Unknown keys are
// ignored.
func ParsePayload(raw json.RawMessage) (ExactPayload, error) {
	var p ExactPayload
	if err := json.Unmarshal(raw, &p); err != nil {
		return ExactPayload{}, rejectErr(ReasonPayload, err, "payload is not {paymentGroup, paymentIndex}")
	}
	if len(p.PaymentGroup) == 0 {
		return ExactPayload{}, reject(ReasonPayload, "paymentGroup is empty")
	}
	return p, nil
}

// Member is one decoded group member.
type Member struct {
	// Txn is the member; Sig, Msig and Lsig are empty when it arrived unsigned.
	Txn types.SignedTxn
	// Raw is the msgpack the client sent.
	Raw []byte
}

// Signed reports whether the member carries any kind of signature.
func (m Member) Signed() bool {
	return m.Txn.Sig != (types.Signature{}) || !m.Txn.Msig.Blank() || !m.Txn.Lsig.Blank()
}

// DecodeMember decodes one paymentGroup element: standard base64 (unpadded
// accepted) of either a msgpack SignedTxn or a bare msgpack Transaction (the
// form clients use for the unsigned fee-payer member). Trailing bytes are an
// error.
func DecodeMember(b64 string) (Member, error) {
	if base64.StdEncoding.DecodedLen(len(b64)) > maxEntrySize {
		return Member{}, reject(ReasonInvalidTransaction, "group member larger than %d bytes", maxEntrySize)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil {
		return Member{}, rejectErr(ReasonInvalidTransaction, err, "group member is not base64")
	}
	if len(raw) == 0 {
		return Member{}, reject(ReasonInvalidTransaction, "group member is empty")
	}
	if !isSignedTxnKey(firstKey(raw)) {
		// Most likely the bare form: try it first, sparing the failed
		// decode of a SignedTxn. The keys of the two forms are disjoint, so
		// a bare transaction that decodes is never a SignedTxn.
		var txn types.Transaction
		if err := decodeExact(raw, &txn); err == nil && txn.Type != "" {
			return Member{Txn: types.SignedTxn{Txn: txn}, Raw: raw}, nil
		}
	}
	var stx types.SignedTxn
	if err := decodeExact(raw, &stx); err == nil && stx.Txn.Type != "" {
		return Member{Txn: stx, Raw: raw}, nil
	}
	var txn types.Transaction
	if err := decodeExact(raw, &txn); err != nil {
		return Member{}, rejectErr(ReasonInvalidTransaction, err, "group member is neither a signed nor an unsigned transaction")
	}
	if txn.Type == "" {
		return Member{}, reject(ReasonInvalidTransaction, "group member has no transaction type")
	}
	return Member{Txn: types.SignedTxn{Txn: txn}, Raw: raw}, nil
}

// isSignedTxnKey reports whether k is a key of a msgpack SignedTxn.
func isSignedTxnKey(k string) bool {
	switch k {
	case "sig", "msig", "lsig", "pqsig", "txn", "sgnr":
		return true
	}
	return false
}

// firstKey returns the first key of the msgpack map raw holds, or "" when
// raw does not start with a map whose first key is a short string.
func firstKey(raw []byte) string {
	var rest []byte
	switch {
	case len(raw) >= 1 && raw[0]&0xf0 == 0x80: // fixmap
		rest = raw[1:]
	case len(raw) >= 3 && raw[0] == 0xde: // map 16
		rest = raw[3:]
	default:
		return ""
	}
	if len(rest) >= 1 && rest[0]&0xe0 == 0xa0 { // fixstr
		if n := int(rest[0] & 0x1f); len(rest) >= 1+n {
			return string(rest[1 : 1+n])
		}
	}
	return ""
}

// DecodeGroup decodes every member of a payload and checks the group size and
// the payment index.
func DecodeGroup(p ExactPayload) ([]Member, error) {
	if len(p.PaymentGroup) == 0 {
		return nil, reject(ReasonPayload, "paymentGroup is empty")
	}
	if len(p.PaymentGroup) > MaxGroupSize {
		return nil, reject(ReasonGroupSizeExceeded, "paymentGroup has %d members, at most %d allowed", len(p.PaymentGroup), MaxGroupSize)
	}
	if p.PaymentIndex < 0 || p.PaymentIndex >= len(p.PaymentGroup) {
		return nil, reject(ReasonPaymentIndex, "paymentIndex %d outside a group of %d", p.PaymentIndex, len(p.PaymentGroup))
	}
	members := make([]Member, len(p.PaymentGroup))
	for i, s := range p.PaymentGroup {
		m, err := DecodeMember(s)
		if err != nil {
			return nil, fmt.Errorf("member %d: %w", i, err)
		}
		members[i] = m
	}
	return members, nil
}

// EncodeMember returns the paymentGroup element of a signed transaction, or
// of an unsigned one as a bare msgpack Transaction (what the npm clients
// send).
func EncodeMember(stx types.SignedTxn, signed bool) string {
	if !signed {
		return base64.StdEncoding.EncodeToString(msgpack.Encode(stx.Txn))
	}
	return base64.StdEncoding.EncodeToString(msgpack.Encode(stx))
}

// decodeExact decodes one msgpack value that must span all of raw.
func decodeExact(raw []byte, v any) (err error) {
	defer func() {
		// The codec panics on some malformed input; report it as an error.
		if r := recover(); r != nil {
			err = fmt.Errorf("msgpack: %v", r)
		}
	}()
	dec := codec.NewDecoderBytes(raw, msgpack.CodecHandle)
	if err := dec.Decode(v); err != nil {
		return err
	}
	if n := dec.NumBytesRead(); n != len(raw) {
		return fmt.Errorf("msgpack: %d trailing bytes", len(raw)-n)
	}
	return nil
}

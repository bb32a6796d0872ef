package avm

import (
	"context"
	"crypto/ed25519"
	"crypto/sha512"
	"fmt"

	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/algorand/go-codec/codec"
)

// txnBufSize is the starting capacity of a transaction's encoding: a
// payment or an asset transfer with a short note fits.
const txnBufSize = 512

// encodeTxn returns the canonical msgpack of txn, as msgpack.Encode writes
// it, in buf's storage (overwritten; grown when too small) instead of the
// codec's default 1 KiB buffer.
func encodeTxn(buf []byte, txn *types.Transaction) []byte {
	if cap(buf) == 0 {
		buf = make([]byte, 0, txnBufSize)
	}
	out := buf[:0]
	codec.NewEncoderBytes(&out, msgpack.CodecHandle).MustEncode(txn)
	return out
}

// groupID computes the group id of txns (each with its Group as it is; the
// callers zero it), as the SDK's crypto.ComputeGroupID does: the
// SHA-512/256 of "TG" + msgpack({"txlist": [txid digest, ...]}), with one
// buffer for every member's encoding.
func groupID(txns []types.Transaction) types.Digest {
	list := make([]byte, 0, 16+len(txns)*(2+32))
	list = append(list, 'T', 'G', 0x81, 0xa6)
	list = append(list, "txlist"...)
	if n := len(txns); n < 16 {
		list = append(list, 0x90|byte(n))
	} else {
		list = append(list, 0xdc, byte(n>>8), byte(n))
	}
	var buf, msg []byte
	for i := range txns {
		buf = encodeTxn(buf, &txns[i])
		msg = append(append(msg[:0], 'T', 'X'), buf...)
		sum := sha512.Sum512_256(msg)
		list = append(list, 0xc4, 32)
		list = append(list, sum[:]...)
	}
	return sha512.Sum512_256(list)
}

// A paid request's group is encoded once: the transaction messages that the
// signatures cover ("TX" + msgpack(txn)) are computed for verifying and
// signing, and each signed member's msgpack is composed from its message
// and signature, then sent as is to both simulate and submit.

// encodeSigned returns the canonical msgpack of a SignedTxn that carries
// only an ed25519 signature, an auth address (zero for none) and the
// transaction whose message ("TX" + msgpack) is msg: a map of the keys
// sgnr, sig and txn, in that (sorted) order, as the SDK's canonical codec
// writes it.
func encodeSigned(sig types.Signature, auth types.Address, msg []byte) []byte {
	txn := msg[len("TX"):]
	n := 2
	size := 1 + 4 + 2 + len(sig) + 4 + len(txn)
	if !auth.IsZero() {
		n++
		size += 5 + 2 + len(auth)
	}
	out := make([]byte, 0, size)
	out = append(out, 0x80|byte(n)) // fixmap
	if !auth.IsZero() {
		out = append(out, 0xa4, 's', 'g', 'n', 'r', 0xc4, byte(len(auth)))
		out = append(out, auth[:]...)
	}
	out = append(out, 0xa3, 's', 'i', 'g', 0xc4, byte(len(sig)))
	out = append(out, sig[:]...)
	out = append(out, 0xa3, 't', 'x', 'n')
	return append(out, txn...)
}

// encodeMember returns the msgpack of a group member to send to the node:
// composed from msg (its transaction's message) when it carries a plain
// signature, encoded by the codec otherwise (multisig).
func encodeMember(stx types.SignedTxn, msg []byte) []byte {
	if stx.Msig.Blank() && stx.Lsig.Blank() && stx.PQsig.Blank() && stx.Sig != (types.Signature{}) {
		return encodeSigned(stx.Sig, stx.AuthAddr, msg)
	}
	return msgpack.Encode(stx)
}

// messageSigner is a Signer that signs a transaction message it is given
// ("TX" + msgpack(txn)), saving the encoding Sign would do.
type messageSigner interface {
	signMessage(txn types.Transaction, msg []byte) (types.SignedTxn, error)
}

// signMessage signs msg, the message of txn, as Sign would.
func (s KeySigner) signMessage(txn types.Transaction, msg []byte) (types.SignedTxn, error) {
	if len(s.Key) != ed25519.PrivateKeySize {
		return types.SignedTxn{}, fmt.Errorf("avm: sign: key is %d bytes, want %d", len(s.Key), ed25519.PrivateKeySize)
	}
	stx := types.SignedTxn{Txn: txn}
	copy(stx.Sig[:], ed25519.Sign(s.Key, msg))
	var key types.Address
	copy(key[:], s.Key[ed25519.SeedSize:])
	if key != txn.Sender {
		stx.AuthAddr = key
	}
	return stx, nil
}

// wireGroup is a group ready for the node: the members, and each one's
// msgpack.
type wireGroup struct {
	txns []types.SignedTxn
	wire [][]byte
}

// encodedLedger is a Ledger that takes a group already encoded (Algod).
type encodedLedger interface {
	simulateEncoded(ctx context.Context, group []types.SignedTxn, wire [][]byte) error
	submitEncoded(ctx context.Context, group []types.SignedTxn, wire [][]byte) error
}

// simulateGroup simulates g through ledger, sending its encoding when the
// ledger takes one.
func simulateGroup(ctx context.Context, ledger Ledger, g wireGroup) error {
	if el, ok := ledger.(encodedLedger); ok && len(g.wire) == len(g.txns) {
		return el.simulateEncoded(ctx, g.txns, g.wire)
	}
	return ledger.Simulate(ctx, g.txns)
}

// submitGroup submits g through ledger, sending its encoding when the
// ledger takes one.
func submitGroup(ctx context.Context, ledger Ledger, g wireGroup) error {
	if el, ok := ledger.(encodedLedger); ok && len(g.wire) == len(g.txns) {
		return el.submitEncoded(ctx, g.txns, g.wire)
	}
	return ledger.Submit(ctx, g.txns)
}

// simulateBody returns the msgpack of algod's SimulateRequest with one
// group, {"txn-groups": [{"txns": [...]}]}, around the members' msgpack.
func simulateBody(wire [][]byte) []byte {
	size := 32
	for _, w := range wire {
		size += len(w)
	}
	out := make([]byte, 0, size)
	out = append(out, 0x81, 0xaa)
	out = append(out, "txn-groups"...)
	out = append(out, 0x91, 0x81, 0xa4)
	out = append(out, "txns"...)
	if n := len(wire); n < 16 {
		out = append(out, 0x90|byte(n)) // fixarray
	} else {
		out = append(out, 0xdc, byte(n>>8), byte(n)) // array 16
	}
	for _, w := range wire {
		out = append(out, w...)
	}
	return out
}

package devnet

import (
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/base32"
	"errors"
	"fmt"
	"io"

	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/algorand/go-codec/codec"
)

// Protocol limits the devnet enforces, as algod's current consensus does.
const (
	// MinTxnFee is the minimum fee per transaction in µAlgo; a group's fees
	// are pooled and must total MinTxnFee × its size.
	MinTxnFee = 1000
	// MinBalance is the minimum balance of an account, and the increment
	// per opted-in asset, in µAlgo.
	MinBalance = 100_000
	// MaxTxnLife is the longest validity window (last valid - first valid).
	MaxTxnLife = 1000
	// MaxNoteBytes is the largest note a transaction may carry.
	MaxNoteBytes = 1024
	// MaxGroupSize is the largest atomic group.
	MaxGroupSize = types.MaxTxGroupSize
	// maxBodyBytes bounds a POSTed group: 16 transactions of at most a few
	// KiB each.
	maxBodyBytes = 1 << 20
)

var txidEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// txnIn is a decoded signed transaction with what the ledger needs from its
// canonical encoding, computed once.
type txnIn struct {
	stx  types.SignedTxn
	txid string
	// sigOK is set when the signature verified (or simulation allowed an
	// empty one); unsigned is set for an empty signature.
	sigOK    bool
	unsigned bool
}

// authorizer is the address whose key signed the transaction: the
// transaction's sgnr when present, else its sender.
func (t *txnIn) authorizer() types.Address {
	if !t.stx.AuthAddr.IsZero() {
		return t.stx.AuthAddr
	}
	return t.stx.Txn.Sender
}

// decodeGroup decodes concatenated msgpack SignedTxns, the body of
// POST /v2/transactions.
func decodeGroup(body []byte) ([]types.SignedTxn, error) {
	dec := codec.NewDecoderBytes(body, msgpack.CodecHandle)
	out := make([]types.SignedTxn, 0, 2)
	for dec.NumBytesRead() < len(body) {
		if len(out) == MaxGroupSize {
			return nil, fmt.Errorf("transaction group size exceeds the maximum of %d", MaxGroupSize)
		}
		var stx types.SignedTxn
		if err := dec.Decode(&stx); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("msgpack decode error: %w", err)
		}
		out = append(out, stx)
	}
	if len(out) == 0 {
		return nil, errors.New("empty txgroup")
	}
	return out, nil
}

// prepare runs every stateless check on a group, in algod's order: well
// formed transactions for this genesis, a consistent group id, and valid
// signatures (answered by cache when it saw them pass). allowEmptySigs
// (simulation only) accepts unsigned members.
func prepare(group []types.SignedTxn, genesisHash types.Digest, genesisID string, allowEmptySigs bool, cache *verifiedCache) ([]txnIn, int, error) {
	if len(group) == 0 {
		return nil, 0, errors.New("empty txgroup")
	}
	if len(group) > MaxGroupSize {
		return nil, 0, fmt.Errorf("group size %d exceeds the maximum of %d", len(group), MaxGroupSize)
	}
	in := make([]txnIn, len(group))
	sums := make([][32]byte, len(group))
	var enc txnEncoder
	for i := range group {
		stx := &group[i]
		raw := enc.message(&stx.Txn)
		sum := sha512.Sum512_256(raw)
		sums[i] = sum
		t := &in[i]
		t.stx = *stx
		t.txid = txidEncoding.EncodeToString(sum[:])
		if err := wellFormed(&stx.Txn, genesisHash, genesisID); err != nil {
			return nil, i, fmt.Errorf("transaction %s: %w", t.txid, err)
		}
		if err := checkSig(t, raw, sum, allowEmptySigs, cache); err != nil {
			return nil, i, fmt.Errorf("transaction %s: %w", t.txid, err)
		}
	}
	var key [32]byte
	if cache != nil {
		key = groupKey(sums)
	}
	if cache == nil || !cache.groups.has(key) {
		if i, err := checkGroupID(group, &enc); err != nil {
			return nil, i, fmt.Errorf("transactionGroup: %w", err)
		}
		if cache != nil {
			cache.groups.add(key)
		}
	}
	return in, 0, nil
}

// wellFormed checks what a transaction must satisfy regardless of state.
func wellFormed(tx *types.Transaction, genesisHash types.Digest, genesisID string) error {
	switch tx.Type {
	case types.PaymentTx:
		if !tx.CloseRemainderTo.IsZero() && tx.CloseRemainderTo == tx.Sender {
			return errors.New("transaction cannot close account to its sender")
		}
	case types.AssetTransferTx:
		if !tx.AssetSender.IsZero() {
			return errors.New("clawback transfers are not supported by the devnet")
		}
		if tx.XferAsset == 0 {
			return errors.New("asset transfer of asset 0")
		}
		if !tx.AssetCloseTo.IsZero() && tx.AssetCloseTo == tx.Sender {
			return errors.New("transaction cannot close asset holding to its sender")
		}
	case types.AssetConfigTx:
		if tx.ConfigAsset != 0 {
			return errors.New("asset reconfiguration and destruction are not supported by the devnet")
		}
		if err := checkAssetParams(&tx.AssetParams); err != nil {
			return err
		}
	default:
		return fmt.Errorf("transaction type %q is not supported by the devnet", tx.Type)
	}
	if tx.Sender.IsZero() {
		return errors.New("transaction has no sender")
	}
	if tx.LastValid < tx.FirstValid {
		return fmt.Errorf("transaction invalid range (%d--%d)", tx.FirstValid, tx.LastValid)
	}
	if uint64(tx.LastValid-tx.FirstValid) > MaxTxnLife {
		return fmt.Errorf("transaction window size excessive (%d--%d)", tx.FirstValid, tx.LastValid)
	}
	if len(tx.Note) > MaxNoteBytes {
		return fmt.Errorf("transaction note too big: %d > %d", len(tx.Note), MaxNoteBytes)
	}
	if tx.GenesisHash != genesisHash {
		return fmt.Errorf("genesis hash mismatch: tx.GenesisHash <%s> does not match expected <%s>",
			b64(tx.GenesisHash[:]), b64(genesisHash[:]))
	}
	if tx.GenesisID != "" && tx.GenesisID != genesisID {
		return fmt.Errorf("genesis id mismatch: tx.GenesisID <%s> does not match expected <%s>", tx.GenesisID, genesisID)
	}
	return nil
}

// checkAssetParams bounds a new asset's parameters as the protocol does.
func checkAssetParams(p *types.AssetParams) error {
	switch {
	case p.Decimals > 19:
		return fmt.Errorf("transaction asset decimals is too high (max is 19): %d", p.Decimals)
	case len(p.UnitName) > 8:
		return fmt.Errorf("transaction asset unit name too big: %d > 8", len(p.UnitName))
	case len(p.AssetName) > 32:
		return fmt.Errorf("transaction asset name too big: %d > 32", len(p.AssetName))
	case len(p.URL) > 96:
		return fmt.Errorf("transaction asset url too big: %d > 96", len(p.URL))
	}
	return nil
}

// checkSig verifies the ed25519 signature over raw ("TX"+msgpack(txn),
// whose hash is sum) by the authorizer, through cache when not nil.
// Whether that authorizer may sign for the sender depends on the ledger
// and is checked when the transaction is applied.
func checkSig(t *txnIn, raw []byte, sum [32]byte, allowEmpty bool, cache *verifiedCache) error {
	stx := &t.stx
	if !stx.Msig.Blank() || !stx.Lsig.Blank() || !stx.PQsig.Blank() {
		return errors.New("multisig, logic and post-quantum signatures are not supported by the devnet")
	}
	if stx.Sig == (types.Signature{}) {
		if allowEmpty {
			t.unsigned = true
			return nil
		}
		return errors.New("signedtxn has no sig")
	}
	pub := t.authorizer()
	var ok bool
	if cache != nil {
		ok = cache.verify(pub, sum, raw, stx.Sig)
	} else {
		ok = ed25519.Verify(ed25519.PublicKey(pub[:]), raw, stx.Sig[:])
	}
	if !ok {
		return errors.New("signature verification failed: at least one signature didn't pass verification")
	}
	t.sigOK = true
	return nil
}

// checkGroupID checks that a group's members carry one group id equal to
// the hash of the members, or, for a single transaction, no group or its
// own. It returns the index of the offending member.
func checkGroupID(group []types.SignedTxn, enc *txnEncoder) (int, error) {
	first := group[0].Txn.Group
	if len(group) == 1 && first == (types.Digest{}) {
		return 0, nil
	}
	bare := make([]types.Transaction, len(group))
	for i := range group {
		g := group[i].Txn.Group
		if g == (types.Digest{}) {
			return i, fmt.Errorf("[%d] had zero Group but was submitted in a group of %d", i, len(group))
		}
		if g != first {
			return i, fmt.Errorf("inconsistent group values: %s != %s", b64(g[:]), b64(first[:]))
		}
		bare[i] = group[i].Txn
		bare[i].Group = types.Digest{}
	}
	if want := enc.groupID(bare); want != first {
		return 0, fmt.Errorf("incomplete group: %s != %s", b64(first[:]), b64(want[:]))
	}
	return 0, nil
}

// txnEncoder encodes transactions canonically, as msgpack.Encode does,
// into buffers it reuses from one transaction to the next.
type txnEncoder struct {
	buf, msg []byte
}

// message returns "TX" + msgpack(txn), the bytes a signature and a txid
// cover, valid until the encoder's next use.
func (e *txnEncoder) message(txn *types.Transaction) []byte {
	if e.buf == nil {
		e.buf = make([]byte, 0, 512)
	}
	out := e.buf[:0]
	codec.NewEncoderBytes(&out, msgpack.CodecHandle).MustEncode(txn)
	e.buf = out
	e.msg = append(append(e.msg[:0], 'T', 'X'), out...)
	return e.msg
}

// groupID returns the id of a group of transactions carrying no group:
// the SHA-512/256 of "TG" + msgpack({"txlist": [txid digest, ...]}).
func (e *txnEncoder) groupID(txns []types.Transaction) types.Digest {
	list := make([]byte, 0, 16+len(txns)*(2+32))
	list = append(list, 'T', 'G', 0x81, 0xa6)
	list = append(list, "txlist"...)
	if n := len(txns); n < 16 {
		list = append(list, 0x90|byte(n))
	} else {
		list = append(list, 0xdc, byte(n>>8), byte(n))
	}
	for i := range txns {
		sum := sha512.Sum512_256(e.message(&txns[i]))
		list = append(list, 0xc4, 32)
		list = append(list, sum[:]...)
	}
	return sha512.Sum512_256(list)
}

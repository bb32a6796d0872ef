package avm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
)

// TestEncodedGroupIsTheCodecs: the msgpack composed for the node (each
// signed member from its transaction message, the simulate request around
// the members) is byte for byte what the SDK's canonical codec writes, for
// members with and without an auth address, with a note, and for the
// largest group (an array of 16).
func TestEncodedGroupIsTheCodecs(t *testing.T) {
	o := newOffline(t)
	rekeyed := crypto.GenerateAccount()
	cases := []struct {
		name string
		txn  types.Transaction
		auth types.Address
	}{
		{"axfer", o.axfer(t, 1000, 0), types.Address{}},
		{"fee payer", o.feeTxn(t, 2000), types.Address{}},
		{"rekeyed", o.axfer(t, 1000, 1000), rekeyed.Address},
		{"note", o.selfPay(t, o.payer, 1000), types.Address{}},
	}
	var group []types.SignedTxn
	var wire [][]byte
	for _, c := range cases {
		msg := txnMessage(&c.txn)
		stx := types.SignedTxn{Txn: c.txn, AuthAddr: c.auth}
		copy(stx.Sig[:], ed25519.Sign(o.payer.PrivateKey, msg))
		got := encodeMember(stx, msg)
		if want := msgpack.Encode(stx); !bytes.Equal(got, want) {
			t.Fatalf("%s: composed\n%x\ncodec\n%x", c.name, got, want)
		}
		group, wire = append(group, stx), append(wire, got)
	}
	for _, n := range []int{1, len(group), MaxGroupSize} {
		g, w := make([]types.SignedTxn, n), make([][]byte, n)
		for i := range n {
			g[i], w[i] = group[i%len(group)], wire[i%len(wire)]
		}
		want := msgpack.Encode(&simulateRequest{TxnGroups: []simulateRequestGroup{{Txns: g}}})
		if got := simulateBody(w); !bytes.Equal(got, want) {
			t.Fatalf("simulate request of %d: composed\n%x\ncodec\n%x", n, got, want)
		}
	}
}

// TestSignMessageIsSign: signing a given transaction message answers what
// Sign answers, auth address included.
func TestSignMessageIsSign(t *testing.T) {
	o := newOffline(t)
	txn := o.feeTxn(t, 2000)
	other := crypto.GenerateAccount()
	for _, s := range []KeySigner{{Sender: txn.Sender, Key: o.feePayer.PrivateKey}, {Sender: txn.Sender, Key: other.PrivateKey}} {
		want, err := s.Sign(context.Background(), txn)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.signMessage(txn, txnMessage(&txn))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msgpack.Encode(got), msgpack.Encode(want)) {
			t.Fatalf("signMessage %+v, Sign %+v", got, want)
		}
	}
	if _, err := (KeySigner{Sender: txn.Sender, Key: o.feePayer.PrivateKey[:10]}).signMessage(txn, txnMessage(&txn)); err == nil {
		t.Fatal("a short key signed")
	}
}

// TestGroupIDIsTheSDKs: the group id computed with one buffer is the SDK's,
// for a lone member, the two of a payment and the largest group, with and
// without notes.
func TestGroupIDIsTheSDKs(t *testing.T) {
	o := newOffline(t)
	shapes := []types.Transaction{o.feeTxn(t, 2000), o.axfer(t, 1000, 0), o.selfPay(t, o.payer, 1000), o.axfer(t, 7, 3000)}
	for _, n := range []int{1, 2, 3, MaxGroupSize} {
		txns := make([]types.Transaction, n)
		for i := range txns {
			txns[i] = shapes[i%len(shapes)]
		}
		want, err := crypto.ComputeGroupID(txns)
		if err != nil {
			t.Fatal(err)
		}
		if got := groupID(txns); got != want {
			t.Fatalf("group of %d: %x, the SDK's %x", n, got, want)
		}
	}
	big := o.selfPay(t, o.payer, 1000)
	big.Note = bytes.Repeat([]byte{0xa3}, 1024) // grows the buffer; looks like msgpack
	if got, want := txnMessage(&big), append([]byte("TX"), msgpack.Encode(big)...); !bytes.Equal(got, want) {
		t.Fatal("the message of a transaction with a 1 KiB note is not the codec's")
	}
}

// TestDecodeMemberForms: a member decodes as what it is, whichever form it
// looks like first: a signed transaction (also one whose keys are out of
// order), a bare one, and neither for a map mixing both forms' keys.
func TestDecodeMemberForms(t *testing.T) {
	o := newOffline(t)
	txn := o.axfer(t, 1000, 1000)
	stx := types.SignedTxn{Txn: txn}
	copy(stx.Sig[:], ed25519.Sign(o.payer.PrivateKey, txnMessage(&txn)))
	signed, bare := msgpack.Encode(stx), msgpack.Encode(txn)
	// The same SignedTxn with "txn" before "sig": not canonical, still one.
	reordered := append([]byte{0x82, 0xa3, 't', 'x', 'n'}, bare...)
	reordered = append(reordered, 0xa3, 's', 'i', 'g', 0xc4, 64)
	reordered = append(reordered, stx.Sig[:]...)
	for _, c := range []struct {
		name   string
		raw    []byte
		signed bool
	}{{"signed", signed, true}, {"bare", bare, false}, {"reordered", reordered, true}} {
		m, err := DecodeMember(base64.StdEncoding.EncodeToString(c.raw))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if m.Signed() != c.signed || m.Txn.Txn.Type != txn.Type || m.Txn.Txn.Sender != txn.Sender || m.Txn.Txn.AssetAmount != 1000 {
			t.Fatalf("%s: decoded %+v", c.name, m.Txn)
		}
	}
	// A bare transaction's keys with a signature's: neither form.
	mixed := append([]byte{0x80 | (bare[0] & 0x0f) + 1}, bare[1:]...)
	mixed = append(mixed, 0xa3, 's', 'i', 'g', 0xc4, 64)
	mixed = append(mixed, stx.Sig[:]...)
	if _, err := DecodeMember(base64.StdEncoding.EncodeToString(mixed)); ReasonOf(err) != ReasonInvalidTransaction {
		t.Fatalf("a member mixing both forms: %v", err)
	}
}

// otherSigner is a Signer that is not a KeySigner: it only has Sign.
type otherSigner struct{ k KeySigner }

func (s otherSigner) Address() types.Address { return s.k.Address() }
func (s otherSigner) Sign(ctx context.Context, txn types.Transaction) (types.SignedTxn, error) {
	return s.k.Sign(ctx, txn)
}

// TestSignedGroupWire: the group ready for the node is encoded as the
// codec encodes its members, whether the fee payer's key signs a given
// message or another Signer signs the transaction.
func TestSignedGroupWire(t *testing.T) {
	o := newOffline(t)
	p := o.build(t, o.req)
	key := AccountSigner(o.feePayer)
	for _, s := range []Signer{key, otherSigner{key}} {
		cfg := o.cfg
		cfg.FeePayers = []Signer{s}
		v, err := Verify(context.Background(), cfg, o.req, p)
		if err != nil {
			t.Fatal(err)
		}
		g, err := signedGroup(context.Background(), v, cfg.FeePayers)
		if err != nil {
			t.Fatal(err)
		}
		for i, stx := range g.txns {
			if !bytes.Equal(g.wire[i], msgpack.Encode(stx)) {
				t.Fatalf("%T: member %d's wire is not its encoding", s, i)
			}
		}
		if g.txns[0].Sig == (types.Signature{}) {
			t.Fatalf("%T: the fee payer's member is unsigned", s)
		}
	}
}

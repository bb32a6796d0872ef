package devnet

import (
	"crypto/ed25519"
	"crypto/sha512"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/types"
)

// signed returns a message, its hash and a's signature of it.
func signed(a crypto.Account, msg string) ([]byte, [32]byte, types.Signature) {
	raw := []byte(msg)
	var sig types.Signature
	copy(sig[:], ed25519.Sign(a.PrivateKey, raw))
	return raw, sha512.Sum512_256(raw), sig
}

func TestVerifiedCacheAnswersAsVerify(t *testing.T) {
	c := newVerifiedCache()
	a, b := crypto.GenerateAccount(), crypto.GenerateAccount()
	raw, sum, sig := signed(a, "TX one")
	for i := range 2 { // a miss, then a hit
		if !c.verify(a.Address, sum, raw, sig) {
			t.Fatalf("round %d: a good signature was refused", i)
		}
	}
	if len(c.sigs.seen) != 1 {
		t.Fatalf("%d entries, want 1", len(c.sigs.seen))
	}
	// The cached entry vouches for nothing else: another key, another
	// signature of the same message, a tampered signature.
	if c.verify(b.Address, sum, raw, sig) {
		t.Fatal("a signature verified for the wrong key")
	}
	_, _, other := signed(b, "TX one")
	if c.verify(a.Address, sum, raw, other) {
		t.Fatal("b's signature verified as a's")
	}
	bad := sig
	bad[0] ^= 1
	if c.verify(a.Address, sum, raw, bad) {
		t.Fatal("a tampered signature verified")
	}
	if len(c.sigs.seen) != 1 {
		t.Fatalf("failures were cached: %d entries", len(c.sigs.seen))
	}
}

func TestVerifiedCacheIsBounded(t *testing.T) {
	c := newVerifiedCache()
	a := crypto.GenerateAccount()
	first, firstSum, firstSig := signed(a, "TX 0")
	for i := range verifiedCacheSize + 10 {
		raw, sum, sig := signed(a, fmt.Sprintf("TX %d", i))
		if !c.verify(a.Address, sum, raw, sig) {
			t.Fatalf("signature %d refused", i)
		}
	}
	if len(c.sigs.seen) != verifiedCacheSize || len(c.sigs.ring) != verifiedCacheSize {
		t.Fatalf("%d entries, ring %d, want %d", len(c.sigs.seen), len(c.sigs.ring), verifiedCacheSize)
	}
	if _, ok := c.sigs.seen[sigKey{txid: firstSum, sig: firstSig, pub: a.Address}]; ok {
		t.Fatal("the oldest entry was kept")
	}
	// Evicted, it is verified again, and still passes.
	if !c.verify(a.Address, firstSum, first, firstSig) {
		t.Fatal("an evicted good signature was refused")
	}
}

// A group submitted after its simulation is checked from the cache, and a
// tampered copy of it (another group id, or a member re-signed with the
// wrong key) is still refused.
func TestVerifiedCacheGroups(t *testing.T) {
	l := newLedger(types.Digest(sha512.Sum512_256([]byte("g"))), "g", 1)
	a, b := crypto.GenerateAccount(), crypto.GenerateAccount()
	mk := func(note string) types.Transaction {
		return types.Transaction{Type: types.PaymentTx, Header: types.Header{
			Sender: a.Address, Fee: MinTxnFee, FirstValid: 1, LastValid: 100, GenesisID: "g", GenesisHash: l.genesisHash, Note: []byte(note),
		}, PaymentTxnFields: types.PaymentTxnFields{Receiver: b.Address}}
	}
	txns := []types.Transaction{mk("1"), mk("2")}
	gid, err := crypto.ComputeGroupID(txns)
	if err != nil {
		t.Fatal(err)
	}
	group := make([]types.SignedTxn, 2)
	for i := range txns {
		txns[i].Group = gid
		group[i] = types.SignedTxn{Txn: txns[i], Sig: signTxn(a.PrivateKey, txns[i])}
	}
	for i := range 2 {
		if _, at, err := prepare(group, l.genesisHash, "g", false, l.verified); err != nil {
			t.Fatalf("round %d: member %d: %v", i, at, err)
		}
	}
	if len(l.verified.groups.seen) != 1 || len(l.verified.sigs.seen) != 2 {
		t.Fatalf("cached %d groups, %d signatures", len(l.verified.groups.seen), len(l.verified.sigs.seen))
	}
	// The same members under another group id, each signed again.
	bad := make([]types.SignedTxn, 2)
	for i := range txns {
		txn := txns[i]
		txn.Group[0] ^= 1
		bad[i] = types.SignedTxn{Txn: txn, Sig: signTxn(a.PrivateKey, txn)}
	}
	if _, _, err := prepare(bad, l.genesisHash, "g", false, l.verified); err == nil || !strings.Contains(err.Error(), "incomplete group") {
		t.Fatalf("a wrong group id: %v", err)
	}
	// The cached group with one member signed by another key.
	forged := slices.Clone(group)
	forged[1].Sig = signTxn(b.PrivateKey, txns[1])
	if _, at, err := prepare(forged, l.genesisHash, "g", false, l.verified); err == nil || at != 1 {
		t.Fatalf("a forged signature: member %d, %v", at, err)
	}
}

package devnet

import (
	"crypto/ed25519"
	"crypto/sha512"
	"fmt"
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

func TestSigCacheAnswersAsVerify(t *testing.T) {
	c := newSigCache()
	a, b := crypto.GenerateAccount(), crypto.GenerateAccount()
	raw, sum, sig := signed(a, "TX one")
	for i := range 2 { // a miss, then a hit
		if !c.verify(a.Address, sum, raw, sig) {
			t.Fatalf("round %d: a good signature was refused", i)
		}
	}
	if len(c.seen) != 1 {
		t.Fatalf("%d entries, want 1", len(c.seen))
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
	if len(c.seen) != 1 {
		t.Fatalf("failures were cached: %d entries", len(c.seen))
	}
}

func TestSigCacheIsBounded(t *testing.T) {
	c := newSigCache()
	a := crypto.GenerateAccount()
	first, firstSum, firstSig := signed(a, "TX 0")
	for i := range sigCacheSize + 10 {
		raw, sum, sig := signed(a, fmt.Sprintf("TX %d", i))
		if !c.verify(a.Address, sum, raw, sig) {
			t.Fatalf("signature %d refused", i)
		}
	}
	if len(c.seen) != sigCacheSize || len(c.ring) != sigCacheSize {
		t.Fatalf("%d entries, ring %d, want %d", len(c.seen), len(c.ring), sigCacheSize)
	}
	if _, ok := c.seen[sigKey{txid: firstSum, sig: firstSig, pub: a.Address}]; ok {
		t.Fatal("the oldest entry was kept")
	}
	// Evicted, it is verified again, and still passes.
	if !c.verify(a.Address, firstSum, first, firstSig) {
		t.Fatal("an evicted good signature was refused")
	}
}

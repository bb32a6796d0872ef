package devnet

import (
	"crypto/ed25519"
	"sync"

	"github.com/algorand/go-algorand-sdk/v2/types"
)

// sigCacheSize bounds the remembered signature verifications.
const sigCacheSize = 8192

// sigKey names one verification: the transaction's id digest (the hash of
// the signed bytes), the signature and the public key.
type sigKey struct {
	txid [32]byte
	sig  types.Signature
	pub  types.Address
}

// sigCache remembers the signatures that verified, as algod's verified
// transaction cache does, so that a group simulated and then submitted has
// each signature checked once. Verification is a pure function of the key,
// so a hit answers exactly what ed25519.Verify would. Safe for concurrent
// use; past sigCacheSize entries the oldest are forgotten.
type sigCache struct {
	mu   sync.Mutex
	seen map[sigKey]struct{}
	ring []sigKey // insertion order; next is the slot to overwrite
	next int
}

func newSigCache() *sigCache {
	return &sigCache{seen: make(map[sigKey]struct{}, sigCacheSize), ring: make([]sigKey, 0, sigCacheSize)}
}

// verify reports whether sig is pub's ed25519 signature of msg, whose
// SHA-512/256 is txid, answering from the cache when it can.
func (c *sigCache) verify(pub types.Address, txid [32]byte, msg []byte, sig types.Signature) bool {
	k := sigKey{txid: txid, sig: sig, pub: pub}
	c.mu.Lock()
	_, hit := c.seen[k]
	c.mu.Unlock()
	if hit {
		return true
	}
	if !ed25519.Verify(ed25519.PublicKey(pub[:]), msg, sig[:]) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.seen[k]; dup {
		return true
	}
	if len(c.ring) < sigCacheSize {
		c.ring = append(c.ring, k)
	} else {
		delete(c.seen, c.ring[c.next])
		c.ring[c.next] = k
		c.next = (c.next + 1) % sigCacheSize
	}
	c.seen[k] = struct{}{}
	return true
}

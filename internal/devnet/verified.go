package devnet

import (
	"crypto/ed25519"
	"crypto/sha512"
	"sync"

	"github.com/algorand/go-algorand-sdk/v2/types"
)

// verifiedCacheSize bounds each cache of verifications.
const verifiedCacheSize = 8192

// sigKey names one signature verification: the transaction's id digest
// (the hash of the signed bytes), the signature and the public key.
type sigKey struct {
	txid [32]byte
	sig  types.Signature
	pub  types.Address
}

// verifiedSet is a bounded set of keys whose check passed; past
// verifiedCacheSize keys the oldest are forgotten. Safe for concurrent use.
type verifiedSet[K comparable] struct {
	mu   sync.Mutex
	seen map[K]struct{}
	ring []K // insertion order; next is the slot to overwrite
	next int
}

func newVerifiedSet[K comparable]() *verifiedSet[K] {
	return &verifiedSet[K]{seen: make(map[K]struct{}, verifiedCacheSize), ring: make([]K, 0, verifiedCacheSize)}
}

// has reports whether k passed.
func (s *verifiedSet[K]) has(k K) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.seen[k]
	return ok
}

// add records that k passed.
func (s *verifiedSet[K]) add(k K) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.seen[k]; dup {
		return
	}
	if len(s.ring) < verifiedCacheSize {
		s.ring = append(s.ring, k)
	} else {
		delete(s.seen, s.ring[s.next])
		s.ring[s.next] = k
		s.next = (s.next + 1) % verifiedCacheSize
	}
	s.seen[k] = struct{}{}
}

// verifiedCache remembers the stateless checks that passed, as algod's
// verified transaction cache does, so that a group simulated and then
// submitted has each signature and its group id checked once. Both checks
// are pure functions of their keys (a signature of the bytes a txid hashes;
// a group id of the members the txids name), so a hit answers exactly what
// the check would.
type verifiedCache struct {
	sigs   *verifiedSet[sigKey]
	groups *verifiedSet[[32]byte]
}

func newVerifiedCache() *verifiedCache {
	return &verifiedCache{sigs: newVerifiedSet[sigKey](), groups: newVerifiedSet[[32]byte]()}
}

// verify reports whether sig is pub's ed25519 signature of msg, whose
// SHA-512/256 is txid, answering from the cache when it can.
func (c *verifiedCache) verify(pub types.Address, txid [32]byte, msg []byte, sig types.Signature) bool {
	k := sigKey{txid: txid, sig: sig, pub: pub}
	if c.sigs.has(k) {
		return true
	}
	if !ed25519.Verify(ed25519.PublicKey(pub[:]), msg, sig[:]) {
		return false
	}
	c.sigs.add(k)
	return true
}

// groupKey names a group by its members' txid digests, which commit to
// every field of every member, the group id included.
func groupKey(txids [][32]byte) [32]byte {
	h := sha512.New512_256()
	for _, id := range txids {
		h.Write(id[:])
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

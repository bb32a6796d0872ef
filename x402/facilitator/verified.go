package facilitator

import (
	"sync"
	"time"

	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// Bounds of the verification cache.
const (
	// verifiedTTL is how long a verification stays reusable by Settle. It
	// covers the run between a middleware's verify and settle; a longer run
	// is verified again.
	verifiedTTL = time.Minute
	// verifiedMax bounds the cached verifications; the oldest goes first.
	verifiedMax = 4096
)

// verifiedCache remembers the payments Verify accepted, so that Settle of
// the same payment against the same requirement need not verify it again
// (nor sign the fee payer member again). Entries are keyed by the scheme
// payload exactly as the client encoded it (JSON), which determines the
// group and so the transaction id: Settle finds the payload and its lock
// key there without parsing or decoding anything. Reusing a verification
// is safe: the node validates the group again on submit, and the in-flight
// lock and the settled record still stop replays. Safe for concurrent use.
type verifiedCache struct {
	mu      sync.Mutex
	entries map[string]verifiedEntry
	order   []string // keys, oldest first; may name taken keys
}

// verifiedEntry is one accepted payment: exactly what was verified, and the
// result.
type verifiedEntry struct {
	req     avm.Requirement
	payload *avm.Decoded
	v       *avm.Verified
	expires time.Time
}

func newVerifiedCache() *verifiedCache {
	return &verifiedCache{entries: make(map[string]verifiedEntry)}
}

// put remembers a verification of payload, whose JSON is raw, against
// req. Past verifiedMax entries the oldest are forgotten.
func (c *verifiedCache) put(raw []byte, req avm.Requirement, payload *avm.Decoded, v *avm.Verified, now time.Time) {
	key := string(raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok {
		c.order = append(c.order, key)
	}
	c.entries[key] = verifiedEntry{req: req, payload: payload, v: v, expires: now.Add(verifiedTTL)}
	for len(c.entries) > verifiedMax {
		delete(c.entries, c.order[0])
		c.order = c.order[1:]
	}
	if len(c.order) > 2*verifiedMax {
		// Most keys were taken: keep the live ones, in order.
		live := make([]string, 0, len(c.entries))
		seen := make(map[string]bool, len(c.entries))
		for _, k := range c.order {
			e, ok := c.entries[k]
			switch {
			case !ok || seen[k]:
			case !e.expires.After(now):
				delete(c.entries, k)
			default:
				seen[k] = true
				live = append(live, k)
			}
		}
		c.order = live
	}
}

// lookup returns the decoded payload of the scheme payload JSON raw and
// its payment transaction id, when a verification of raw is cached.
func (c *verifiedCache) lookup(raw []byte) (*avm.Decoded, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[string(raw)]
	if !ok {
		return nil, "", false
	}
	return e.payload, e.v.PaymentTxID, true
}

// take returns and forgets the verification of the scheme payload JSON
// raw, when there is one against the very same requirement that has not
// expired.
func (c *verifiedCache) take(raw []byte, req avm.Requirement, now time.Time) *avm.Verified {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[string(raw)]
	if !ok {
		return nil
	}
	delete(c.entries, string(raw))
	if !e.expires.After(now) || e.req != req {
		return nil
	}
	return e.v
}

// len returns the number of cached verifications.
func (c *verifiedCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

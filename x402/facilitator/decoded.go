package facilitator

import (
	"sync"
	"time"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// Bounds of the cache of decoded payments.
const (
	// decodedTTL is how long a payment decoded by PaymentKey waits for its
	// Verify; a server verifies right after taking the key.
	decodedTTL = 10 * time.Second
	// decodedMax bounds the decoded payments kept; past it they are all
	// dropped (and decoded again when verified).
	decodedMax = 1024
)

// decodedCache hands a payment that PaymentKey decoded to the Verify that
// follows, so that the payload is parsed and its group decoded once per
// request. Entries are keyed by the scheme payload's JSON, which
// determines the decode; each is taken once. Safe for concurrent use.
type decodedCache struct {
	mu      sync.Mutex
	entries map[string]decodedEntry
}

type decodedEntry struct {
	d       *avm.Decoded
	expires time.Time
}

func newDecodedCache() *decodedCache {
	return &decodedCache{entries: make(map[string]decodedEntry)}
}

// put remembers the decode of the scheme payload JSON raw.
func (c *decodedCache) put(raw []byte, d *avm.Decoded, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= decodedMax {
		for k, e := range c.entries {
			if !e.expires.After(now) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= decodedMax {
			clear(c.entries)
		}
	}
	c.entries[string(raw)] = decodedEntry{d: d, expires: now.Add(decodedTTL)}
}

// take returns and forgets the decode of raw, when one is kept and fresh.
func (c *decodedCache) take(raw []byte, now time.Time) *avm.Decoded {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[string(raw)]
	if !ok {
		return nil
	}
	delete(c.entries, string(raw))
	if !e.expires.After(now) {
		return nil
	}
	return e.d
}

// PaymentKey returns the payment's transaction id (the id of
// paymentGroup[paymentIndex]), under which its settlement is locked and
// recorded, as avm's ExactPayload.PaymentTxID computes it. The decoded
// payment is kept briefly for the Verify of the same payment, which then
// neither parses nor decodes it again. A malformed payload is an *avm.Error.
func (b *Builtin) PaymentKey(p x402.Payment) (string, error) {
	raw := p.SchemePayload()
	payload, err := avm.ParsePayload(raw)
	if err != nil {
		return "", err
	}
	d, err := avm.Decode(payload)
	if err != nil {
		return "", err
	}
	b.decoded.put(raw, d, time.Now())
	return d.PaymentTxID(), nil
}

// decode returns the decoded payment of raw: the one PaymentKey kept, or a
// fresh parse and decode.
func (b *Builtin) decode(raw []byte) (*avm.Decoded, error) {
	if d := b.decoded.take(raw, time.Now()); d != nil {
		return d, nil
	}
	payload, err := avm.ParsePayload(raw)
	if err != nil {
		return nil, err
	}
	return avm.Decode(payload)
}

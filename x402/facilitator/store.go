package facilitator

import (
	"container/heap"
	"context"
	"errors"
	"sync"
)

// ErrAlreadySettled is returned by SettledStore.MarkSettled for a key that is
// recorded already.
var ErrAlreadySettled = errors.New("facilitator: payment already settled")

// SettledStore records which payments have been settled, so that one can
// never be settled twice. Keys are payment transaction ids (which commit to
// the group id). Implementations must make MarkSettled atomic: of two calls
// with one key, exactly one succeeds. A shared implementation (e.g. on Caddy
// storage) lets several servers share the record.
type SettledStore interface {
	// IsSettled reports whether key was recorded.
	IsSettled(ctx context.Context, key string) (bool, error)
	// MarkSettled records key; lastValid is the round after which the
	// payment can no longer be submitted. It returns ErrAlreadySettled if
	// key was recorded already.
	MarkSettled(ctx context.Context, key string, lastValid uint64) error
	// Prune forgets records whose lastValid is before round: those payments
	// are rejected as expired anyway.
	Prune(ctx context.Context, round uint64) error
}

// MemoryStore is an in-process SettledStore.
type MemoryStore struct {
	mu      sync.Mutex
	settled map[string]uint64
	// expiry orders the records by last valid round, so that Prune costs
	// only the records it drops.
	expiry expiryHeap
}

var _ SettledStore = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{settled: make(map[string]uint64)}
}

// IsSettled implements SettledStore.
func (m *MemoryStore) IsSettled(_ context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.settled[key]
	return ok, nil
}

// MarkSettled implements SettledStore.
func (m *MemoryStore) MarkSettled(_ context.Context, key string, lastValid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.settled[key]; ok {
		return ErrAlreadySettled
	}
	m.settled[key] = lastValid
	heap.Push(&m.expiry, expiring{key: key, lastValid: lastValid})
	return nil
}

// Prune implements SettledStore.
func (m *MemoryStore) Prune(_ context.Context, round uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.expiry) > 0 && m.expiry[0].lastValid < round {
		e := heap.Pop(&m.expiry).(expiring)
		delete(m.settled, e.key)
	}
	return nil
}

// Len returns the number of records.
func (m *MemoryStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.settled)
}

// expiring is a record and the round after which it can go.
type expiring struct {
	key       string
	lastValid uint64
}

// expiryHeap is a min-heap of records by last valid round.
type expiryHeap []expiring

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].lastValid < h[j].lastValid }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }

// Push implements heap.Interface.
func (h *expiryHeap) Push(x any) { *h = append(*h, x.(expiring)) }

// Pop implements heap.Interface.
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

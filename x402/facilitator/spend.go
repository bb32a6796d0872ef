package facilitator

import (
	"sync"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/types"
)

// spendableTTL is how long a payer's balance read from algod answers
// Spendable, less what this facilitator submitted for the payer since.
// Within it, only the payer's spending elsewhere goes unseen, as it does
// between any read and the settlement it guards.
const spendableTTL = time.Second

// maxSpendStates bounds the holdings tracked; past it the idle ones go.
const maxSpendStates = 4096

// spendKey names a payer's holding of one asset.
type spendKey struct {
	payer types.Address
	asset uint64
}

// spendState is what the facilitator knows of one holding: the amounts of
// its payments submitted and of those whose settlement finished (both
// summed since the state was made), and the last balance read.
type spendState struct {
	submitted, finished uint64

	read    bool
	readAt  time.Time
	balance uint64 // spendable when read
	// submittedAt and finishedAt are submitted and finished when the read
	// started.
	submittedAt, finishedAt uint64
	reads                   int // reads started, so that only the latest is kept
}

// spendable is the last balance read less what may have left the holding
// since, as far as this facilitator knows: every payment submitted after
// the read started, and every one pending (submitted, not yet finished)
// when it started that finished since, since the read may not include it.
// At the read itself it is the balance read.
func (s *spendState) spendable() uint64 {
	pendingThen := s.submittedAt - s.finishedAt
	less := (s.submitted - s.submittedAt) + min(pendingThen, s.finished-s.finishedAt)
	if less >= s.balance {
		return 0
	}
	return s.balance - less
}

// spendTracker answers Spendable from a balance read younger than ttl,
// corrected by spendState.spendable: it never answers more than a read
// would, but for the payer's own spending elsewhere within ttl. Safe for
// concurrent use.
type spendTracker struct {
	ttl    time.Duration
	mu     sync.Mutex
	states map[spendKey]*spendState
}

func newSpendTracker(ttl time.Duration) *spendTracker {
	return &spendTracker{ttl: ttl, states: make(map[spendKey]*spendState)}
}

// state returns the state of k, made when missing. t.mu must be held.
func (t *spendTracker) state(k spendKey, now time.Time) *spendState {
	s := t.states[k]
	if s == nil {
		if len(t.states) >= maxSpendStates {
			for key, st := range t.states {
				if st.submitted == st.finished && (!st.read || now.Sub(st.readAt) >= t.ttl) {
					delete(t.states, key)
				}
			}
		}
		s = &spendState{}
		t.states[k] = s
	}
	return s
}

// cached returns the spendable amount of k from a read younger than ttl.
func (t *spendTracker) cached(k spendKey, now time.Time) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.states[k]
	if s == nil || !s.read || now.Sub(s.readAt) >= t.ttl {
		return 0, false
	}
	return s.spendable(), true
}

// startRead notes that a balance read of k starts now; finish records its
// answer (the latest read started wins) and returns it.
func (t *spendTracker) startRead(k spendKey, now time.Time) (finish func(balance uint64) uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.state(k, now)
	s.reads++
	ticket, submittedAt, finishedAt := s.reads, s.submitted, s.finished
	return func(balance uint64) uint64 {
		t.mu.Lock()
		defer t.mu.Unlock()
		fresh := spendState{submitted: s.submitted, finished: s.finished, read: true, readAt: now, balance: balance,
			submittedAt: submittedAt, finishedAt: finishedAt, reads: s.reads}
		if t.states[k] == s && ticket == s.reads {
			*s = fresh
		}
		return fresh.spendable()
	}
}

// submitting notes a payment of amount from k about to be submitted; done
// must be called once its settlement has finished, whatever its outcome.
func (t *spendTracker) submitting(k spendKey, amount uint64) (done func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.state(k, time.Now())
	s.submitted += amount
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		s.finished += amount
	}
}

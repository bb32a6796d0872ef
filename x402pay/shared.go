package x402pay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// Keys of the shared payment records in Caddy storage.
const (
	// sharedLockPrefix names a payment's lock while a request uses it.
	sharedLockPrefix = "x402pay/payments/"
	// sharedSpentPrefix names a payment's record once it bought its answer.
	sharedSpentPrefix = "x402pay/spent/"
	// sharedLockWait is how long a claim waits for a storage without
	// TryLock to take a lock: a payment locked elsewhere is answered as a
	// duplicate, not waited for.
	sharedLockWait = 250 * time.Millisecond
	// sharedIOTimeout bounds writing a spent record and unlocking.
	sharedIOTimeout = 5 * time.Second
	// sharedSweepEvery is how often a node looks for expired spent records.
	sharedSweepEvery = 30 * time.Minute
)

// Why a payment is refused; the same words whether the other use is in
// this process or on another node.
const (
	reasonInUse       = "the payment is being used by another request"
	reasonSettled     = "the payment was settled already"
	reasonUsedCharged = "the payment was used already (it bought an answer that was not charged)"
)

// sharedPayments keeps payments' locks and spent records in Caddy storage,
// so that every node on the same storage sells one payment once.
type sharedPayments struct {
	storage certmagic.Storage
	// ctx ends with the configuration; sweeps run under it.
	ctx context.Context
	// lastSweep is when (unix nanoseconds) the last sweep started.
	lastSweep atomic.Int64
}

// spentRecord is what storage holds for a spent payment.
type spentRecord struct {
	At      time.Time `json:"at"`
	Settled bool      `json:"settled"`
}

// newSharedPayments keeps payment records in storage. The first sweep of
// expired records waits sharedSweepEvery.
func newSharedPayments(ctx context.Context, storage certmagic.Storage) *sharedPayments {
	s := &sharedPayments{storage: storage, ctx: ctx}
	s.lastSweep.Store(time.Now().UnixNano())
	return s
}

// configStorage returns the storage of the configuration ctx belongs to,
// or nil for a context made outside a running configuration (whose
// Storage method panics); then payments are kept in this process only.
func configStorage(ctx caddy.Context) (st certmagic.Storage) {
	defer func() {
		if recover() != nil {
			st = nil
		}
	}()
	return ctx.Storage()
}

// checkPaymentToken accepts a payment key fit to be part of a storage key:
// a plain token of letters, digits, '-' and '_' (a transaction id is
// base32).
func checkPaymentToken(key string) error {
	if key == "" || len(key) > 128 {
		return fmt.Errorf("payment key of %d bytes: want 1-128", len(key))
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("payment key has a byte %q that is not a letter, digit, '-' or '_'", c)
		}
	}
	return nil
}

// spentReason is why a spent payment buys nothing more.
func spentReason(settled bool) string {
	if settled {
		return reasonSettled
	}
	return reasonUsedCharged
}

// claim locks a payment in storage. It returns why not when the payment is
// in use on any node or spent, and otherwise release, which must be
// called once the request is done: used records the payment as spent
// (settled or not) before it is unlocked.
func (s *sharedPayments) claim(ctx context.Context, key string) (release func(used, settled bool) error, reason string, err error) {
	if err := checkPaymentToken(key); err != nil {
		return nil, "", err
	}
	lockName := sharedLockPrefix + key
	got, err := s.tryLock(ctx, lockName)
	if err != nil {
		return nil, "", fmt.Errorf("locking the payment in storage: %w", err)
	}
	if !got {
		return nil, reasonInUse, nil
	}
	unlock := func() error {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedIOTimeout)
		defer cancel()
		if err := s.storage.Unlock(uctx, lockName); err != nil {
			return fmt.Errorf("unlocking the payment in storage: %w", err)
		}
		return nil
	}
	spentKey := sharedSpentPrefix + key
	data, err := s.storage.Load(ctx, spentKey)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, "", errors.Join(fmt.Errorf("reading the payment's record in storage: %w", err), unlock())
	default:
		var rec spentRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			// An unreadable record still says the payment was spent.
			return nil, reasonUsedCharged, unlock()
		}
		if time.Since(rec.At) <= settledTTL {
			return nil, spentReason(rec.Settled), unlock()
		}
		// Expired: the network refuses the payment by now; forget it.
		if err := s.storage.Delete(ctx, spentKey); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, "", errors.Join(fmt.Errorf("forgetting an expired payment record: %w", err), unlock())
		}
	}
	var once atomic.Bool
	release = func(used, settled bool) error {
		if !once.CompareAndSwap(false, true) {
			return nil
		}
		var errStore error
		if used {
			errStore = s.markSpent(ctx, spentKey, settled)
		}
		s.maybeSweep()
		return errors.Join(errStore, unlock())
	}
	return release, "", nil
}

// markSpent writes a payment's spent record.
func (s *sharedPayments) markSpent(ctx context.Context, spentKey string, settled bool) error {
	data, err := json.Marshal(spentRecord{At: time.Now().UTC(), Settled: settled})
	if err != nil {
		return fmt.Errorf("encoding the payment's record: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedIOTimeout)
	defer cancel()
	if err := s.storage.Store(sctx, spentKey, data); err != nil {
		return fmt.Errorf("recording the payment as spent in storage: %w", err)
	}
	return nil
}

// tryLock takes the lock without waiting for another holder: at once with
// a storage that can try, else within sharedLockWait. It reports whether
// the lock was taken.
func (s *sharedPayments) tryLock(ctx context.Context, name string) (bool, error) {
	if tl, ok := s.storage.(certmagic.TryLocker); ok {
		return tl.TryLock(ctx, name)
	}
	lctx, cancel := context.WithTimeout(ctx, sharedLockWait)
	defer cancel()
	err := s.storage.Lock(lctx, name)
	switch {
	case err == nil:
		return true, nil
	case ctx.Err() == nil && errors.Is(lctx.Err(), context.DeadlineExceeded):
		return false, nil
	}
	return false, err
}

// maybeSweep starts a sweep of expired spent records when none ran for
// sharedSweepEvery.
func (s *sharedPayments) maybeSweep() {
	last := s.lastSweep.Load()
	now := time.Now().UnixNano()
	if time.Duration(now-last) < sharedSweepEvery || !s.lastSweep.CompareAndSwap(last, now) {
		return
	}
	go func() { _, _ = s.sweep(s.ctx) }()
}

// sweep deletes the spent records older than settledTTL and returns how
// many it deleted.
func (s *sharedPayments) sweep(ctx context.Context) (int, error) {
	keys, err := s.storage.List(ctx, path.Clean(sharedSpentPrefix), false)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("listing payment records: %w", err)
	}
	deleted := 0
	for _, k := range keys {
		if ctx.Err() != nil {
			return deleted, ctx.Err()
		}
		info, err := s.storage.Stat(ctx, k)
		if err != nil || time.Since(info.Modified) <= settledTTL {
			continue
		}
		if err := s.storage.Delete(ctx, k); err == nil {
			deleted++
		}
	}
	return deleted, nil
}

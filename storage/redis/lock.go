package redisstorage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// renewScript extends a lock's TTL if the caller still holds it.
// KEYS[1] lock key; ARGV[1] token, ARGV[2] TTL in ms.
var renewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes a lock only if the caller holds it.
// KEYS[1] lock key; ARGV[1] token.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
`)

// Lock takes the lock for name, waiting (until ctx ends) while another
// holder has it. The lock lives in Redis with a random token and a TTL of
// lock_ttl, renewed every third of it while held: a holder that dies loses
// it within lock_ttl, one that lives keeps it.
func (s *Storage) Lock(ctx context.Context, name string) error {
	wait := 10 * time.Millisecond
	for {
		ok, err := s.TryLock(ctx, name)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		// Poll with jittered backoff, capped well under the TTL.
		d := wait + rand.N(wait)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("redis storage: lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
		if wait < 200*time.Millisecond {
			wait *= 2
		}
	}
}

// TryLock takes the lock for name if it is free, and reports whether it did.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	token, err := randomToken()
	if err != nil {
		return false, err
	}
	ok, err := s.client.SetNX(ctx, s.lockKey(name), token, s.lockTTL).Result()
	if err != nil {
		return false, fmt.Errorf("redis storage: lock %s: %w", name, err)
	}
	if !ok {
		return false, nil
	}
	l := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.held.mu.Lock()
	if old := s.held.locks[name]; old != nil {
		// Only possible if an earlier holder's lock expired unnoticed and
		// was never unlocked; stop renewing the stale token.
		old.halt()
	}
	s.held.locks[name] = l
	s.held.mu.Unlock()
	go s.renew(name, l)
	return true, nil
}

// renew extends the lock's TTL every third of it until stopped. If the lock
// is gone or held by another token, or renewals fail for longer than the
// TTL, it logs at error level: the holder is no longer excluding others.
func (s *Storage) renew(name string, l *heldLock) {
	defer close(l.done)
	every := s.lockTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		n, err := renewScript.Run(ctx, s.client, []string{s.lockKey(name)}, l.token, s.lockTTL.Milliseconds()).Int()
		cancel()
		switch {
		case err != nil:
			s.logger.Warn("could not renew storage lock", zap.String("lock", name), zap.Error(err))
			if time.Since(last) >= s.lockTTL {
				s.logger.Error("storage lock LOST: renewals failed for longer than its TTL; another node may hold it",
					zap.String("lock", name), zap.Duration("ttl", s.lockTTL))
			}
		case n == 0:
			s.logger.Error("storage lock LOST: it expired or was taken while held; another node may hold it",
				zap.String("lock", name), zap.Duration("ttl", s.lockTTL))
			return
		default:
			last = time.Now()
		}
	}
}

// ErrLockNotHeld is returned by Unlock when this process holds no such lock,
// or its lock had expired or been taken before the release.
var ErrLockNotHeld = errors.New("lock not held")

// Unlock releases the lock for name, if this process still holds it (the
// release compares the token and deletes in one script).
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.held.mu.Lock()
	l := s.held.locks[name]
	s.held.mu.Unlock()
	if l == nil {
		return fmt.Errorf("redis storage: unlock %s: %w", name, ErrLockNotHeld)
	}
	l.halt()
	n, err := releaseScript.Run(ctx, s.client, []string{s.lockKey(name)}, l.token).Int()
	s.held.mu.Lock()
	if s.held.locks[name] == l {
		delete(s.held.locks, name)
	}
	closeNow := s.held.closing && len(s.held.locks) == 0
	s.held.mu.Unlock()
	if closeNow {
		defer func() { _ = s.closeClient() }()
	}
	if err != nil {
		return fmt.Errorf("redis storage: unlock %s: %w", name, err)
	}
	if n == 0 {
		s.logger.Error("storage lock was lost before Unlock: it expired or was taken while held", zap.String("lock", name))
		return fmt.Errorf("redis storage: unlock %s: %w (expired or taken)", name, ErrLockNotHeld)
	}
	return nil
}

package store

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Writes that follow the answer.
//
// A run's request waits only for what must be durable before the guest gets
// the job: the claim of its id (the storage's lock and the record). The
// rest (the reaper's index entry, the finished output and record, a
// settled payment's receipt) is written after the answer, in the
// background, in order per id. Until those writes land, this Store's reads
// (Get, Output) see them as if they had, so a client that asks this
// process right after its answer reads what it was told.
//
// What a crash of the process leaves, by when it happens:
//   - before the claim is stored: nothing; the id is free.
//   - after the claim, before the index entry: a running record that
//     reads "lost" once its node stops beating, and is never reaped (the
//     index entry is written within milliseconds of the claim, while the
//     VM starts).
//   - after the answer, before the finished output is stored: the record
//     reads "lost"; the answer the client received is the only copy of
//     the output. A payment receipt not yet stored is lost with it (the
//     payment itself is on the ledger).
//   - after the writes: everything.
//
// Other nodes read from the storage alone: they see a finished run once its
// writes land, milliseconds after the answer.

// laterOpTimeout bounds one background write.
const laterOpTimeout = time.Minute

// pending is what waits to be written for one id, and how reads see it
// meanwhile.
type pending struct {
	ops []func(context.Context) error
	// drained is closed when the last op has run and the entry is gone.
	drained chan struct{}
	// out is the finished output, with when it finished; receipt the
	// settled payment.
	out        *Output
	finishedAt time.Time
	receipt    *Receipt
}

// view is a snapshot of a pending entry for reads.
type view struct {
	out        *Output
	finishedAt time.Time
	receipt    *Receipt
}

// later runs a Store's background writes.
type later struct {
	mu      sync.Mutex
	ids     map[string]*pending
	wg      sync.WaitGroup
	onError func(error)
	// deferred is whether writes follow the answer; when false they are
	// made before the call returns, as any write.
	deferred bool
	// maxPending bounds the ids with writes pending: past it, writes are
	// made before the call returns, so a storage that falls behind slows
	// the runs down instead of filling memory with their outputs.
	maxPending int
}

// defaultMaxPending is later.maxPending's default.
const defaultMaxPending = 256

func newLater() *later { return &later{ids: map[string]*pending{}, maxPending: defaultMaxPending} }

// defers reports whether a write for id now would be left for after the
// answer.
func (l *later) defers(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, queued := l.ids[id]
	return l.deferred && (queued || len(l.ids) < l.maxPending)
}

// write makes op for id: now when writes are not deferred, else after the
// answer (see enqueue).
func (l *later) write(ctx context.Context, id string, op func(context.Context) error, edit func(*pending)) error {
	if !l.defers(id) {
		// Wait for what is queued for id first, so its writes keep their
		// order.
		if err := l.drain(ctx, id); err != nil {
			return err
		}
		return op(ctx)
	}
	l.enqueue(id, op, edit)
	return nil
}

// enqueue adds op to id's queue, starting its writer when idle; edit, when
// set, updates the entry's view under the lock first.
func (l *later) enqueue(id string, op func(context.Context) error, edit func(*pending)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.ids[id]
	start := p == nil
	if start {
		p = &pending{drained: make(chan struct{})}
		l.ids[id] = p
	}
	if edit != nil {
		edit(p)
	}
	p.ops = append(p.ops, op)
	if start {
		l.wg.Add(1)
		go l.run(id, p)
	}
}

// run writes id's queue in order until it is empty.
func (l *later) run(id string, p *pending) {
	defer l.wg.Done()
	for {
		l.mu.Lock()
		if len(p.ops) == 0 {
			delete(l.ids, id)
			l.mu.Unlock()
			close(p.drained)
			return
		}
		op := p.ops[0]
		p.ops = p.ops[1:]
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), laterOpTimeout)
		err := op(ctx)
		cancel()
		if err != nil {
			l.mu.Lock()
			report := l.onError
			l.mu.Unlock()
			if report != nil {
				report(fmt.Errorf("background write for %s: %w", id, err))
			}
		}
	}
}

// view returns what reads must see of id's pending writes.
func (l *later) view(id string) (view, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.ids[id]
	if p == nil {
		return view{}, false
	}
	return view{out: p.out, finishedAt: p.finishedAt, receipt: p.receipt}, true
}

// drain waits until id has nothing pending, or ctx ends.
func (l *later) drain(ctx context.Context, id string) error {
	l.mu.Lock()
	p := l.ids[id]
	l.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for %s's pending writes: %w", id, ctx.Err())
	}
}

// wait waits for every pending write, or until ctx ends.
func (l *later) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for pending writes: %w", ctx.Err())
	}
}

// apply shows the view's pending changes on a record read from storage.
func (v view) apply(rec *Record) {
	if v.out != nil && rec.State == StateRunning {
		fin, exp := v.finishedAt, v.out.ExpiresAt
		rec.State, rec.Reason, rec.Finished, rec.ExpiresAt = StateDone, v.out.Reason, &fin, &exp
	}
	if v.receipt != nil {
		rec.Paid, rec.Receipt = true, v.receipt
	}
}

// DeferWrites makes the writes that can wait (the reaper's index entry of a
// claim, a finished output, a receipt) land after the call returns (see
// later.go). It suits a storage that costs a sync per write and that one
// node reads: other nodes see the writes only once they land.
func (st *Store) DeferWrites(on bool) {
	st.later.mu.Lock()
	defer st.later.mu.Unlock()
	st.later.deferred = on
}

// SetErrorLog sets where background writes report their failures.
func (st *Store) SetErrorLog(fn func(error)) {
	st.later.mu.Lock()
	defer st.later.mu.Unlock()
	st.later.onError = fn
}

// Wait waits until every write this Store has left for after an answer has
// landed, or ctx ends. A server calls it before it stops.
func (st *Store) Wait(ctx context.Context) error { return st.later.wait(ctx) }

package caddylualambda

import (
	"context"
	"time"

	"github.com/lualambda/caddy-lualambda/vmpool"
)

// vmSource is where the handler meets a profile's VM pool: it hands out
// warm VMs and hears how their jobs ended. The shared pools implement it;
// the handler needs nothing else of them, so its routing, auth, quoting
// and refusals can be tested without QEMU.
type vmSource interface {
	// Acquire returns a warm VM, waiting while ctx allows; vmpool.ErrBusy
	// when every VM and queue slot is taken.
	Acquire(ctx context.Context) (guestVM, error)
	// ObserveJob records how a job ended, for the pool's metrics.
	ObserveJob(reason string, took time.Duration)
}

// guestVM is one VM, used for one job or one session.
type guestVM interface {
	Run(ctx context.Context, job vmpool.Job, onOutput vmpool.OutputFunc) (*vmpool.Result, error)
	StartSession(ctx context.Context, job vmpool.Job, rows, cols int, onOutput vmpool.OutputFunc) (*vmpool.Session, error)
	Close() error
}

// Acquire implements vmSource: it waits for the pool to be built, then
// for one of its VMs.
func (sp *sharedPool) Acquire(ctx context.Context) (guestVM, error) {
	pool, err := sp.get(ctx)
	if err != nil {
		return nil, err
	}
	vm, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return vm, nil
}

// ObserveJob implements vmSource; a pool that is not built yet has
// nothing to record.
func (sp *sharedPool) ObserveJob(reason string, took time.Duration) {
	select {
	case <-sp.ready:
		if sp.pool != nil {
			sp.pool.ObserveJob(reason, took)
		}
	default:
	}
}

var _ vmSource = (*sharedPool)(nil)
var _ guestVM = (*vmpool.VM)(nil)

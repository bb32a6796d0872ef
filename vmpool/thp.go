package vmpool

import (
	"sync"

	"golang.org/x/sys/unix"
)

// QEMU asks for transparent huge pages (madvise MADV_HUGEPAGE) on its TCG
// code buffer and on every RAM block it allocates, ROMs included. A VM that
// touches a few KiB of such a region then holds a whole 2 MiB page: with
// TCG's code buffer, an idle warm VM held 14 MiB of huge pages for a few
// MiB of translated code. QEMU has no option against it, but the kernel
// lets a process opt out of huge pages (prctl PR_SET_THP_DISABLE), and the
// setting is inherited by its children and kept across execve. Go cannot
// run code between fork and exec, so the pool sets the flag on itself for
// the instant of starting QEMU.
//
// The flag belongs to the whole host process, so whoever sets it must
// agree with whoever else starts QEMU in the same process: hugePageGuard is
// that agreement, and the one piece of package state.
var hugePageGuard thpGuard

// thpGuard counts QEMU starts in progress and keeps the process's huge
// pages off while any is, restoring the setting found before the first.
type thpGuard struct {
	mu sync.Mutex
	// starting is how many QEMU starts are in progress.
	starting int
	// wasOff says the process had huge pages off already, so the guard
	// must leave them off.
	wasOff bool
}

// without runs start (which forks and execs QEMU) with transparent huge
// pages disabled for the process, so that the child inherits the setting.
// Failing to change the setting only costs memory, so it is not an error.
func (g *thpGuard) without(start func() error) error {
	g.mu.Lock()
	if g.starting == 0 {
		off, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0)
		g.wasOff = err == nil && off == 1
		if !g.wasOff {
			_ = unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0)
		}
	}
	g.starting++
	g.mu.Unlock()

	// exec.Cmd.Start returns once the child has exec'd, so the child has
	// its own copy of the flag by the time the guard restores the parent's.
	err := start()

	g.mu.Lock()
	g.starting--
	if g.starting == 0 && !g.wasOff {
		_ = unix.Prctl(unix.PR_SET_THP_DISABLE, 0, 0, 0, 0)
	}
	g.mu.Unlock()
	return err
}

package vmpool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// ErrBusy is returned by Acquire when the pool is at its cap on live VMs
// and its queue of waiting requests is full. HTTP handlers answer it with
// 503 and a Retry-After header.
var ErrBusy = errors.New("no VM available: the pool is at capacity")

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("vm pool closed")

// LiveLimit caps the number of live VMs (booting, ready or running) across
// every pool that shares it.
type LiveLimit struct{ slots chan struct{} }

// NewLiveLimit allows n live VMs at once.
func NewLiveLimit(n int) *LiveLimit { return &LiveLimit{slots: make(chan struct{}, n)} }

// acquire takes a slot, waiting until one is free or ctx ends.
func (l *LiveLimit) acquire(ctx context.Context) error {
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *LiveLimit) release() { <-l.slots }

// InUse is the number of live VMs.
func (l *LiveLimit) InUse() int { return len(l.slots) }

// Cap is the limit.
func (l *LiveLimit) Cap() int { return cap(l.slots) }

// Config configures a Pool.
type Config struct {
	// Name labels the pool in logs and metrics, e.g. the profile's name.
	Name string
	// Machine is the shape and image of every VM.
	Machine Machine
	// Warm is how many ready VMs the pool keeps. 0 disables the pool: each
	// Acquire boots a VM on demand.
	Warm int
	// Live caps live VMs, shared with other pools; nil makes a private cap
	// of Warm plus MaxBoots.
	Live *LiveLimit
	// MaxBoots bounds concurrent boots and restores of this pool.
	MaxBoots int
	// MaxWaiters bounds the Acquire calls waiting for a VM; beyond it
	// Acquire fails at once with ErrBusy.
	MaxWaiters int
	// BootTimeout bounds one boot or restore, handshake and warm-up included.
	BootTimeout time.Duration
	// Snapshots creates VMs by restoring a template saved once, instead of
	// booting each one.
	Snapshots bool
	// SkipWarmup hands out VMs without the throwaway warm-up job. Under TCG
	// the warm-up halves a run's latency but costs about as much CPU as a
	// restore, so skipping it raises the sustained rate on small hosts.
	SkipWarmup bool
	// Logger receives boots, failures and fallbacks.
	Logger *zap.Logger
}

// Pool keeps warm, never-used VMs of one shape and hands each out once.
type Pool struct {
	cfg     Config
	log     *zap.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	ready   chan *VM
	boots   chan struct{}
	waiters atomic.Int64
	metrics *Metrics

	mu       sync.Mutex
	cond     *sync.Cond
	creating int
	live     map[*VM]struct{}
	closed   bool
	wg       sync.WaitGroup

	failures int   // consecutive failed creations
	lastErr  error // the last of them

	tplMu    sync.Mutex // held while the template is made
	template *Template
	noSnap   bool // snapshots failed: cold boots only
}

// New creates a pool. It starts no VM until Start. It checks the runtime
// directory (creating it when absent) and refuses one that is not safe,
// and removes what a killed process left there: VM directories and
// templates whose lock nobody holds any more.
func New(cfg Config) (*Pool, error) {
	if cfg.Machine.Image == nil {
		return nil, errors.New("vm pool: no guest image")
	}
	cfg.Machine = cfg.Machine.withDefaults()
	removed, err := PrepareRuntimeDir(cfg.Machine)
	if err != nil {
		return nil, fmt.Errorf("vm pool: %w", err)
	}
	if cfg.MaxBoots <= 0 {
		cfg.MaxBoots = 2
	}
	if cfg.MaxWaiters <= 0 {
		cfg.MaxWaiters = 64
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = 30 * time.Second
	}
	if cfg.Live == nil {
		cfg.Live = NewLiveLimit(cfg.Warm + cfg.MaxBoots)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Name == "" {
		cfg.Name = strconv.Itoa(cfg.Machine.MemoryMiB) + "m"
	}
	p := &Pool{
		cfg:     cfg,
		log:     cfg.Logger.With(zap.String("pool", cfg.Name)),
		ready:   make(chan *VM, max(cfg.Warm, 1)),
		boots:   make(chan struct{}, cfg.MaxBoots),
		live:    map[*VM]struct{}{},
		metrics: newMetrics(cfg.Name),
	}
	p.metrics.pool = p
	if len(removed) > 0 {
		p.log.Info("removed what a stopped process left in the runtime directory",
			zap.String("runtime_dir", cfg.Machine.RuntimeDir), zap.Strings("removed", removed))
	}
	p.cond = sync.NewCond(&p.mu)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// PrepareRuntimeDir checks the machine's runtime directory and the way to it
// (see Machine.RuntimeDir), creates it when absent, and removes the VM
// directories and templates in it that no live process holds: what a killed
// Caddy left. It returns what it removed. Directories of VMs that another
// live process runs in the same runtime directory are left alone.
func PrepareRuntimeDir(m Machine) ([]string, error) {
	m = m.withDefaults()
	rt, err := m.openRuntimeDir()
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	removed, err := removeStale(rt, "vm-")
	if err != nil {
		return removed, fmt.Errorf("clean runtime_dir %s: %w", m.RuntimeDir, err)
	}
	// Templates, when their directory is there and ours.
	fd, err := unix.Openat(int(rt.Fd()), templatesDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return removed, nil
	}
	tpl := os.NewFile(uintptr(fd), filepath.Join(m.RuntimeDir, templatesDir))
	defer tpl.Close()
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		return removed, nil
	}
	more, err := removeStale(tpl, "")
	for _, n := range more {
		removed = append(removed, filepath.Join(templatesDir, n))
	}
	if err != nil {
		return removed, fmt.Errorf("clean runtime_dir %s: %w", m.RuntimeDir, err)
	}
	return removed, nil
}

// templatesDir is the runtime directory's subdirectory for templates.
const templatesDir = "templates"

// Start begins filling the pool in the background.
func (p *Pool) Start() {
	if p.cfg.Warm <= 0 {
		return
	}
	p.wg.Add(1)
	go p.fill()
}

// Metrics returns the pool's metrics for registration.
func (p *Pool) Metrics() *Metrics { return p.metrics }

// Stats is a snapshot of the pool's state.
type Stats struct {
	Name      string `json:"name"`
	MemoryMiB int    `json:"memory_mib"`
	VCPUs     int    `json:"vcpus"`
	Accel     Accel  `json:"accel"`
	Warm      int    `json:"warm_target"`
	Ready     int    `json:"ready"`
	Creating  int    `json:"creating"`
	Live      int    `json:"live"`
	LiveCap   int    `json:"live_cap"`
	Waiting   int64  `json:"waiting"`
	Snapshots bool   `json:"snapshots"`
}

// Stats reports the pool's current state.
func (p *Pool) Stats() Stats {
	snap := p.cfg.Snapshots
	if p.tplMu.TryLock() {
		snap = snap && !p.noSnap
		p.tplMu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{
		Name: p.cfg.Name, MemoryMiB: p.cfg.Machine.MemoryMiB, VCPUs: p.cfg.Machine.VCPUs, Accel: p.cfg.Machine.Accel,
		Warm: p.cfg.Warm, Ready: len(p.ready), Creating: p.creating, Live: len(p.live), LiveCap: p.cfg.Live.Cap(),
		Waiting: p.waiters.Load(), Snapshots: snap,
	}
}

// Acquire returns a ready VM that was never used, waiting for one when none
// is ready. Warm VMs wait in the pool paused, and Acquire resumes the one it
// hands out (one QMP round trip). It fails with ErrBusy when too many
// callers are already waiting, and with the context's error when ctx ends
// first.
func (p *Pool) Acquire(ctx context.Context) (*VM, error) {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		vm, err := p.take(ctx)
		if err != nil {
			return nil, err
		}
		err = vm.resume(ctx)
		if err == nil {
			p.metrics.acquireWait.Observe(time.Since(start).Seconds())
			return vm, nil
		}
		// Its QEMU died while it waited, or ctx ended: take another.
		vm.Close()
		p.metrics.failures.WithLabelValues("resume").Inc()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("resume a VM: %w", ctx.Err())
		}
		p.log.Warn("resuming a warm VM failed", zap.String("vm", vm.ID()), zap.Int("attempt", attempt),
			zap.Error(err), zap.String("qemu", vm.StderrTail()))
		if attempt == failingAfter {
			return nil, fmt.Errorf("the vm pool cannot resume its warm VMs (%d failures in a row): %w", attempt, err)
		}
	}
}

// take returns a VM from the ready queue (still paused), waiting for one
// when none is ready, or one booted on demand when the pool keeps none warm.
func (p *Pool) take(ctx context.Context) (*VM, error) {
	if p.isClosed() {
		return nil, ErrClosed
	}
	select {
	case vm := <-p.ready:
		p.took()
		return vm, nil
	default:
	}
	if n := p.waiters.Add(1); n > int64(p.cfg.MaxWaiters) {
		p.waiters.Add(-1)
		p.metrics.failures.WithLabelValues("busy").Inc()
		return nil, ErrBusy
	}
	defer p.waiters.Add(-1)
	if p.cfg.Warm <= 0 {
		return p.createOnDemand(ctx)
	}
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	for {
		select {
		case vm := <-p.ready:
			p.took()
			return vm, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for a VM: %w", ctx.Err())
		case <-p.ctx.Done():
			return nil, ErrClosed
		case <-check.C:
			if err := p.failing(); err != nil {
				return nil, err
			}
		}
	}
}

// failingAfter is how many creations in a row must fail before waiting
// callers are told so instead of waiting out their deadline.
const failingAfter = 3

// failing returns why the pool cannot create VMs, if it keeps failing.
func (p *Pool) failing() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failures >= failingAfter {
		return fmt.Errorf("the vm pool cannot create VMs (%d failures in a row): %w", p.failures, p.lastErr)
	}
	return nil
}

// refillDelay is the longest the pool waits, after handing out a VM, before
// it starts creating the replacement while other VMs are still ready.
const refillDelay = 250 * time.Millisecond

// took records an acquisition and has the filler replace the VM. Creating a
// VM (a restore and its warm-up) takes far more CPU than a short job, and on
// a small host it would slow down the very job that made room for it: while
// other VMs are ready and nobody waits, the replacement starts when the job's
// VM ends or after refillDelay, whichever comes first. A drained pool, or one
// with callers waiting, refills at once.
func (p *Pool) took() {
	if len(p.ready) == 0 || p.waiters.Load() > 0 {
		p.wake()
		return
	}
	// The VM's onClose wakes the filler when the job ends; the timer covers
	// a long job.
	time.AfterFunc(refillDelay, p.wake)
}

// wake has the filler check whether the pool needs VMs.
func (p *Pool) wake() {
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
}

// createOnDemand boots a VM for one caller when the pool keeps none warm.
func (p *Pool) createOnDemand(ctx context.Context) (*VM, error) {
	if err := p.cfg.Live.acquire(ctx); err != nil {
		return nil, fmt.Errorf("wait for a VM slot: %w", err)
	}
	vm, err := p.create(ctx, false)
	if err != nil {
		p.cfg.Live.release()
		return nil, err
	}
	return vm, nil
}

// fill keeps Warm VMs ready until the pool closes.
func (p *Pool) fill() {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		for !p.closed && len(p.ready)+p.creating >= p.cfg.Warm {
			p.cond.Wait()
		}
		if p.closed {
			p.mu.Unlock()
			return
		}
		p.creating++
		p.mu.Unlock()

		select {
		case p.boots <- struct{}{}:
		case <-p.ctx.Done():
			p.doneCreating()
			return
		}
		if err := p.cfg.Live.acquire(p.ctx); err != nil {
			<-p.boots
			p.doneCreating()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.boots }()
			p.createReady()
		}()
	}
}

func (p *Pool) doneCreating() {
	p.mu.Lock()
	p.creating--
	p.cond.Broadcast()
	p.mu.Unlock()
}

// createReady creates one VM into the ready queue, retrying failed boots
// with a growing pause. It owns one live slot, released on failure.
func (p *Pool) createReady() {
	defer p.doneCreating()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.BootTimeout)
		vm, err := p.create(ctx, true)
		cancel()
		p.mu.Lock()
		if err == nil {
			p.failures, p.lastErr = 0, nil
		} else {
			p.failures++
			p.lastErr = err
		}
		p.mu.Unlock()
		if err == nil {
			select {
			case p.ready <- vm:
			default: // cannot happen: ready has room for Warm VMs
				vm.Close()
			}
			return
		}
		if p.ctx.Err() != nil {
			p.cfg.Live.release()
			return
		}
		pause := min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second)
		p.log.Warn("creating a VM failed; retrying", zap.Error(err), zap.Int("attempt", attempt+1), zap.Duration("pause", pause))
		select {
		case <-time.After(pause):
		case <-p.ctx.Done():
			p.cfg.Live.release()
			return
		}
	}
}

// create makes one ready VM: a clone of the template when snapshots work,
// else a cold boot, then warms it, and pauses it when it is to wait in the
// pool. The caller holds a live slot, which the VM releases when it is
// closed (or create, when it fails).
func (p *Pool) create(ctx context.Context, pause bool) (*VM, error) {
	tpl := p.templateFor(ctx)
	kind := "boot"
	start := time.Now()
	var vm *VM
	var err error
	if tpl != nil {
		kind = "restore"
		vm, err = tpl.Clone(ctx)
	} else {
		vm, err = Boot(ctx, p.cfg.Machine)
	}
	if err != nil {
		reason := kind
		if errors.Is(err, context.DeadlineExceeded) {
			reason = kind + "_timeout"
		}
		p.metrics.failures.WithLabelValues(reason).Inc()
		return nil, err
	}
	if !p.cfg.SkipWarmup {
		if err := vm.Warm(ctx); err != nil {
			vm.Close()
			p.metrics.failures.WithLabelValues("warm").Inc()
			return nil, fmt.Errorf("warm VM: %w", err)
		}
	}
	// A VM waits in the pool paused, once its guest is idle, and Acquire
	// resumes it.
	if pause {
		err := vm.settle(ctx)
		if err == nil {
			err = vm.pause(ctx)
		}
		if err != nil {
			vm.Close()
			p.metrics.failures.WithLabelValues("pause").Inc()
			return nil, fmt.Errorf("pause the warm VM: %w", err)
		}
	}
	p.metrics.created.WithLabelValues(kind).Inc()
	p.metrics.createSeconds.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	p.log.Debug("VM ready", zap.String("vm", vm.ID()), zap.String("kind", kind), zap.Duration("took", time.Since(start)))
	p.track(vm)
	return vm, nil
}

// track counts the VM as live until it is closed.
func (p *Pool) track(vm *VM) {
	p.mu.Lock()
	p.live[vm] = struct{}{}
	p.mu.Unlock()
	vm.onClose = func() {
		p.mu.Lock()
		delete(p.live, vm)
		p.cond.Broadcast()
		p.mu.Unlock()
		p.cfg.Live.release()
	}
}

// templateFor returns the pool's snapshot template, making it on first use.
// If that fails, the pool logs it loudly and boots VMs cold from then on.
func (p *Pool) templateFor(ctx context.Context) *Template {
	if !p.cfg.Snapshots {
		return nil
	}
	p.tplMu.Lock()
	defer p.tplMu.Unlock()
	if p.template != nil || p.noSnap {
		return p.template
	}
	dir := filepath.Join(p.cfg.Machine.RuntimeDir, templatesDir, p.templateKey()+"-"+randomHex(4))
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var tpl *Template
		tpl, err = MakeTemplate(ctx, p.cfg.Machine, dir)
		if err == nil {
			p.template = tpl
			p.metrics.templateSeconds.Set(tpl.Created.Seconds())
			p.log.Info("snapshot template ready", zap.String("dir", dir), zap.Duration("took", tpl.Created))
			return tpl
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	p.noSnap = true
	p.metrics.failures.WithLabelValues("snapshot").Inc()
	p.metrics.snapshotFallback.Set(1)
	p.log.Error("snapshots do not work here; every VM will be booted cold (much slower)", zap.Error(err))
	return nil
}

// templateKey identifies the shape, image and accelerator of a template.
func (p *Pool) templateKey() string {
	m := p.cfg.Machine
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s|%d|%d|%s", m.Image.Hash, m.MemoryMiB, m.VCPUs, m.Accel)))
	return hex.EncodeToString(sum[:8])
}

func (p *Pool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// ObserveJob records a finished job's duration by reason.
func (p *Pool) ObserveJob(reason string, d time.Duration) {
	p.metrics.jobSeconds.WithLabelValues(reason).Observe(d.Seconds())
}

// Close stops filling, ends every VM the pool made (ready or running), and
// removes the template. No QEMU process of the pool outlives Close.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	for {
		select {
		case vm := <-p.ready:
			vm.Close()
			continue
		default:
		}
		break
	}
	p.mu.Lock()
	vms := make([]*VM, 0, len(p.live))
	for vm := range p.live {
		vms = append(vms, vm)
	}
	p.mu.Unlock()
	p.tplMu.Lock()
	tpl := p.template
	p.tplMu.Unlock()
	for _, vm := range vms {
		vm.Close()
	}
	if tpl != nil {
		if err := tpl.Remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove template: %w", err)
		}
	}
	return nil
}

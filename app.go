package caddylualambda

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/guest/image"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// State kept across config reloads, one usage pool per kind of value; the
// last user of an entry releases it.
var (
	// vmPools holds the VM pools, keyed by a hash of everything that shapes
	// their VMs. An unchanged config reuses its warm VMs; the last handler
	// to let go of a pool closes it, ending its QEMU processes.
	vmPools = caddy.NewUsagePool()
	// liveLimits holds the cap on live VMs shared by the pools of one
	// max_vms.
	liveLimits = caddy.NewUsagePool()
	// accelProbes holds the outcome of proving KVM, per QEMU binary, while
	// a pool uses it, so that several profiles share one probe boot.
	accelProbes = caddy.NewUsagePool()
	// sessionRegistries holds the live sessions of this process, so that
	// they survive config reloads and end when Caddy stops.
	sessionRegistries = caddy.NewUsagePool()
)

// App owns the VM settings shared by every lualambda handler: the guest
// image, the accelerator, QEMU's sandboxing and the global cap on live VMs.
// It is configured with the `lualambda` global option and created with
// defaults when a handler needs it and the option is absent.
type App struct {
	// Image is the directory of the guest image (kernel + initramfs).
	// Default: the image last built by `lualambda image build`.
	Image string `json:"image,omitempty"`
	// Accel is auto, kvm or tcg. auto proves KVM with a real boot and falls
	// back to TCG with a warning. Default: auto.
	Accel string `json:"accel,omitempty"`
	// QEMU is the qemu-system-x86_64 binary. Default: from PATH.
	QEMU string `json:"qemu,omitempty"`
	// QEMUUIDs is the range of uids, "first-last", that each VM's QEMU gets
	// a uid of its own from when Caddy runs as root. The uids must belong to
	// no account. Default: 1879048192-1879113727 (0x70000000-0x7000ffff).
	// Ignored when Caddy is not root: QEMU then runs as Caddy's user.
	QEMUUIDs string `json:"qemu_uids,omitempty"`
	// QEMUUser is deprecated: it runs every VM's QEMU as this one user when
	// Caddy runs as root, so one QEMU that a guest took over reaches every
	// other VM. "root" keeps QEMU root (not recommended). Leave it out to
	// give each VM a uid of its own (see QEMUUIDs).
	QEMUUser string `json:"qemu_user,omitempty"`
	// RuntimeDir holds the VMs' private directories and snapshot templates.
	// It must be Caddy's own and writable by it alone, and every directory
	// on the way must be root's or Caddy's and not writable by others (a
	// sticky one such as /dev/shm excepted); it is created when absent.
	// Default: /dev/shm/lualambda when /dev/shm exists, else the temp dir.
	RuntimeDir string `json:"runtime_dir,omitempty"`
	// MaxVMs caps live VMs across all profiles and sites. Default: 4 per core, at least 8.
	MaxVMs int `json:"max_vms,omitempty"`
	// Snapshots creates VMs by restoring a saved template instead of
	// booting each one. Default: true.
	Snapshots *bool `json:"snapshots,omitempty"`
	// BootTimeout bounds one boot or restore; a VM that is not ready in time
	// is killed and another one made. Default: 30s.
	BootTimeout caddy.Duration `json:"boot_timeout,omitempty"`
	// Warmup runs a throwaway job on each new VM before handing it out, so
	// that the real job finds the guest's code ready: about half the latency
	// under TCG, for about a restore's worth of CPU per VM. Default: true.
	Warmup *bool `json:"warmup,omitempty"`

	logger *zap.Logger
	uids   vmpool.UIDRange
	mu     *sync.Mutex
	used   []*sharedPool
	// imageHash identifies the image pools are built from, so that a reload
	// after the image changed gets new pools and new templates.
	imageHash string
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "lualambda", New: func() caddy.Module { return new(App) }}
}

// Provision fills in defaults; it starts nothing.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.mu = new(sync.Mutex)
	if a.Accel == "" {
		a.Accel = string(vmpool.AccelAuto)
	}
	if _, err := vmpool.ParseAccel(a.Accel); err != nil {
		return err
	}
	if a.MaxVMs == 0 {
		a.MaxVMs = max(8, 4*runtime.NumCPU())
	}
	if a.BootTimeout == 0 {
		a.BootTimeout = caddy.Duration(30 * time.Second)
	}
	if im, err := a.loadImage(); err == nil {
		a.imageHash = im.Hash
	}
	if a.RuntimeDir == "" {
		a.RuntimeDir = filepath.Join(os.TempDir(), "lualambda")
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			a.RuntimeDir = "/dev/shm/lualambda"
		}
	}
	if a.QEMUUIDs != "" {
		if a.QEMUUser != "" {
			return fmt.Errorf("qemu_uids and qemu_user exclude each other: leave out qemu_user to give each VM a uid of its own")
		}
		r, err := vmpool.ParseUIDRange(a.QEMUUIDs)
		if err != nil {
			return err
		}
		a.uids = r
	}
	if a.QEMUUser != "" && a.QEMUUser != "root" && os.Geteuid() == 0 {
		a.logger.Warn("qemu_user is deprecated: every VM's QEMU runs as one user, so a QEMU that a guest took over can reach the other VMs; leave it out to give each VM a uid of its own (qemu_uids)",
			zap.String("qemu_user", a.QEMUUser))
	}
	// Refuse a runtime directory that others could have planted or can
	// change now, before anything is started; pools check again.
	if err := vmpool.CheckRuntimeDir(a.RuntimeDir); err != nil {
		return err
	}
	return nil
}

// loadImage reads the configured image's manifest, or the current one's.
func (a *App) loadImage() (*image.Image, error) {
	if a.Image != "" {
		return image.Load(a.Image)
	}
	return image.Current("")
}

// Validate checks the settings.
func (a *App) Validate() error {
	if a.MaxVMs < 1 {
		return fmt.Errorf("max_vms must be at least 1")
	}
	return nil
}

// Start warms every pool the handlers asked for. Booting happens in the
// background; requests that come first wait for their pool.
func (a *App) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.used {
		p.start()
	}
	return nil
}

// Stop does nothing: pools outlive a config and are closed by the last
// handler that uses them (see Handler.Cleanup).
func (a *App) Stop() error { return nil }

// snapshots reports whether snapshot clones are enabled.
func (a *App) snapshots() bool { return a.Snapshots == nil || *a.Snapshots }

// poolSpec is everything that makes two pools interchangeable.
type poolSpec struct {
	Image      string `json:"image"`
	ImageHash  string `json:"image_hash"`
	Accel      string `json:"accel"`
	QEMU       string `json:"qemu"`
	QEMUUser   string `json:"qemu_user"`
	QEMUUIDs   string `json:"qemu_uids"`
	RuntimeDir string `json:"runtime_dir"`
	MaxVMs     int    `json:"max_vms"`
	Snapshots  bool   `json:"snapshots"`
	SkipWarmup bool   `json:"skip_warmup"`
	BootNanos  int64  `json:"boot_ns"`
	Name       string `json:"name"`
	MemoryMiB  int    `json:"memory_mib"`
	VCPUs      int    `json:"vcpus"`
	Warm       int    `json:"warm"`
}

func (s poolSpec) key() string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return "pool:" + hex.EncodeToString(sum[:])
}

// pool returns the shared pool for a profile, creating it on first use.
// The caller must release it with releasePool in its Cleanup.
func (a *App) pool(p Profile) (*sharedPool, string, error) {
	spec := poolSpec{
		Image: a.Image, ImageHash: a.imageHash, Accel: a.Accel, QEMU: a.QEMU, QEMUUser: a.QEMUUser, QEMUUIDs: a.uids.String(), RuntimeDir: a.RuntimeDir,
		MaxVMs: a.MaxVMs, Snapshots: a.snapshots(), SkipWarmup: a.Warmup != nil && !*a.Warmup, BootNanos: int64(a.BootTimeout),
		Name: p.Name, MemoryMiB: p.MemoryMiB, VCPUs: p.VCPUs, Warm: p.Warm,
	}
	key := spec.key()
	live, _, err := liveLimits.LoadOrNew(fmt.Sprint(a.MaxVMs), func() (caddy.Destructor, error) {
		return &liveLimit{vmpool.NewLiveLimit(a.MaxVMs)}, nil
	})
	if err != nil {
		return nil, "", err
	}
	val, _, err := vmPools.LoadOrNew(key, func() (caddy.Destructor, error) {
		return &sharedPool{spec: spec, live: live.(*liveLimit).LiveLimit, logger: a.logger, ready: make(chan struct{})}, nil
	})
	if err != nil {
		_, _ = liveLimits.Delete(fmt.Sprint(a.MaxVMs))
		return nil, "", err
	}
	sp := val.(*sharedPool)
	a.mu.Lock()
	a.used = append(a.used, sp)
	a.mu.Unlock()
	return sp, key, nil
}

// releasePool drops a handler's reference to a pool.
func releasePool(key string, maxVMs int) {
	_, _ = vmPools.Delete(key)
	_, _ = liveLimits.Delete(fmt.Sprint(maxVMs))
}

// liveLimit makes a LiveLimit storable in the usage pool.
type liveLimit struct{ *vmpool.LiveLimit }

// Destruct implements caddy.Destructor.
func (*liveLimit) Destruct() error { return nil }

// sharedPool is a VM pool shared across config reloads. It is built lazily:
// resolving the image and the accelerator can take seconds.
type sharedPool struct {
	spec   poolSpec
	live   *vmpool.LiveLimit
	logger *zap.Logger

	once   sync.Once
	ready  chan struct{}
	pool   *vmpool.Pool
	err    error
	cancel context.CancelFunc
	// accelKey is the accelProbes entry this pool holds, if any.
	accelKey string
}

// start builds and starts the pool in the background, once.
func (sp *sharedPool) start() {
	sp.once.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		sp.cancel = cancel
		go func() {
			defer close(sp.ready)
			defer func() {
				if r := recover(); r != nil {
					sp.err = fmt.Errorf("vm pool %s panicked: %v", sp.spec.Name, r)
					sp.logger.Error("vm pool panicked", zap.Any("panic", r))
				}
			}()
			sp.pool, sp.err = sp.build(ctx)
			if sp.err != nil {
				sp.logger.Error("vm pool unavailable", zap.String("profile", sp.spec.Name), zap.Error(sp.err))
			}
		}()
	})
}

func (sp *sharedPool) build(ctx context.Context) (*vmpool.Pool, error) {
	var im *image.Image
	var err error
	if sp.spec.Image != "" {
		im, err = image.Load(sp.spec.Image)
	} else {
		im, err = image.Current("")
	}
	if err != nil {
		return nil, fmt.Errorf("guest image: %w", err)
	}
	m := vmpool.Machine{
		QEMU: sp.spec.QEMU, Image: im, MemoryMiB: sp.spec.MemoryMiB, VCPUs: sp.spec.VCPUs,
		RuntimeDir: sp.spec.RuntimeDir, User: sp.spec.QEMUUser,
	}
	if sp.spec.QEMUUIDs != "none" {
		r, err := vmpool.ParseUIDRange(sp.spec.QEMUUIDs)
		if err != nil {
			return nil, err
		}
		m.UIDs = r
	}
	if err := m.Check(); err != nil {
		return nil, err
	}
	accel, err := sp.detectAccel(ctx, m)
	if err != nil {
		return nil, err
	}
	m.Accel = accel
	p, err := vmpool.New(vmpool.Config{
		Name: sp.spec.Name, Machine: m, Warm: sp.spec.Warm, Live: sp.live,
		MaxBoots: max(1, runtime.NumCPU()), BootTimeout: time.Duration(sp.spec.BootNanos),
		Snapshots: sp.spec.Snapshots, SkipWarmup: sp.spec.SkipWarmup, Logger: sp.logger,
	})
	if err != nil {
		return nil, err
	}
	p.Start()
	sp.logger.Info("vm pool started", zap.String("profile", sp.spec.Name), zap.String("accel", string(accel)),
		zap.Int("memory_mib", m.MemoryMiB), zap.Int("warm", sp.spec.Warm), zap.Bool("snapshots", sp.spec.Snapshots),
		zap.String("image", im.Hash), zap.String("image_dir", im.Dir), zap.Bool("image_embedded", im.Embedded()))
	return p, nil
}

// get waits for the pool to be built.
func (sp *sharedPool) get(ctx context.Context) (*vmpool.Pool, error) {
	sp.start()
	select {
	case <-sp.ready:
		return sp.pool, sp.err
	case <-ctx.Done():
		return nil, fmt.Errorf("vm pool is starting: %w", ctx.Err())
	}
}

// Destruct closes the pool: every VM it made ends.
func (sp *sharedPool) Destruct() error {
	sp.once.Do(func() { close(sp.ready) }) // never started
	if sp.cancel != nil {
		sp.cancel()
	}
	<-sp.ready
	if sp.accelKey != "" {
		_, _ = accelProbes.Delete(sp.accelKey)
	}
	if sp.pool != nil {
		return sp.pool.Close()
	}
	return nil
}

// accelResult caches one KVM probe per process and setting.
type accelResult struct {
	once  sync.Once
	accel vmpool.Accel
	err   error
}

// Destruct implements caddy.Destructor.
func (*accelResult) Destruct() error { return nil }

// detectAccel resolves auto once for all the pools that use one QEMU
// binary, so that several profiles do not each spend a probe boot. The
// pool holds the shared outcome until it is destructed.
func (sp *sharedPool) detectAccel(ctx context.Context, m vmpool.Machine) (vmpool.Accel, error) {
	want := vmpool.Accel(sp.spec.Accel)
	if want != vmpool.AccelAuto {
		return want, nil
	}
	key := m.QEMU
	val, _, err := accelProbes.LoadOrNew(key, func() (caddy.Destructor, error) { return &accelResult{}, nil })
	if err != nil {
		return "", err
	}
	sp.accelKey = key
	r := val.(*accelResult)
	r.once.Do(func() { r.accel, r.err = vmpool.DetectAccel(ctx, m, want, sp.logger) })
	return r.accel, r.err
}

// Interface guards.
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
	_ caddy.Validator   = (*App)(nil)
	_ caddy.Destructor  = (*sharedPool)(nil)
)

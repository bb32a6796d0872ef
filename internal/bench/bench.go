// Package bench measures caddy-lualambda the way a user would: `return 2 + 2`
// over HTTP on a real Caddy with real VMs, against the baselines it must
// beat (a cold boot per run, the host's luajit, a route without payment), in
// one run. It backs `lualambda bench`.
//
// By default it runs Caddy in this process on loopback ports with the
// lualambda app; Options.Server points the HTTP rows at an existing server
// instead.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/guest/image"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// The rows of a bench run, as named by Options.Skip.
const (
	RowWarm      = "warm"      // warm invocation latency over HTTP
	RowStorage   = "storage"   // warm latency with Caddy's storage on Redis vs files
	RowCold      = "cold"      // the same with the pool disabled
	RowSustained = "sustained" // runs per second at a concurrency
	RowCreation  = "creation"  // cold boot vs snapshot clone
	RowMemory    = "memory"    // PSS of idle warm VMs
	RowIdle      = "idle"      // CPU used by an idle warm pool
	RowLua       = "lua"       // Lua CPU speed, guest vs host luajit
	RowX402      = "x402"      // payment overhead on a respond route
)

// Rows lists every row name, in the order they are printed.
func Rows() []string {
	return []string{RowWarm, RowStorage, RowCold, RowSustained, RowCreation, RowMemory, RowIdle, RowLua, RowX402}
}

// Options configure a bench run. The zero value of a field means its default.
type Options struct {
	// Server is the invocation API of an existing server, e.g.
	// http://127.0.0.1:8080/invoke. Empty runs Caddy in this process.
	Server string
	// Admin is the Caddy admin endpoint of Server, used to read its
	// accelerator and to wait for its pool to refill between runs.
	Admin string
	// Profile is the profile to run: the server's, or the one the in-process
	// Caddy gets. Default: nano.
	Profile string
	// ColdProfile is a profile of Server that keeps no warm VMs, for the
	// cold row; in process one is made with snapshots off.
	ColdProfile string
	// MemoryMiB is the Lua memory of the in-process profile and of the VMs
	// the creation and (with Server) memory rows make. Default: 64.
	MemoryMiB int
	// Warm is how many warm VMs the in-process profile keeps. Default: 4.
	Warm int
	// Image is the guest image directory. Default: the current image,
	// built first if there is none.
	Image string
	// Accel is the accelerator the in-process app is given: auto, kvm or
	// tcg. Default: auto (the app decides).
	Accel string
	// Duration is the sustained window. Default: 60s.
	Duration time.Duration
	// Concurrency is how many requests the sustained row keeps in flight.
	// Default: 2.
	Concurrency int
	// Runs is the number of warm latency samples. Default: 40.
	Runs int
	// ColdRuns is the number of cold-boot samples. Default: Runs/8, at
	// least 3.
	ColdRuns int
	// Boots is the number of cold boots of the creation row; it makes three
	// times as many clones. Default: 3.
	Boots int
	// Pace is the pause between warm runs against a Server whose admin
	// endpoint is unknown, for its pool to refill. Default: 1s.
	Pace time.Duration
	// Skip names rows not to measure.
	Skip []string
	// Progress receives a line as each row starts; nil discards them.
	Progress io.Writer
	// Logger receives the in-process server's and the VMs' warnings.
	Logger *zap.Logger
}

// Validate checks the options as Run will use them, defaults filled in.
func (o Options) Validate() error {
	_, err := o.withDefaults()
	return err
}

// withDefaults fills in the defaults and checks the options.
func (o Options) withDefaults() (Options, error) {
	if o.Profile == "" {
		o.Profile = "nano"
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 64
	}
	if o.Warm == 0 {
		o.Warm = 4
	}
	if o.Accel == "" {
		o.Accel = string(vmpool.AccelAuto)
	}
	if o.Duration == 0 {
		o.Duration = time.Minute
	}
	if o.Concurrency == 0 {
		o.Concurrency = 2
	}
	if o.Runs == 0 {
		o.Runs = 40
	}
	if o.ColdRuns == 0 {
		o.ColdRuns = max(3, o.Runs/8)
	}
	if o.Boots == 0 {
		o.Boots = 3
	}
	if o.Pace == 0 {
		o.Pace = time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	switch {
	case o.MemoryMiB < 16:
		return o, fmt.Errorf("memory must be at least 16 MiB, got %d", o.MemoryMiB)
	case o.Warm < 1:
		return o, fmt.Errorf("warm must be at least 1, got %d", o.Warm)
	case o.Duration < 0, o.Pace < 0:
		return o, fmt.Errorf("durations must be positive")
	case o.Concurrency < 1:
		return o, fmt.Errorf("concurrency must be at least 1, got %d", o.Concurrency)
	case o.Runs < 1 || o.ColdRuns < 1 || o.Boots < 1:
		return o, fmt.Errorf("runs, cold runs and boots must be at least 1")
	}
	if _, err := vmpool.ParseAccel(o.Accel); err != nil {
		return o, err
	}
	if !profileName.MatchString(o.Profile) || (o.ColdProfile != "" && !profileName.MatchString(o.ColdProfile)) {
		return o, fmt.Errorf("profile names are letters, digits, - and _")
	}
	known := map[string]bool{}
	for _, r := range Rows() {
		known[r] = true
	}
	for _, s := range o.Skip {
		if !known[s] {
			return o, fmt.Errorf("unknown row %q to skip (rows: %s)", s, strings.Join(Rows(), ", "))
		}
	}
	return o, nil
}

var profileName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

func (o Options) skips(row string) bool {
	for _, s := range o.Skip {
		if s == row {
			return true
		}
	}
	return false
}

// Report is the outcome of a bench run. Figures are in milliseconds,
// MiB and plain ratios; a figure that was not measured is absent (zero).
type Report struct {
	Accel  string `json:"accel"`
	Cores  int    `json:"cores"`
	QEMU   string `json:"qemu"`
	Target string `json:"target"`
	// Profile and MemoryMiB describe the VMs the HTTP rows ran on.
	Profile   string `json:"profile"`
	MemoryMiB int    `json:"memory_mib,omitempty"`

	WarmP50  float64 `json:"warm_p50_ms,omitempty"`
	WarmP90  float64 `json:"warm_p90_ms,omitempty"`
	WarmP99  float64 `json:"warm_p99_ms,omitempty"`
	WarmRuns int     `json:"warm_runs,omitempty"`

	ColdP50  float64 `json:"cold_p50_ms,omitempty"`
	ColdP90  float64 `json:"cold_p90_ms,omitempty"`
	ColdRuns int     `json:"cold_runs,omitempty"`
	// ColdVsWarm is cold_p50 / warm_p50.
	ColdVsWarm float64 `json:"cold_vs_warm,omitempty"`
	// OnDemandP50 is a run on a profile with no warm VMs when snapshots
	// are on: a clone (and its warm-up) per run.
	OnDemandP50 float64 `json:"ondemand_p50_ms,omitempty"`

	RunsPerS        float64 `json:"runs_per_s,omitempty"`
	SustainedRuns   int     `json:"sustained_runs,omitempty"`
	SustainedErrors int     `json:"sustained_errors,omitempty"`
	DurationS       float64 `json:"duration_s,omitempty"`
	Concurrency     int     `json:"concurrency,omitempty"`

	BootMS    float64 `json:"boot_ms,omitempty"`
	CloneMS   float64 `json:"clone_ms,omitempty"`
	BootClone float64 `json:"boot_clone_ratio,omitempty"`

	// PSSProfileMiB is the Lua memory of the profile whose VMs were measured.
	PSSProfileMiB int     `json:"pss_profile_mib,omitempty"`
	PSSMiB        float64 `json:"pss_mib,omitempty"`
	PSSTotalMiB   float64 `json:"pss_total_mib,omitempty"`
	PSSVMs        int     `json:"pss_vms,omitempty"`

	// StorageRedisP50 and StorageFileP50 are the warm p50 over HTTP with
	// Caddy's storage on Redis and on the file system, measured one after
	// the other in the storage row, StorageRuns runs each.
	StorageRedisP50 float64 `json:"warm_p50_ms_redis,omitempty"`
	StorageFileP50  float64 `json:"warm_p50_ms_file,omitempty"`
	StorageRuns     int     `json:"storage_runs,omitempty"`
	// StorageRedisVsFile is warm_p50_ms_redis / warm_p50_ms_file.
	StorageRedisVsFile float64 `json:"storage_redis_vs_file,omitempty"`

	// IdleCPUPct is the CPU the QEMU processes of an idle, full warm pool
	// of IdleCPUVMs VMs used over IdleCPUWindowS seconds, in percent of
	// one core. It is a pointer because 0 is a real figure.
	IdleCPUPct        *float64 `json:"idle_cpu_pct,omitempty"`
	IdleCPUVMs        int      `json:"idle_cpu_vms,omitempty"`
	IdleCPUProfileMiB int      `json:"idle_cpu_profile_mib,omitempty"`
	IdleCPUWindowS    float64  `json:"idle_cpu_window_s,omitempty"`

	// LuaGuestVsHost is, per workload, guest time / host luajit time.
	LuaGuestVsHost map[string]float64 `json:"lua_guest_vs_host,omitempty"`
	LuaGuestMS     map[string]float64 `json:"lua_guest_ms,omitempty"`
	LuaHostMS      map[string]float64 `json:"lua_host_ms,omitempty"`

	// X402Ratio is the gated route's throughput / the plain route's.
	X402Ratio    float64 `json:"x402_throughput_ratio,omitempty"`
	X402GatedPS  float64 `json:"x402_gated_per_s,omitempty"`
	X402PlainPS  float64 `json:"x402_plain_per_s,omitempty"`
	X402Payments int     `json:"x402_payments,omitempty"`
	// X402PaidPS is the paid requests per second (x402_gated_per_s), and
	// X402FloorPS the cryptographic floor measured in the same run: what
	// the verifies, the signature and the decode a paid request needs
	// allow on this machine's cores. X402FloorPct is paid / floor in %.
	X402PaidPS   float64 `json:"x402_paid_per_s,omitempty"`
	X402FloorPS  float64 `json:"x402_floor_per_s,omitempty"`
	X402FloorPct float64 `json:"x402_floor_pct,omitempty"`
	// The floor's parts: aggregate rates on X402FloorParallel goroutines.
	X402VerifyPS      float64 `json:"x402_ed25519_verify_per_s,omitempty"`
	X402SignPS        float64 `json:"x402_txn_sign_per_s,omitempty"`
	X402DecodePS      float64 `json:"x402_group_decode_per_s,omitempty"`
	X402FloorParallel int     `json:"x402_floor_parallel,omitempty"`

	// Skipped lists the rows skipped on request.
	Skipped []string `json:"skipped,omitempty"`
	// Unavailable says, per row, why it could not be measured here
	// (a missing part, not a failure).
	Unavailable map[string]string `json:"unavailable,omitempty"`
	// Failed says, per row, what went wrong.
	Failed map[string]string `json:"failed,omitempty"`
}

// ErrRowsFailed is returned by Run, with the report, when a row failed.
var ErrRowsFailed = errors.New("some rows failed")

// errUnavailable marks a row that cannot be measured here.
type errUnavailable struct{ why string }

func (e errUnavailable) Error() string { return e.why }

// run is one bench run in progress.
type run struct {
	o      Options
	rep    *Report
	id     string
	im     *image.Image
	accel  vmpool.Accel
	runDir string // VM runtime directory for the local rows
	inv    *invoker
	admin  string
	ip     *inProcess
	seq    atomic.Int64
}

// Run measures every row not skipped and returns the report. A row that
// fails is recorded in Report.Failed and the others still run; Run then
// returns the report with an error wrapping ErrRowsFailed.
func Run(ctx context.Context, o Options) (*Report, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	rnd := make([]byte, 4)
	_, _ = rand.Read(rnd)
	r := &run{o: o, id: hex.EncodeToString(rnd), rep: &Report{
		Cores: runtime.NumCPU(), Profile: o.Profile, Target: "in-process caddy",
		Unavailable: map[string]string{}, Failed: map[string]string{}, LuaGuestVsHost: map[string]float64{},
		LuaGuestMS: map[string]float64{}, LuaHostMS: map[string]float64{},
	}}
	for _, row := range Rows() {
		if o.skips(row) {
			r.rep.Skipped = append(r.rep.Skipped, row)
		}
	}
	if r.rep.QEMU, err = qemuVersion(ctx); err != nil {
		return nil, err
	}
	if r.im, err = guestImage(ctx, o.Image, o.Progress); err != nil {
		return nil, err
	}
	if o.Server == "" {
		err = r.inProcess(ctx)
	} else {
		err = r.remote(ctx)
	}
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.rep.tidy()
	if len(r.rep.Failed) > 0 {
		rows := make([]string, 0, len(r.rep.Failed))
		for row := range r.rep.Failed {
			rows = append(rows, row)
		}
		sort.Strings(rows)
		return r.rep, fmt.Errorf("%w: %s", ErrRowsFailed, strings.Join(rows, ", "))
	}
	return r.rep, nil
}

// tidy drops empty maps so that the JSON shows only what was measured.
func (rep *Report) tidy() {
	if len(rep.LuaGuestVsHost) == 0 {
		rep.LuaGuestVsHost, rep.LuaGuestMS, rep.LuaHostMS = nil, nil, nil
	}
	if len(rep.Unavailable) == 0 {
		rep.Unavailable = nil
	}
	if len(rep.Failed) == 0 {
		rep.Failed = nil
	}
}

// measureRow runs one row unless it is skipped, recording its failure.
func (r *run) measureRow(ctx context.Context, row, what string, f func(context.Context) error) {
	if r.o.skips(row) || ctx.Err() != nil {
		return
	}
	fmt.Fprintf(r.o.Progress, "bench: %s\n", what)
	start := time.Now()
	err := f(ctx)
	var un errUnavailable
	switch {
	case err == nil:
		fmt.Fprintf(r.o.Progress, "bench: %s: done in %.1fs\n", row, time.Since(start).Seconds())
	case errors.As(err, &un):
		r.rep.Unavailable[row] = un.why
		fmt.Fprintf(r.o.Progress, "bench: %s: not available: %s\n", row, un.why)
	default:
		r.rep.Failed[row] = err.Error()
		fmt.Fprintf(r.o.Progress, "bench: %s: failed: %v\n", row, err)
	}
}

// needs reports whether any of the rows is to be measured.
func (r *run) needs(rows ...string) bool {
	for _, row := range rows {
		if !r.o.skips(row) {
			return true
		}
	}
	return false
}

// newID returns a never-used invocation id.
func (r *run) newID(kind string) string {
	return fmt.Sprintf("bench-%s-%s-%d", r.id, kind, r.seq.Add(1))
}

// qemuVersion asks the QEMU on PATH for its version.
func qemuVersion(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "qemu-system-x86_64", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("qemu-system-x86_64 --version: %w (install qemu-system-x86, or run scripts/setup)", err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	if m := regexp.MustCompile(`version (\S+)`).FindStringSubmatch(line); m != nil {
		return m[1], nil
	}
	return strings.TrimSpace(line), nil
}

// guestImage loads the image in dir, or else the current guest image,
// building one if there is none.
func guestImage(ctx context.Context, dir string, progress io.Writer) (*image.Image, error) {
	if dir != "" {
		im, err := image.Load(dir)
		if err != nil {
			return nil, fmt.Errorf("guest image: %w", err)
		}
		return im, nil
	}
	im, err := image.Current("")
	if err == nil {
		return im, nil
	}
	fmt.Fprintln(progress, "bench: no guest image yet; building one (once)")
	im, err = image.Build(ctx, image.Options{Progress: progress})
	if err != nil {
		return nil, fmt.Errorf("build guest image: %w", err)
	}
	return im, nil
}

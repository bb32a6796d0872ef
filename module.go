// Package caddylualambda is the Caddy glue of lualambda: Lua run in fresh,
// hardware-isolated QEMU microVMs, one VM per invocation.
//
// init, below, lists what it registers: the `lualambda` app (VM settings
// and pools shared by all sites), the `http.handlers.lualambda` handler
// (the invocation API), the admin endpoint, and the Caddyfile directive and
// global option. Payments are the x402pay package's, which guards this
// handler through the payhook contract and needs nothing of this package.
package caddylualambda

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/store"
	"github.com/lualambda/caddy-lualambda/vmpool"
	"github.com/lualambda/caddy-lualambda/x402"
)

// init registers every module of this package, and the Caddyfile's
// directive and global option. x402pay, the payment middleware, is a
// package of its own (github.com/lualambda/caddy-lualambda/x402pay).
func init() {
	caddy.RegisterModule(App{})      // lualambda: the VM settings and pools (app.go)
	caddy.RegisterModule(Handler{})  // http.handlers.lualambda: the invocation API (api.go, sessions.go)
	caddy.RegisterModule(adminAPI{}) // admin.api.lualambda: GET /lualambda/pools (admin.go)
	httpcaddyfile.RegisterHandlerDirective("lualambda", parseLualambda)
	httpcaddyfile.RegisterDirectiveOrder("lualambda", httpcaddyfile.Before, "file_server")
	httpcaddyfile.RegisterGlobalOption("lualambda", parseGlobalLualambda)
	registerServeCommand() // caddy lualambda-server: the API with no Caddyfile (serve.go)
}

// Profile is a named VM shape with its limits and price.
type Profile struct {
	// Name is the profile's URL segment: POST /{id}/{name}.
	Name string `json:"name"`
	// MemoryMiB is the memory Lua may use. The VM gets this plus a fixed
	// overhead for the kernel and the agent.
	MemoryMiB int `json:"memory_mib"`
	// VCPUs is the VM's CPU count.
	VCPUs int `json:"vcpus"`
	// Timeout is the run's wall-clock limit.
	Timeout caddy.Duration `json:"timeout"`
	// Retention is how long the output stays readable after the run.
	Retention caddy.Duration `json:"retention"`
	// OutputBytes caps what the run prints (stdout and stderr together).
	OutputBytes int64 `json:"output_bytes"`
	// Price is the price in USD (USDC) as a decimal string, e.g. "0.001".
	// It is shown in discovery and is what an x402pay gate in front charges
	// when its price is {http.lualambda.price}.
	Price string `json:"price,omitempty"`
	// Warm is how many ready VMs of this profile are kept. 0 boots on demand.
	Warm int `json:"warm"`
	// Runtime is the Lua the profile runs: "luajit" (LuaJIT 2.1, Lua 5.1;
	// the default when empty) or "lua5.4".
	Runtime string `json:"runtime,omitempty"`
}

// DefaultProfiles are the reference profiles: nano, small and med.
func DefaultProfiles() []Profile {
	return []Profile{
		{Name: "nano", MemoryMiB: 64, VCPUs: 1, Timeout: caddy.Duration(10 * time.Second), Retention: caddy.Duration(time.Minute), OutputBytes: 64 << 10, Price: "0.001", Warm: 2},
		{Name: "small", MemoryMiB: 128, VCPUs: 1, Timeout: caddy.Duration(30 * time.Second), Retention: caddy.Duration(5 * time.Minute), OutputBytes: 256 << 10, Price: "0.005", Warm: 1},
		{Name: "med", MemoryMiB: 256, VCPUs: 1, Timeout: caddy.Duration(2 * time.Minute), Retention: caddy.Duration(30 * time.Minute), OutputBytes: 1 << 20, Price: "0.02", Warm: 1},
	}
}

// Handler serves the invocation API (discovery, status, runs, retained
// output, sessions and attach) relative to where it is mounted (use
// handle_path /invoke/*). The routes and documents are package invokeapi's.
//
// Placeholders set for later handlers and logs:
//
//	{http.lualambda.id}       the invocation id
//	{http.lualambda.profile}  the profile name
//	{http.lualambda.price}    the profile's price (set before the run, for x402pay)
//	{http.lualambda.reason}   how the run ended
type Handler struct {
	// Profiles replace the reference profiles nano, small and med.
	Profiles []Profile `json:"profiles,omitempty"`
	// MaxPackages caps package parts per request. Default: 10.
	MaxPackages int `json:"max_packages,omitempty"`
	// MaxUploadBytes caps the request body. Default: 64 MiB.
	MaxUploadBytes int64 `json:"max_upload_bytes,omitempty"`
	// MaxUnpackedBytes caps the unpacked size of a request's packages. Default: 64 MiB.
	MaxUnpackedBytes int64 `json:"max_unpacked_bytes,omitempty"`
	// MaxPackageFiles caps entries across a request's packages. Default: 4096.
	MaxPackageFiles int `json:"max_package_files,omitempty"`
	// AcquireTimeout is how long a run waits for a VM before 503. Default: 30s.
	AcquireTimeout caddy.Duration `json:"acquire_timeout,omitempty"`
	// Node names this server in records. Default: the host name.
	Node string `json:"node,omitempty"`
	// StoreWrites is when a run's writes that can wait (its finished output,
	// its receipt, the reaper's index entry) reach the storage:
	// "after_answer" (the answer waits only for the claim of its id; other
	// nodes read the output milliseconds after the answer), "before_answer",
	// or "auto" (the default: after the answer on the local file system,
	// where each write costs a sync; before it on a shared storage, so that
	// every node reads a run as soon as its client has the answer).
	StoreWrites string `json:"store_writes,omitempty"`
	// SessionIdle ends a session nobody has typed into for this long.
	// Default: 5m.
	SessionIdle caddy.Duration `json:"session_idle,omitempty"`
	// InternalAddress is where the other nodes sharing this storage reach
	// this node's invocation API (e.g. http://10.0.0.5:8080/invoke), so
	// that a client attaching through any node reaches a session on this
	// one. Default: none (sessions are attached through their own node).
	InternalAddress string `json:"internal_address,omitempty"`
	// MaxPerClient caps the runs and sessions one client has in progress
	// at once on this handler: a paying client is its payer, any other its
	// address (IPv6 by /64). Default: half of the app's max_vms, at least 1.
	MaxPerClient int `json:"max_per_client,omitempty"`
	// MCP is where this server's MCP endpoint is (a lualambda_mcp handler):
	// an http(s) URL, or a path on this server such as /mcp. Discovery
	// shows it, so that agents find the runs as MCP tools. Default: none.
	MCP string `json:"mcp,omitempty"`

	app   *App
	store *store.Store
	// storeKey is the stores pool entry this handler holds.
	storeKey string
	logger   *zap.Logger
	profiles map[string]*profileRuntime
	order    []string
	ctx      context.Context
	sessions *sessionRegistry
	clients  *clientLimiter
	// keepAlive is how long a streamed run may be quiet before a comment
	// keeps its stream alive; zero means keepAliveEvery.
	keepAlive time.Duration
}

// profileRuntime is a profile with its pool.
type profileRuntime struct {
	Profile
	// vms hands out the profile's VMs.
	vms vmSource
	// pool is the shared pool behind vms, for its metrics; poolKey
	// releases it.
	pool    *sharedPool
	poolKey string
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.lualambda", New: func() caddy.Module { return new(Handler) }}
}

// nodeName is what a node may be called: it is part of a storage key.
var nodeName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

var profileName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// Provision sets defaults and attaches the profiles' pools. It boots
// nothing: the lualambda app does that when it starts.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.ctx = ctx
	if len(h.Profiles) == 0 {
		h.Profiles = DefaultProfiles()
	}
	if h.MaxPackages == 0 {
		h.MaxPackages = 10
	}
	if h.MaxUploadBytes == 0 {
		h.MaxUploadBytes = 64 << 20
	}
	if h.MaxUnpackedBytes == 0 {
		h.MaxUnpackedBytes = vmpool.DefaultPackageBytes
	}
	if h.MaxPackageFiles == 0 {
		h.MaxPackageFiles = vmpool.DefaultPackageFiles
	}
	if h.AcquireTimeout == 0 {
		h.AcquireTimeout = caddy.Duration(30 * time.Second)
	}
	if h.Node == "" {
		h.Node, _ = os.Hostname()
	}
	if h.SessionIdle == 0 {
		h.SessionIdle = caddy.Duration(5 * time.Minute)
	}
	if err := h.validateProfiles(); err != nil {
		return err
	}
	appVal, err := ctx.App("lualambda")
	if err != nil {
		return fmt.Errorf("load lualambda app: %w", err)
	}
	h.app = appVal.(*App)
	if h.MaxPerClient == 0 {
		h.MaxPerClient = max(1, h.app.MaxVMs/2)
	}
	h.clients = newClientLimiter(h.MaxPerClient)
	deferred, err := deferWrites(h.StoreWrites, ctx.Storage())
	if err != nil {
		return err
	}
	if h.store, h.storeKey, err = loadStore(ctx.Storage(), deferred, h.logger); err != nil {
		return err
	}
	reg, _, err := sessionRegistries.LoadOrNew(sessionsKey, func() (caddy.Destructor, error) {
		return newSessionRegistry(), nil
	})
	if err != nil {
		return err
	}
	h.sessions = reg.(*sessionRegistry)
	h.profiles = map[string]*profileRuntime{}
	for _, p := range h.Profiles {
		vmShape := p
		vmShape.MemoryMiB = p.MemoryMiB + vmpool.GuestOverheadMiB
		sp, key, err := h.app.pool(vmShape)
		if err != nil {
			// Caddy calls Cleanup after a failed Provision: releasing here
			// too would release the running config's share.
			return fmt.Errorf("profile %s: %w", p.Name, err)
		}
		h.profiles[p.Name] = &profileRuntime{Profile: p, vms: sp, pool: sp, poolKey: key}
		h.order = append(h.order, p.Name)
	}
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		shared := make([]*sharedPool, 0, len(h.order))
		for _, name := range h.order {
			shared = append(shared, h.profiles[name].pool)
		}
		go registerMetrics(ctx, reg, shared)
	}
	go h.reapLoop(ctx)
	go h.heartbeatLoop(ctx)
	return nil
}

// validateProfiles checks profile fields and fills per-profile defaults.
func (h *Handler) validateProfiles() error {
	seen := map[string]bool{}
	for i := range h.Profiles {
		p := &h.Profiles[i]
		if !profileName.MatchString(p.Name) {
			return fmt.Errorf("profile name %q: want a lowercase name of up to 32 letters, digits, _ or -", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("profile %s is defined twice", p.Name)
		}
		seen[p.Name] = true
		if p.MemoryMiB == 0 {
			p.MemoryMiB = 128
		}
		if p.VCPUs == 0 {
			p.VCPUs = 1
		}
		if p.Timeout == 0 {
			p.Timeout = caddy.Duration(30 * time.Second)
		}
		if p.Retention == 0 {
			p.Retention = caddy.Duration(5 * time.Minute)
		}
		if p.OutputBytes == 0 {
			p.OutputBytes = 256 << 10
		}
		switch {
		case p.MemoryMiB < 16 || p.MemoryMiB > 16384:
			return fmt.Errorf("profile %s: memory %d MiB out of range 16-16384", p.Name, p.MemoryMiB)
		case p.VCPUs < 1 || p.VCPUs > 16:
			return fmt.Errorf("profile %s: vcpus %d out of range 1-16", p.Name, p.VCPUs)
		case p.Warm < 0:
			return fmt.Errorf("profile %s: warm must not be negative", p.Name)
		case p.OutputBytes < 0:
			return fmt.Errorf("profile %s: output cap must not be negative", p.Name)
		case p.Runtime != "" && p.Runtime != "luajit" && p.Runtime != "lua5.4":
			return fmt.Errorf("profile %s: runtime %q: want luajit or lua5.4", p.Name, p.Runtime)
		}
		if p.Price != "" {
			// One form for every reader (discovery, the quote, the 402):
			// ".5", "0.50" and "$0.5" are all "0.5".
			units, err := x402.ParsePrice(p.Price, x402.USDCDecimals)
			if err != nil {
				return fmt.Errorf("profile %s: %w", p.Name, err)
			}
			p.Price = x402.FormatAmount(units, x402.USDCDecimals)
		}
	}
	return nil
}

// registerMetrics adds the pools' collectors to this config's registry once
// they are built. It works on its own list of pools, since Cleanup may
// release the handler's profiles while it waits (caddy validate does).
func registerMetrics(ctx caddy.Context, reg *prometheus.Registry, shared []*sharedPool) {
	for _, sp := range shared {
		p, err := sp.get(ctx)
		if err != nil || p == nil {
			continue
		}
		_ = reg.Register(p.Metrics())
	}
}

// reapLoop deletes expired outputs and unused blobs every minute while the
// config is loaded.
func (h *Handler) reapLoop(ctx caddy.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := h.store.Reap(ctx)
			if err != nil {
				h.logger.Warn("reaping invocations", zap.Error(err))
			} else if n > 0 {
				h.logger.Debug("reaped invocation keys", zap.Int("deleted", n))
			}
		}
	}
}

// heartbeatLoop tells the storage, and through it every node sharing it,
// that this node is alive while the config is loaded; a node that stops
// (killed, or its machine gone) has its running invocations read as lost
// within store.NodeStale.
func (h *Handler) heartbeatLoop(ctx caddy.Context) {
	t := time.NewTicker(store.HeartbeatEvery)
	defer t.Stop()
	failing := false
	for {
		err := h.store.Heartbeat(ctx, h.Node, h.InternalAddress)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			h.logger.Error("writing this node's heartbeat; other nodes will take its runs for lost", zap.String("node", h.Node), zap.Error(err))
			failing = true
		case err == nil && failing:
			h.logger.Info("heartbeat written again", zap.String("node", h.Node))
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if h.InternalAddress != "" {
		u, err := url.Parse(h.InternalAddress)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("internal_address %q: want the http(s) URL of this node's invocation API, e.g. http://10.0.0.5:8080/invoke", h.InternalAddress)
		}
	}
	if err := validMCP(h.MCP); err != nil {
		return err
	}
	if !nodeName.MatchString(h.Node) || strings.Trim(h.Node, ".") == "" {
		return fmt.Errorf("node %q: want 1-64 of A-Z a-z 0-9 . _ - (it names this server in storage keys)", h.Node)
	}
	if h.MaxPackages < 0 || h.MaxUploadBytes < 0 || h.MaxUnpackedBytes < 0 || h.MaxPackageFiles < 0 || h.MaxPerClient < 0 {
		return fmt.Errorf("limits must not be negative")
	}
	return nil
}

// validMCP checks the mcp option: empty, a path, or an http(s) URL.
func validMCP(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil, u.Fragment != "", strings.ContainsAny(s, " \t\r\n\"<>\\"):
	case u.Scheme == "" && u.Host == "" && strings.HasPrefix(u.Path, "/") && !strings.HasPrefix(s, "//"):
		return nil
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil:
		return nil
	}
	return fmt.Errorf("mcp %q: want the MCP endpoint's http(s) URL or its path on this server, e.g. /mcp", s)
}

// Cleanup releases what the handler holds in the usage pools, each once
// however often it is called; the last user of a pool closes it.
func (h *Handler) Cleanup() error {
	releaseStore(h.storeKey, h.logger)
	h.storeKey = ""
	if h.sessions != nil {
		_, _ = sessionRegistries.Delete(sessionsKey)
		h.sessions = nil
	}
	for _, p := range h.profiles {
		releasePool(p.poolKey, h.app.MaxVMs)
	}
	h.profiles = nil
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

package caddylualambda

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/guest/unpack"
	"github.com/lualambda/caddy-lualambda/jobspec"
	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/store"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// ServeHTTP routes the invocation API. It is terminal: next is never called.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		parts = nil
	}
	if q := payhook.QuoteFrom(r.Context()); q != nil {
		h.quote(q, r, parts)
		return nil
	}
	switch {
	case len(parts) == 0:
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		return h.serveDiscovery(w, r)
	case !jobspec.ValidID(parts[0]):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad invocation id %q: want 1-64 of A-Z a-z 0-9 _ -", parts[0]))
		return nil
	case len(parts) == 1:
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		return h.serveStatus(w, r, parts[0])
	case len(parts) == 2 && parts[1] == "attach":
		if !allow(w, r, http.MethodGet) {
			return nil
		}
		return h.serveAttach(w, r, parts[0])
	case len(parts) == 2 && parts[1] == "output":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		return h.serveOutput(w, r, parts[0])
	case len(parts) == 2:
		if !allow(w, r, http.MethodPost) {
			return nil
		}
		if r.URL.Query().Get("mode") == "session" {
			return h.serveSession(w, r, parts[0], parts[1])
		}
		return h.serveRun(w, r, parts[0], parts[1])
	}
	writeError(w, http.StatusNotFound, "not found")
	return nil
}

// quote answers a payment gate's price request without side effects: a run
// or a session costs its profile's price, resolved from the path exactly as
// the run will be; everything else (discovery, status, output, attach, and
// requests the handler will refuse) is free.
func (h *Handler) quote(q *payhook.Quote, r *http.Request, parts []string) {
	if len(parts) != 2 || r.Method != http.MethodPost || !jobspec.ValidID(parts[0]) || parts[1] == "attach" || parts[1] == "output" {
		q.SetPrice("")
		return
	}
	p, ok := h.profiles[parts[1]]
	if !ok {
		q.SetPrice("")
		return
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.lualambda.id", parts[0])
		repl.Set("http.lualambda.profile", p.Name)
		repl.Set("http.lualambda.price", p.Price)
	}
	q.SetPrice(p.Price)
}

// allow answers 405 unless the method is one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; use %s", r.Method, strings.Join(methods, " or ")))
	return false
}

// writeJSON writes v as the JSON response body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// writeError writes {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// basePath is the public path the handler is mounted at, recovered from the
// original request when a handle_path stripped it.
func basePath(r *http.Request) string {
	orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	if !ok {
		return ""
	}
	return strings.TrimSuffix(strings.TrimSuffix(orig.URL.Path, strings.TrimSuffix(r.URL.Path, "/")), "/")
}

// discovery documents the API for clients and agents.
type discovery struct {
	Service  string            `json:"service"`
	Routes   map[string]string `json:"routes"`
	Run      runDoc            `json:"run"`
	Profiles []profileDoc      `json:"profiles"`
	Limits   map[string]int64  `json:"limits"`
}

type runDoc struct {
	ContentTypes []string `json:"content_types"`
	PackageField string   `json:"package_field"`
	SpecField    string   `json:"spec_field"`
	Spec         any      `json:"spec"`
	Token        string   `json:"token"`
}

type profileDoc struct {
	Name        string `json:"name"`
	Price       string `json:"price,omitempty"`
	MemoryMiB   int    `json:"memory_mib"`
	VCPUs       int    `json:"vcpus"`
	TimeoutMS   int64  `json:"timeout_ms"`
	RetainS     int64  `json:"retain_seconds"`
	OutputBytes int64  `json:"max_output_bytes"`
}

func (h *Handler) serveDiscovery(w http.ResponseWriter, r *http.Request) error {
	base := basePath(r)
	d := discovery{
		Service: "lualambda",
		Routes: map[string]string{
			"discovery": "GET " + base + "/",
			"status":    "GET " + base + "/{id}",
			"run":       "POST " + base + "/{id}/{profile}",
			"output":    "GET " + base + "/{id}/output",
			"session":   "POST " + base + "/{id}/{profile}?mode=session",
			"attach":    "GET " + base + "/{id}/attach (WebSocket)",
		},
		Run: runDoc{
			ContentTypes: []string{"multipart/form-data", "text/x-lua", "application/json"},
			PackageField: "package", SpecField: "spec",
			Spec:  map[string]string{"require": "dotted module, e.g. blah.dorp", "source": "Lua source (optional)", "args": "JSON array"},
			Token: "the run's response carries a token; send it as Authorization: Bearer <token> to read the output",
		},
		Limits: map[string]int64{
			"max_packages": int64(h.MaxPackages), "max_upload_bytes": h.MaxUploadBytes,
			"max_unpacked_bytes": h.MaxUnpackedBytes, "max_package_files": int64(h.MaxPackageFiles),
		},
	}
	for _, name := range h.order {
		p := h.profiles[name]
		d.Profiles = append(d.Profiles, profileDoc{
			Name: p.Name, Price: p.Price, MemoryMiB: p.MemoryMiB, VCPUs: p.VCPUs,
			TimeoutMS: time.Duration(p.Timeout).Milliseconds(), RetainS: int64(time.Duration(p.Retention).Seconds()),
			OutputBytes: p.OutputBytes,
		})
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// statusDoc is the public view of a record: no args, no results.
type statusDoc struct {
	ID        string             `json:"id"`
	State     string             `json:"state"`
	Reason    string             `json:"reason,omitempty"`
	Profile   string             `json:"profile"`
	Packages  []store.PackageRef `json:"packages"`
	Require   string             `json:"require,omitempty"`
	ArgsHash  string             `json:"args_hash"`
	CreatedAt time.Time          `json:"created_at"`
	Finished  *time.Time         `json:"finished_at,omitempty"`
	ExpiresAt *time.Time         `json:"expires_at,omitempty"`
	Paid      bool               `json:"paid"`
	Output    string             `json:"output"`
}

func (h *Handler) statusOf(r *http.Request, rec *store.Record) statusDoc {
	pkgs := rec.Packages
	if pkgs == nil {
		pkgs = []store.PackageRef{}
	}
	return statusDoc{
		ID: rec.ID, State: rec.State, Reason: rec.Reason, Profile: rec.Profile, Packages: pkgs,
		Require: rec.Require, ArgsHash: rec.ArgsHash, CreatedAt: rec.CreatedAt, Finished: rec.Finished,
		ExpiresAt: rec.ExpiresAt, Paid: rec.Paid, Output: basePath(r) + "/" + rec.ID + "/output",
	}
}

func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request, id string) error {
	rec, err := h.store.Get(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no invocation "+id)
		return nil
	}
	if err != nil {
		return h.internal(w, "read invocation", err)
	}
	writeJSON(w, http.StatusOK, h.statusOf(r, rec))
	return nil
}

// bearer returns the capability token a request presents.
func bearer(r *http.Request) string {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	if t := r.Header.Get("X-Lualambda-Token"); t != "" {
		return t
	}
	return r.URL.Query().Get("token")
}

func (h *Handler) serveOutput(w http.ResponseWriter, r *http.Request, id string) error {
	rec, err := h.store.Get(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no invocation "+id)
		return nil
	}
	if err != nil {
		return h.internal(w, "read invocation", err)
	}
	if !authorize(w, r, rec) {
		return nil
	}
	switch rec.State {
	case store.StateRunning:
		writeJSON(w, http.StatusConflict, map[string]any{"error": "invocation " + id + " is still running", "status": h.statusOf(r, rec)})
		return nil
	case store.StateExpired:
		writeError(w, http.StatusGone, "the output of "+id+" has expired")
		return nil
	}
	out, err := h.store.Output(r.Context(), rec)
	switch {
	case errors.Is(err, store.ErrExpired):
		writeError(w, http.StatusGone, "the output of "+id+" has expired")
		return nil
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusGone, "invocation "+id+" left no output (reason: "+rec.Reason+")")
		return nil
	case err != nil:
		return h.internal(w, "read output", err)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// authorize checks the capability token a request presents for rec and
// answers 401 or 403 when it is missing or wrong.
func authorize(w http.ResponseWriter, r *http.Request, rec *store.Record) bool {
	token := bearer(r)
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="lualambda"`)
		writeError(w, http.StatusUnauthorized, "this needs the token the run or session returned (Authorization: Bearer <token>)")
		return false
	}
	if !rec.TokenMatches(token) {
		writeError(w, http.StatusForbidden, "wrong token for "+rec.ID)
		return false
	}
	return true
}

// runResponse is the answer to a run: the output plus the token.
type runResponse struct {
	*store.Output
	State      string `json:"state"`
	Token      string `json:"token"`
	StatusPath string `json:"status"`
	OutputPath string `json:"output"`
}

// admitted is a request that passed validation, claimed its id and got a VM.
type admitted struct {
	p     *profileRuntime
	req   *runRequest
	rec   *store.Record
	token string
	vm    *vmpool.VM
	start time.Time
	queue time.Duration
	gate  *payhook.Gate
	repl  *caddy.Replacer
	// leave gives back the client's slot (see clientLimiter).
	leave func()
}

// admit does what a run and a session share: check the profile and body,
// hold one of the client's slots, claim the id, take a VM and only then
// store the packages. When it returns false it has answered the request,
// told the payment gate not to charge, and left nothing stored.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request, id, profileName string, session bool) (*admitted, bool) {
	ctx := r.Context()
	a := &admitted{gate: payhook.From(ctx), start: time.Now()}
	p, ok := h.profiles[profileName]
	if !ok {
		a.gate.NoCharge("unknown profile")
		writeError(w, http.StatusNotFound, fmt.Sprintf("no profile %q; profiles: %s", profileName, strings.Join(h.order, ", ")))
		return nil, false
	}
	a.p = p
	a.repl, _ = ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if a.repl != nil {
		a.repl.Set("http.lualambda.id", id)
		a.repl.Set("http.lualambda.profile", p.Name)
		a.repl.Set("http.lualambda.price", p.Price)
	}
	req, err := parseRunRequest(r, requestLimits{
		maxBody: h.MaxUploadBytes, maxPackages: h.MaxPackages, allowEmpty: session,
		unpackLimits: unpack.Limits{Bytes: h.MaxUnpackedBytes, Files: h.MaxPackageFiles},
	})
	if err != nil {
		a.gate.NoCharge("bad request")
		var re *requestError
		if errors.As(err, &re) {
			writeError(w, re.status, re.msg)
		} else {
			writeError(w, http.StatusBadRequest, err.Error())
		}
		return nil, false
	}
	a.req = req
	client := clientKey(r, a.gate)
	leave, ok := h.clients.enter(client)
	if !ok {
		a.gate.NoCharge("client over its limit")
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("this client already has %d runs or sessions in progress here (max_per_client); wait for one to end", h.MaxPerClient))
		return nil, false
	}
	admittedOK := false
	defer func() {
		if !admittedOK {
			leave()
		}
	}()
	refs := make([]store.PackageRef, len(req.Packages))
	for i, pkg := range req.Packages {
		refs[i] = store.PackageRef{Name: pkg.Name, Hash: store.BlobHash(pkg.Data)}
	}
	a.token = randomToken()
	args := req.Args
	if args == nil {
		args = []json.RawMessage{}
	}
	argsJSON, _ := json.Marshal(args)
	argsHash, err := h.store.HashArgs(ctx, argsJSON)
	if err != nil {
		a.gate.NoCharge("storage failure")
		_ = h.internal(w, "hash arguments", err)
		return nil, false
	}
	a.rec = &store.Record{
		ID: id, State: store.StateRunning, Profile: p.Name, Packages: refs, Require: req.Require,
		ArgsHash: argsHash, Node: h.Node, CreatedAt: a.start,
		Deadline:  a.start.Add(time.Duration(h.AcquireTimeout) + time.Duration(p.Timeout) + time.Minute),
		Retention: time.Duration(p.Retention), TokenHash: store.HashToken(a.token), Session: session,
	}
	existing, err := h.store.Claim(ctx, a.rec)
	if errors.Is(err, store.ErrExists) {
		a.gate.NoCharge("id already used")
		writeJSON(w, http.StatusConflict, map[string]any{
			"error":  "invocation id " + id + " is already used (one run per id); read its output with the token from that run",
			"status": h.statusOf(r, existing),
		})
		return nil, false
	}
	if err != nil {
		a.gate.NoCharge("storage failure")
		_ = h.internal(w, "claim id", err)
		return nil, false
	}
	a.vm, err = h.acquire(ctx, p)
	if err != nil {
		a.gate.NoCharge("no VM")
		h.release(ctx, id)
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, "no VM available right now, try again shortly: "+err.Error())
		return nil, false
	}
	for _, pkg := range req.Packages {
		if _, err := h.store.PutBlob(ctx, id, pkg.Data); err != nil {
			a.gate.NoCharge("storage failure")
			a.vm.Close()
			h.release(ctx, id)
			_ = h.internal(w, "store package", err)
			return nil, false
		}
	}
	a.queue = time.Since(a.start)
	a.leave = leave
	admittedOK = true
	return a, true
}

// release forgets a claimed id whose run never started, with what was
// stored for it.
func (h *Handler) release(ctx context.Context, id string) {
	if err := h.store.Release(context.WithoutCancel(ctx), id); err != nil {
		h.logger.Error("releasing an unrun invocation", zap.String("id", id), zap.Error(err))
	}
}

// job is the VM job of an admitted request.
func (h *Handler) job(a *admitted) vmpool.Job {
	zips := make([]vmpool.NamedZip, len(a.req.Packages))
	for i, pkg := range a.req.Packages {
		zips[i] = vmpool.NamedZip{Name: pkg.Name, Data: pkg.Data}
	}
	return vmpool.Job{Source: a.req.Source, Require: a.req.Require, Args: a.req.Args, Packages: zips, Limits: h.limits(a.p)}
}

func (h *Handler) serveRun(w http.ResponseWriter, r *http.Request, id, profileName string) error {
	a, ok := h.admit(w, r, id, profileName, false)
	if !ok {
		return nil
	}
	defer a.leave()
	ctx := r.Context()
	res, err := a.vm.Run(context.WithoutCancel(ctx), h.job(a), nil)
	if err != nil {
		res = &vmpool.Result{Reason: protocol.ReasonCrash, Error: err.Error()}
	}
	if !res.Delivered {
		// The guest never had the job: nothing ran, nothing is charged,
		// and the id may be used again.
		a.gate.NoCharge("the VM failed before it took the job")
		h.logger.Error("a VM failed before it took a job", zap.String("id", id), zap.String("error", res.Error))
		h.release(ctx, id)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "the VM failed before it took the job; nothing ran and nothing was charged: try again")
		return nil
	}
	// The guest had the job: the run is the user's, charged whatever its reason.
	a.gate.Charge()
	if pool, perr := a.p.pool.get(ctx); perr == nil && pool != nil {
		pool.ObserveJob(string(res.Reason), time.Duration(res.TotalMillis*float64(time.Millisecond)))
	}
	if a.repl != nil {
		a.repl.Set("http.lualambda.reason", string(res.Reason))
	}
	out := &store.Output{
		ID: id, Profile: a.p.Name, Reason: string(res.Reason), Result: res.Value, Error: res.Error,
		Traceback: res.Traceback, Stdout: res.Stdout, Stderr: res.Stderr,
		Timings: store.Timings{
			QueueMillis: ms(a.queue), VMMillis: res.TotalMillis, LuaMillis: res.RunMillis, TotalMillis: ms(time.Since(a.start)),
		},
	}
	state := store.StateDone
	if rec, err := h.store.Finish(context.WithoutCancel(ctx), id, out); err != nil {
		h.logger.Error("storing an invocation's output", zap.String("id", id), zap.Error(err))
		state = a.rec.State
	} else {
		state = rec.State
	}
	h.keepReceipt(a.gate, id)
	base := basePath(r)
	w.Header().Set("X-Lualambda-Token", a.token)
	writeJSON(w, http.StatusOK, runResponse{
		Output: out, State: state, Token: a.token,
		StatusPath: base + "/" + id, OutputPath: base + "/" + id + "/output",
	})
	return nil
}

// keepReceipt stores the payment's receipt with the output once it settles.
func (h *Handler) keepReceipt(gate *payhook.Gate, id string) {
	gate.OnSettled(func(rc payhook.Receipt) {
		if err := h.store.AddReceipt(context.Background(), id, rc); err != nil {
			h.logger.Error("storing a receipt", zap.String("id", id), zap.Error(err))
		}
	})
}

// acquire waits up to AcquireTimeout for a VM of the profile.
func (h *Handler) acquire(ctx context.Context, p *profileRuntime) (*vmpool.VM, error) {
	actx, cancel := context.WithTimeout(ctx, time.Duration(h.AcquireTimeout))
	defer cancel()
	pool, err := p.pool.get(actx)
	if err != nil {
		return nil, err
	}
	return pool.Acquire(actx)
}

// limits are the job limits of a profile.
func (h *Handler) limits(p *profileRuntime) protocol.Limits {
	l := vmpool.LimitsFor(p.MemoryMiB+guestOverheadMiB, time.Duration(p.Timeout), p.OutputBytes)
	l.PackageBytes = h.MaxUnpackedBytes
	l.PackageFiles = h.MaxPackageFiles
	return l
}

// internal logs a server-side failure and answers 500 with JSON.
func (h *Handler) internal(w http.ResponseWriter, what string, err error) error {
	h.logger.Error(what, zap.Error(err))
	writeError(w, http.StatusInternalServerError, what+" failed")
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// parseUSD parses a decimal USD amount such as "0.001" or "$0.001" into
// micro-dollars (USDC base units), exactly.
func parseUSD(s string) (int64, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "$")
	whole, frac, _ := strings.Cut(t, ".")
	if whole == "" {
		whole = "0"
	}
	if len(frac) > 6 || t == "" || strings.ContainsAny(whole+frac, "+-") {
		return 0, fmt.Errorf("price %q: want a decimal amount of USD with at most 6 decimals", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > 1e12 {
		return 0, fmt.Errorf("price %q: want a decimal amount of USD with at most 6 decimals", s)
	}
	f := int64(0)
	if frac != "" {
		f, err = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("price %q: want a decimal amount of USD with at most 6 decimals", s)
		}
	}
	return w*1_000_000 + f, nil
}

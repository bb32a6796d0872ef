package caddylualambda

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/guest/unpack"
	"github.com/lualambda/caddy-lualambda/internal/httpjson"
	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/jobspec"
	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/store"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// routeKind is what a request to the API asks for.
type routeKind int

// The kinds of request: the API's routes, and the ways a request misses
// them.
const (
	routeNotFound  routeKind = iota // no such route: 404
	routeBadID                      // an id that breaks the id rule: 400
	routeMethod                     // a route, but not for this method: 405
	routeNoProfile                  // a run or session of a profile that does not exist: 404
	routeDiscovery                  // GET /
	routeStatus                     // GET /{id}
	routeOutput                     // GET /{id}/output
	routeAttach                     // GET /{id}/attach
	routeRun                        // POST /{id}/{profile}
	routeSession                    // POST /{id}/{profile}?mode=session
)

// route is where a request falls in the API, decided once by
// Handler.route: ServeHTTP serves it, quote prices it.
type route struct {
	kind routeKind
	// id is the invocation id (for routeBadID, the rejected segment).
	id string
	// profileName is the profile segment of a run or session.
	profileName string
	// profile is the profile of routeRun and routeSession.
	profile *profileRuntime
	// allow are the methods the route takes (routeMethod).
	allow []string
}

// route classifies a request: its route, id and profile, or why it has
// none.
func (h *Handler) route(r *http.Request) route {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		parts = nil
	}
	var rt route
	var methods []string
	switch {
	case len(parts) == 0:
		rt, methods = route{kind: routeDiscovery}, []string{http.MethodGet, http.MethodHead}
	case !jobspec.ValidID(parts[0]):
		return route{kind: routeBadID, id: parts[0]}
	case len(parts) == 1:
		rt, methods = route{kind: routeStatus, id: parts[0]}, []string{http.MethodGet, http.MethodHead}
	case len(parts) == 2 && parts[1] == invokeapi.AttachSegment:
		rt, methods = route{kind: routeAttach, id: parts[0]}, []string{http.MethodGet}
	case len(parts) == 2 && parts[1] == invokeapi.OutputSegment:
		rt, methods = route{kind: routeOutput, id: parts[0]}, []string{http.MethodGet, http.MethodHead}
	case len(parts) == 2:
		rt, methods = route{kind: routeRun, id: parts[0], profileName: parts[1]}, []string{http.MethodPost}
		if r.URL.Query().Get(invokeapi.ModeParam) == invokeapi.ModeSession {
			rt.kind = routeSession
		}
	default:
		return route{kind: routeNotFound}
	}
	if !slices.Contains(methods, r.Method) {
		return route{kind: routeMethod, id: rt.id, allow: methods}
	}
	if rt.kind == routeRun || rt.kind == routeSession {
		p, ok := h.profiles[rt.profileName]
		if !ok {
			rt.kind = routeNoProfile
		}
		rt.profile = p
	}
	return rt
}

// ServeHTTP serves the invocation API (see package invokeapi for the
// routes and documents). It is terminal: next is never called.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	rt := h.route(r)
	if q := payhook.QuoteFrom(r.Context()); q != nil {
		h.quote(q, r, rt)
		return nil
	}
	switch rt.kind {
	case routeDiscovery:
		return h.serveDiscovery(w, r)
	case routeBadID:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad invocation id %q: want 1-64 of A-Z a-z 0-9 _ -", rt.id))
	case routeMethod:
		w.Header().Set("Allow", strings.Join(rt.allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; use %s", r.Method, strings.Join(rt.allow, " or ")))
	case routeStatus:
		return h.serveStatus(w, r, rt.id)
	case routeAttach:
		return h.serveAttach(w, r, rt.id)
	case routeOutput:
		return h.serveOutput(w, r, rt.id)
	case routeNoProfile:
		payhook.From(r.Context()).NoCharge("unknown profile")
		writeError(w, http.StatusNotFound, fmt.Sprintf("no profile %q; profiles: %s", rt.profileName, strings.Join(h.order, ", ")))
	case routeSession:
		return h.serveSession(w, r, rt.id, rt.profile)
	case routeRun:
		return h.serveRun(w, r, rt.id, rt.profile)
	default:
		writeError(w, http.StatusNotFound, "not found")
	}
	return nil
}

// quote answers a payment gate's price request without side effects: a run
// or a session costs its profile's price, as routed for the run itself;
// everything else (discovery, status, output, attach, and requests the
// handler will refuse) is free.
func (h *Handler) quote(q *payhook.Quote, r *http.Request, rt route) {
	if rt.kind != routeRun && rt.kind != routeSession {
		q.SetPrice("")
		return
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		setPlaceholders(repl, rt.id, rt.profile)
	}
	q.SetPrice(rt.profile.Price)
	if rt.kind == routeRun {
		q.SetExtension("bazaar", bazaarRun)
	}
}

// setPlaceholders sets the request's lualambda placeholders for a run or
// session of p.
func setPlaceholders(repl *caddy.Replacer, id string, p *profileRuntime) {
	repl.Set("http.lualambda.id", id)
	repl.Set("http.lualambda.profile", p.Name)
	repl.Set("http.lualambda.price", p.Price)
}

// writeJSON writes v as the JSON response body.
func writeJSON(w http.ResponseWriter, status int, v any) { httpjson.Write(w, status, v) }

// writeError writes {"error": msg} (invokeapi.Error).
func writeError(w http.ResponseWriter, status int, msg string) {
	httpjson.Write(w, status, invokeapi.Error{Error: msg})
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

func (h *Handler) serveDiscovery(w http.ResponseWriter, r *http.Request) error {
	base := basePath(r)
	d := invokeapi.Discovery{
		Service: "lualambda",
		Routes: invokeapi.Routes{
			Discovery: "GET " + base + "/",
			Status:    "GET " + invokeapi.StatusPath(base, "{id}"),
			Run:       "POST " + invokeapi.RunPath(base, "{id}", "{profile}"),
			Output:    "GET " + invokeapi.OutputPath(base, "{id}"),
			Session:   "POST " + invokeapi.RunPath(base, "{id}", "{profile}") + "?" + invokeapi.ModeParam + "=" + invokeapi.ModeSession,
			Attach:    "GET " + invokeapi.AttachPath(base, "{id}") + " (WebSocket)",
		},
		Run: invokeapi.RunDoc{
			ContentTypes: []string{"multipart/form-data", "text/x-lua", "application/json"},
			PackageField: "package", SpecField: "spec",
			Spec:      invokeapi.SpecDoc{Require: "dotted module, e.g. blah.dorp", Source: "Lua source (optional)", Args: "JSON array"},
			Token:     "the run's response carries a token; send it as Authorization: Bearer <token> to read the output",
			Streaming: invokeapi.EventStreamType,
		},
		Limits: invokeapi.Limits{
			MaxPackages: int64(h.MaxPackages), MaxUploadBytes: h.MaxUploadBytes,
			MaxUnpackedBytes: h.MaxUnpackedBytes, MaxPackageFiles: int64(h.MaxPackageFiles),
		},
		MCP: h.MCP,
	}
	for _, name := range h.order {
		p := h.profiles[name]
		runtime := p.Runtime
		if runtime == "" {
			runtime = protocol.RuntimeLuaJIT
		}
		d.Profiles = append(d.Profiles, invokeapi.ProfileDoc{
			Name: p.Name, Price: p.Price, MemoryMiB: p.MemoryMiB, VCPUs: p.VCPUs,
			TimeoutMS: time.Duration(p.Timeout).Milliseconds(), RetainS: int64(time.Duration(p.Retention).Seconds()),
			OutputBytes: p.OutputBytes, Runtime: runtime,
		})
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// statusOf is the public view of a record, for a request to base: no
// args, no results.
func statusOf(base string, rec *store.Record) invokeapi.Status {
	pkgs := make([]invokeapi.PackageRef, len(rec.Packages))
	for i, p := range rec.Packages {
		pkgs[i] = invokeapi.PackageRef{Name: p.Name, Hash: p.Hash}
	}
	return invokeapi.Status{
		ID: rec.ID, State: rec.State, Reason: rec.Reason, Profile: rec.Profile, Packages: pkgs,
		Require: rec.Require, ArgsHash: rec.ArgsHash, CreatedAt: rec.CreatedAt, FinishedAt: rec.Finished,
		ExpiresAt: rec.ExpiresAt, Paid: rec.Paid, OutputPath: invokeapi.OutputPath(base, rec.ID),
	}
}

// runAnswer is the answer to a run served under base: its output, its
// state and token, and where to read it again.
func runAnswer(base string, out *store.Output, state, token string) invokeapi.RunResponse {
	resp := outputOf(out)
	resp.State, resp.Token = state, token
	resp.StatusPath, resp.OutputPath = invokeapi.StatusPath(base, out.ID), invokeapi.OutputPath(base, out.ID)
	return resp
}

// outputOf is the public view of a stored output: a run's answer without
// the run's own fields (state, token, paths).
func outputOf(out *store.Output) invokeapi.RunResponse {
	return invokeapi.RunResponse{
		ID: out.ID, Profile: out.Profile, Reason: out.Reason, Result: out.Result, Error: out.Error,
		Traceback: out.Traceback, Stdout: out.Stdout, Stderr: out.Stderr,
		Timings: invokeapi.Timings{
			QueueMillis: out.Timings.QueueMillis, VMMillis: out.Timings.VMMillis,
			LuaMillis: out.Timings.LuaMillis, TotalMillis: out.Timings.TotalMillis,
		},
		Receipt: out.Receipt, ExpiresAt: out.ExpiresAt,
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
	writeJSON(w, http.StatusOK, statusOf(basePath(r), rec))
	return nil
}

// bearer returns the capability token a request presents.
func bearer(r *http.Request) string {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	if t := r.Header.Get(invokeapi.TokenHeader); t != "" {
		return t
	}
	return r.URL.Query().Get(invokeapi.TokenParam)
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
		writeJSON(w, http.StatusConflict, invokeapi.Conflict{Error: "invocation " + id + " is still running", Status: statusOf(basePath(r), rec)})
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
	writeJSON(w, http.StatusOK, outputOf(out))
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

// admitted is a request that passed validation, claimed its id and got a VM.
type admitted struct {
	p     *profileRuntime
	req   *runRequest
	rec   *store.Record
	token string
	vm    guestVM
	start time.Time
	queue time.Duration
	gate  *payhook.Gate
	repl  *caddy.Replacer
	// leave gives back the client's slot (see clientLimiter).
	leave func()
}

// admit does what a run and a session share: check the body,
// hold one of the client's slots, claim the id, take a VM and only then
// store the packages. When it returns false it has answered the request,
// told the payment gate not to charge, and left nothing stored.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request, id string, p *profileRuntime, session bool) (*admitted, bool) {
	ctx := r.Context()
	a := &admitted{gate: payhook.From(ctx), start: time.Now(), p: p}
	a.repl, _ = ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if a.repl != nil {
		setPlaceholders(a.repl, id, p)
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
		writeJSON(w, http.StatusConflict, invokeapi.Conflict{
			Error:  "invocation id " + id + " is already used (one run per id); read its output with the token from that run",
			Status: statusOf(basePath(r), existing),
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
	return vmpool.Job{Source: a.req.Source, Require: a.req.Require, Args: a.req.Args, Packages: a.req.Packages, Limits: h.limits(a.p), Runtime: a.p.Runtime}
}

func (h *Handler) serveRun(w http.ResponseWriter, r *http.Request, id string, p *profileRuntime) error {
	a, ok := h.admit(w, r, id, p, false)
	if !ok {
		return nil
	}
	defer a.leave()
	if wantsStream(r) {
		return h.serveRunStream(w, r, a)
	}
	ctx := r.Context()
	res, err := a.vm.Run(context.WithoutCancel(ctx), h.job(a), nil)
	if err != nil {
		res = &vmpool.Result{Reason: protocol.ReasonCrash, Error: err.Error()}
	}
	if !res.Delivered {
		h.refuseUndelivered(w, ctx, a, res)
		return nil
	}
	out, state := h.finishRun(ctx, a, res)
	h.keepReceipt(a.gate, id)
	w.Header().Set(invokeapi.TokenHeader, a.token)
	writeJSON(w, http.StatusOK, runAnswer(basePath(r), out, state, a.token))
	return nil
}

// refuseUndelivered answers a run whose VM failed before the guest had
// the job: nothing ran, nothing is charged, and the id may be used again.
func (h *Handler) refuseUndelivered(w http.ResponseWriter, ctx context.Context, a *admitted, res *vmpool.Result) {
	a.gate.NoCharge("the VM failed before it took the job")
	h.logger.Error("a VM failed before it took a job", zap.String("id", a.rec.ID), zap.String("error", res.Error))
	h.release(ctx, a.rec.ID)
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "the VM failed before it took the job; nothing ran and nothing was charged: try again")
}

// finishRun records a run the guest had (the user's, charged whatever its
// reason) and stores its output; state is the invocation's state after it.
func (h *Handler) finishRun(ctx context.Context, a *admitted, res *vmpool.Result) (*store.Output, string) {
	a.gate.Charge()
	a.p.vms.ObserveJob(string(res.Reason), time.Duration(res.TotalMillis*float64(time.Millisecond)))
	if a.repl != nil {
		a.repl.Set("http.lualambda.reason", string(res.Reason))
	}
	id := a.rec.ID
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
	return out, state
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
func (h *Handler) acquire(ctx context.Context, p *profileRuntime) (guestVM, error) {
	actx, cancel := context.WithTimeout(ctx, time.Duration(h.AcquireTimeout))
	defer cancel()
	return p.vms.Acquire(actx)
}

// limits are the job limits of a profile.
func (h *Handler) limits(p *profileRuntime) protocol.Limits {
	l := vmpool.LimitsFor(p.MemoryMiB+vmpool.GuestOverheadMiB, time.Duration(p.Timeout), p.OutputBytes)
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

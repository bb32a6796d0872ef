// Package mcpserver is the `lualambda_mcp` Caddy handler: an MCP (Model
// Context Protocol) server over Streamable HTTP that lets AI agents run Lua
// in fresh microVMs, paying per call with x402 when a gate is in front.
//
// The handler embeds the configuration of the lualambda handler
// (caddylualambda.Handler: the same profiles, limits and Caddyfile
// sub-directives) and provisions one of its own. Each tool call becomes an
// in-process request to that handler's ServeHTTP, so ids, the store,
// retention, charging and the VM pools are the invocation API's own; the
// pools are shared per profile with every lualambda handler of the config.
//
// The MCP server is stateless (no Mcp-Session-Id): every POST is served on
// its own, so any node behind a load balancer can answer any request.
//
// Payment follows x402's MCP transport. In front of an x402pay gate without
// a price, the handler answers the gate's quote with
// payhook.Quote.SellsItself: every MCP request passes the gate free and
// carries a payhook.Seller. A run_lua call on a priced profile is then sold
// through it: without `_meta["x402/payment"]` the call returns the payment
// requirements (isError), with a payment it verifies, runs, settles when
// charged and returns `_meta["x402/payment-response"]`. Everything else
// (initialize, tools/list, list_profiles, get_output) is free.
package mcpserver

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/zap"

	caddylualambda "github.com/lualambda/caddy-lualambda"
	"github.com/lualambda/caddy-lualambda/payhook"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("lualambda_mcp", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("lualambda_mcp", httpcaddyfile.Before, "file_server")
}

// Handler serves lualambda's MCP tools (run_lua, list_profiles,
// get_output) over Streamable HTTP at the path it is routed to, and the
// retained output of a run at GET <that path>/{id}/output (with the run's
// token as a bearer token), which is the output_url of a run.
//
// Its configuration is the lualambda handler's, inline.
type Handler struct {
	caddylualambda.Handler

	logger *zap.Logger
	// paid and free are the MCP servers for requests with and without a
	// payment gate's Seller: the same tools, described with and without
	// prices.
	paid, free *mcp.Server
	http       *mcp.StreamableHTTPHandler
	// profiles are the provisioned profiles, in order.
	profiles []caddylualambda.Profile
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.lualambda_mcp", New: func() caddy.Module { return new(Handler) }}
}

// Provision provisions the embedded lualambda handler (its pools are the
// app's, shared by profile) and builds the MCP servers.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.Handler.Provision(ctx); err != nil {
		return fmt.Errorf("lualambda_mcp: %w", err)
	}
	h.profiles = append([]caddylualambda.Profile(nil), h.Handler.Profiles...)
	h.paid = h.newServer(true)
	h.free = h.newServer(false)
	// Base64 makes packages a third larger than the upload limit they
	// must fit; a megabyte more is for the rest of the call.
	maxBody := h.MaxUploadBytes/3*4 + 1<<20
	h.http = mcp.NewStreamableHTTPHandler(func(r *http.Request) *mcp.Server {
		if payhook.SellerFrom(r.Context()) != nil {
			return h.paid
		}
		return h.free
	}, &mcp.StreamableHTTPOptions{
		Stateless:           true,
		MaxRequestBodyBytes: maxBody,
		// The SDK refuses requests that reach a loopback address with
		// another Host (DNS rebinding of a local server). Caddy's site
		// addresses already choose the hosts this handler serves, the
		// same runs are open on the invocation API without such a check,
		// and a tunnel or proxy on the same machine (cloudflared, an SSH
		// forward) sends the public host name to 127.0.0.1.
		DisableLocalhostProtection: true,
	})
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error { return h.Handler.Validate() }

// Cleanup releases the embedded handler's share of the pools.
func (h *Handler) Cleanup() error { return h.Handler.Cleanup() }

// callKey is the context key of a call's HTTP facts.
type callKey struct{}

// call is what a tool call needs of the HTTP request that carried it: the
// tool handlers see the request's context, not the request.
type call struct {
	// seller sells run_lua for the gate in front; nil in free mode.
	seller payhook.Seller
	// remoteAddr and header are the client's address and the headers
	// that may name it behind a trusted proxy, for the run's per-client
	// limit.
	remoteAddr string
	header     http.Header
	// server is the Caddy server that took the request.
	server *caddyhttp.Server
	// endpoint is the public URL of this MCP endpoint.
	endpoint string
}

// outputRoute matches GET <endpoint>/{id}/output.
var outputRoute = regexp.MustCompile(`/([A-Za-z0-9_-]{1,64})/output/?$`)

// ServeHTTP answers a payment gate's quote (this handler sells its own
// calls), serves a run's retained output, and hands everything else to the
// MCP server. It is terminal: next is never called.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if q := payhook.QuoteFrom(r.Context()); q != nil {
		q.SellsItself()
		return nil
	}
	c := &call{
		seller:     payhook.SellerFrom(r.Context()),
		remoteAddr: r.RemoteAddr,
		header:     clientHeaders(r),
		endpoint:   endpointURL(r),
	}
	c.server, _ = r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if m := outputRoute.FindStringSubmatch(r.URL.Path); m != nil {
			return h.serveOutput(w, r, c, m[1])
		}
	}
	h.http.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
	return nil
}

// serveOutput answers GET <endpoint>/{id}/output through the embedded
// handler's own output route (its token check and documents).
func (h *Handler) serveOutput(w http.ResponseWriter, r *http.Request, c *call, id string) error {
	ir, err := innerRequest(r.Context(), c, w, r.Method, "/"+id+"/output", "", nil)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	for _, name := range []string{"Authorization", "X-Lualambda-Token"} {
		if v := r.Header.Get(name); v != "" {
			ir.Header.Set(name, v)
		}
	}
	ir.URL.RawQuery = r.URL.RawQuery
	return h.Handler.ServeHTTP(w, ir, nil)
}

// clientHeaders returns the request's headers that may name the client
// behind a trusted proxy, for the in-process requests.
func clientHeaders(r *http.Request) http.Header {
	hdr := http.Header{}
	names := []string{"X-Forwarded-For", "X-Real-IP", "Forwarded"}
	if s, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && s != nil {
		names = append(names, s.ClientIPHeaders...)
	}
	for _, n := range names {
		if v := r.Header.Values(n); len(v) > 0 {
			hdr[http.CanonicalHeaderKey(n)] = append([]string(nil), v...)
		}
	}
	return hdr
}

// endpointURL is the public URL the client used to reach this handler,
// before any rewrite, without query and trailing slash.
func endpointURL(r *http.Request) string {
	path := r.URL.Path
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		path = orig.URL.Path
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + strings.TrimSuffix(path, "/")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens: the
// lualambda directive's sub-directives, unchanged.
//
//	lualambda_mcp {
//		profile nano {
//			price 0.001
//			warm  1
//		}
//		...
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return h.Handler.UnmarshalCaddyfile(d)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)

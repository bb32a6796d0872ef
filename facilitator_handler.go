package caddylualambda

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/x402/facilitator"
)

func init() {
	caddy.RegisterModule(X402Facilitator{})
}

// X402Facilitator serves the built-in Algorand facilitator over HTTP in the
// standard x402 facilitator API, so that one server can verify and settle
// payments for others (an x402pay with `facilitator <url>`, or any x402
// server):
//
//	POST .../verify     {x402Version, paymentPayload, paymentRequirements}
//	POST .../settle     the same body; submits the payment and waits for it
//	GET  .../supported  the (version, scheme, network) kinds and the fee payer
//
// The endpoint is the last segment of the path, so it can be mounted under
// any prefix (e.g. handle /facilitator/*). It is a terminal handler. It
// shares its facilitator (and the record of settled payments) with every
// x402pay and x402facilitator of the same settings.
type X402Facilitator struct {
	// Network is mainnet, testnet, devnet (the network algod runs) or an
	// Algorand CAIP-2 id. Default: testnet.
	Network string `json:"network,omitempty"`
	// Algod is the algod node's base URL. Required.
	Algod string `json:"algod,omitempty"`
	// AlgodToken is sent as X-Algo-API-Token; use a placeholder such as
	// {env.ALGOD_TOKEN}.
	AlgodToken string `json:"algod_token,omitempty"`
	// FeePayer is the 25-word mnemonic of the account that pays the fees
	// of the payments it settles, as {env.NAME} or {file./path}. Optional.
	FeePayer string `json:"fee_payer,omitempty"`

	builtin *sharedBuiltin
	key     string
	handler *facilitator.Handler
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (X402Facilitator) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.x402facilitator", New: func() caddy.Module { return new(X402Facilitator) }}
}

// Provision loads the shared facilitator. It contacts no network.
func (f *X402Facilitator) Provision(ctx caddy.Context) error {
	f.logger = ctx.Logger()
	spec, err := parseNetwork(f.Network)
	if err != nil {
		return err
	}
	cfg := BuiltinFacilitator{Algod: f.Algod, AlgodToken: f.AlgodToken, FeePayer: f.FeePayer}.resolvePlaceholders()
	f.builtin, f.key, err = loadBuiltin(spec, cfg)
	if err != nil {
		return err
	}
	f.handler = facilitator.NewHandler(f.builtin)
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. It is terminal.
func (f *X402Facilitator) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	f.handler.ServeHTTP(w, r)
	return nil
}

// Cleanup releases the shared facilitator.
func (f *X402Facilitator) Cleanup() error {
	releaseBuiltin(f.key)
	f.key = ""
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	x402facilitator [<matcher>] {
//		network     mainnet|testnet|devnet|<CAIP-2 id>
//		algod       <url>
//		algod_token <token>
//		fee_payer   <25-word mnemonic, as {env.NAME} or {file./path}>
//	}
func (f *X402Facilitator) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	b := &BuiltinFacilitator{}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("%s already specified", sub)
		}
		seen[sub] = true
		if sub == "network" {
			if !d.Args(&f.Network) || d.NextArg() {
				return d.ArgErr()
			}
			if _, err := parseNetwork(f.Network); err != nil {
				return d.Err(err.Error())
			}
			continue
		}
		ok, err := setBuiltinOption(d, b, sub)
		if err != nil {
			return err
		}
		if !ok {
			return d.Errf("unrecognized subdirective '%s'", sub)
		}
	}
	if b.Algod == "" {
		return d.Err("x402facilitator needs algod")
	}
	f.Algod, f.AlgodToken, f.FeePayer = b.Algod, b.AlgodToken, b.FeePayer
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*X402Facilitator)(nil)
	_ caddy.CleanerUpper          = (*X402Facilitator)(nil)
	_ caddyhttp.MiddlewareHandler = (*X402Facilitator)(nil)
	_ caddyfile.Unmarshaler       = (*X402Facilitator)(nil)
	_ caddyfile.Unmarshaler       = (*X402Pay)(nil)
)

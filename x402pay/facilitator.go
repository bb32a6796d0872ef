package x402pay

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/x402"
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
//
// The requirement comes from the caller, so whoever can call /settle can
// have the fee payer pay the fees of their own transfers: every request
// must carry the configured bearer token (Authorization: Bearer <token>),
// compared in constant time; any other gets 401. A facilitator without a
// fee payer may instead be declared public, served without a token.
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
	// Token is the bearer token every request must carry, as {env.NAME}
	// or {file./path}; at least minTokenLen characters. Required unless
	// Public.
	Token string `json:"token,omitempty"`
	// Public serves requests without a token. Only allowed without a
	// FeePayer: with one, anyone could spend its ALGO on fees.
	Public bool `json:"public,omitempty"`

	builtin *sharedBuiltin
	key     string
	handler *facilitator.Handler
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (X402Facilitator) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.x402facilitator", New: func() caddy.Module { return new(X402Facilitator) }}
}

// minTokenLen is the shortest bearer token accepted.
const minTokenLen = 16

// Provision checks the credential and loads the shared facilitator. It
// contacts no network.
func (f *X402Facilitator) Provision(ctx caddy.Context) error {
	f.logger = ctx.Logger()
	spec, err := x402.ParseNetworkSpec(f.Network)
	if err != nil {
		return err
	}
	cfg := BuiltinFacilitator{Algod: f.Algod, AlgodToken: f.AlgodToken, FeePayer: f.FeePayer}.resolvePlaceholders()
	token, err := f.bearerToken(cfg.FeePayer != "")
	if err != nil {
		return err
	}
	f.builtin, f.key, err = loadBuiltin(spec, cfg)
	if err != nil {
		return err
	}
	f.handler = &facilitator.Handler{Facilitator: f.builtin, Token: token}
	return nil
}

// bearerToken resolves the token option and checks it against public. It
// never puts the token in an error.
func (f *X402Facilitator) bearerToken(hasFeePayer bool) (string, error) {
	token := strings.TrimSpace(caddy.NewReplacer().ReplaceAll(f.Token, ""))
	switch {
	case f.Public && f.Token != "":
		return "", errors.New("x402facilitator: give token or public, not both")
	case f.Public && hasFeePayer:
		return "", errors.New("x402facilitator: public is only allowed without fee_payer: with a fee payer anyone could spend its ALGO on fees; set token")
	case f.Public:
		return "", nil
	case f.Token == "":
		return "", errors.New("x402facilitator needs a token (token {env.X402_FACILITATOR_TOKEN} or token {file./path}); callers send it as Authorization: Bearer <token>. Without a fee payer, public serves without one")
	case token == "":
		return "", errors.New("x402facilitator: the token is empty (its environment variable or file is unset or blank)")
	case len(token) < minTokenLen:
		return "", fmt.Errorf("x402facilitator: the token has %d characters, at least %d needed", len(token), minTokenLen)
	}
	return token, nil
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
//		token       <bearer token callers send, as {env.NAME} or {file./path}>
//		public      # instead of token; only without fee_payer
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
		switch sub {
		case "token":
			if !d.Args(&f.Token) || d.NextArg() {
				return d.ArgErr()
			}
			continue
		case "public":
			if d.NextArg() {
				return d.ArgErr()
			}
			f.Public = true
			continue
		}
		if sub == "network" {
			if !d.Args(&f.Network) || d.NextArg() {
				return d.ArgErr()
			}
			if _, err := x402.ParseNetworkSpec(f.Network); err != nil {
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

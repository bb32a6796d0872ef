package x402pay

import (
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/lualambda/caddy-lualambda/x402"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("x402pay", parseX402Pay)
	httpcaddyfile.RegisterDirectiveOrder("x402pay", httpcaddyfile.After, "forward_auth")
	httpcaddyfile.RegisterHandlerDirective("x402facilitator", parseX402Facilitator)
	httpcaddyfile.RegisterDirectiveOrder("x402facilitator", httpcaddyfile.Before, "file_server")
}

func parseX402Pay(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(X402Pay)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

func parseX402Facilitator(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(X402Facilitator)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the middleware from Caddyfile tokens. Syntax:
//
//	x402pay [<matcher>] {
//		pay_to      <algorand address>
//		network     mainnet|testnet|devnet|<CAIP-2 id>
//		asset       usdc|<ASA id>
//		decimals    <n>
//		price       <decimal, e.g. 0.01 or $0.01, or a placeholder>
//		description <text>
//		mime_type   <type>
//		max_timeout <duration>
//		max_buffer  <size>
//		payment_records auto|storage|process
//		facilitator <url> {
//			header <name> <value>
//		}
//		facilitator builtin {
//			algod       <url>
//			algod_token <token>
//			fee_payer   <25-word mnemonic, as {env.NAME} or {file./path}> | faucet
//		}
//	}
//
// fee_payer faucet (devnet only) creates a fee payer when the facilitator
// first resolves the network (its first request), funded from the devnet's
// faucet, so that payers need only USDC.
//
// pay_to and facilitator are required. Without price, the next handler
// quotes it (lualambda: the profile's price).
func (h *X402Pay) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("%s already specified", sub)
		}
		seen[sub] = true
		switch sub {
		case "pay_to", "network", "asset", "price", "description", "mime_type":
			var v string
			if !d.Args(&v) || d.NextArg() {
				return d.ArgErr()
			}
			switch sub {
			case "pay_to":
				h.PayTo = v
			case "network":
				if _, err := x402.ParseNetworkSpec(v); err != nil {
					return d.Err(err.Error())
				}
				h.Network = v
			case "asset":
				h.Asset = v
			case "price":
				h.Price = v
			case "description":
				h.Description = v
			case "mime_type":
				h.MimeType = v
			}
		case "decimals":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return d.Errf("decimals %q: want a non-negative integer", d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Decimals = n
		case "max_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("bad duration %q", d.Val())
			}
			h.MaxTimeout = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		case "payment_records":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch v := d.Val(); v {
			case "auto", "storage", "process":
				h.PaymentRecords = v
			default:
				return d.Errf("payment_records %q: want auto, storage or process", v)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "max_buffer":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(d.Val())
			if err != nil || n == 0 || n > 1<<40 {
				return d.Errf("bad size %q", d.Val())
			}
			h.MaxBuffer = int64(n)
			if d.NextArg() {
				return d.ArgErr()
			}
		case "facilitator":
			fc, err := parseFacilitatorBlock(d)
			if err != nil {
				return err
			}
			h.Facilitator = fc
		default:
			return d.Errf("unrecognized subdirective '%s'", sub)
		}
	}
	if h.PayTo == "" {
		return d.Err("x402pay needs pay_to")
	}
	if h.Facilitator == nil {
		return d.Err("x402pay needs a facilitator (a URL, or builtin)")
	}
	return nil
}

// parseFacilitatorBlock reads `facilitator <url> { header ... }` or
// `facilitator builtin { algod ... }`.
func parseFacilitatorBlock(d *caddyfile.Dispenser) (*FacilitatorConfig, error) {
	var target string
	if !d.Args(&target) || d.NextArg() {
		return nil, d.ArgErr()
	}
	fc := &FacilitatorConfig{}
	if target == "builtin" {
		b, err := parseBuiltinBlock(d, "facilitator builtin")
		if err != nil {
			return nil, err
		}
		fc.Builtin = b
		return fc, nil
	}
	fc.URL = target
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() != "header" {
			return nil, d.Errf("unrecognized facilitator subdirective '%s'", d.Val())
		}
		var name, value string
		if !d.Args(&name, &value) || d.NextArg() {
			return nil, d.ArgErr()
		}
		if fc.Headers == nil {
			fc.Headers = http.Header{}
		}
		fc.Headers.Add(name, value)
	}
	return fc, nil
}

// parseBuiltinBlock reads the builtin facilitator's block.
func parseBuiltinBlock(d *caddyfile.Dispenser, what string) (*BuiltinFacilitator, error) {
	b := &BuiltinFacilitator{}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return nil, d.Errf("%s already specified in %s", sub, what)
		}
		seen[sub] = true
		ok, err := setBuiltinOption(d, b, sub)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, d.Errf("unrecognized %s subdirective '%s'", what, sub)
		}
	}
	if b.Algod == "" {
		return nil, d.Errf("%s needs algod", what)
	}
	return b, nil
}

// setBuiltinOption reads one line of builtin facilitator settings (algod,
// algod_token, fee_payer); it reports false for any other line.
func setBuiltinOption(d *caddyfile.Dispenser, b *BuiltinFacilitator, sub string) (bool, error) {
	var field *string
	switch sub {
	case "algod":
		field = &b.Algod
	case "algod_token":
		field = &b.AlgodToken
	case "fee_payer":
		field = &b.FeePayer
	default:
		return false, nil
	}
	if !d.Args(field) || d.NextArg() {
		return true, d.ArgErr()
	}
	return true, nil
}

package caddylualambda

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/lualambda/caddy-lualambda/vmpool"
	"github.com/lualambda/caddy-lualambda/x402"
)

func parseLualambda(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	lualambda {
//		max_packages      <n>
//		max_upload        <size>
//		max_unpacked      <size>
//		max_package_files <n>
//		acquire_timeout   <duration>
//		session_idle      <duration>
//		max_per_client    <n>
//		node              <name>
//		store_writes      auto|after_answer|before_answer
//		internal_address  <url>
//		mcp               <url-or-path>
//		profile <name> {
//			memory     <size>
//			vcpus      <n>
//			timeout    <duration>
//			retention  <duration>
//			output_cap <size>
//			price      <usd>
//			warm       <n>
//		}
//	}
//
// With no profile block the reference profiles nano, small and med are
// used. A profile named like a reference profile starts from its values.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	once := func(name string) error {
		if seen[name] {
			return d.Errf("%s already specified", name)
		}
		seen[name] = true
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if sub != "profile" {
			if err := once(sub); err != nil {
				return err
			}
		}
		switch sub {
		case "max_packages":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			h.MaxPackages = n
		case "max_per_client":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			h.MaxPerClient = n
		case "max_package_files":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			h.MaxPackageFiles = n
		case "max_upload":
			n, err := sizeArg(d)
			if err != nil {
				return err
			}
			h.MaxUploadBytes = n
		case "max_unpacked":
			n, err := sizeArg(d)
			if err != nil {
				return err
			}
			h.MaxUnpackedBytes = n
		case "acquire_timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			h.AcquireTimeout = dur
		case "session_idle":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			h.SessionIdle = dur
		case "node":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Node = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "store_writes":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.StoreWrites = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "internal_address":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.InternalAddress = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "mcp":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.MCP = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			if err := validMCP(h.MCP); err != nil {
				return d.Err(err.Error())
			}
		case "profile":
			p, err := parseProfile(d)
			if err != nil {
				return err
			}
			for _, existing := range h.Profiles {
				if existing.Name == p.Name {
					return d.Errf("profile %s already specified", p.Name)
				}
			}
			h.Profiles = append(h.Profiles, p)
		default:
			return d.Errf("unrecognized subdirective '%s'", sub)
		}
	}
	return nil
}

// parseProfile reads one profile block.
func parseProfile(d *caddyfile.Dispenser) (Profile, error) {
	if !d.NextArg() {
		return Profile{}, d.ArgErr()
	}
	p := Profile{Name: d.Val()}
	if !profileName.MatchString(p.Name) {
		return p, d.Errf("profile name %q: want a lowercase name of up to 32 letters, digits, _ or -", p.Name)
	}
	for _, def := range DefaultProfiles() {
		if def.Name == p.Name {
			p = def
		}
	}
	if d.NextArg() {
		return p, d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return p, d.Errf("%s already specified in profile %s", sub, p.Name)
		}
		seen[sub] = true
		switch sub {
		case "memory":
			n, err := sizeArg(d)
			if err != nil {
				return p, err
			}
			if n%(1<<20) != 0 || n < 16<<20 {
				return p, d.Errf("memory %d bytes: want whole MiB, at least 16MiB", n)
			}
			p.MemoryMiB = int(n >> 20)
		case "vcpus":
			n, err := intArg(d)
			if err != nil {
				return p, err
			}
			p.VCPUs = n
		case "timeout":
			dur, err := durationArg(d)
			if err != nil {
				return p, err
			}
			p.Timeout = dur
		case "retention":
			dur, err := durationArg(d)
			if err != nil {
				return p, err
			}
			p.Retention = dur
		case "output_cap":
			n, err := sizeArg(d)
			if err != nil {
				return p, err
			}
			p.OutputBytes = n
		case "price":
			if !d.NextArg() {
				return p, d.ArgErr()
			}
			if _, err := x402.ParsePrice(d.Val(), x402.USDCDecimals); err != nil {
				return p, d.Errf("profile %s: %v", p.Name, err)
			}
			p.Price = d.Val()
			if d.NextArg() {
				return p, d.ArgErr()
			}
		case "warm":
			n, err := intArg(d)
			if err != nil {
				return p, err
			}
			p.Warm = n
		case "runtime":
			if !d.NextArg() {
				return p, d.ArgErr()
			}
			p.Runtime = d.Val()
			if p.Runtime != "luajit" && p.Runtime != "lua5.4" {
				return p, d.Errf("profile %s: runtime %q: want luajit or lua5.4", p.Name, p.Runtime)
			}
			if d.NextArg() {
				return p, d.ArgErr()
			}
		default:
			return p, d.Errf("unrecognized profile subdirective '%s'", sub)
		}
	}
	return p, nil
}

// parseGlobalLualambda parses the lualambda global option into the app:
//
//	{
//		lualambda {
//			image        <dir>
//			accel        auto|kvm|tcg
//			qemu         <path>
//			qemu_uids    <first>-<last>
//			qemu_user    <user>   (deprecated)
//			runtime_dir  <dir>
//			max_vms      <n>
//			snapshots    on|off
//			warmup       on|off
//			boot_timeout <duration>
//		}
//	}
func parseGlobalLualambda(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	if existing != nil {
		return nil, d.Err("lualambda global option already specified")
	}
	d.Next() // consume option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return nil, d.Errf("%s already specified", sub)
		}
		seen[sub] = true
		if sub == "max_vms" {
			n, err := intArg(d)
			if err != nil {
				return nil, err
			}
			app.MaxVMs = n
			continue
		}
		if sub == "boot_timeout" {
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			app.BootTimeout = dur
			continue
		}
		if !d.NextArg() {
			return nil, d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		switch sub {
		case "image":
			app.Image = val
		case "accel":
			if _, err := vmpool.ParseAccel(val); err != nil {
				return nil, d.Err(err.Error())
			}
			app.Accel = val
		case "qemu":
			app.QEMU = val
		case "qemu_uids":
			if _, err := vmpool.ParseUIDRange(val); err != nil {
				return nil, d.Err(err.Error())
			}
			app.QEMUUIDs = val
		case "qemu_user":
			app.QEMUUser = val
		case "runtime_dir":
			app.RuntimeDir = val
		case "snapshots":
			on, err := onOff(d, val)
			if err != nil {
				return nil, err
			}
			app.Snapshots = &on
		case "warmup":
			on, err := onOff(d, val)
			if err != nil {
				return nil, err
			}
			app.Warmup = &on
		default:
			return nil, d.Errf("unrecognized lualambda option '%s'", sub)
		}
	}
	return httpcaddyfile.App{Name: "lualambda", Value: caddyconfig.JSON(app, nil)}, nil
}

func onOff(d *caddyfile.Dispenser, v string) (bool, error) {
	switch v {
	case "on", "true", "yes":
		return true, nil
	case "off", "false", "no":
		return false, nil
	}
	return false, d.Errf("want on or off, got %q", v)
}

// intArg reads exactly one non-negative integer argument.
func intArg(d *caddyfile.Dispenser) (int, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n < 0 {
		return 0, d.Errf("%s: want a non-negative integer, got %q", d.Val(), d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return n, nil
}

// sizeArg reads exactly one byte size such as 64KiB or 1MB.
func sizeArg(d *caddyfile.Dispenser) (int64, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := humanize.ParseBytes(d.Val())
	if err != nil || n > 1<<50 {
		return 0, d.Errf("bad size %q: want e.g. 64KiB or 1MiB", d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return int64(n), nil
}

// durationArg reads exactly one duration such as 30s or 1d.
func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur <= 0 {
		return 0, d.Errf("bad duration %q: want e.g. 30s or 5m", d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return caddy.Duration(dur), nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Handler)(nil)

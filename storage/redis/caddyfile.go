package redisstorage

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile reads the global option
//
//	storage redis [simple] {
//	    address      <host:port>...   (or a block of them)
//	    host         <host>...
//	    port         <port>...
//	    db           <n>
//	    timeout      <seconds or duration>
//	    username     <user>
//	    password     <password>
//	    key_prefix   <prefix>
//	    client_name  <name>
//	    tls_enabled  <bool>
//	    tls_insecure <bool>
//	    tls_server_certs_pem  <pem>
//	    tls_server_certs_path <path>
//	    lock_ttl     <duration>
//	}
func (s *Storage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "redis"
	if d.NextArg() {
		s.ClientType = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	for d.NextBlock(0) {
		opt := d.Val()
		args := d.RemainingArgs()
		if len(args) == 0 && (opt == "address" || opt == "host" || opt == "port") {
			for d.NextBlock(1) {
				args = append(args, d.Val())
				if d.NextArg() {
					return d.ArgErr()
				}
			}
		}
		one := func() (string, error) {
			if len(args) != 1 {
				return "", d.Errf("%s takes one value", opt)
			}
			return args[0], nil
		}
		var err error
		var v string
		switch opt {
		case "address":
			s.Address = append(s.Address, args...)
		case "host":
			s.Host = append(s.Host, args...)
		case "port":
			s.Port = append(s.Port, args...)
		case "db":
			if v, err = one(); err == nil {
				s.DB, err = strconv.Atoi(v)
				if err != nil {
					return d.Errf("db %q: not a number", v)
				}
			}
		case "timeout":
			s.Timeout, err = one()
		case "username":
			s.Username, err = one()
		case "password":
			s.Password, err = one()
		case "key_prefix":
			s.KeyPrefix, err = one()
		case "client_name":
			s.ClientName, err = one()
		case "client_type":
			s.ClientType, err = one()
		case "encryption_key":
			s.EncryptionKey, err = one()
		case "compression":
			v, err = one()
			s.Compression = v
		case "tls_enabled", "tls_insecure":
			if v, err = one(); err == nil {
				b, perr := strconv.ParseBool(v)
				if perr != nil {
					return d.Errf("%s %q: not a boolean", opt, v)
				}
				if opt == "tls_enabled" {
					s.TLSEnabled = b
				} else {
					s.TLSInsecure = b
				}
			}
		case "tls_server_certs_pem":
			s.TLSServerCertsPEM, err = one()
		case "tls_server_certs_path":
			s.TLSServerCertsPath, err = one()
		case "lock_ttl":
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil {
					return d.Errf("lock_ttl %q: %v", v, perr)
				}
				s.LockTTL = caddy.Duration(dur)
			}
		default:
			return d.Errf("unknown redis storage option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

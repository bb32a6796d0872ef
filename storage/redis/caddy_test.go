package redisstorage

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// TestCaddyTLSDataInRedis runs Caddy with this storage and its internal
// CA managing a certificate: the CA's keys and the certificate end up in
// Redis, where a second storage (another node) reads them.
func TestCaddyTLSDataInRedis(t *testing.T) {
	// Caddy's own files (logs, any autosave) go to temp dirs.
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	addr := testenv.StartRedis(t)
	prefix := "caddytls"
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "redis", "address": []string{addr}, "key_prefix": prefix},
		"apps": map[string]any{
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"tls": map[string]any{
				"certificates": map[string]any{"automate": []string{"node.lualambda.test"}},
				"automation": map[string]any{"policies": []any{map[string]any{
					"issuers": []any{map[string]any{"module": "internal"}},
				}}},
			},
		},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(b, true); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = caddy.Stop() }()
	other, _ := newRedis(t, addr, nil)
	other.prefix = prefix
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	for {
		keys, _ = other.List(ctx, "certificates", true)
		if found(keys, "node.lualambda.test.crt") && found(keys, "node.lualambda.test.key") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("certificate not stored in Redis; certificates/: %q", keys)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if pki, err := other.List(ctx, "pki/authorities/local", false); err != nil || !found(pki, "root.crt") {
		t.Fatalf("CA not stored in Redis: %q, %v", pki, err)
	}
	for _, k := range keys {
		if strings.HasSuffix(k, ".crt") {
			pem, err := other.Load(ctx, k)
			if err != nil || !strings.Contains(string(pem), "BEGIN CERTIFICATE") {
				t.Fatalf("Load(%s) = %.40q, %v", k, pem, err)
			}
		}
	}
}

func found(keys []string, suffix string) bool {
	for _, k := range keys {
		if strings.HasSuffix(k, "/"+suffix) {
			return true
		}
	}
	return false
}

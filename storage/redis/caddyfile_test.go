package redisstorage

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestCaddyfileAdapt adapts testdata/global.caddyfile and compares the
// storage it configures with testdata/global.json.
func TestCaddyfileAdapt(t *testing.T) {
	in, err := os.ReadFile("testdata/global.caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	out, warns, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": "global.caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) > 0 {
		t.Fatalf("warnings: %+v", warns)
	}
	var cfg struct {
		Storage json.RawMessage `json:"storage"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := json.Indent(&got, cfg.Storage, "", "\t"); err != nil {
		t.Fatal(err)
	}
	got.WriteByte('\n')
	if *update {
		if err := os.WriteFile("testdata/global.json", got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/global.json")
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Fatalf("adapted storage:\n%s\nwant:\n%s", got.String(), want)
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for _, in := range []string{
		"redis {\n db two\n}",
		"redis {\n tls_enabled maybe\n}",
		"redis {\n nosuch 1\n}",
		"redis {\n password a b\n}",
		"redis {\n lock_ttl forever\n}",
		"redis simple extra",
	} {
		var s Storage
		if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil {
			t.Errorf("%q: no error", strings.ReplaceAll(in, "\n", " "))
		}
	}
	var s Storage
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("redis {\n address {\n  a:1\n }\n host h1 h2\n}")); err != nil {
		t.Fatal(err)
	}
	if len(s.Address) != 1 || s.Address[0] != "a:1" || len(s.Host) != 2 {
		t.Fatalf("parsed %+v", s)
	}
}

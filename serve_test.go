package caddylualambda

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/wallet"
)

const servePayTo = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAY5HFKQ"

// serveConfig plans and adapts the options, returning the JSON config.
func serveConfig(t *testing.T, o ServeOptions) string {
	t.Helper()
	p, err := PlanServe(o)
	if err != nil {
		t.Fatalf("PlanServe(%+v): %v", o, err)
	}
	cfg, err := p.Config()
	if err != nil {
		t.Fatalf("Config of\n%s\n: %v", p.Caddyfile, err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, cfg); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestPlanServeConfigs(t *testing.T) {
	// The defaults, not the environment's algod.
	t.Setenv("LUALAMBDA_ALGOD", "")
	t.Setenv("LUALAMBDA_ALGOD_TOKEN", "")
	warm0 := 0
	cases := []struct {
		name      string
		o         ServeOptions
		want, not []string
	}{
		{"free by default on :8402", ServeOptions{},
			[]string{`"listen":[":8402"]`, `"admin":{"disabled":true`, `"handler":"lualambda"`, `"name":"nano"`, `"name":"small"`, `"name":"med"`,
				`"Location":["/invoke/"]`, `"status_code":308`, `"accel":"auto"`},
			[]string{`x402pay`, `"host"`}},
		{"paid on the devnet: faucet fee payer, local algod", ServeOptions{PayTo: servePayTo},
			[]string{`"handler":"x402pay"`, `"pay_to":"` + servePayTo + `"`, `"network":"devnet"`, `"fee_payer":"faucet"`,
				`"algod":"http://127.0.0.1:4001"`, `"algod_token":"` + wallet.DevnetToken + `"`, `"price":"0.001"`},
			nil},
		{"paid on testnet with a fee payer and prices", ServeOptions{PayTo: servePayTo, Network: "testnet", FeePayer: "{env.FEE_PAYER}",
			Prices: []string{"nano=$0.002"}, Profiles: []string{"nano"}, Warm: &warm0},
			[]string{`"algod":"https://testnet-api.algonode.cloud"`, `"fee_payer":"{env.FEE_PAYER}"`, `"price":"0.002"`, `"warm":0`},
			[]string{`"name":"small"`, `algod_token`}},
		{"a remote facilitator", ServeOptions{PayTo: servePayTo, Network: "mainnet", Facilitator: "https://facilitator.example"},
			[]string{`"url":"https://facilitator.example"`}, []string{`"builtin"`}},
		{"HTTPS on a domain", ServeOptions{Domain: "lua.example.com"},
			[]string{`"listen":[":443"]`, `"host":["lua.example.com"]`}, []string{`"automatic_https":{"disable`}},
		{"a domain on another port", ServeOptions{Domain: "lua.example.com", Listen: ":8443"},
			[]string{`"listen":[":8443"]`, `"host":["lua.example.com"]`}, nil},
		{"a bind address", ServeOptions{Listen: "127.0.0.1:9000", Accel: "tcg", RuntimeDir: "/tmp/vms"},
			[]string{`"listen":["127.0.0.1:9000"]`, `"accel":"tcg"`, `"runtime_dir":"/tmp/vms"`}, []string{`"host"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := serveConfig(t, c.o)
			for _, w := range c.want {
				if !strings.Contains(cfg, w) {
					t.Errorf("config lacks %s:\n%s", w, cfg)
				}
			}
			for _, n := range c.not {
				if strings.Contains(cfg, n) {
					t.Errorf("config has %s:\n%s", n, cfg)
				}
			}
		})
	}
}

func TestPlanServeErrors(t *testing.T) {
	big := 65
	cases := []struct {
		o    ServeOptions
		want string
	}{
		{ServeOptions{PayTo: "ALICE"}, "--pay-to"},
		{ServeOptions{Network: "testnet"}, "--network needs --pay-to"},
		{ServeOptions{Prices: []string{"nano=1"}}, "--price needs --pay-to"},
		{ServeOptions{PayTo: servePayTo, Prices: []string{"nano"}}, "want PROFILE=USD"},
		{ServeOptions{PayTo: servePayTo, Prices: []string{"nano=free"}}, "--price"},
		{ServeOptions{PayTo: servePayTo, Profiles: []string{"nano"}, Prices: []string{"med=1"}}, `profile "med" is not served`},
		{ServeOptions{Profiles: []string{"huge"}}, "not a reference profile"},
		{ServeOptions{Profiles: []string{"nano", "nano"}}, "given twice"},
		{ServeOptions{Warm: &big}, "--warm"},
		{ServeOptions{PayTo: servePayTo, Network: "moonnet"}, "--network"},
		{ServeOptions{PayTo: servePayTo, Network: "testnet", FeePayer: "faucet"}, "only on a devnet"},
		{ServeOptions{PayTo: servePayTo, FeePayer: "abandon abandon"}, "never the words themselves"},
		{ServeOptions{PayTo: servePayTo, Algod: "ftp://x"}, "--algod"},
		{ServeOptions{PayTo: servePayTo, Algod: "http://a/{$HOME}"}, "--algod"},
		{ServeOptions{PayTo: servePayTo, AlgodToken: `sec"ret`}, "--algod-token"},
		{ServeOptions{PayTo: servePayTo, Facilitator: "https://f.example"}, "needs the builtin facilitator"},
		{ServeOptions{PayTo: servePayTo, Network: "testnet", Facilitator: "https://f.example", FeePayer: "{env.X}"}, "--fee-payer is for the builtin"},
		{ServeOptions{Listen: "8402"}, "--listen"},
		{ServeOptions{Listen: ":99999"}, "--listen"},
		{ServeOptions{Domain: "lua example"}, "--domain"},
		{ServeOptions{Domain: "{$X}.example"}, "--domain"},
		{ServeOptions{Accel: "fast"}, "--accel"},
		{ServeOptions{RuntimeDir: "/tmp/a dir"}, "--runtime-dir"},
	}
	for _, c := range cases {
		_, err := PlanServe(c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error containing %q", c.o, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "abandon") || err != nil && strings.Contains(err.Error(), "sec\"ret") {
			t.Errorf("%+v: the error echoes a secret: %v", c.o, err)
		}
	}
}

// TestServeDefaultsMatchTheDevnet checks the devnet defaults against those
// of `lualambda devnet` (package wallet), which serve.go does not import.
func TestServeDefaultsMatchTheDevnet(t *testing.T) {
	if serveDevnetAlgod != wallet.DevnetAlgod || serveDevnetAlgodToken != wallet.DevnetToken {
		t.Fatalf("serve's devnet defaults %s / token differ from wallet's %s", serveDevnetAlgod, wallet.DevnetAlgod)
	}
}

// TestServeFlags checks that the flags fill ServeOptions, --warm only
// when given.
func TestServeFlags(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	get := ServeFlags(fs)
	if err := fs.Parse([]string{"--pay-to", servePayTo, "--price", "nano=0.5", "--price", "small=1", "--profile", "nano", "--profile", "small"}); err != nil {
		t.Fatal(err)
	}
	o := get()
	if o.PayTo != servePayTo || len(o.Prices) != 2 || len(o.Profiles) != 2 || o.Warm != nil || o.Accel != "auto" {
		t.Fatalf("options: %+v", o)
	}
	if err := fs.Parse([]string{"--warm", "0"}); err != nil {
		t.Fatal(err)
	}
	if o := get(); o.Warm == nil || *o.Warm != 0 {
		t.Fatalf("--warm 0 not kept: %+v", o)
	}
}

// TestServeDescribe checks what the server prints.
func TestServeDescribe(t *testing.T) {
	p, err := PlanServe(ServeOptions{PayTo: servePayTo, Profiles: []string{"nano"}})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	p.Describe(&b)
	for _, want := range []string{
		"serving http://localhost:8402/invoke/", "paid, in USDC on devnet", "receiver:    " + servePayTo,
		"funded from the devnet's faucet", "nano   0.001 USDC", "curl -s http://localhost:8402/invoke/",
		"lualambda invoke --server http://localhost:8402/invoke --profile nano",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("description lacks %q:\n%s", want, b.String())
		}
	}
}

// TestServePreflight checks the start-up check of the facilitator's algod
// against a real devnet, and against an address nobody serves.
func TestServePreflight(t *testing.T) {
	c := devnettest.Start(t, devnet.Config{})
	p, err := PlanServe(ServeOptions{PayTo: servePayTo, Algod: c.Dev.URL(), AlgodToken: c.Dev.Token()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Preflight(t.Context()); err != nil {
		t.Fatalf("preflight against a running devnet: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + l.Addr().String()
	l.Close()
	p, err = PlanServe(ServeOptions{PayTo: servePayTo, Algod: gone, AlgodToken: "sekrit"})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Preflight(t.Context())
	if err == nil || !strings.Contains(err.Error(), "lualambda devnet") || strings.Contains(err.Error(), "sekrit") {
		t.Fatalf("preflight against nothing: %v", err)
	}
	free, err := PlanServe(ServeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := free.Preflight(t.Context()); err != nil {
		t.Fatalf("preflight of a free server: %v", err)
	}
}

package bench

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestSiteAdapts renders the in-process Caddyfiles and adapts them with
// Caddy's real adapter, checking that the routes and options land in the
// JSON config.
func TestSiteAdapts(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec siteSpec
		want []string
		not  []string
	}{
		{"vms", siteSpec{Accel: "tcg", Image: "/img", Snapshots: true, Profiles: []profileSpec{{"nano", 64, 4}, {"nano-ondemand", 64, 0}}},
			[]string{`"snapshots":true`, `"name":"nano"`, `"warm":4`, `"name":"nano-ondemand"`, `"/plain"`, `"accel":"tcg"`, `"module":"file_system"`},
			[]string{"x402pay", `"module":"redis"`}},
		{"cold", siteSpec{Accel: "tcg", Image: "/img", Profiles: []profileSpec{{"nano-cold", 64, 0}}},
			[]string{`"snapshots":false`, `"name":"nano-cold"`},
			[]string{"x402pay"}},
		{"redis storage", siteSpec{Accel: "tcg", Image: "/img", Snapshots: true, Redis: "127.0.0.1:6390", Profiles: []profileSpec{{"nano", 64, 2}}},
			[]string{`"module":"redis"`, `"127.0.0.1:6390"`, `"key_prefix":"lualambda-bench"`, `"name":"nano"`},
			[]string{`"file_system"`}},
		{"payment only", siteSpec{Accel: "auto", Image: "/img", Snapshots: true, Payment: &paymentSite{
			PayTo: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAY5HFKQ", AlgodURL: "http://127.0.0.1:4001", AlgodToken: "tok",
			FeePayer: "abandon abandon ability", Price: payPrice, Network: "devnet"}},
			[]string{`"handler":"x402pay"`, `"/paid"`, `"price":"0.001"`, `abandon abandon ability`},
			[]string{`"handler":"lualambda"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Port, tc.spec.AdminPort, tc.spec.Storage, tc.spec.RuntimeDir = 8080, 2019, "/st", "/rt"
			body, err := tc.spec.caddyfile()
			if err != nil {
				t.Fatal(err)
			}
			cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "bench.Caddyfile"})
			if err != nil {
				t.Fatalf("adapt: %v\n%s", err, body)
			}
			for _, w := range warnings {
				if !strings.Contains(w.Message, "not formatted") {
					t.Errorf("warning: %s", w)
				}
			}
			if !json.Valid(cfg) {
				t.Fatalf("invalid JSON config: %s", cfg)
			}
			for _, s := range tc.want {
				if !strings.Contains(string(cfg), s) {
					t.Errorf("config lacks %s:\n%s", s, cfg)
				}
			}
			for _, s := range tc.not {
				if strings.Contains(string(cfg), s) {
					t.Errorf("config has %s:\n%s", s, cfg)
				}
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	o, _ := Options{}.withDefaults()
	if o.Duration != time.Minute || o.Concurrency != 2 || o.Runs != 40 || o.ColdRuns != 5 || o.Warm != 4 || o.Profile != "nano" {
		t.Errorf("defaults = %+v", o)
	}
	for _, bad := range []Options{
		{Skip: []string{"nope"}}, {Accel: "fast"}, {Concurrency: -1}, {MemoryMiB: 8}, {Profile: "a/b"},
		{Duration: -time.Second}, {Warm: -1},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}

// TestTable checks the goals and verdicts beside each figure.
func TestTable(t *testing.T) {
	rep := &Report{
		Accel: "tcg", Cores: 2, QEMU: "7.2.22", Target: "in-process caddy", Profile: "nano", MemoryMiB: 64,
		WarmP50: 12, WarmP90: 20, WarmP99: 24, WarmRuns: 40, ColdP50: 2500, ColdP90: 2700, ColdRuns: 5, ColdVsWarm: 208,
		RunsPerS: 4.2, SustainedRuns: 252, DurationS: 60, Concurrency: 2,
		BootMS: 2500, CloneMS: 150, BootClone: 16.7, PSSProfileMiB: 64, PSSMiB: 54, PSSTotalMiB: 216, PSSVMs: 4,
		LuaGuestVsHost: map[string]float64{"fib": 12}, LuaGuestMS: map[string]float64{"fib": 360}, LuaHostMS: map[string]float64{"fib": 30},
		StorageRedisP50: 13.5, StorageFileP50: 12.5, StorageRuns: 40, StorageRedisVsFile: 1.08,
		IdleCPUPct: ptr(0.4), IdleCPUVMs: 8, IdleCPUProfileMiB: 64, IdleCPUWindowS: 5,
		Unavailable: map[string]string{RowX402: "no devnet"},
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"accel tcg, 2 cores, QEMU 7.2.22",
		"12.0 / 20.0 / 24.0 ms (40 runs)", "p50 ≤ 12 ms, p99 ≤ 2 × p50", "208x the warm p50",
		"4.20 runs/s (252 in 60s at concurrency 2)", "≥ 16",
		"2500 ms / 150 ms (a clone is 1/16.7 of a boot)", "clone ≤ 1/15 boot",
		"54.0 MiB per VM, 216 MiB for the pool of 4", "≤ 24 MiB",
		"360 ms / 30 ms (12.0x)", "not available (see below)", "x402: no devnet",
		"13.5 / 12.5 ms (1.08x, 40 runs each)", "CPU of an idle warm pool of 8 (64 MiB profile)", "0.40% of a core (over 5s)", "< 1% of a core",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// A tail longer than twice the median misses the warm goal.
	tail := *rep
	tail.WarmP99 = 25
	var tb strings.Builder
	if err := tail.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(tb.String(), "\n") {
		if strings.HasPrefix(line, "warm run over") && !strings.HasSuffix(strings.TrimSpace(line), "missed") {
			t.Errorf("p99 25 ms over a p50 of 12 ms: %q, want missed", line)
		}
	}
	verdicts := map[string]string{"warm run over": "met", "sustained": "missed", "VM creation": "met", "memory": "missed", "CPU of an idle": "met"}
	for _, line := range strings.Split(out, "\n") {
		for prefix, v := range verdicts {
			if strings.HasPrefix(line, prefix) && !strings.HasSuffix(strings.TrimSpace(line), v) {
				t.Errorf("%q: want verdict %s", line, v)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestTableFloor checks the floor lines beside the payment row.
func TestTableFloor(t *testing.T) {
	rep := &Report{Accel: "tcg", Cores: 2, X402Ratio: 0.065, X402GatedPS: 2654, X402PlainPS: 40799}
	rep.recordFloor(2654, cryptoFloor{Parallel: 2, VerifyPerS: 19000, SignPerS: 27000, DecodePerS: 130000})
	rep.IdleCPUPct, rep.IdleCPUVMs, rep.IdleCPUProfileMiB, rep.IdleCPUWindowS = ptr(3.2), 8, 64, 5
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	floor := rep.X402FloorPS
	for _, want := range []string{
		"x402pay paid requests / cryptographic floor", fmt.Sprintf("2654 / %.0f req/s (%.0f%%)", floor, 100*2654/floor), "≥ 60%",
		"3 ed25519 verifies, 1 signature, 1 group decode", "19000 / 27000 / 130000 per s on 2 goroutines",
		"3.20% of a core",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if (strings.HasPrefix(line, "x402pay paid requests") || strings.HasPrefix(line, "CPU of an idle")) && !strings.HasSuffix(strings.TrimSpace(line), "missed") {
			t.Errorf("%q: want verdict missed", line)
		}
	}
}

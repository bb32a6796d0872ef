package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"testing"
)

// TestMetricsAndAdmin checks the pool's Prometheus metrics and the admin
// endpoint of a real caddy after a few runs.
func TestMetricsAndAdmin(t *testing.T) {
	admin := freePort(t)
	s := startCaddy(t, serverConfig{site: apiSite, admin: admin})
	for i := 0; i < 2; i++ {
		if r := runLua(t, s, fmt.Sprintf("m%d", i), "t", "return 1"); r.status != 200 {
			t.Fatalf("run: %d %s", r.status, r.body)
		}
	}
	if r := runLua(t, s, "m-err", "t", "error('x')"); r.str("reason") != "error" {
		t.Fatalf("run: %s", r.body)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", admin)
	metrics := string(do(t, "GET", base+"/metrics", "", nil).body)
	want := map[string]float64{
		`lualambda_vms_created_total{kind="restore",pool="t"}`:       3,
		`lualambda_job_seconds_count{pool="t",reason="ok"}`:          2,
		`lualambda_job_seconds_count{pool="t",reason="error"}`:       1,
		`lualambda_vm_create_seconds_count{kind="restore",pool="t"}`: 3,
		`lualambda_vm_acquire_wait_seconds_count{pool="t"}`:          3,
	}
	for series, min := range want {
		m := regexp.MustCompile(regexp.QuoteMeta(series) + ` ([0-9.e+]+)`).FindStringSubmatch(metrics)
		if m == nil {
			t.Errorf("no %s in /metrics", series)
			continue
		}
		if v, _ := strconv.ParseFloat(m[1], 64); v < min {
			t.Errorf("%s = %v, want at least %v", series, v, min)
		}
	}
	for _, gauge := range []string{`lualambda_vms_ready{pool="t"}`, `lualambda_vms_live{pool="t"}`, `lualambda_vm_snapshot_fallback{pool="t"} 0`} {
		if !regexp.MustCompile(regexp.QuoteMeta(gauge)).MatchString(metrics) {
			t.Errorf("no %s in /metrics", gauge)
		}
	}
	var pools []map[string]any
	r := do(t, "GET", base+"/lualambda/pools", "", nil)
	if err := json.Unmarshal(r.body, &pools); err != nil || len(pools) != 1 {
		t.Fatalf("admin pools: %s %v", r.body, err)
	}
	if p := pools[0]; p["name"] != "t" || p["accel"] != "tcg" || p["snapshots"] != true || p["warm_target"] != 1.0 {
		t.Fatalf("admin pools: %s", r.body)
	}
}

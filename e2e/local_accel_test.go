package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lualambda/caddy-lualambda/guest/image"
)

// TestLocalAccelCached runs invoke --local (accel auto) three times: the
// first probes KVM and says so once if it falls back to TCG, the second
// answers from the cache file without a word, and a changed key (here the
// kernel release the answer was found under) makes the third probe again.
func TestLocalAccelCached(t *testing.T) {
	// A cache directory of our own, holding the built images.
	real, err := image.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	if err := os.Symlink(filepath.Join(real, "images"), filepath.Join(cache, "images")); err != nil {
		t.Fatal(err)
	}
	tmp, _ := localTempDir(t)
	env := []string{"LUALAMBDA_CACHE=" + cache, "TMPDIR=" + tmp, "LUALAMBDA_ACCEL="}
	accelFile := filepath.Join(cache, "accel.json")
	readRecord := func() map[string]any {
		t.Helper()
		b, err := os.ReadFile(accelFile)
		if err != nil {
			t.Fatalf("the answer is not cached: %v", err)
		}
		var rec map[string]any
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return rec
	}
	invoke := func() string {
		t.Helper()
		out, errOut, code := cli(t, "", env, "invoke", "--local", "-v", "-e", "return 1")
		if code != 0 || strings.TrimSpace(out) != "1" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		return errOut
	}

	first := invoke()
	rec := readRecord()
	accel, _ := rec["accel"].(string)
	if !strings.Contains(first, "accel: "+accel) {
		t.Fatalf("the run used another accelerator than the cached %q: %s", accel, first)
	}
	fellBack := accel == "tcg"
	if fellBack != strings.Contains(first, "KVM is unusable") {
		t.Fatalf("cached %q, but the first run's warning says otherwise: %s", accel, first)
	}
	if fellBack && (!strings.Contains(first, "cached in "+accelFile) || !strings.Contains(first, "--accel tcg")) {
		t.Fatalf("the fallback warning does not say it is cached and how to skip the check: %s", first)
	}

	second := invoke()
	if strings.Contains(second, "KVM") || !strings.Contains(second, "accel: "+accel) {
		t.Fatalf("the second run probed or warned again: %s", second)
	}
	if readRecord()["probed"] != rec["probed"] {
		t.Fatalf("the second run probed again")
	}

	// Another kernel release: the cached answer no longer holds.
	key, _ := rec["key"].(map[string]any)
	key["kernel"] = "0.0.0-another"
	b, _ := json.Marshal(rec)
	if err := os.WriteFile(accelFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	third := invoke()
	if fellBack != strings.Contains(third, "KVM is unusable") {
		t.Fatalf("a changed key did not re-probe: %s", third)
	}
	again := readRecord()
	if again["probed"] == rec["probed"] || again["key"].(map[string]any)["kernel"] == "0.0.0-another" {
		t.Fatalf("a changed key did not re-probe: %v", again)
	}
	if !fellBack {
		return
	}

	// A cached "kvm" that no longer holds (KVM broke in a way the key cannot
	// see): the boot fails, the CLI probes again and runs under TCG.
	again["accel"] = "kvm"
	b, _ = json.Marshal(again)
	if err := os.WriteFile(accelFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	stale := invoke()
	if !strings.Contains(stale, "accel: tcg") || !strings.Contains(stale, "KVM is unusable") || readRecord()["accel"] != "tcg" {
		t.Fatalf("a stale cached kvm was not probed again: %s", stale)
	}
}

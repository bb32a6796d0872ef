package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// CompareAdaptFiles checks every dir/*.caddyfiletest: a Caddyfile, a line
// of dashes, and the JSON it must adapt to.
func CompareAdaptFiles(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.caddyfiletest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests found in %s: %v", dir, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, want, ok := strings.Cut(string(b), "----------")
			if !ok {
				t.Fatalf("%s has no ---------- separator", f)
			}
			if !caddytest.CompareAdapt(t, f, in, "caddyfile", strings.TrimSpace(want)) {
				t.Fatal("adapted JSON differs")
			}
		})
	}
}

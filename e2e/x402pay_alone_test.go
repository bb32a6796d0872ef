package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/x402"
)

// TestX402PayWithoutLualambda builds a Caddy with the standard modules and
// x402pay alone, as `xcaddy build --with .../x402pay` does, and checks that
// it has no lualambda module and that its paywall works in front of a plain
// respond on the devnet.
func TestX402PayWithoutLualambda(t *testing.T) {
	root := testenv.Root()
	dir := t.TempDir()
	// The main package exists only in the build's overlay, inside this
	// module, so that it uses this checkout's x402pay.
	main := filepath.Join(dir, "main.go")
	if err := os.WriteFile(main, []byte(`package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/lualambda/caddy-lualambda/x402pay"
)

func main() { caddycmd.Main() }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(root, "internal", "x402payonly", "main.go"): main}})
	overlayFile := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlayFile, overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-overlay", overlayFile, "-o", exe, "./internal/x402payonly")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a Caddy with x402pay alone: %v\n%s", err, out)
	}
	mods, err := exec.Command(exe, "list-modules").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mods), "http.handlers.x402pay") || strings.Contains(string(mods), "lualambda") {
		t.Fatalf("modules of a Caddy with x402pay alone:\n%s", mods)
	}

	c := newPaidChain(t)
	port := freePort(t)
	caddyfile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	%s
	respond "the goods" 200
}
`, port, c.gate("0.001"))), 0o644); err != nil {
		t.Fatal(err)
	}
	run := exec.Command(exe, "run", "--config", caddyfile, "--adapter", "caddyfile")
	run.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	var log strings.Builder
	run.Stdout, run.Stderr = &log, &log
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run.Process.Kill(); _ = run.Wait() })
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusPaymentRequired || resp.Header.Get(x402.HeaderPaymentRequired) == "" {
				t.Fatalf("unpaid request: %d, want 402 with %s\n%s", resp.StatusCode, x402.HeaderPaymentRequired, log.String())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not start: %v\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

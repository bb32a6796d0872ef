package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// TestReleaseRunsWithOnlyQEMU builds the release (scripts/release) and runs
// its binaries as on a server that has QEMU and nothing else: PATH holds
// only qemu-system-x86_64, HOME and every cache directory are empty, the
// working directory is not the checkout. With no image built and no way to
// build one (no Go, no apt), the binaries must use the image inside them.
func TestReleaseRunsWithOnlyQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("QEMU is needed (scripts/setup installs it): %v", err)
	}
	dist := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, filepath.Join(testenv.Root(), "scripts", "release"), dist)
	build.Dir = testenv.Root()
	var buildLog bytes.Buffer
	build.Stdout, build.Stderr = &buildLog, &buildLog
	started := time.Now()
	if err := build.Run(); err != nil {
		t.Fatalf("scripts/release: %v\n%s", err, buildLog.String())
	}
	t.Logf("scripts/release took %s", time.Since(started).Round(time.Second))
	if _, err := os.Stat(filepath.Join(testenv.Root(), "guest", "image", "embedded")); !os.IsNotExist(err) {
		t.Errorf("scripts/release left guest/image/embedded behind (%v)", err)
	}

	t.Run("checksums", func(t *testing.T) {
		sums := readSums(t, filepath.Join(dist, "SHA256SUMS"))
		for _, name := range []string{"caddy", "lualambda"} {
			b, err := os.ReadFile(filepath.Join(dist, name))
			if err != nil {
				t.Fatal(err)
			}
			got := sha256.Sum256(b)
			if sums[name] != hex.EncodeToString(got[:]) {
				t.Errorf("SHA256SUMS says %s is %q; it is %x", name, sums[name], got)
			}
			t.Logf("%s: %d MiB", name, len(b)>>20)
		}
		if len(sums) != 2 {
			t.Errorf("SHA256SUMS lists %v, want caddy and lualambda", sums)
		}
	})

	// QEMU may run as another user (when we are root) and must reach its
	// binary and the VMs' directories: not under t.TempDir, whose parent is
	// private.
	sharedTemp := func() string {
		d, err := os.MkdirTemp("", "e2e-release-")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			testenv.WaitNoQEMU(t, d)
			os.RemoveAll(d)
		})
		return d
	}
	// The bare machine: a PATH with QEMU alone, empty home and caches.
	pathDir := sharedTemp()
	if err := os.Symlink(qemu, filepath.Join(pathDir, "qemu-system-x86_64")); err != nil {
		t.Fatal(err)
	}
	home, xdgCache := t.TempDir(), t.TempDir()
	env := []string{
		"PATH=" + pathDir, "HOME=" + home, "XDG_CACHE_HOME=" + xdgCache,
		"XDG_DATA_HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir(), "TMPDIR=" + sharedTemp(),
	}
	clean := t.TempDir() // the working directory: no checkout, no go.mod
	run := func(t *testing.T, env []string, name string, args ...string) (string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(dist, name), args...)
		cmd.Dir, cmd.Env = clean, env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	want := testenv.Image(t).Hash // the image this checkout builds

	t.Run("version names the image inside", func(t *testing.T) {
		out, _ := run(t, env, "lualambda", "version", "--json")
		var v struct {
			Version  string `json:"version"`
			Go       string `json:"go"`
			Embedded *struct {
				Hash     string   `json:"hash"`
				Packages []string `json:"packages"`
			} `json:"embedded_image"`
			Built *struct{} `json:"built_image"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("version --json: %v: %s", err, out)
		}
		if v.Embedded == nil || v.Embedded.Hash != want || len(v.Embedded.Packages) == 0 {
			t.Fatalf("embedded image: %s; want hash %s", out, want)
		}
		if v.Built != nil || v.Version == "" || !strings.HasPrefix(v.Go, "go1.") {
			t.Fatalf("version: %s", out)
		}
		out, _ = run(t, env, "lualambda", "version")
		for _, w := range []string{"image     embedded " + want, "in use    the embedded image", "go        go1."} {
			if !strings.Contains(out, w) {
				t.Errorf("version lacks %q:\n%s", w, out)
			}
		}
		if entries, _ := os.ReadDir(xdgCache); len(entries) != 0 {
			t.Errorf("version wrote to the cache: %v", entries)
		}
	})

	t.Run("invoke --local", func(t *testing.T) {
		out, errOut := run(t, env, "lualambda", "invoke", "--local", "-e", "2 + 2")
		if strings.TrimSpace(out) != "4" {
			t.Fatalf("stdout %q, stderr %q; want 4", out, errOut)
		}
		if strings.Contains(errOut, "building") {
			t.Errorf("it built an image: %s", errOut)
		}
		extracted := filepath.Join(xdgCache, "lualambda", "embedded", want)
		for _, f := range []string{"vmlinuz", "initrd.img", "manifest.json"} {
			if _, err := os.Stat(filepath.Join(extracted, f)); err != nil {
				t.Errorf("the embedded image is not in the cache: %v", err)
			}
		}
	})

	t.Run("the extracted image is the one this checkout builds", func(t *testing.T) {
		built := testenv.Image(t)
		for _, f := range []string{"vmlinuz", "initrd.img"} {
			a, err := os.ReadFile(filepath.Join(built.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(xdgCache, "lualambda", "embedded", want, f))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s differs from the built image's", f)
			}
		}
	})

	// The control: a binary without the image cannot run here, since
	// nothing on this machine can build one.
	t.Run("a binary without the image cannot run here", func(t *testing.T) {
		env := append([]string{"LUALAMBDA_CACHE=" + t.TempDir()}, env...)
		cmd := exec.Command(filepath.Join(bin, "lualambda"), "version")
		cmd.Dir, cmd.Env = clean, env
		out, err := cmd.Output()
		if err != nil || !strings.Contains(string(out), "image     none embedded") || !strings.Contains(string(out), "in use    none") {
			t.Errorf("version without an image: %v: %s", err, out)
		}
		cmd = exec.Command(filepath.Join(bin, "lualambda"), "invoke", "--local", "-e", "2 + 2")
		cmd.Dir, cmd.Env = clean, env
		out, err = cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "build guest image") {
			t.Fatalf("a binary without the image ran Lua on a machine that cannot build one: %s", out)
		}
	})

	t.Run("the same checkout gives the same binaries", func(t *testing.T) {
		again := t.TempDir()
		cmd := exec.CommandContext(ctx, filepath.Join(testenv.Root(), "scripts", "release"), again)
		cmd.Dir = testenv.Root()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("scripts/release: %v\n%s", err, out)
		}
		a, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(again, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("two builds differ (was the checkout edited meanwhile?):\n%s\n%s", a, b)
		}
	})

	t.Run("caddy serves a run", func(t *testing.T) {
		cache, runtimeDir, dir := t.TempDir(), sharedTemp(), t.TempDir()
		port := freePort(t)
		caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	lualambda {
		runtime_dir %s
	}
}

http://127.0.0.1:%d {
	handle_path /invoke/* {
		lualambda {
			profile t {
				memory 64MiB
				timeout 20s
				warm 1
			}
		}
	}
}
`, filepath.Join(dir, "storage"), runtimeDir, port)
		config := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(config, []byte(caddyfile), 0o644); err != nil {
			t.Fatal(err)
		}
		// This one finds its cache through LUALAMBDA_CACHE.
		serverEnv := append([]string{"LUALAMBDA_CACHE=" + cache}, env...)
		cmd := exec.Command(filepath.Join(dist, "caddy"), "run", "--config", config, "--adapter", "caddyfile")
		cmd.Dir, cmd.Env = clean, serverEnv
		log := &testenv.Buffer{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Errorf("caddy did not stop on SIGINT")
			}
			if t.Failed() {
				t.Logf("caddy log:\n%s", tail(log.String(), 4000))
			}
		}()
		url := fmt.Sprintf("http://127.0.0.1:%d/invoke/rel-1/t", port)
		deadline := time.Now().Add(2 * time.Minute)
		var status int
		var body []byte
		for time.Now().Before(deadline) {
			resp, err := http.Post(url, "text/x-lua", strings.NewReader("return 2 + 2"))
			if err == nil {
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
				break
			}
			select {
			case <-done:
				t.Fatalf("caddy exited: %s", log.String())
			case <-time.After(100 * time.Millisecond):
			}
		}
		var res struct {
			Reason string `json:"reason"`
			Result any    `json:"result"`
		}
		_ = json.Unmarshal(body, &res)
		if status != http.StatusOK || res.Reason != "ok" || fmt.Sprint(res.Result) != "4" {
			t.Fatalf("run: %d %s", status, body)
		}
		started := false
		for _, line := range strings.Split(log.String(), "\n") {
			if strings.Contains(line, `"vm pool started"`) {
				started = true
				if !strings.Contains(line, `"image":"`+want+`"`) || !strings.Contains(line, `"image_embedded":true`) ||
					!strings.Contains(line, filepath.Join(cache, "embedded", want)) {
					t.Errorf("the pool's start line does not name the embedded image %s: %s", want, line)
				}
			}
		}
		if !started {
			t.Errorf("no pool start line in the log")
		}
	})
}

// readSums parses a sha256sum file: name → hex digest.
func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: bad line %q", sc.Text())
		}
		sums[name] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sums
}

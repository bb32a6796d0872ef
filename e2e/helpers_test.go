// Package e2e tests the product as users run it: the real caddy and
// lualambda binaries, real HTTP on loopback, real QEMU VMs.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
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

// bin holds the binaries built for this test run.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		panic(err)
	}
	bin = dir
	for _, c := range []string{"caddy", "lualambda"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, c), "./cmd/"+c)
		cmd.Dir = testenv.Root()
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", c, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port nobody listens on.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is a running caddy binary.
type server struct {
	t       testing.TB
	URL     string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	config  string
	runtime string
}

// serverConfig is what a test server needs beyond its site block.
type serverConfig struct {
	storage string // storage directory; a temp dir when empty
	// storageBlock replaces the file system storage with a storage
	// directive of its own, e.g. "storage redis {...}".
	storageBlock string
	global       string // extra lines for the lualambda global option
	site         string // the site's directives
	port         int    // 0 picks one
	admin        int    // the admin endpoint's port; 0 turns it off
}

// startCaddy writes a Caddyfile and runs the caddy binary with it until the
// test ends, checking afterwards that it left no QEMU process.
func startCaddy(t testing.TB, sc serverConfig) *server {
	t.Helper()
	dir := t.TempDir()
	if sc.storage == "" {
		sc.storage = filepath.Join(dir, "storage")
	}
	if sc.port == 0 {
		sc.port = freePort(t)
	}
	runtimeDir := vmsDir(t)
	admin := "off"
	if sc.admin != 0 {
		admin = fmt.Sprintf("127.0.0.1:%d", sc.admin)
	}
	storage := "storage file_system " + sc.storage
	if sc.storageBlock != "" {
		storage = sc.storageBlock
	}
	caddyfile := fmt.Sprintf(`{
	admin %s
	persist_config off
	%s
	lualambda {
		accel tcg
		runtime_dir %s
		%s
	}
}

http://127.0.0.1:%d {
	%s
}
`, admin, storage, runtimeDir, sc.global, sc.port, sc.site)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, URL: fmt.Sprintf("http://127.0.0.1:%d", sc.port), log: &bytes.Buffer{}, config: path, runtime: runtimeDir}
	s.start()
	t.Cleanup(func() {
		s.stop()
		testenv.WaitNoQEMU(t, runtimeDir)
		if t.Failed() {
			t.Logf("caddy log:\n%s", tail(s.log.String(), 4000))
		}
	})
	return s
}

func (s *server) start() {
	s.t.Helper()
	s.cmd = exec.Command(filepath.Join(bin, "caddy"), "run", "--config", s.config, "--adapter", "caddyfile")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Dir(s.config), "XDG_CONFIG_HOME="+filepath.Dir(s.config))
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.URL + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("caddy did not start: %s", s.log.String())
}

// stop ends caddy gracefully, as a user's Ctrl-C would.
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
		s.t.Errorf("caddy did not stop on SIGINT")
	}
	s.cmd = nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// response is a decoded HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r response) str(key string) string {
	v, _ := r.json[key].(string)
	return v
}

// do sends a request and reads the whole answer.
func do(t testing.TB, method, url, contentType string, body io.Reader, header ...string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &r.json)
	}
	return r
}

// runLua POSTs raw Lua.
func runLua(t testing.TB, s *server, id, profile, src string) response {
	t.Helper()
	return do(t, http.MethodPost, s.URL+"/invoke/"+id+"/"+profile, "text/x-lua", strings.NewReader(src))
}

// poolStats is a pool's line in the admin API's /lualambda/pools.
type poolStats struct {
	Name  string `json:"name"`
	Ready int    `json:"ready"`
	Live  int    `json:"live"`
}

// waitPool polls the admin API until the named pool's stats satisfy ok,
// failing the test after two minutes.
func waitPool(t testing.TB, admin int, name string, ok func(poolStats) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last []byte
	for time.Now().Before(deadline) {
		r := do(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/lualambda/pools", admin), "", nil)
		last = r.body
		var pools []poolStats
		if json.Unmarshal(r.body, &pools) == nil {
			for _, p := range pools {
				if p.Name == name && ok(p) {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pool %s never got there: %s", name, last)
}

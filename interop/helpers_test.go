package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/image"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// Time limits of the pieces a test starts; every one ends the test with a
// clear failure instead of hanging it.
const (
	npmInstallTimeout = 10 * time.Minute
	buildTimeout      = 10 * time.Minute
	nodeRunTimeout    = 90 * time.Second
	startTimeout      = 30 * time.Second
	stopTimeout       = 10 * time.Second
)

// interopDir is this package's directory: package.json and the scripts.
func interopDir() string { return filepath.Join(testenv.Root(), "interop") }

// built caches one `go build` per command for the test binary's life.
type built struct {
	once sync.Once
	path string
	err  error
}

var (
	buildMu   sync.Mutex
	builds    = map[string]*built{}
	buildDir  string
	npmOnce   sync.Once
	npmDir    string
	npmErr    error
	nodeCheck sync.Once
	nodeErr   error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "interop-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binary builds ./cmd/<name> of this checkout once and returns its path.
func binary(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	b := builds[name]
	if b == nil {
		b = &built{}
		builds[name] = b
	}
	buildMu.Unlock()
	b.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		b.path = filepath.Join(buildDir, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.path, "./cmd/"+name)
		cmd.Dir = testenv.Root()
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// requireNode fails the test unless node 20 or later and npm are installed
// (scripts/setup installs Debian's nodejs and npm).
func requireNode(t testing.TB) {
	t.Helper()
	nodeCheck.Do(func() {
		for _, c := range []string{"node", "npm"} {
			if _, err := exec.LookPath(c); err != nil {
				nodeErr = fmt.Errorf("%s is not installed (scripts/setup installs nodejs and npm): %w", c, err)
				return
			}
		}
		out, err := exec.Command("node", "--version").Output()
		if err != nil {
			nodeErr = fmt.Errorf("node --version: %w", err)
			return
		}
		v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
		major, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
		if err != nil || major < 20 {
			nodeErr = fmt.Errorf("node %s is too old: the npm x402 packages need node 20 or later", v)
		}
	})
	if nodeErr != nil {
		if testing.Short() {
			t.Skip(nodeErr)
		}
		t.Fatal(nodeErr)
	}
}

// npmModules returns a node_modules directory holding exactly the packages
// of package-lock.json, installing them with `npm ci` into the cache the
// first time (keyed by the hash of package.json and the lock).
func npmModules(t testing.TB) string {
	t.Helper()
	requireNode(t)
	npmOnce.Do(func() { npmDir, npmErr = installNPM() })
	if npmErr != nil {
		t.Fatal(npmErr)
	}
	return npmDir
}

func installNPM() (string, error) {
	h := sha256.New()
	var files [][]byte
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(interopDir(), name))
		if err != nil {
			return "", fmt.Errorf("read npm manifest: %w", err)
		}
		files = append(files, b)
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	cache, err := image.DefaultCacheDir()
	if err != nil {
		return "", err
	}
	root := filepath.Join(cache, "npm")
	dir := filepath.Join(root, hex.EncodeToString(h.Sum(nil))[:16])
	modules := filepath.Join(dir, "node_modules")
	marker := filepath.Join(dir, ".installed")
	if _, err := os.Stat(marker); err == nil {
		return modules, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("create npm cache: %w", err)
	}
	tmp, err := os.MkdirTemp(root, "install-")
	if err != nil {
		return "", fmt.Errorf("create npm cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	for i, name := range []string{"package.json", "package-lock.json"} {
		if err := os.WriteFile(filepath.Join(tmp, name), files[i], 0o644); err != nil {
			return "", fmt.Errorf("copy npm manifest: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmInstallTimeout)
	defer cancel()
	// --ignore-scripts: none of the packages needs an install script, and
	// the tests run nothing from the registry but the packages' own code.
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error")
	cmd.Dir = tmp
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci (needs the npm registry the first time): %w\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".installed"), nil, 0o644); err != nil {
		return "", fmt.Errorf("mark npm install: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another run installed the same lock first: use that one.
		if _, statErr := os.Stat(marker); statErr == nil {
			return modules, nil
		}
		return "", fmt.Errorf("install npm modules: %w", err)
	}
	pruneNPMCache(root, filepath.Base(dir))
	return modules, nil
}

// pruneNPMCache removes the installs of other locks (each ~180 MB) and
// abandoned partial installs, once they are a day old, so that a run of
// another checkout still using one is left alone.
func pruneNPMCache(root, keep string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == keep {
			continue
		}
		info, err := e.Info()
		if err == nil && time.Since(info.ModTime()) > 24*time.Hour {
			_ = os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
}

// nodeEnv is the environment of a node script: ours without NODE_*
// settings that could change module resolution, plus NODE_PATH pointing at
// the installed modules, plus extra.
func nodeEnv(modules string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NODE_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "NODE_PATH="+modules, "NODE_NO_WARNINGS=1")
	return append(env, extra...)
}

// runNode runs one of this package's scripts to completion (bounded by
// nodeRunTimeout) and decodes the JSON line it prints into out.
func runNode(t testing.TB, modules, script string, out any, env ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nodeRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(interopDir(), script))
	cmd.Env = nodeEnv(modules, env...)
	cmd.SysProcAttr = dieWithUs()
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("node %s: no answer within %v; stderr:\n%s", script, nodeRunTimeout, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Logf("node %s stderr:\n%s", script, tail(stderr.String(), 4000))
	}
	line := bytes.TrimSpace(stdout.Bytes())
	if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal(line, out); err != nil {
		return fmt.Errorf("node %s: %v; output %q: %w", script, runErr, tail(stdout.String(), 2000), err)
	}
	return nil
}

// nodeServer is a running server.cjs.
type nodeServer struct {
	URL   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	lines []string // its stdout after the listening line
	// more is closed and replaced each time a line arrives.
	more chan struct{}
	log  testenv.Buffer
	done chan struct{}
}

// startNodeServer runs server.cjs with env until the test ends.
func startNodeServer(t testing.TB, modules string, env ...string) *nodeServer {
	t.Helper()
	s := &nodeServer{done: make(chan struct{}), more: make(chan struct{})}
	s.cmd = exec.Command("node", filepath.Join(interopDir(), "server.cjs"))
	s.cmd.Env = nodeEnv(modules, append([]string{"PORT=0"}, env...)...)
	s.cmd.SysProcAttr = dieWithUs()
	s.cmd.Stderr = &s.log
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start node server: %v", err)
	}
	listening := make(chan int, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var l struct {
				Listening int `json:"listening"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Listening != 0 {
				listening <- l.Listening
				continue
			}
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			close(s.more)
			s.more = make(chan struct{})
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("node server stderr:\n%s", tail(s.log.String(), 4000))
		}
	})
	select {
	case port := <-listening:
		s.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	case <-s.done:
		t.Fatalf("node server exited before listening:\n%s", s.log.String())
	case <-time.After(startTimeout):
		t.Fatalf("node server did not listen within %v:\n%s", startTimeout, s.log.String())
	}
	return s
}

// output returns the JSON lines the server printed after it started.
func (s *nodeServer) output() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// awaitOutput waits until the lines the server printed satisfy ok, and
// returns them; the server writes its lines on its own time, after the
// client has its answer. It fails the test after nodeRunTimeout.
func (s *nodeServer) awaitOutput(t testing.TB, ok func([]string) bool) []string {
	t.Helper()
	deadline := time.NewTimer(nodeRunTimeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		lines, more := append([]string(nil), s.lines...), s.more
		s.mu.Unlock()
		if ok(lines) {
			return lines
		}
		select {
		case <-more:
		case <-s.done:
			s.mu.Lock()
			lines = append([]string(nil), s.lines...)
			s.mu.Unlock()
			if ok(lines) {
				return lines
			}
			t.Fatalf("the node server exited; its output %q never got there", lines)
		case <-deadline.C:
			t.Fatalf("the node server's output %q did not get there within %s", lines, nodeRunTimeout)
		}
	}
}

// stop closes the server's stdin, which makes it exit, and kills it if it
// has not within stopTimeout.
func (s *nodeServer) stop(t testing.TB) {
	_ = s.stdin.Close()
	exited := make(chan error, 1)
	go func() { <-s.done; exited <- s.cmd.Wait() }()
	awaitExit(t, s.cmd, exited, "node server did not exit", "its stdin closing")
}

// awaitExit waits up to stopTimeout for a child process that was asked to
// stop (by cause) to exit, as exited tells; then it kills it and fails the
// test saying what did not happen.
func awaitExit(t testing.TB, cmd *exec.Cmd, exited <-chan error, what, cause string) {
	t.Helper()
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-exited
		t.Errorf("%s within %v of %s", what, stopTimeout, cause)
	}
}

// caddy is a running caddy binary of this checkout.
type caddy struct {
	URL  string
	cmd  *exec.Cmd
	log  testenv.Buffer
	done chan error
}

// startCaddy runs the caddy binary with one loopback HTTP site made of the
// given directives (plus extra global options) until the test ends.
func startCaddy(t testing.TB, global, site string) *caddy {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	%s
}

http://127.0.0.1:%d {
	%s
}
`, filepath.Join(dir, "storage"), global, port, site)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &caddy{URL: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan error, 1)}
	c.cmd = exec.Command(binary(t, "caddy"), "run", "--config", path, "--adapter", "caddyfile")
	c.cmd.Stdout, c.cmd.Stderr = &c.log, &c.log
	c.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	c.cmd.SysProcAttr = dieWithUs()
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start caddy: %v", err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() {
			t.Logf("Caddyfile:\n%s\ncaddy log:\n%s", caddyfile, tail(c.log.String(), 6000))
		}
	})
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-c.done:
			c.done <- err
			t.Fatalf("caddy exited: %v\n%s", err, c.log.String())
		default:
		}
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.Close()
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("caddy did not listen within %v:\n%s", startTimeout, c.log.String())
	return nil
}

// stop ends caddy with SIGINT, as Ctrl-C would, and kills it if it hangs.
func (c *caddy) stop(t testing.TB) {
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	awaitExit(t, c.cmd, c.done, "caddy did not stop", "SIGINT")
}

// dieWithUs makes a child process get SIGKILL if the test binary dies
// without cleaning up (a panic, go test's timeout), so no server outlives it.
func dieWithUs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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

// get sends a plain GET and reads the whole answer.
func get(t testing.TB, url string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
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
	return resp, b
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

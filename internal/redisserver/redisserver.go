// Package redisserver starts and stops a private redis-server (Debian's,
// installed by scripts/setup) for the storage tests and for lualambda
// bench's storage row.
package redisserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is a redis-server this process started: loopback only, no
// persistence, its files in a private directory.
type Server struct {
	addr   string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been reaped
	out    *lockedBuffer
}

// lockedBuffer collects the server's output (the first 16 KiB); it is
// written by exec's copying goroutine and read when reporting an error.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 16<<10 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(l.b.String())
}

// ErrNotInstalled is returned when no redis-server can be found.
var ErrNotInstalled = errors.New("no redis-server on this host (install the redis-server package, or run scripts/setup)")

// Binary finds redis-server: on PATH, else where Debian installs it.
func Binary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	const debian = "/usr/bin/redis-server"
	if st, err := os.Stat(debian); err == nil && !st.IsDir() {
		return debian, nil
	}
	return "", ErrNotInstalled
}

// Start starts redis-server on a free loopback port and returns once it
// answers PING, within 20 s. A missing redis-server is ErrNotInstalled.
// The caller stops it with Stop.
func Start(ctx context.Context) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "lualambda-redis-")
	if err != nil {
		return nil, fmt.Errorf("redis directory: %w", err)
	}
	s := &Server{addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, exited: make(chan struct{}), out: &lockedBuffer{}}
	// Not CommandContext: stop ends it, also when ctx is cancelled.
	s.cmd = exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "yes")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if Ping(ctx, s.addr) {
			return s, nil
		}
		select {
		case <-s.exited:
			s.Stop()
			return nil, fmt.Errorf("redis-server exited at start: %s", s.out.String())
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.Stop()
			return nil, fmt.Errorf("redis-server on %s did not answer PING within 20s: %s", s.addr, s.out.String())
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		case <-s.exited:
		}
	}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Stop kills the server, waits for it to be reaped and removes its
// directory.
func (s *Server) Stop() {
	_ = s.cmd.Process.Kill()
	<-s.exited
	_ = os.RemoveAll(s.dir)
}

// Ping sends a RESP PING to addr and reports whether the answer is PONG.
func Ping(ctx context.Context, addr string) bool {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	b := make([]byte, 16)
	n, err := c.Read(b)
	if err != nil && !errors.Is(err, net.ErrClosed) && n == 0 {
		return false
	}
	return strings.HasPrefix(string(b[:n]), "+PONG")
}

// freePort returns a loopback port nobody listens on.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ChildLeft reports whether a redis-server child of this process is
// running (read from /proc), for tests that check nothing is left behind.
func ChildLeft() bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	me := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.Contains(s[:i], "(redis-server") {
			continue
		}
		if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == me {
			return true
		}
	}
	return false
}

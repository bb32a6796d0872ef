package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// redisServer is a redis-server this process started for the storage row:
// loopback only, no persistence, its files in a private directory.
type redisServer struct {
	addr   string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been reaped
	out    *lockedBuffer
}

// lockedBuffer collects a child's output; it is written by exec's copying
// goroutine and read when reporting an error.
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

// redisBinary finds redis-server: on PATH, else where Debian installs it.
func redisBinary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	const debian = "/usr/bin/redis-server"
	if st, err := os.Stat(debian); err == nil && !st.IsDir() {
		return debian, nil
	}
	return "", errUnavailable{"no redis-server on this host (install the redis-server package, or run scripts/setup)"}
}

// startRedis starts redis-server on a free loopback port and returns once
// it answers PING. A missing redis-server is errUnavailable.
func startRedis(ctx context.Context) (*redisServer, error) {
	bin, err := redisBinary()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "lualambda-bench-redis-")
	if err != nil {
		return nil, fmt.Errorf("redis directory: %w", err)
	}
	s := &redisServer{addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, exited: make(chan struct{}), out: &lockedBuffer{}}
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
		if redisPing(ctx, s.addr) {
			return s, nil
		}
		select {
		case <-s.exited:
			s.stop()
			return nil, fmt.Errorf("redis-server exited at start: %s", s.out.String())
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("redis-server on %s did not answer PING within 20s: %s", s.addr, s.out.String())
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		case <-s.exited:
		}
	}
}

// stop kills the server, waits for it to be reaped and removes its
// directory.
func (s *redisServer) stop() {
	_ = s.cmd.Process.Kill()
	<-s.exited
	_ = os.RemoveAll(s.dir)
}

// redisPing sends a RESP PING and reports whether the answer is PONG.
func redisPing(ctx context.Context, addr string) bool {
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

package redisserver

import (
	"context"
	"os"
	"os/exec"
	"testing"
)

// TestRedisStartStop starts a redis-server, checks that
// it answers and is this process's child, and that stop ends it.
func TestRedisStartStop(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed (run ./scripts/setup)")
	}
	ctx := context.Background()
	rs, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !Ping(ctx, rs.Addr()) || !ChildLeft() {
		rs.Stop()
		t.Fatalf("redis-server on %s: not answering, or not found as a child", rs.Addr())
	}
	rs.Stop()
	if Ping(ctx, rs.Addr()) || ChildLeft() {
		t.Errorf("redis-server on %s still there after stop", rs.Addr())
	}
	if _, err := os.Stat(rs.dir); !os.IsNotExist(err) {
		t.Errorf("redis directory %s not removed: %v", rs.dir, err)
	}
}

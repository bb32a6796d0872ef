package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/redisserver"
)

// StartRedis runs Debian's redis-server (scripts/setup installs it) on a
// free loopback port, with no persistence, in a temporary directory, and
// returns its address once it answers a PING; it is stopped when the test
// ends.
func StartRedis(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := redisserver.Start(ctx)
	if err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s.Addr()
}

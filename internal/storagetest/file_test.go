package storagetest

import (
	"os"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func TestMain(m *testing.M) {
	HelperMain(func(spec string) (certmagic.Storage, error) {
		return &certmagic.FileStorage{Path: spec}, nil
	})
	os.Exit(m.Run())
}

// TestFileStorage runs the suite against certmagic's FileStorage, whose
// locks go stale 10 s after their last refresh (refreshed every 5 s).
func TestFileStorage(t *testing.T) {
	RunSuite(t, Backend{
		New: func(t *testing.T) (certmagic.Storage, string) {
			dir := t.TempDir()
			return &certmagic.FileStorage{Path: dir}, dir
		},
		Expiry: 10 * time.Second,
	})
}

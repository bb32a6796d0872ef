package x402pay

import (
	"testing"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// TestCaddyfileAdapt checks the golden Caddyfiles of testdata/caddyfile_adapt.
func TestCaddyfileAdapt(t *testing.T) { testenv.CompareAdaptFiles(t, "testdata/caddyfile_adapt") }

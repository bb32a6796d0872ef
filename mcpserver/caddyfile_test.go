package mcpserver

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
	// The golden file puts x402pay in front of lualambda_mcp.
	_ "github.com/lualambda/caddy-lualambda/x402pay"
)

// TestCaddyfileAdapt checks the golden Caddyfiles of testdata/caddyfile_adapt:
// one snippet of profiles imported by lualambda and lualambda_mcp, and
// x402pay ordered before lualambda_mcp in a handle block.
func TestCaddyfileAdapt(t *testing.T) { testenv.CompareAdaptFiles(t, "testdata/caddyfile_adapt") }

// TestCaddyfile: lualambda_mcp takes lualambda's sub-directives and refuses
// what lualambda refuses.
func TestCaddyfile(t *testing.T) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("lualambda_mcp {\n\tacquire_timeout 5s\n\tprofile p {\n\t\tprice 0.5\n\t\twarm 1\n\t}\n}"))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Profiles) != 1 || h.Profiles[0].Name != "p" || h.Profiles[0].Price != "0.5" || h.Profiles[0].Warm != 1 || time.Duration(h.AcquireTimeout) != 5*time.Second {
		t.Fatalf("parsed %+v", h.Handler)
	}
	for _, c := range []struct{ input, want string }{
		{"lualambda_mcp extra", "wrong argument count"},
		{"lualambda_mcp {\n\tbogus 1\n}", "unrecognized subdirective 'bogus'"},
		{"lualambda_mcp {\n\tprofile p {\n\t\tprice free\n\t}\n}", `price "free"`},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.input, err, c.want)
		}
	}
}

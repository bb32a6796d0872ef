package caddylualambda

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
	// The golden files put x402pay in front of lualambda.
	_ "github.com/lualambda/caddy-lualambda/x402pay"
)

// TestCaddyfileAdapt checks the golden Caddyfiles of testdata/caddyfile_adapt.
func TestCaddyfileAdapt(t *testing.T) { testenv.CompareAdaptFiles(t, "testdata/caddyfile_adapt") }

func TestCaddyfileErrors(t *testing.T) {
	cases := []struct {
		input, want string
	}{
		{"lualambda extra", "wrong argument count"},
		{"lualambda {\n\tbogus 1\n}", "unrecognized subdirective 'bogus', at Testfile:2"},
		{"lualambda {\n\tmax_packages -1\n}", "non-negative integer"},
		{"lualambda {\n\tmax_packages 1\n\tmax_packages 2\n}", "max_packages already specified, at Testfile:3"},
		{"lualambda {\n\tmax_upload lots\n}", "bad size"},
		{"lualambda {\n\tacquire_timeout soon\n}", "bad duration"},
		{"lualambda {\n\tprofile\n}", "wrong argument count"},
		{"lualambda {\n\tprofile Big {\n\t}\n}", "profile name"},
		{"lualambda {\n\tprofile p {\n\t\tmemory 1000\n\t}\n}", "whole MiB"},
		{"lualambda {\n\tprofile p {\n\t\tprice free\n\t}\n}", "price \"free\""},
		{"lualambda {\n\tprofile p {\n\t\twarm 1\n\t\twarm 2\n\t}\n}", "warm already specified in profile p"},
		{"lualambda {\n\tprofile p {\n\t\tcolour red\n\t}\n}", "unrecognized profile subdirective 'colour', at Testfile:3"},
		{"lualambda {\n\tprofile p\n\tprofile p\n}", "profile p already specified"},
		{"lualambda {\n\tmcp\n}", "wrong argument count"},
		{"lualambda {\n\tmcp /a /b\n}", "wrong argument count"},
		{"lualambda {\n\tmcp ftp://x/mcp\n}", "mcp \"ftp://x/mcp\": want the MCP endpoint's http(s) URL or its path"},
		{"lualambda {\n\tmcp mcp\n}", "want the MCP endpoint's"},
		{"lualambda {\n\tmcp //evil.example/mcp\n}", "want the MCP endpoint's"},
		{"lualambda {\n\tmcp /a\n\tmcp /b\n}", "mcp already specified"},
	}
	for _, c := range cases {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.input, err, c.want)
		}
	}
}

func TestGlobalOptionErrors(t *testing.T) {
	cases := []struct{ input, want string }{
		{"lualambda {\n\taccel fast\n}", "accel \"fast\""},
		{"lualambda {\n\tsnapshots maybe\n}", "want on or off"},
		{"lualambda {\n\tmax_vms many\n}", "non-negative integer"},
		{"lualambda {\n\twhat 1\n}", "unrecognized lualambda option 'what', at Testfile:2"},
		{"lualambda {\n\tqemu_uids 5-4\n}", "first <= last"},
	}
	for _, c := range cases {
		_, err := parseGlobalLualambda(caddyfile.NewTestDispenser(c.input), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.input, err, c.want)
		}
	}
}

// TestNodeNameIsAKeyPart: the node's name goes into storage keys, so it
// may not climb out of them.
func TestNodeNameIsAKeyPart(t *testing.T) {
	for _, bad := range []string{"", "../../etc", "a/b", "..", strings.Repeat("n", 65), "sp ace"} {
		h := Handler{Node: bad}
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "node") {
			t.Errorf("node %q: %v", bad, err)
		}
	}
	h := Handler{Node: "node-a.example"}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestCaddyfileMCP: the mcp option takes a path or an http(s) URL, in the
// Caddyfile and in JSON (Validate).
func TestCaddyfileMCP(t *testing.T) {
	for _, v := range []string{"/mcp", "https://agents.example.com/mcp", "http://127.0.0.1:8080/x/mcp"} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("lualambda {\n\tmcp " + v + "\n}")); err != nil || h.MCP != v {
			t.Errorf("mcp %s: %v, got %q", v, err, h.MCP)
		}
	}
	for _, bad := range []string{"mcp", "javascript:alert(1)", "https://user:pw@x/mcp", "//x/mcp", "https:///mcp"} {
		h := Handler{Node: "n", MCP: bad}
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "mcp") {
			t.Errorf("mcp %q in JSON: %v", bad, err)
		}
	}
}

package mcpserver

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	caddylualambda "github.com/lualambda/caddy-lualambda"
)

// TestPrepare: run_lua's arguments become the invocation API's run, and
// mistakes are refused before anything is paid.
func TestPrepare(t *testing.T) {
	h := &Handler{profiles: []caddylualambda.Profile{{Name: "nano", Price: "0.001"}, {Name: "big"}}}
	h.MaxPackages, h.MaxUploadBytes = 2, 1<<20
	zip := base64.StdEncoding.EncodeToString([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	for _, c := range []struct {
		in       string
		args     string // the spec's args as JSON
		profile  string
		id, want string // want: the error, "" for none
	}{
		{in: `{"code": "return 1"}`, args: "null", profile: "nano"},
		{in: `{"code": "return ...", "args": [1, "a", null], "profile": "big", "id": "x-1"}`, args: `[1,"a",null]`, profile: "big", id: "x-1"},
		{in: `{"code": "return ...", "args": {"n": 3}}`, args: `[{"n":3}]`, profile: "nano"},
		{in: `{"code": "return ...", "args": "s"}`, args: `["s"]`, profile: "nano"},
		{in: `{"code": "return ...", "args": null}`, args: "null", profile: "nano"},
		{in: `{"module": "blah.dorp", "packages": [{"name": "blah", "zip_base64": "` + zip + `"}]}`, args: "null", profile: "nano"},
		{in: `{}`, want: "nothing to run"},
		{in: `{"code": "1", "module": "m"}`, want: "not both"},
		{in: `{"module": "a..b"}`, want: "dotted Lua module name"},
		{in: `{"code": "1", "profile": "huge"}`, want: `no profile "huge"; profiles: nano, big`},
		{in: `{"code": "1", "id": "a/b"}`, want: "want 1-64"},
		{in: `{"code": "1", "packages": [{"name": "a b", "zip_base64": ""}]}`, want: "packages[0].name"},
		{in: `{"code": "1", "packages": [{"name": "a", "zip_base64": "*"}]}`, want: "not base64"},
		{in: `{"code": "1", "packages": [{"name": "a", "zip_base64": ""}, {"name": "a", "zip_base64": ""}]}`, want: "given twice"},
		{in: `{"code": "1", "packages": [{"name": "a", "zip_base64": ""}, {"name": "b", "zip_base64": ""}, {"name": "c", "zip_base64": ""}]}`, want: "at most 2"},
		{in: `{"code": "1", "args": [1,}`, want: "bad arguments"},
		{in: `{"code": "1", "source": "x"}`, want: "unknown field"},
	} {
		var in runInput
		err := decodeArgs(json.RawMessage(c.in), &in)
		var p *prepared
		if err == nil {
			p, err = h.prepare(in)
		}
		if c.want != "" {
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: error %v, want %q", c.in, err, c.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		args, _ := json.Marshal(p.spec.Args)
		if string(args) != c.args || p.profile.Name != c.profile {
			t.Errorf("%s: args %s on %s, want %s on %s", c.in, args, p.profile.Name, c.args, c.profile)
		}
		if c.id != "" && p.id != c.id || c.id == "" && !strings.HasPrefix(p.id, "mcp-") {
			t.Errorf("%s: id %q", c.in, p.id)
		}
	}
}

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestReloadKeepsLiveSessions starts a session, then reloads the config
// twice through the admin API: once with a change, once with a config that
// fails to load. The session lives on through both and still answers.
func TestReloadKeepsLiveSessions(t *testing.T) {
	admin := freePort(t)
	s := startCaddy(t, serverConfig{admin: admin, site: `
	handle_path /invoke/* {
		lualambda {
			session_idle 5m
			profile t {
				memory 64MiB
				timeout 5m
				warm 1
			}
		}
	}`})
	start := do(t, http.MethodPost, s.URL+"/invoke/kept/t?mode=session", "", nil)
	token := start.str("token")
	if start.status != 200 || token == "" {
		t.Fatalf("session start: %d %s", start.status, start.body)
	}
	load := func(body []byte, contentType string) response {
		return do(t, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/load", admin), contentType, bytes.NewReader(body))
	}
	config, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.Replace(config, []byte("session_idle 5m"), []byte("session_idle 6m"), 1)
	if r := load(changed, "text/caddyfile"); r.status != 200 {
		t.Fatalf("reload: %d %s", r.status, r.body)
	}
	// A config that fails once provisioned (the handler's Validate): Caddy
	// cleans up the new handler, and the running one must keep its share.
	current := do(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/config/", admin), "", nil)
	broken := bytes.Replace(current.body, []byte(`"handler":"lualambda"`), []byte(`"handler":"lualambda","max_per_client":-1`), 1)
	if bytes.Equal(broken, current.body) {
		t.Fatalf("no lualambda handler in the running config: %s", current.body)
	}
	if r := load(broken, "application/json"); r.status < 400 {
		t.Fatalf("a broken config loaded: %d %s", r.status, r.body)
	}
	if st := do(t, http.MethodGet, s.URL+"/invoke/kept", "", nil); st.str("state") != "running" {
		t.Fatalf("the session after two reloads: %s", st.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(s.URL, "http") + "/invoke/kept/attach"
	conn, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		t.Fatalf("attach after reloads: %v (%v)", err, resp)
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("print(6 * 7 .. 'x')\r")); err != nil {
		t.Fatal(err)
	}
	var seen bytes.Buffer
	for !bytes.Contains(seen.Bytes(), []byte("42x")) {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("reading the session: %v; saw %q", err, seen.String())
		}
		seen.Write(b)
	}
}

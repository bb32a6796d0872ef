package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestTwoNodesShareState runs two Caddy nodes on one storage (the file
// system here; Redis in a cluster): a run on node A is readable on node B,
// and when A is killed mid-run its invocation reads as lost on B within
// seconds, long before the run's deadline.
func TestTwoNodesShareState(t *testing.T) {
	storage := filepath.Join(t.TempDir(), "shared")
	site := func(node string) string {
		return `
	handle_path /invoke/* {
		lualambda {
			node ` + node + `
			store_writes before_answer
			profile t {
				memory 64MiB
				timeout 2m
				warm 1
			}
		}
	}`
	}
	a := startCaddy(t, serverConfig{storage: storage, site: site("node-a")})
	b := startCaddy(t, serverConfig{storage: storage, site: site("node-b")})

	run := runLua(t, a, "on-a", "t", "return 6 * 7")
	if run.status != 200 {
		t.Fatalf("run on A: %d %s", run.status, run.body)
	}
	if st := do(t, http.MethodGet, b.URL+"/invoke/on-a", "", nil); st.status != 200 || st.str("state") != "done" {
		t.Fatalf("A's run, read on B: %d %s", st.status, st.body)
	}
	out := do(t, http.MethodGet, b.URL+"/invoke/on-a/output", "", nil, "Authorization", "Bearer "+run.str("token"))
	if out.status != 200 || out.json["result"] != float64(42) {
		t.Fatalf("A's output, read on B: %d %s", out.status, out.body)
	}
	if r := runLua(t, b, "on-a", "t", "return 1"); r.status != 409 {
		t.Fatalf("A's id, claimed again on B: %d %s", r.status, r.body)
	}

	// A long run on A, then A dies.
	// (Its request fails when A dies: that is the point.)
	go func() {
		resp, err := http.Post(a.URL+"/invoke/dies-with-a/t", "text/x-lua", strings.NewReader(`local t0 = os.clock() while os.clock() - t0 < 100 do end return 1`))
		if err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for st := do(t, http.MethodGet, b.URL+"/invoke/dies-with-a", "", nil); st.str("state") != "running"; st = do(t, http.MethodGet, b.URL+"/invoke/dies-with-a", "", nil) {
		if time.Now().After(deadline) {
			t.Fatalf("the long run never showed as running on B: %s", st.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for {
		st := do(t, http.MethodGet, b.URL+"/invoke/dies-with-a", "", nil)
		if st.str("state") == "done" {
			if st.str("reason") != "lost" {
				t.Fatalf("a run whose node died: %s", st.body)
			}
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("10 s after its node was killed the run still reads %s", st.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// B keeps serving.
	if r := runLua(t, b, "after-a", "t", "return 2"); r.status != 200 {
		t.Fatalf("B after A died: %d %s", r.status, r.body)
	}
}

// TestAttachThroughAnotherNode starts a session on node A and attaches to
// it through node B, which passes the WebSocket to A at the internal
// address A announces: typing through B reaches A's REPL, and a detach
// leaves the session running.
func TestAttachThroughAnotherNode(t *testing.T) {
	storage := filepath.Join(t.TempDir(), "shared")
	portA, portB := freePort(t), freePort(t)
	site := func(node string, port int) string {
		return fmt.Sprintf(`
	handle_path /invoke/* {
		lualambda {
			node %s
			internal_address http://127.0.0.1:%d/invoke
			profile t {
				memory 64MiB
				timeout 2m
				warm 1
			}
		}
	}`, node, port)
	}
	a := startCaddy(t, serverConfig{storage: storage, port: portA, site: site("node-a", portA)})
	b := startCaddy(t, serverConfig{storage: storage, port: portB, site: site("node-b", portB)})
	start := do(t, http.MethodPost, a.URL+"/invoke/roaming/t?mode=session", "", nil)
	token := start.str("token")
	if start.status != 200 || token == "" {
		t.Fatalf("session start on A: %d %s", start.status, start.body)
	}
	attachThrough(t, b.URL+"/invoke", "roaming", token)
	if st := do(t, http.MethodGet, b.URL+"/invoke/roaming", "", nil); st.str("state") != "running" {
		t.Fatalf("the session after a detach through B: %s", st.body)
	}
}

// attachThrough attaches to session id through the invocation API at api,
// which may be another node's than the one running it: without the token
// it is refused; with it, typed code runs in the session's REPL; then it
// detaches.
func attachThrough(t *testing.T, api, id, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(api, "http") + "/" + id + "/attach"
	if _, resp, err := websocket.Dial(ctx, wsURL, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("attach without the token: %v (%v)", err, resp)
	}
	conn, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		t.Fatalf("attach through %s: %v (%v)", api, err, resp)
	}
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("print(6 * 7 .. 'b')\r")); err != nil {
		t.Fatal(err)
	}
	var seen bytes.Buffer
	for !bytes.Contains(seen.Bytes(), []byte("42b")) {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("reading the session through %s: %v; saw %q", api, err, seen.String())
		}
		seen.Write(data)
	}
	conn.Close(websocket.StatusNormalClosure, "detach")
}

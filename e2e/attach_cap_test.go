package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestAttachesPerSessionAreCapped: one token does not buy unlimited
// attaches. A session takes 8 clients; the next is refused with 429 until
// one leaves.
func TestAttachesPerSessionAreCapped(t *testing.T) {
	s := startCaddy(t, serverConfig{site: `
	handle_path /invoke/* {
		lualambda {
			profile t {
				memory 64MiB
				timeout 2m
				warm 1
			}
		}
	}`})
	start := do(t, http.MethodPost, s.URL+"/invoke/capped/t?mode=session", "", nil)
	token := start.str("token")
	if start.status != 200 || token == "" {
		t.Fatalf("session start: %d %s", start.status, start.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(s.URL, "http") + "/invoke/capped/attach"
	opts := &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}}
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	for i := range 8 {
		c, _, err := websocket.Dial(ctx, wsURL, opts)
		if err != nil {
			t.Fatalf("attach %d of 8: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	if c, resp, err := websocket.Dial(ctx, wsURL, opts); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		if c != nil {
			c.CloseNow()
		}
		t.Fatalf("a 9th attach: %v (%v)", err, resp)
	}
	// One leaves: its place is free again (the server notices the close).
	conns[0].Close(websocket.StatusNormalClosure, "bye")
	conns = conns[1:]
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, resp, err := websocket.Dial(ctx, wsURL, opts)
		if err == nil {
			conns = append(conns, c)
			break
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("attach after one left: %v (%v)", err, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

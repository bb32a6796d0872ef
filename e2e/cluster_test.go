package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// TestClusterOnRedis serves Caddyfile.cluster as written on two nodes that
// share one real redis-server, behind Caddy's reverse_proxy as the load
// balancer: runs through the balancer are readable on both nodes, one id
// sent to both at once runs once, and a node killed mid-run leaves the
// other serving and its run lost within 10 s.
func TestClusterOnRedis(t *testing.T) {
	redis := testenv.StartRedis(t)
	type node struct {
		name string
		port int
		p    *proc
	}
	nodes := []*node{{name: "node-a", port: freePort(t)}, {name: "node-b", port: freePort(t)}}
	for _, n := range nodes {
		url := fmt.Sprintf("http://127.0.0.1:%d", n.port)
		n.p = startProc(t, []string{
			"REDIS=" + redis, "NODE=" + n.name, "NODE_ADDRESS=" + url + "/invoke",
			fmt.Sprintf("LISTEN=http://127.0.0.1:%d", n.port), fmt.Sprintf("ADMIN=127.0.0.1:%d", freePort(t)), "TMPDIR=" + vmsDir(t),
		}, "caddy", "run", "--config", "Caddyfile.cluster")
		n.p.waitHTTP(url+"/invoke/", 60*time.Second)
	}
	a, b := nodes[0], nodes[1]
	api := func(n *node) string { return fmt.Sprintf("http://127.0.0.1:%d/invoke", n.port) }
	lb := startCaddy(t, serverConfig{site: fmt.Sprintf(`reverse_proxy 127.0.0.1:%d 127.0.0.1:%d {
		lb_policy round_robin
		lb_try_duration 5s
		fail_duration 30s
	}`, a.port, b.port)})

	// Runs through the balancer, readable on both nodes.
	for i := range 2 {
		id := fmt.Sprintf("via-lb-%d", i)
		r := runLua(t, lb, id, "nano", "return 40 + 2")
		if r.status != 200 || r.json["result"] != float64(42) {
			t.Fatalf("run through the balancer: %d %s", r.status, r.body)
		}
		for _, n := range nodes {
			out := do(t, http.MethodGet, api(n)+"/"+id+"/output", "", nil, "Authorization", "Bearer "+r.str("token"))
			if out.status != 200 || out.json["result"] != float64(42) {
				t.Fatalf("%s read on %s: %d %s", id, n.name, out.status, out.body)
			}
		}
	}

	// One id sent to both nodes at once: one run, one 409.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(api(n)+"/both/nano", "text/x-lua", strings.NewReader("return 1"))
			if err != nil {
				t.Errorf("post to %s: %v", n.name, err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	if !(codes[0] == 200 && codes[1] == 409 || codes[0] == 409 && codes[1] == 200) {
		t.Fatalf("one id to both nodes at once: %v, want one 200 and one 409", codes)
	}

	// A dies mid-run: B keeps serving, and the run reads lost within 10 s.
	go func() {
		resp, err := http.Post(api(a)+"/dies/nano", "text/x-lua", strings.NewReader(`local t0 = os.clock() while os.clock() - t0 < 9 do end return 1`))
		if err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for st := do(t, http.MethodGet, api(b)+"/dies", "", nil); st.str("state") != "running"; st = do(t, http.MethodGet, api(b)+"/dies", "", nil) {
		if time.Now().After(deadline) {
			t.Fatalf("the run on A never showed as running on B: %s", st.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := a.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for {
		st := do(t, http.MethodGet, api(b)+"/dies", "", nil)
		if st.str("state") == "done" && st.str("reason") == "lost" {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("10 s after node A was killed its run reads %s", st.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 2 {
		if r := runLua(t, lb, fmt.Sprintf("after-a-%d", i), "nano", "return 3"); r.status != 200 {
			t.Fatalf("the balancer after A died: %d %s", r.status, r.body)
		}
	}
}

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
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

	// A session started on A is attached through B, typed into, and
	// detached: B passes the WebSocket to A at the address A announced.
	sess := do(t, http.MethodPost, api(a)+"/roaming/nano?mode=session", "", nil)
	if sess.status != 200 || sess.str("token") == "" {
		t.Fatalf("session start on A: %d %s", sess.status, sess.body)
	}
	attachThrough(t, api(b), "roaming", sess.str("token"))
	if st := do(t, http.MethodGet, api(b)+"/roaming", "", nil); st.str("state") != "running" {
		t.Fatalf("the session after a detach through B: %s", st.body)
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

// TestOnePaidRunAcrossNodesOnRedis: two nodes share one real redis-server,
// each with x402pay (its own built-in facilitator) in front of lualambda.
// One payment for one id, sent to both nodes at once, runs once and
// settles once; the other node refuses it without running anything.
func TestOnePaidRunAcrossNodesOnRedis(t *testing.T) {
	redis := testenv.StartRedis(t)
	c := newChain(t, 1_000_000)
	gate := c.lualambdaGate(t)
	site := func(node string) string {
		return fmt.Sprintf(`
	handle_path /invoke/* {
		%s
		lualambda {
			node %s
			profile t {
				memory 64MiB
				timeout 1m
				price 0.0015
				warm 1
			}
		}
	}`, gate, node)
	}
	storage := fmt.Sprintf("storage redis {\n\t\taddress %s\n\t\tkey_prefix paid\n\t}", redis)
	nodes := []*server{
		startCaddy(t, serverConfig{storageBlock: storage, site: site("node-a")}),
		startCaddy(t, serverConfig{storageBlock: storage, site: site("node-b")}),
	}
	payerBefore, payToBefore := c.USDC(c.Payer.Address), c.USDC(c.PayTo.Address)

	const src = "return 6 * 7"
	pr, _ := required(t, runLua(t, nodes[0], "paid-once", "t", src))
	r := x402.Requirement{V2: &pr.Accepts[0]}
	p := c.build(avm.AccountSigner(c.Payer), r, nil)
	name, value := paymentHeader(t, r, &pr.Resource, p)
	txid, _ := p.PaymentTxID()

	results := make([]response, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest(http.MethodPost, n.URL+"/invoke/paid-once/t", strings.NewReader(src))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Content-Type", "text/x-lua")
			req.Header.Set(name, value)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("post to node %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			results[i] = response{status: resp.StatusCode, header: resp.Header, body: body}
		}()
	}
	wg.Wait()
	ran, refused := -1, -1
	for i, res := range results {
		switch res.status {
		case http.StatusOK:
			ran = i
		case http.StatusPaymentRequired:
			refused = i
		}
	}
	if ran < 0 || refused < 0 {
		t.Fatalf("one payment to both nodes at once: %d %s / %d %s; want one 200 and one 402",
			results[0].status, results[0].body, results[1].status, results[1].body)
	}
	if sr := settleResponse(t, results[ran], x402.HeaderPaymentResponse); !sr.Success || sr.Transaction != txid {
		t.Fatalf("the run's settlement: %+v", sr)
	}
	if results[refused].header.Get(x402.HeaderPaymentResponse) != "" {
		t.Fatalf("the refused request carries a settlement: %v", results[refused].header)
	}
	if p, rc := c.USDC(c.Payer.Address), c.USDC(c.PayTo.Address); payerBefore-p != 1500 || rc-payToBefore != 1500 {
		t.Fatalf("payer paid %d, receiver got %d; want 1500 once", payerBefore-p, rc-payToBefore)
	}
	// Both nodes read the one paid run.
	for _, n := range nodes {
		st := do(t, http.MethodGet, n.URL+"/invoke/paid-once", "", nil)
		if st.status != 200 || st.str("state") != "done" || st.json["paid"] != true {
			t.Fatalf("the paid run read on %s: %d %s", n.URL, st.status, st.body)
		}
	}
}

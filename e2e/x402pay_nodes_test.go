package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// TestOnePaymentAcrossNodes runs two caddy nodes on one storage directory,
// each with x402pay (its own builtin facilitator) in front of respond. The
// same payment sent to both at once buys one answer and settles once on
// the devnet; every other use is a 402 duplicate, then and later, on
// either node.
func TestOnePaymentAcrossNodes(t *testing.T) {
	c := newChain(t, 1_000_000)
	t.Setenv("X402_TEST_ALGOD_TOKEN", c.Dev.Token())
	site := fmt.Sprintf(`
	handle /paid {
		x402pay {
			pay_to %s
			network devnet
			price 0.001
			payment_records storage
			facilitator builtin {
				algod %s
				algod_token {env.X402_TEST_ALGOD_TOKEN}
				fee_payer {file.%s}
			}
		}
		respond "paid content" 200
	}`, c.PayTo.Address, c.Dev.URL(), c.feePayerFile)
	storage := filepath.Join(t.TempDir(), "shared-storage")
	nodes := []*server{
		startCaddy(t, serverConfig{storage: storage, site: site}),
		startCaddy(t, serverConfig{storage: storage, site: site}),
	}
	startPayer, startPayTo := c.USDC(c.Payer.Address), c.USDC(c.PayTo.Address)
	// balances checks that payer and receiver moved by exactly one price
	// since the start.
	balances := func(t *testing.T) {
		t.Helper()
		p, r := c.USDC(c.Payer.Address), c.USDC(c.PayTo.Address)
		if startPayer-p != 1000 || r-startPayTo != 1000 {
			t.Fatalf("payer paid %d, receiver got %d; want 1000 once", int64(startPayer)-int64(p), int64(r)-int64(startPayTo))
		}
	}

	r, p := c.payment(t, nodes[0], "/paid", avm.AccountSigner(c.Payer), nil)
	// Behind a load balancer both nodes see one resource URL.
	name, value := paymentHeader(t, r, &x402.ResourceInfo{URL: nodes[0].URL + "/paid"}, p)

	// paid requests /paid on s with the payment; it reports instead of
	// failing, as it runs off the test's goroutine.
	paid := func(ctx context.Context, s *server) (response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/paid", nil)
		if err != nil {
			return response{}, err
		}
		req.Header.Set(name, value)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return response{}, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return response{}, err
		}
		out := response{status: resp.StatusCode, header: resp.Header, body: b}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			if err := json.Unmarshal(b, &out.json); err != nil {
				return response{}, fmt.Errorf("body %q: %w", b, err)
			}
		}
		return out, nil
	}

	const perNode = 3
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	type result struct {
		node int
		resp response
		err  error
	}
	results := make(chan result, perNode*len(nodes))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, s := range nodes {
		for range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resp, err := paid(ctx, s)
				results <- result{node: i, resp: resp, err: err}
			}()
		}
	}
	close(start)
	wg.Wait()
	close(results)

	ok := 0
	for res := range results {
		if res.err != nil {
			t.Fatalf("node %d: %v", res.node, res.err)
		}
		switch res.resp.status {
		case http.StatusOK:
			ok++
			if string(res.resp.body) != "paid content" {
				t.Fatalf("node %d sold %q", res.node, res.resp.body)
			}
			if sr := settleResponse(t, res.resp, x402.HeaderPaymentResponse); !sr.Success {
				t.Fatalf("node %d answered 200 with receipt %+v", res.node, sr)
			}
		case http.StatusPaymentRequired:
			pr, v1 := required(t, res.resp)
			if !strings.HasPrefix(pr.Error, avm.ReasonDuplicateSettlement+": ") || v1.Error != pr.Error {
				t.Fatalf("node %d refused with %q / %q, want a duplicate", res.node, pr.Error, v1.Error)
			}
		default:
			t.Fatalf("node %d answered %d %s", res.node, res.resp.status, res.resp.body)
		}
	}
	if ok != 1 {
		t.Fatalf("%d answers were sold for one payment, want 1", ok)
	}
	balances(t)

	// Later, each node knows the payment was settled, whichever sold it.
	for i, s := range nodes {
		resp, err := paid(ctx, s)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if resp.status != http.StatusPaymentRequired {
			t.Fatalf("node %d: replay answered %d %s", i, resp.status, resp.body)
		}
		expectRejected(t, resp, avm.ReasonDuplicateSettlement+": the payment was settled already")
	}
	balances(t)
}

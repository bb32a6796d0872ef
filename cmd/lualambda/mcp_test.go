package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
	"github.com/lualambda/caddy-lualambda/x402/facilitator"
	"github.com/lualambda/caddy-lualambda/x402/payer"
)

// mcpTestTimeout bounds every step of these tests.
const mcpTestTimeout = 60 * time.Second

// countingSigner is the payer's real key signer that counts its
// signatures, so a test can tell that a refusal came before signing.
type countingSigner struct {
	avm.Signer
	n atomic.Int32
}

func (s *countingSigner) Sign(ctx context.Context, txn types.Transaction) (types.SignedTxn, error) {
	s.n.Add(1)
	return s.Signer.Sign(ctx, txn)
}

// paidServer is a remote MCP server (the go-sdk over real HTTP) with a free
// tool and a paid one that follows x402's MCP transport, verifying and
// settling through the built-in facilitator on a devnet.
type paidServer struct {
	e      *devnettest.Parties
	fac    *facilitator.Builtin
	url    string
	server *mcp.Server

	price uint64
	// failSettle makes the next paid calls answer "settlement failed"
	// without settling, while it is above zero.
	failSettle atomic.Int32
	// hold, when set, keeps every paid call waiting until it is closed.
	hold chan struct{}

	mu      sync.Mutex
	arrived chan struct{} // signalled on every paid call
	paid    int           // calls that carried a payment
	settled int
}

// paidToolDescription and paidToolSchema are what the proxy must repeat.
const paidToolDescription = "Echo a word, for a price."

var paidToolSchema = map[string]any{
	"type":       "object",
	"properties": map[string]any{"word": map[string]any{"type": "string", "description": "the word"}},
	"required":   []any{"word"},
}

var paidToolOutput = map[string]any{
	"type":       "object",
	"properties": map[string]any{"echo": map[string]any{"type": "string"}},
}

func newPaidServer(t *testing.T, price uint64) *paidServer {
	t.Helper()
	e := devnettest.New(t, devnettest.Options{FeePayerMicroAlgos: 1_000_000, PayerUSDC: 1_000_000})
	fac, err := facilitator.NewBuiltin(facilitator.BuiltinConfig{
		AlgodURL: e.Dev.URL(), AlgodToken: e.Dev.Token(), Network: e.Dev.NetworkInfo(), FeePayerMnemonic: devnettest.Mnemonic(t, e.FeePayer),
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &paidServer{e: e, fac: fac, price: price, arrived: make(chan struct{}, 100)}
	srv := mcp.NewServer(&mcp.Implementation{Name: "paid-test", Version: "1"}, &mcp.ServerOptions{Instructions: "test instructions"})
	srv.AddTool(&mcp.Tool{Name: "echo", Description: paidToolDescription, InputSchema: paidToolSchema, OutputSchema: paidToolOutput}, s.echo)
	srv.AddTool(&mcp.Tool{Name: "free", Description: "Free.", InputSchema: map[string]any{"type": "object"}},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "free answer"}}}, nil
		})
	hs := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(hs.Close)
	s.url, s.server = hs.URL, srv
	return s
}

func (s *paidServer) requirement() x402.PaymentRequirements {
	extra, _ := json.Marshal(map[string]string{"feePayer": s.fac.FeePayerAddress()})
	return x402.PaymentRequirements{
		Scheme: x402.SchemeExact, Network: s.e.Dev.Network(), Asset: strconv.FormatUint(s.e.Dev.USDC(), 10),
		Amount: strconv.FormatUint(s.price, 10), PayTo: s.e.PayTo.Address.String(), MaxTimeoutSeconds: 60, Extra: extra,
	}
}

// required is the PaymentRequired tool result, in both forms the MCP
// transport asks for.
func (s *paidServer) required(reason string) *mcp.CallToolResult {
	pr := x402.PaymentRequired{X402Version: 2, Error: reason, Resource: x402.ResourceInfo{URL: "mcp://tool/echo"}, Accepts: []x402.PaymentRequirements{s.requirement()}}
	b, _ := json.Marshal(pr)
	return &mcp.CallToolResult{IsError: true, StructuredContent: pr, Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}
}

func (s *paidServer) echo(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	raw, ok := req.Params.Meta[metaPayment]
	if !ok {
		return s.required("payment required"), nil
	}
	s.mu.Lock()
	s.paid++
	s.mu.Unlock()
	s.arrived <- struct{}{}
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	b, _ := json.Marshal(raw)
	var p x402.Payment
	if err := json.Unmarshal(b, &p); err != nil {
		return s.required("bad payment: " + err.Error()), nil
	}
	if s.failSettle.Add(-1) >= 0 {
		return s.required("settlement failed"), nil
	}
	ns := x402.NewNetworks()
	_ = ns.Register(s.e.Dev.NetworkInfo())
	r := s.requirement()
	match, err := x402.MatchRequirement(p, []x402.Requirement{{V2: &r}}, ns)
	if err != nil {
		return s.required(err.Error()), nil
	}
	if vr, err := s.fac.Verify(ctx, p, match); err != nil || !vr.IsValid {
		return s.required(fmt.Sprintf("invalid payment: %v %s", err, vr.InvalidReason)), nil
	}
	sr, err := s.fac.Settle(ctx, p, match)
	if err != nil || !sr.Success {
		return s.required(fmt.Sprintf("settlement failed: %v %s", err, sr.ErrorReason)), nil
	}
	s.mu.Lock()
	s.settled++
	s.mu.Unlock()
	var in struct {
		Word string `json:"word"`
	}
	_ = json.Unmarshal(req.Params.Arguments, &in)
	return &mcp.CallToolResult{
		Meta:              mcp.Meta{metaPaymentResponse: sr},
		StructuredContent: map[string]any{"echo": in.Word},
		Content:           []mcp.Content{&mcp.TextContent{Text: in.Word}},
	}, nil
}

func (s *paidServer) counts() (paid, settled int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paid, s.settled
}

// proxyEnv is a proxy in front of a paidServer, and a local client of the
// proxy.
type proxyEnv struct {
	srv    *paidServer
	proxy  *proxy
	signer *countingSigner
	client *mcp.ClientSession
	logs   *syncBuffer
	// changed gets a value each time the proxy tells the client that its
	// tools changed.
	changed chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startProxy(t *testing.T, srv *paidServer, maxPrice, maxTotal uint64) *proxyEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mcpTestTimeout)
	defer cancel()
	env := &proxyEnv{srv: srv, signer: &countingSigner{Signer: avm.AccountSigner(srv.e.Payer)}, logs: &syncBuffer{}, changed: make(chan struct{}, 16)}
	account := func(context.Context) (*payer.Account, error) {
		return &payer.Account{Signer: env.signer, Chains: []payer.Chain{{Network: srv.e.Dev.NetworkInfo(), Algod: srv.e.Algod}}}, nil
	}
	l := mcpLimits{endpoint: srv.url, maxPrice: maxPrice, maxTotal: maxTotal}
	env.proxy = newProxy(l, account, slog.New(slog.NewTextHandler(env.logs, nil)))
	if err := env.proxy.connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.url, HTTPClient: mcpHTTPClient()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.proxy.close)
	st, ct := mcp.NewInMemoryTransports()
	ss, err := env.proxy.server.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	env.client, err = mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case env.changed <- struct{}{}:
			default:
			}
		},
	}).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.client.Close() })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", env.logs.String())
		}
	})
	return env
}

func (env *proxyEnv) call(t *testing.T, tool, word string) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mcpTestTimeout)
	defer cancel()
	res, err := env.client.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"word": word}})
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	return res
}

func resultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// TestMCPProxyReexposesAndPays: the proxy offers the remote tools with the
// same names, descriptions and schemas, forwards a free call, and pays a
// paid one on the devnet: the merchant gets the price once, the result and
// its settlement receipt reach the client, and the total counts it.
func TestMCPProxyReexposesAndPays(t *testing.T) {
	srv := newPaidServer(t, 1000)
	env := startProxy(t, srv, 1000, 5000)

	ctx, cancel := context.WithTimeout(context.Background(), mcpTestTimeout)
	defer cancel()
	list, err := env.client.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tools := map[string]*mcp.Tool{}
	for _, tl := range list.Tools {
		tools[tl.Name] = tl
	}
	echo := tools["echo"]
	if len(tools) != 2 || echo == nil || tools["free"] == nil {
		t.Fatalf("tools %v: want echo and free", list.Tools)
	}
	if echo.Description != paidToolDescription || !reflect.DeepEqual(echo.InputSchema, paidToolSchema) || !reflect.DeepEqual(echo.OutputSchema, paidToolOutput) {
		t.Errorf("echo is offered as %q %v %v; want the remote's description and schemas", echo.Description, echo.InputSchema, echo.OutputSchema)
	}
	if got := env.client.InitializeResult().Instructions; got != "test instructions" {
		t.Errorf("instructions %q, want the remote's", got)
	}

	if res := env.call(t, "free", ""); res.IsError || resultText(res) != "free answer" {
		t.Fatalf("free call: %+v", res)
	}

	merchant := srv.e.USDC(srv.e.PayTo.Address)
	res := env.call(t, "echo", "hello")
	if res.IsError || resultText(res) != "hello" {
		t.Fatalf("paid call: error %v, %q", res.IsError, resultText(res))
	}
	if sc, _ := res.StructuredContent.(map[string]any); sc["echo"] != "hello" {
		t.Errorf("structured content %v", res.StructuredContent)
	}
	s := settlementOf(res)
	if s == nil || !s.Success || s.Transaction == "" || s.Payer != srv.e.Payer.Address.String() {
		t.Fatalf("the result's _meta lacks the settlement: %v", res.Meta)
	}
	if got := srv.e.USDC(srv.e.PayTo.Address); got != merchant+1000 {
		t.Errorf("merchant USDC %d -> %d, want +1000", merchant, got)
	}
	if paid, settled := srv.counts(); paid != 1 || settled != 1 {
		t.Errorf("server saw %d paid calls, settled %d; want 1, 1", paid, settled)
	}
	if spent, reserved := env.proxy.budget.totals(); spent != 1000 || reserved != 0 {
		t.Errorf("budget spent %d reserved %d, want 1000, 0", spent, reserved)
	}
}

// TestMCPProxyRefusesOverMaxPrice: a price over --max-price is refused
// before anything is signed: no signature, no paid call, no money moved,
// and the client reads the limit and the price.
func TestMCPProxyRefusesOverMaxPrice(t *testing.T) {
	srv := newPaidServer(t, 2000)
	env := startProxy(t, srv, 1000, 5000)
	merchant := srv.e.USDC(srv.e.PayTo.Address)
	res := env.call(t, "echo", "hello")
	msg := resultText(res)
	if !res.IsError || !strings.Contains(msg, "--max-price 0.001") || !strings.Contains(msg, "0.002 USDC") || !strings.Contains(msg, "nothing was signed") {
		t.Fatalf("want a refusal naming --max-price 0.001 and the price 0.002; got error %v %q", res.IsError, msg)
	}
	if n := env.signer.n.Load(); n != 0 {
		t.Errorf("the signer signed %d times; a refusal must come before signing", n)
	}
	if paid, _ := srv.counts(); paid != 0 {
		t.Errorf("the server got %d paid calls", paid)
	}
	if got := srv.e.USDC(srv.e.PayTo.Address); got != merchant {
		t.Errorf("merchant USDC moved %d -> %d", merchant, got)
	}
}

// TestMCPProxyRefusesOverMaxTotal: with --max-total below two prices the
// first call is paid and the second refused before signing.
func TestMCPProxyRefusesOverMaxTotal(t *testing.T) {
	srv := newPaidServer(t, 1000)
	env := startProxy(t, srv, 1000, 1500)
	if res := env.call(t, "echo", "one"); res.IsError {
		t.Fatalf("first call: %q", resultText(res))
	}
	merchant := srv.e.USDC(srv.e.PayTo.Address)
	res := env.call(t, "echo", "two")
	msg := resultText(res)
	if !res.IsError || !strings.Contains(msg, "--max-total 0.0015") || !strings.Contains(msg, "0.001 USDC") || !strings.Contains(msg, "nothing was signed") {
		t.Fatalf("want a refusal naming --max-total 0.0015 and the price 0.001; got error %v %q", res.IsError, msg)
	}
	if n := env.signer.n.Load(); n != 1 {
		t.Errorf("the signer signed %d times, want 1 (the first call only)", n)
	}
	if paid, settled := srv.counts(); paid != 1 || settled != 1 {
		t.Errorf("server saw %d paid calls, settled %d; want 1, 1", paid, settled)
	}
	if got := srv.e.USDC(srv.e.PayTo.Address); got != merchant {
		t.Errorf("merchant USDC moved %d -> %d on the refused call", merchant, got)
	}
}

// TestMCPProxyConcurrentCallsShareTheTotal: calls made at once cannot
// together go over --max-total: with room for two payments, four
// concurrent calls sign two and refuse two, while the two paid calls are
// still held by the server (nothing settled yet).
func TestMCPProxyConcurrentCallsShareTheTotal(t *testing.T) {
	srv := newPaidServer(t, 1000)
	srv.hold = make(chan struct{})
	env := startProxy(t, srv, 1000, 2000)
	const calls = 4
	results := make(chan *mcp.CallToolResult, calls)
	for i := range calls {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), mcpTestTimeout)
			defer cancel()
			res, err := env.client.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"word": strconv.Itoa(i)}})
			if err != nil {
				res = toolError("call failed: " + err.Error())
			}
			results <- res
		}()
	}
	// Wait until every call either reached the server paid or came back.
	deadline := time.NewTimer(mcpTestTimeout)
	defer deadline.Stop()
	var done []*mcp.CallToolResult
	arrived := 0
	for arrived+len(done) < calls {
		select {
		case <-srv.arrived:
			arrived++
		case r := <-results:
			done = append(done, r)
		case <-deadline.C:
			close(srv.hold)
			t.Fatalf("after %v: %d paid calls arrived, %d came back", mcpTestTimeout, arrived, len(done))
		}
	}
	if arrived != 2 || env.signer.n.Load() != 2 {
		close(srv.hold)
		t.Fatalf("%d paid calls reached the server, %d signatures; want 2 and 2 (room for two payments)", arrived, env.signer.n.Load())
	}
	for _, r := range done {
		if msg := resultText(r); !r.IsError || !strings.Contains(msg, "--max-total") {
			t.Errorf("a call beyond the total got %q; want a refusal naming --max-total", msg)
		}
	}
	close(srv.hold)
	for range 2 {
		select {
		case r := <-results:
			if r.IsError {
				t.Errorf("a paid call failed: %q", resultText(r))
			}
		case <-deadline.C:
			t.Fatal("the paid calls did not come back")
		}
	}
	if spent, reserved := env.proxy.budget.totals(); spent != 2000 || reserved != 0 {
		t.Errorf("budget spent %d reserved %d, want 2000, 0", spent, reserved)
	}
}

// TestMCPProxyReleasesUnsettled: a payment the server does not settle is
// not counted: with room for one payment, a call whose settlement failed
// leaves the room for the next call, which pays.
func TestMCPProxyReleasesUnsettled(t *testing.T) {
	srv := newPaidServer(t, 1000)
	srv.failSettle.Store(1)
	env := startProxy(t, srv, 1000, 1000)
	res := env.call(t, "echo", "one")
	if !res.IsError || !strings.Contains(resultText(res), "settlement failed") {
		t.Fatalf("first call: want the server's settlement failure, got %v %q", res.IsError, resultText(res))
	}
	if spent, reserved := env.proxy.budget.totals(); spent != 0 || reserved != 0 {
		t.Fatalf("after an unsettled payment: spent %d reserved %d, want 0, 0", spent, reserved)
	}
	res = env.call(t, "echo", "two")
	if res.IsError || resultText(res) != "two" {
		t.Fatalf("second call: %v %q; want it paid", res.IsError, resultText(res))
	}
	if spent, _ := env.proxy.budget.totals(); spent != 1000 {
		t.Errorf("spent %d, want 1000", spent)
	}
}

// TestMCPProxyForwardsOwnPayment: a client that sends its own
// _meta["x402/payment"] pays for itself: the call is forwarded with it and
// the server's answer returned, and the proxy signs nothing.
func TestMCPProxyForwardsOwnPayment(t *testing.T) {
	srv := newPaidServer(t, 1000)
	env := startProxy(t, srv, 1000, 5000)
	ctx, cancel := context.WithTimeout(context.Background(), mcpTestTimeout)
	defer cancel()
	res, err := env.client.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"word": "x"}, Meta: mcp.Meta{metaPayment: "not a payment"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError || !strings.Contains(resultText(res), "bad payment") {
		t.Fatalf("want the server's answer to the client's own payment, got %v %q", res.IsError, resultText(res))
	}
	if paid, _ := srv.counts(); paid != 1 {
		t.Errorf("the server got %d calls with a payment, want 1 (the client's)", paid)
	}
	if n := env.signer.n.Load(); n != 0 {
		t.Errorf("the proxy signed %d times for a client that pays for itself", n)
	}
}

// TestMCPProxyRefusesRedirect: an endpoint that redirects is not followed,
// so no call (and no payment) goes to a URL other than --server.
func TestMCPProxyRefusesRedirect(t *testing.T) {
	var followed atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followed.Add(1)
		http.Error(w, "elsewhere", http.StatusTeapot)
	}))
	t.Cleanup(target.Close)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/mcp", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)
	ctx, cancel := context.WithTimeout(context.Background(), mcpTestTimeout)
	defer cancel()
	p := newProxy(mcpLimits{endpoint: redirect.URL, maxPrice: 1000, maxTotal: 1000}, nil, slog.New(slog.NewTextHandler(&syncBuffer{}, nil)))
	err := p.connect(ctx, &mcp.StreamableClientTransport{Endpoint: redirect.URL, HTTPClient: mcpHTTPClient(), MaxRetries: -1})
	if err == nil || !strings.Contains(err.Error(), "redirects") {
		t.Fatalf("connect through a redirect: %v; want it refused", err)
	}
	if n := followed.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}

// TestMCPProxyFollowsToolChanges: when the remote server's tools change
// (it notifies tools/list_changed), the proxy offers the new list and
// tells its client.
func TestMCPProxyFollowsToolChanges(t *testing.T) {
	srv := newPaidServer(t, 1000)
	env := startProxy(t, srv, 1000, 5000)
	srv.server.AddTool(&mcp.Tool{Name: "late", Description: "Added later.", InputSchema: map[string]any{"type": "object"}},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "late answer"}}}, nil
		})
	srv.server.RemoveTools("free")
	deadline := time.NewTimer(mcpTestTimeout)
	defer deadline.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), mcpTestTimeout)
		list, err := env.client.ListTools(ctx, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range list.Tools {
			names = append(names, tl.Name)
		}
		if strings.Join(names, ",") == "echo,late" {
			break
		}
		select {
		case <-env.changed:
		case <-deadline.C:
			t.Fatalf("the proxy offers %v after the remote changed to echo, late", names)
		}
	}
	if res := env.call(t, "late", ""); res.IsError || resultText(res) != "late answer" {
		t.Fatalf("call late: %v %q", res.IsError, resultText(res))
	}
}

// TestMCPChallengeFromText: a PaymentRequired only in content[0].text is
// read as well; other error results are not challenges.
func TestMCPChallengeFromText(t *testing.T) {
	pr := `{"x402Version":2,"resource":{"url":"mcp://tool/x"},"accepts":[{"scheme":"exact","network":"algorand:SGO1GKSzyE7IEPItTxCByw9x8FmnrCDexi9/cOUJOiI=","asset":"10458941","amount":"1000","payTo":"AAAA","maxTimeoutSeconds":60}]}`
	ch, err := challengeOf(&mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: pr}}})
	if err != nil || ch == nil || ch.Version != 2 || len(ch.Offers) != 1 || ch.Resource == nil || ch.Resource.URL != "mcp://tool/x" {
		t.Fatalf("challenge %+v, %v", ch, err)
	}
	for _, res := range []*mcp.CallToolResult{
		{IsError: false, Content: []mcp.Content{&mcp.TextContent{Text: pr}}},
		{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "lua error: boom"}}},
		{IsError: true, StructuredContent: map[string]any{"error": "x"}, Content: []mcp.Content{&mcp.TextContent{Text: `{"x402Version": 2}`}}},
	} {
		if ch, err := challengeOf(res); ch != nil || err != nil {
			t.Errorf("%+v read as a challenge: %+v %v", res, ch, err)
		}
	}
}

// TestMCPFlags: bad flags exit 2 with a message naming the flag; a server
// that cannot be reached exits 1 naming it.
func TestMCPFlags(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mcp"}, "--server is required"},
		{[]string{"mcp", "--server", "ftp://x/mcp"}, "--server"},
		{[]string{"mcp", "--server", "localhost:8080/mcp"}, "--server"},
		{[]string{"mcp", "--server", "http://u:p@x/mcp"}, "--server"},
		{[]string{"mcp", "--server", "http://x/mcp", "--max-price", "abc"}, "--max-price"},
		{[]string{"mcp", "--server", "http://x/mcp", "--max-price", "-1"}, "--max-price"},
		{[]string{"mcp", "--server", "http://x/mcp", "--max-total", "0.0000001"}, "--max-total"},
		{[]string{"mcp", "--server", "http://x/mcp", "--max-total", "1e3"}, "--max-total"},
		{[]string{"mcp", "--server", "http://x/mcp", "extra"}, "takes no arguments"},
		{[]string{"mcp", "--server", "http://x/mcp", "--no-such-flag"}, "unknown flag"},
	} {
		stdout, stderr, code := run(t, "", tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 naming %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	_, stderr, code := run(t, "", "mcp", "--server", "http://127.0.0.1:1/mcp")
	if code != 1 || !strings.Contains(stderr, "http://127.0.0.1:1/mcp") {
		t.Errorf("unreachable server: exit %d, stderr %q; want exit 1 naming it", code, stderr)
	}
}

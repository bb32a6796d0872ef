package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/payer"
)

// The keys of the x402 MCP transport in _meta.
const (
	metaPayment         = "x402/payment"
	metaPaymentResponse = "x402/payment-response"
)

// mcpProtocolMeta prefixes the _meta keys of the protocol itself
// (protocol version, client and server info): they belong to one session,
// so they are not forwarded from one to the other, nor is progressToken
// (progress is not relayed).
const mcpProtocolMeta = "io.modelcontextprotocol/"

// Defaults of lualambda mcp's limits, in USD (USDC).
const (
	defaultMCPMaxPrice = "0.01"
	defaultMCPMaxTotal = "1"
)

// Bounds of what the proxy takes from the remote server.
const (
	// mcpConnectTimeout bounds connecting to the remote server and
	// listing its tools at start.
	mcpConnectTimeout = 30 * time.Second
	// maxRemoteTools bounds how many tools are re-exposed.
	maxRemoteTools = 1000
	// maxChallengeJSON bounds a PaymentRequired read from a tool result.
	maxChallengeJSON = payer.MaxChallengeBody
)

// mcpOptions are the flags of lualambda mcp.
type mcpOptions struct {
	server   string
	maxPrice string
	maxTotal string
	wallet   walletFlags
}

// mcpLimits are the validated flags: the endpoint and the limits in USDC
// base units.
type mcpLimits struct {
	endpoint string
	maxPrice uint64
	maxTotal uint64
}

func newMCPCommand() *cobra.Command {
	var o mcpOptions
	cmd := &cobra.Command{
		Use:   "mcp --server URL",
		Short: "Serve a remote MCP server's tools on stdio, paying for them with the wallet",
		Long: `Serve, on standard input and output, the tools of a remote MCP server
(Streamable HTTP, such as a caddy-lualambda lualambda_mcp endpoint), and pay
for the calls it asks payment for with x402 (USDC on Algorand), so that an
MCP client (Claude Code, Cursor, any other) can use paid Lua runs without a
wallet of its own.

Every tool of the server is offered under the same name, description and
input and output schemas, and every call is forwarded. When the server
answers a call with an x402 PaymentRequired (x402's MCP transport), the
cheapest offer the wallet can pay is chosen, signed and sent with the call
again in _meta["x402/payment"]; the server's result, with its
_meta["x402/payment-response"] receipt, is the answer.

Limits (USD, paid in USDC), checked before anything is signed:
  --max-price  the most one call may cost (default ` + defaultMCPMaxPrice + `)
  --max-total  the most this process pays in all (default ` + defaultMCPMaxTotal + `): a
               call whose price would take the total paid, plus the payments
               under way, over it is refused
A refused call is a tool error that names the limit and the price; nothing
is signed or sent. A payment counts toward the total once the server reports
it settled; one whose call failed with no answer counts too (it may have
been settled).

The wallet is the one of lualambda invoke and lualambda wallet: the key file
of --wallet, else the 25-word mnemonic in $LUALAMBDA_MNEMONIC, else the key
file of $LUALAMBDA_WALLET, else ~/.config/lualambda/wallet.json; it is read
when a server first asks for payment. --network, --algod and --algod-token
(or $LUALAMBDA_NETWORK, $LUALAMBDA_ALGOD, $LUALAMBDA_ALGOD_TOKEN) choose the
network. Standard output carries the protocol only; logs (payments,
refusals) go to standard error and never contain the wallet's secret.

MCP client configuration (Claude Code: .mcp.json; Cursor: .cursor/mcp.json):
  {"mcpServers": {"lualambda": {"command": "lualambda", "args": ["mcp",
    "--server", "https://example.com/mcp", "--max-price", "0.01",
    "--max-total", "1"]}}}
or: claude mcp add lualambda -- lualambda mcp --server https://example.com/mcp

A bad flag exits 2, a server that cannot be reached at start exits 1.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			limits, err := o.validate()
			if err != nil {
				return err
			}
			return runMCP(cmd.Context(), limits, o.wallet.account, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "the remote MCP endpoint (Streamable HTTP), e.g. https://example.com/mcp (required)")
	f.StringVar(&o.maxPrice, "max-price", defaultMCPMaxPrice, "the most to pay for one tool call, in USD (USDC); a dearer call is refused before anything is signed")
	f.StringVar(&o.maxTotal, "max-total", defaultMCPMaxTotal, "the most this process pays in all, in USD (USDC); a call that would go over it is refused before anything is signed")
	o.wallet.register(f)
	return cmd
}

// validate checks the flags: exit 2 for bad ones.
func (o *mcpOptions) validate() (mcpLimits, error) {
	var l mcpLimits
	if o.server == "" {
		return l, usageErrorf("--server is required: the remote MCP endpoint, e.g. --server https://example.com/mcp")
	}
	u, err := url.Parse(o.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return l, usageErrorf("--server %q: want an http:// or https:// URL of an MCP endpoint, without user info or fragment", o.server)
	}
	l.endpoint = u.String()
	if l.maxPrice, err = x402.ParsePrice(o.maxPrice, x402.USDCDecimals); err != nil {
		return l, usageErrorf("--max-price %q: %v", o.maxPrice, err)
	}
	if l.maxTotal, err = x402.ParsePrice(o.maxTotal, x402.USDCDecimals); err != nil {
		return l, usageErrorf("--max-total %q: %v", o.maxTotal, err)
	}
	return l, nil
}

// runMCP connects to the remote server, then serves its tools on
// standard input and output until the local client goes away or ctx ends.
func runMCP(ctx context.Context, l mcpLimits, account func(context.Context) (*payer.Account, error), stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p := newProxy(l, account, log)
	startCtx, cancel := context.WithTimeout(ctx, mcpConnectTimeout)
	err := p.connect(startCtx, &mcp.StreamableClientTransport{Endpoint: l.endpoint, HTTPClient: mcpHTTPClient(), MaxRetries: 2})
	cancel()
	if err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("the MCP server %s: %v", l.endpoint, err)}
	}
	defer p.close()
	log.Info("serving the remote tools on stdio", "server", l.endpoint, "tools", p.toolCount(),
		"max_price_usdc", x402.FormatAmount(l.maxPrice, x402.USDCDecimals), "max_total_usdc", x402.FormatAmount(l.maxTotal, x402.USDCDecimals))
	if err := p.server.Run(ctx, &mcp.StdioTransport{}); err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("serve stdio: %w", err)
	}
	return nil
}

// mcpHTTPClient is the HTTP client of the remote session. It follows no
// redirect: a redirect would carry the calls, and the payments in them,
// to another URL than --server.
func mcpHTTPClient() *http.Client {
	return &http.Client{
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			return fmt.Errorf("the MCP endpoint redirects to %s: nothing is sent there; pass that URL as --server if it is the one", req.URL.Redacted())
		},
	}
}

// budget counts what the process has paid and has under way, so that
// concurrent calls cannot together go over the total: a payment's amount
// is reserved before it is signed, then either counted as spent or
// released.
type budget struct {
	mu       sync.Mutex
	max      uint64
	spent    uint64
	reserved uint64
}

// reserve takes amount from what is left, or reports false and what was
// spent and reserved when it does not fit.
func (b *budget) reserve(amount uint64) (spent, reserved uint64, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	used := b.spent + b.reserved
	if used > b.max || amount > b.max-used {
		return b.spent, b.reserved, false
	}
	b.reserved += amount
	return b.spent, b.reserved, true
}

// commit counts a reserved amount as spent and returns the total spent.
func (b *budget) commit(amount uint64) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserved -= amount
	b.spent += amount
	return b.spent
}

// release returns a reserved amount that was not paid.
func (b *budget) release(amount uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserved -= amount
}

// totals returns what was spent and what is reserved.
func (b *budget) totals() (spent, reserved uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spent, b.reserved
}

// proxy is a local MCP server that forwards to a remote one and pays.
type proxy struct {
	limits  mcpLimits
	budget  *budget
	account accountCache
	log     *slog.Logger
	server  *mcp.Server

	// syncMu serializes listing and re-listing the tools.
	syncMu sync.Mutex
	mu     sync.Mutex
	remote *mcp.ClientSession
	tools  map[string]bool // names of the tools re-exposed
}

func newProxy(l mcpLimits, account func(context.Context) (*payer.Account, error), log *slog.Logger) *proxy {
	p := &proxy{
		limits:  l,
		budget:  &budget{max: l.maxTotal},
		account: accountCache{load: account},
		log:     log,
		tools:   map[string]bool{},
	}
	return p
}

// connect opens the remote session, lists its tools and makes the local
// server that offers them.
func (p *proxy) connect(ctx context.Context, t mcp.Transport) error {
	client := mcp.NewClient(&mcp.Implementation{Name: "lualambda-mcp-proxy", Version: mcpVersion()}, &mcp.ClientOptions{
		ToolListChangedHandler: func(ctx context.Context, _ *mcp.ToolListChangedRequest) {
			// The handler runs in the session's reader: sync elsewhere.
			go p.resync()
		},
	})
	cs, err := client.Connect(ctx, t, nil)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	opts := &mcp.ServerOptions{Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{ListChanged: true}}}
	if ir := cs.InitializeResult(); ir != nil {
		opts.Instructions = ir.Instructions
	}
	p.server = mcp.NewServer(&mcp.Implementation{Name: "lualambda", Title: "lualambda (paying MCP proxy)", Version: mcpVersion()}, opts)
	p.mu.Lock()
	p.remote = cs
	p.mu.Unlock()
	if err := p.syncTools(ctx); err != nil {
		cs.Close()
		return err
	}
	return nil
}

// mcpVersion is the CLI's module version, for the MCP handshakes.
func mcpVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// close ends the remote session.
func (p *proxy) close() {
	p.mu.Lock()
	cs := p.remote
	p.mu.Unlock()
	if cs != nil {
		cs.Close()
	}
}

func (p *proxy) session() *mcp.ClientSession {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.remote
}

func (p *proxy) toolCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tools)
}

// resync re-lists the remote tools after the server said they changed.
func (p *proxy) resync() {
	ctx, cancel := context.WithTimeout(context.Background(), mcpConnectTimeout)
	defer cancel()
	if err := p.syncTools(ctx); err != nil {
		p.log.Warn("re-listing the remote tools failed", "err", err)
	}
}

// syncTools lists the remote tools and offers each under the same name,
// description and schemas, removing those the server no longer has.
func (p *proxy) syncTools(ctx context.Context) error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	var tools []*mcp.Tool
	for t, err := range p.session().Tools(ctx, nil) {
		if err != nil {
			return fmt.Errorf("list tools: %w", err)
		}
		if len(tools) == maxRemoteTools {
			p.log.Warn("the remote server lists too many tools; only the first are offered", "max", maxRemoteTools)
			break
		}
		tools = append(tools, t)
	}
	seen := map[string]bool{}
	for _, t := range tools {
		if err := checkTool(t); err != nil {
			p.log.Warn("a remote tool is not offered", "tool", payer.Printable(t.Name, 100), "err", err)
			continue
		}
		if err := addTool(p.server, t, p.callTool); err != nil {
			p.log.Warn("a remote tool is not offered", "tool", payer.Printable(t.Name, 100), "err", err)
			continue
		}
		seen[t.Name] = true
	}
	p.mu.Lock()
	var gone []string
	for name := range p.tools {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	p.tools = seen
	p.mu.Unlock()
	if len(gone) > 0 {
		p.server.RemoveTools(gone...)
	}
	return nil
}

// checkTool refuses a tool the local server could not offer: the SDK
// wants an input schema that is a JSON object of type "object".
func checkTool(t *mcp.Tool) error {
	if t == nil || t.Name == "" {
		return errors.New("no name")
	}
	b, err := json.Marshal(t.InputSchema)
	if err != nil {
		return fmt.Errorf("input schema: %w", err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil || schema["type"] != "object" {
		return errors.New(`the input schema is not an object schema of type "object"`)
	}
	return nil
}

// addTool adds a tool, turning the SDK's panic on a tool it refuses into
// an error.
func addTool(s *mcp.Server, t *mcp.Tool, h mcp.ToolHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("refused by the MCP SDK: %v", r)
		}
	}()
	s.AddTool(t, h)
	return nil
}

// callTool forwards a call and pays for it when the server asks.
func (p *proxy) callTool(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	name := req.Params.Name
	meta := mcp.Meta{}
	for k, v := range req.Params.Meta {
		if k != "progressToken" && !strings.HasPrefix(k, mcpProtocolMeta) {
			meta[k] = v
		}
	}
	_, ownPayment := meta[metaPayment]
	params := &mcp.CallToolParams{Name: name, Meta: meta}
	if len(req.Params.Arguments) > 0 {
		params.Arguments = req.Params.Arguments
	}
	res, err := p.forward(ctx, params)
	if err != nil || ownPayment {
		// A client that pays for itself gets the server's answer as is.
		return res, err
	}
	ch, err := challengeOf(res)
	if err != nil {
		p.log.Warn("the remote server asks for payment in a form that cannot be read", "tool", payer.Printable(name, 100), "err", err)
		return toolError(fmt.Sprintf("lualambda mcp cannot pay for %s, nothing was signed: %v", payer.Printable(name, 100), err)), nil
	}
	if ch == nil {
		return res, nil
	}
	return p.pay(ctx, params, ch)
}

// forward sends a call to the remote server. A protocol error of the
// server (unknown tool, bad arguments) is passed on as is; a failure to
// reach it becomes a tool error the client can read.
func (p *proxy) forward(ctx context.Context, params *mcp.CallToolParams) (*mcp.CallToolResult, error) {
	res, err := p.session().CallTool(ctx, params)
	if err == nil {
		return hopResult(res), nil
	}
	var rpcErr *jsonrpc.Error
	if errors.As(err, &rpcErr) {
		return nil, rpcErr
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return toolError(fmt.Sprintf("the remote MCP server %s: %v", p.limits.endpoint, err)), nil
}

// pay chooses an offer of ch, refuses it before signing when it breaks a
// limit, else signs it and calls again with the payment.
func (p *proxy) pay(ctx context.Context, params *mcp.CallToolParams, ch *payer.Challenge) (*mcp.CallToolResult, error) {
	name := payer.Printable(params.Name, 100)
	if ch.Version != x402.Version2 {
		return toolError(fmt.Sprintf("lualambda mcp cannot pay for %s, nothing was signed: the server asks for x402 version %d, and x402 over MCP is version 2", name, ch.Version)), nil
	}
	acct, err := p.account.get(ctx)
	if err != nil {
		p.log.Warn("no wallet to pay with", "tool", name, "err", err)
		return toolError(fmt.Sprintf("lualambda mcp cannot pay for %s, nothing was signed: %v", name, err)), nil
	}
	offers := payer.Evaluate(ch, acct.Chains, p.limits.maxPrice)
	i := payer.Choose(offers)
	if i < 0 {
		refused := &payer.RefusedError{Offers: offers, MaxAmount: p.limits.maxPrice}
		msg := fmt.Sprintf("lualambda mcp refused to pay for %s, nothing was signed: %v", name, refused)
		if o, ok := refused.Cheapest(); ok {
			msg = fmt.Sprintf("lualambda mcp refused to pay for %s, nothing was signed: its price, %s USDC, is over --max-price %s (USD per call)",
				name, x402.FormatAmount(o.Parsed.Amount, x402.USDCDecimals), x402.FormatAmount(p.limits.maxPrice, x402.USDCDecimals))
		}
		p.log.Warn("payment refused", "tool", name, "reason", msg)
		return toolError(msg), nil
	}
	offer := offers[i]
	amount := offer.Parsed.Amount
	spent, reserved, ok := p.budget.reserve(amount)
	if !ok {
		msg := fmt.Sprintf("lualambda mcp refused to pay for %s, nothing was signed: its price, %s USDC, would take what this process pays to %s USDC (%s paid, %s in payments under way), over --max-total %s",
			name, x402.FormatAmount(amount, x402.USDCDecimals), x402.FormatAmount(spent+reserved+amount, x402.USDCDecimals),
			x402.FormatAmount(spent, x402.USDCDecimals), x402.FormatAmount(reserved, x402.USDCDecimals), x402.FormatAmount(p.limits.maxTotal, x402.USDCDecimals))
		p.log.Warn("payment refused", "tool", name, "reason", msg)
		return toolError(msg), nil
	}
	payment, txid, err := payer.SignOffer(ctx, acct.Signer, offer, ch.Resource)
	if err != nil {
		p.budget.release(amount)
		return toolError(fmt.Sprintf("lualambda mcp could not sign the payment for %s: %v", name, err)), nil
	}
	paid := *params
	paid.Meta = mcp.Meta{}
	for k, v := range params.Meta {
		paid.Meta[k] = v
	}
	paid.Meta[metaPayment] = payment
	p.log.Info("paying", "tool", name, "price_usdc", x402.FormatAmount(amount, x402.USDCDecimals), "pay_to", offer.Terms.PayTo, "network", offer.Terms.Network, "payment", txid)
	res, err := p.session().CallTool(ctx, &paid)
	res = hopResult(res)
	if err != nil {
		// The server may have settled the payment before the answer was
		// lost: it stays counted.
		total := p.budget.commit(amount)
		p.log.Warn("the paid call got no answer; its payment is counted as spent", "tool", name, "payment", txid, "spent_usdc", x402.FormatAmount(total, x402.USDCDecimals), "err", err)
		var rpcErr *jsonrpc.Error
		if errors.As(err, &rpcErr) {
			return nil, rpcErr
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return toolError(fmt.Sprintf("the paid call of %s got no answer from %s (payment %s, settled only if the server got it): %v", name, p.limits.endpoint, txid, err)), nil
	}
	if s := settlementOf(res); s != nil && s.Success {
		total := p.budget.commit(amount)
		p.log.Info("paid", "tool", name, "price_usdc", x402.FormatAmount(amount, x402.USDCDecimals), "transaction", payer.Printable(s.Transaction, 100),
			"spent_usdc", x402.FormatAmount(total, x402.USDCDecimals), "max_total_usdc", x402.FormatAmount(p.limits.maxTotal, x402.USDCDecimals))
		return res, nil
	}
	p.budget.release(amount)
	p.log.Warn("the payment was not settled", "tool", name, "payment", txid, "is_error", res.IsError)
	return res, nil
}

// challengeOf returns the x402 PaymentRequired of an error result: its
// structuredContent, else the JSON of its first text content, when it has
// x402Version and accepts. It returns nil, nil for any other result.
func challengeOf(res *mcp.CallToolResult) (*payer.Challenge, error) {
	if res == nil || !res.IsError {
		return nil, nil
	}
	var candidates [][]byte
	if res.StructuredContent != nil {
		if b, err := json.Marshal(res.StructuredContent); err == nil {
			candidates = append(candidates, b)
		}
	}
	if len(res.Content) > 0 {
		if tc, ok := res.Content[0].(*mcp.TextContent); ok {
			candidates = append(candidates, []byte(tc.Text))
		}
	}
	for _, b := range candidates {
		if len(b) > maxChallengeJSON || !looksLikeChallenge(b) {
			continue
		}
		ch, err := payer.ParseChallenge(http.Header{}, b)
		if err != nil {
			return nil, err
		}
		return ch, nil
	}
	return nil, nil
}

// looksLikeChallenge reports whether b is a JSON object with x402Version
// and accepts.
func looksLikeChallenge(b []byte) bool {
	if !strings.HasPrefix(strings.TrimSpace(string(b)), "{") {
		return false
	}
	var probe struct {
		X402Version *int            `json:"x402Version"`
		Accepts     json.RawMessage `json:"accepts"`
	}
	return json.Unmarshal(b, &probe) == nil && probe.X402Version != nil && len(probe.Accepts) > 0
}

// settlementOf returns the settlement receipt in a result's _meta, or nil.
func settlementOf(res *mcp.CallToolResult) *x402.SettleResponse {
	if res == nil || res.Meta == nil {
		return nil
	}
	v, ok := res.Meta[metaPaymentResponse]
	if !ok {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var s x402.SettleResponse
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	return &s
}

// hopResult drops the protocol's own _meta keys of the remote session
// from its result; the local session sets its own.
func hopResult(res *mcp.CallToolResult) *mcp.CallToolResult {
	if res == nil || res.Meta == nil {
		return res
	}
	for k := range res.Meta {
		if strings.HasPrefix(k, mcpProtocolMeta) {
			delete(res.Meta, k)
		}
	}
	return res
}

// toolError is a tool result that reports msg as an error.
func toolError(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
}

// accountCache loads the paying account once it is first needed and
// keeps it; a failed load is tried again on the next payment.
type accountCache struct {
	mu   sync.Mutex
	load func(context.Context) (*payer.Account, error)
	acct *payer.Account
}

func (c *accountCache) get(ctx context.Context) (*payer.Account, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.acct != nil {
		return c.acct, nil
	}
	if c.load == nil {
		return nil, errors.New("no wallet is configured")
	}
	a, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	if a == nil || a.Signer == nil {
		return nil, errors.New("the wallet has no signer")
	}
	c.acct = a
	return a, nil
}

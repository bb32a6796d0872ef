package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// mcpProfiles is the profile both the invocation API and the MCP endpoint
// import (the same profile, so one pool): its price is %s.
const mcpProfiles = `profile t {
	memory 64MiB
	timeout 5s
	retention 60s
	output_cap 4KiB
	price %s
	warm 1
}
`

// mcpSite is an invocation API under /invoke/ and an MCP endpoint at /mcp,
// with the same profiles (imported from the file profiles) and gate
// (empty: free).
func mcpSite(gate, profiles string) string {
	return fmt.Sprintf(`
	handle_path /invoke/* {
		%s
		lualambda {
			acquire_timeout 60s
			import %s
		}
	}
	route /mcp* {
		%s
		lualambda_mcp {
			acquire_timeout 60s
			import %s
		}
	}`, gate, profiles, gate, profiles)
}

// writeProfiles writes mcpProfiles with price to a file for import.
func writeProfiles(t *testing.T, price string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "profiles")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(mcpProfiles, price)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// mcpConnect connects the go-sdk MCP client to endpoint.
func mcpConnect(t *testing.T, endpoint string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil)
	sess, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect to %s: %v", endpoint, err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	return sess
}

// mcpCall calls a tool with meta (nil: none) and fails the test on a
// protocol error; tool errors come back as results.
func mcpCall(t *testing.T, sess *mcp.ClientSession, name string, args any, meta mcp.Meta) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args, Meta: meta})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	return res
}

// mcpRun is run_lua's (and get_output's) structured output.
type mcpRun struct {
	ID        string          `json:"id"`
	Token     string          `json:"token"`
	Profile   string          `json:"profile"`
	Reason    string          `json:"reason"`
	Result    json.RawMessage `json:"result"`
	Error     string          `json:"error"`
	Traceback string          `json:"traceback"`
	Stdout    string          `json:"stdout"`
	Stderr    string          `json:"stderr"`
	OutputURL string          `json:"output_url"`
}

// structured decodes a result's structuredContent into v.
func structured(t *testing.T, res *mcp.CallToolResult, v any) {
	t.Helper()
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("structuredContent %s: %v", b, err)
	}
}

// text is a result's first text content.
func text(res *mcp.CallToolResult) string {
	if len(res.Content) == 0 {
		return ""
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); ok {
		return tc.Text
	}
	return ""
}

// runOK checks a successful run_lua or get_output result and returns it.
func runOK(t *testing.T, res *mcp.CallToolResult) mcpRun {
	t.Helper()
	if res.IsError {
		t.Fatalf("tool error: %s", text(res))
	}
	var r mcpRun
	structured(t, res, &r)
	return r
}

// paymentRequired checks an error result carrying x402 requirements, the
// same in structuredContent and content[0].text, and returns them.
func paymentRequired(t *testing.T, res *mcp.CallToolResult) x402.PaymentRequired {
	t.Helper()
	if !res.IsError {
		t.Fatalf("want an error result with payment requirements, got %s", text(res))
	}
	var pr, fromText x402.PaymentRequired
	structured(t, res, &pr)
	if err := json.Unmarshal([]byte(text(res)), &fromText); err != nil {
		t.Fatalf("content[0].text is not the PaymentRequired: %q", text(res))
	}
	if pr.X402Version != 2 || len(pr.Accepts) == 0 || fmt.Sprint(pr) != fmt.Sprint(fromText) {
		t.Fatalf("requirements %+v, text %+v", pr, fromText)
	}
	return pr
}

// notRun checks that no invocation id exists on the server.
func notRun(t *testing.T, s *server, id string) {
	t.Helper()
	if r := do(t, http.MethodGet, s.URL+"/invoke/"+id, "", nil); r.status != http.StatusNotFound {
		t.Fatalf("invocation %s exists (status %d: %s); nothing should have run", id, r.status, r.body)
	}
}

// TestMCPPaidOnDevnet: the go-sdk MCP client against lualambda_mcp behind
// an x402pay gate without a price, on the devnet. Listing tools and
// profiles is free; an unpaid run_lua gets the requirements and runs
// nothing; a paid one runs once and moves the price once; the same payment
// again buys nothing; get_output needs the token.
func TestMCPPaidOnDevnet(t *testing.T) {
	c := newPaidChain(t)
	payer := c.NewAccount(10_000_000, true, 1_000_000)
	admin := freePort(t)
	s := startCaddy(t, serverConfig{admin: admin, site: mcpSite(c.gate(""), writeProfiles(t, "0.001"))})
	merchant := c.merchant.Address.String()
	payerAddr := payer.Address.String()
	sess := mcpConnect(t, s.URL+"/mcp")

	// Balances and rounds move only when a payment settles.
	lastPayer, lastMerchant := c.usdc(t, payerAddr), c.usdc(t, merchant)
	moved := func(t *testing.T, delta uint64) {
		t.Helper()
		p, m := c.usdc(t, payerAddr), c.usdc(t, merchant)
		if lastPayer-p != delta || m-lastMerchant != delta {
			t.Fatalf("payer paid %d, merchant got %d; want %d", int64(lastPayer)-int64(p), int64(m)-int64(lastMerchant), delta)
		}
		lastPayer, lastMerchant = p, m
	}
	round := c.Dev.Round()

	tools, err := sess.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*mcp.Tool{}
	for _, tool := range tools.Tools {
		byName[tool.Name] = tool
	}
	run := byName["run_lua"]
	if len(byName) != 3 || run == nil || byName["list_profiles"] == nil || byName["get_output"] == nil {
		t.Fatalf("tools %v: want run_lua, list_profiles, get_output", byName)
	}
	if !strings.Contains(run.Description, "t: $0.001 per run, 64 MiB, 5s, output cap 4.0 KiB, luajit") || !strings.Contains(run.Description, `_meta["x402/payment"]`) {
		t.Fatalf("run_lua's description lacks the profile's price or how to pay:\n%s", run.Description)
	}
	schema, _ := json.Marshal(run.InputSchema)
	for _, field := range []string{`"code"`, `"module"`, `"packages"`, `"args"`, `"profile"`, `"id"`, `"zip_base64"`} {
		if !bytes.Contains(schema, []byte(field)) {
			t.Fatalf("run_lua's input schema lacks %s: %s", field, schema)
		}
	}

	// list_profiles is free and shows the price.
	var profiles struct {
		Profiles []struct {
			Name      string `json:"name"`
			Price     string `json:"price"`
			MemoryMiB int    `json:"memory_mib"`
			TimeoutMS int64  `json:"timeout_ms"`
			Default   bool   `json:"default"`
		} `json:"profiles"`
	}
	res := mcpCall(t, sess, "list_profiles", map[string]any{}, nil)
	if res.IsError {
		t.Fatalf("list_profiles: %s", text(res))
	}
	structured(t, res, &profiles)
	if len(profiles.Profiles) != 1 || profiles.Profiles[0].Name != "t" || profiles.Profiles[0].Price != "0.001" ||
		profiles.Profiles[0].MemoryMiB != 64 || profiles.Profiles[0].TimeoutMS != 5000 || !profiles.Profiles[0].Default {
		t.Fatalf("list_profiles: %+v", profiles)
	}

	// Unpaid: the requirements, no run, nothing moves.
	args := map[string]any{"code": `print("paid run") return {n = 6 * 7, arg = ...}`, "args": []any{"x"}, "id": "mcp-paid-1"}
	pr := paymentRequired(t, mcpCall(t, sess, "run_lua", args, nil))
	acc := pr.Accepts[0]
	if pr.Resource.URL != "mcp://tool/run_lua" || acc.Amount != "1000" || acc.PayTo != merchant || acc.Network != c.Dev.Network() || pr.Error != "Payment required" {
		t.Fatalf("requirements %+v", pr)
	}
	// The 402 says how to call the tool (x402's bazaar extension).
	var ext struct {
		Bazaar struct {
			Info struct {
				Input struct {
					Type, Tool  string
					InputSchema map[string]any
				}
			}
		}
	}
	if err := json.Unmarshal(pr.Extensions, &ext); err != nil || ext.Bazaar.Info.Input.Type != "mcp" ||
		ext.Bazaar.Info.Input.Tool != "run_lua" || ext.Bazaar.Info.Input.InputSchema["properties"] == nil {
		t.Fatalf("bazaar extension %s: %v", pr.Extensions, err)
	}
	notRun(t, s, "mcp-paid-1")

	// Payments, built with the project's payer code.
	pay := func() mcp.Meta {
		t.Helper()
		req := x402.Requirement{V2: &acc}
		areq, err := avm.ParseRequirement(req.Terms())
		if err != nil {
			t.Fatal(err)
		}
		payload, err := avm.BuildPayment(t.Context(), c.Params(), avm.AccountSigner(payer), areq)
		if err != nil {
			t.Fatal(err)
		}
		payment, err := avm.NewPayment(req, &pr.Resource, payload)
		if err != nil {
			t.Fatal(err)
		}
		return mcp.Meta{"x402/payment": payment}
	}
	meta := pay()

	// A call whose arguments are wrong is refused before the payment is
	// looked at: it costs nothing and leaves the payment good.
	bad := mcpCall(t, sess, "run_lua", map[string]any{"code": "return 1", "module": "m", "id": "mcp-bad"}, meta)
	if !bad.IsError || !strings.Contains(text(bad), "not both") {
		t.Fatalf("code and module together: %+v %s", bad, text(bad))
	}
	notRun(t, s, "mcp-bad")
	if c.Dev.Round() != round {
		t.Fatalf("free calls committed rounds %d -> %d", round, c.Dev.Round())
	}
	moved(t, 0)

	// Paid: the run, the settlement in _meta, the price moved once.
	res = mcpCall(t, sess, "run_lua", args, meta)
	out := runOK(t, res)
	if out.Reason != "ok" || string(out.Result) != `{"arg":"x","n":42}` || out.Stdout != "paid run\n" || out.ID != "mcp-paid-1" || out.Profile != "t" || out.Token == "" {
		t.Fatalf("paid run: %+v", out)
	}
	if !strings.Contains(text(res), `result: {"arg":"x","n":42}`) || !strings.Contains(text(res), "paid run") {
		t.Fatalf("the text summary lacks the result or stdout: %q", text(res))
	}
	var settle x402.SettleResponse
	sb, _ := json.Marshal(res.Meta["x402/payment-response"])
	if err := json.Unmarshal(sb, &settle); err != nil || !settle.Success || settle.Transaction == "" || settle.Payer != payerAddr {
		t.Fatalf(`_meta["x402/payment-response"] = %s (%v)`, sb, err)
	}
	if _, err := c.Algod.WaitConfirmed(t.Context(), settle.Transaction, 1); err != nil {
		t.Fatalf("the settlement %s is not on chain: %v", settle.Transaction, err)
	}
	moved(t, 1000)
	// The gate's receipt reached the store, as for an HTTP run.
	st := do(t, http.MethodGet, s.URL+"/invoke/mcp-paid-1", "", nil)
	if st.status != http.StatusOK || st.json["paid"] != true || st.str("state") != "done" {
		t.Fatalf("status of the paid run: %d %s", st.status, st.body)
	}

	// The same payment again, for another run: refused, nothing runs.
	args2 := map[string]any{"code": "return 1", "id": "mcp-paid-2"}
	again := paymentRequired(t, mcpCall(t, sess, "run_lua", args2, meta))
	if !strings.Contains(again.Error, avm.ReasonDuplicateSettlement) {
		t.Fatalf("a replayed payment: error %q, want %s", again.Error, avm.ReasonDuplicateSettlement)
	}
	notRun(t, s, "mcp-paid-2")
	moved(t, 0)

	// A new payment for a used id: the run is refused and not charged,
	// and the payment is used up.
	meta2 := pay()
	used := mcpCall(t, sess, "run_lua", map[string]any{"code": "return 2", "id": "mcp-paid-1"}, meta2)
	if !used.IsError || !strings.Contains(text(used), "already used") || !strings.Contains(text(used), "payment is used up") {
		t.Fatalf("a paid call for a used id: %q", text(used))
	}
	moved(t, 0)
	if again := paymentRequired(t, mcpCall(t, sess, "run_lua", args2, meta2)); !strings.Contains(again.Error, avm.ReasonDuplicateSettlement) {
		t.Fatalf("a payment that bought a refusal, again: error %q", again.Error)
	}
	notRun(t, s, "mcp-paid-2")
	moved(t, 0)

	// get_output with the token reads the run again; without it, or with
	// a wrong one, it fails.
	got := runOK(t, mcpCall(t, sess, "get_output", map[string]any{"id": out.ID, "token": out.Token}, nil))
	if got.Reason != "ok" || string(got.Result) != string(out.Result) || got.Stdout != out.Stdout || got.Token != out.Token {
		t.Fatalf("get_output %+v, want the run %+v", got, out)
	}
	wrong := "0" + out.Token[1:]
	if wrong == out.Token {
		wrong = "1" + out.Token[1:]
	}
	for _, a := range []map[string]any{{"id": out.ID}, {"id": out.ID, "token": wrong}} {
		if res := mcpCall(t, sess, "get_output", a, nil); !res.IsError || res.StructuredContent != nil || strings.Contains(text(res), "paid run") {
			t.Fatalf("get_output %v: %+v %q; want an error without the output", a, res, text(res))
		}
	}
	// output_url serves it over HTTP with the token, and not without.
	if out.OutputURL != s.URL+"/mcp/mcp-paid-1/output" {
		t.Fatalf("output_url %q", out.OutputURL)
	}
	if r := do(t, http.MethodGet, out.OutputURL, "", nil, "Authorization", "Bearer "+out.Token); r.status != http.StatusOK || r.json["stdout"] != "paid run\n" {
		t.Fatalf("output_url with the token: %d %s", r.status, r.body)
	}
	if r := do(t, http.MethodGet, out.OutputURL, "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("output_url without the token: %d %s", r.status, r.body)
	}
	// The invocation API and the MCP endpoint share one pool for t.
	pools := do(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/lualambda/pools", admin), "", nil)
	var list []poolStats
	if err := json.Unmarshal(pools.body, &list); err != nil {
		t.Fatalf("pools: %s", pools.body)
	}
	if len(list) != 1 || list[0].Name != "t" {
		t.Fatalf("want one pool t shared by lualambda and lualambda_mcp, got %s", pools.body)
	}
	moved(t, 0)
}

// TestMCPFree: without a gate, run_lua is free whatever the profile's
// price: code with args, a module from a package, a Lua error; and bad
// arguments are refused without a run.
func TestMCPFree(t *testing.T) {
	s := startCaddy(t, serverConfig{site: mcpSite("", writeProfiles(t, "0.001"))})
	sess := mcpConnect(t, s.URL+"/mcp")

	tools, err := sess.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools.Tools {
		if tool.Name == "run_lua" && (strings.Contains(tool.Description, "$0.001") || !strings.Contains(tool.Description, "t: free, 64 MiB, 5s, output cap 4.0 KiB, luajit")) {
			t.Fatalf("a free server's run_lua description must not ask for payment:\n%s", tool.Description)
		}
	}
	var profiles struct {
		Profiles []map[string]any `json:"profiles"`
	}
	structured(t, mcpCall(t, sess, "list_profiles", nil, nil), &profiles)
	if len(profiles.Profiles) != 1 || profiles.Profiles[0]["name"] != "t" || profiles.Profiles[0]["price"] != nil {
		t.Fatalf("list_profiles in free mode: %+v", profiles)
	}

	// A module from a package, called with the args table.
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	f, err := zw.Create("blah/dorp.lua")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(`return function(args) print("module") return args[1].n * 2 end`)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	res := mcpCall(t, sess, "run_lua", map[string]any{
		"module": "blah.dorp", "args": map[string]any{"n": 21},
		"packages": []any{map[string]any{"name": "blah", "zip_base64": base64.StdEncoding.EncodeToString(zb.Bytes())}},
	}, nil)
	out := runOK(t, res)
	if out.Reason != "ok" || string(out.Result) != "42" || out.Stdout != "module\n" || !strings.HasPrefix(out.ID, "mcp-") || res.Meta["x402/payment-response"] != nil {
		t.Fatalf("module run: %+v, meta %v", out, res.Meta)
	}

	// A Lua error is the run's outcome, not a tool error.
	res = mcpCall(t, sess, "run_lua", map[string]any{"code": `error("boom")`}, nil)
	out = runOK(t, res)
	if out.Reason != "error" || !strings.Contains(out.Error, "boom") || !strings.Contains(text(res), "reason error") {
		t.Fatalf("Lua error: %+v %q", out, text(res))
	}

	// Bad arguments: tool errors, nothing runs.
	for _, c := range []struct {
		args map[string]any
		want string
	}{
		{map[string]any{}, "nothing to run"},
		{map[string]any{"code": "return 1", "profile": "huge", "id": "mcp-free-bad"}, `no profile "huge"`},
		{map[string]any{"code": "return 1", "id": "bad id!"}, "want 1-64"},
		{map[string]any{"code": "return 1", "nope": 1}, "unknown field"},
		{map[string]any{"module": "blah", "id": "mcp-free-bad", "packages": []any{map[string]any{"name": "blah", "zip_base64": "%%%"}}}, "not base64"},
	} {
		res := mcpCall(t, sess, "run_lua", c.args, nil)
		if !res.IsError || !strings.Contains(text(res), c.want) {
			t.Fatalf("run_lua %v: %q, want an error saying %q", c.args, text(res), c.want)
		}
	}
	notRun(t, s, "mcp-free-bad")
	// An id runs once.
	runOK(t, mcpCall(t, sess, "run_lua", map[string]any{"code": "return 1", "id": "mcp-once"}, nil))
	if res := mcpCall(t, sess, "run_lua", map[string]any{"code": "return 2", "id": "mcp-once"}, nil); !res.IsError || !strings.Contains(text(res), "already used") {
		t.Fatalf("a used id: %q", text(res))
	}
}

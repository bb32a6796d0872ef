package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/x402"
)

// mcpStdioResult is what mcp_stdio.cjs prints.
type mcpStdioResult struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error"`
	Stack  string `json:"stack"`
	Stderr string `json:"stderr"`
	Tools  []struct {
		Name         string `json:"name"`
		Description  string `json:"description"`
		InputSchema  any    `json:"inputSchema"`
		OutputSchema any    `json:"outputSchema"`
	} `json:"tools"`
	Results []mcpStdioCall `json:"results"`
}

// mcpStdioCall is one CallToolResult as the npm client returned it.
type mcpStdioCall struct {
	CallError         string          `json:"callError"`
	IsError           bool            `json:"isError"`
	StructuredContent json.RawMessage `json:"structuredContent"`
	Content           []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	Meta map[string]json.RawMessage `json:"_meta"`
}

func (c mcpStdioCall) text() string {
	var parts []string
	for _, p := range c.Content {
		parts = append(parts, p.Text)
	}
	return strings.Join(parts, "\n")
}

// proxyVMSite is a Caddy site whose /mcp endpoint is lualambda_mcp (real
// microVMs) behind an x402pay gate without a price, settling on the devnet
// with the built-in facilitator: the profile t costs the price per run.
func proxyVMSite(c *chain, payTo, feePayer string) string {
	return fmt.Sprintf(`route /mcp* {
		x402pay {
			pay_to %s
			network testnet
			facilitator builtin {
				algod %s
				algod_token %s
				fee_payer {file.%s}
			}
		}
		lualambda_mcp {
			acquire_timeout 60s
			profile t {
				memory 64MiB
				timeout 20s
				price %s
			}
		}
	}`, payTo, c.Dev.URL(), c.Dev.Token(), feePayer, price)
}

// proxyRuntimeDir makes the directory of the VMs' sockets: QEMU runs as
// nobody and must reach it, so not under t.TempDir, whose parent is
// private. The test fails if a QEMU process of it outlives the test.
func proxyRuntimeDir(t *testing.T) string {
	t.Helper()
	return testenv.VMsDir(t, "interop-vms-")
}

// TestNPMClientThroughLualambdaMCP: the npm @modelcontextprotocol/sdk
// client starts `lualambda mcp` over stdio (StdioClientTransport; nothing
// of ours but the script) against lualambda_mcp on the caddy binary,
// behind x402pay on the devnet, with real microVMs. The proxy offers the
// server's tools as the server lists them; list_profiles is free; the
// first run_lua is paid by the proxy with the wallet and its result and
// settlement reach the client; with --max-total below two prices the
// second run_lua is refused before signing, with a message naming
// --max-total. The merchant gets the price exactly once, and the proxy's
// logs never show the wallet's mnemonic.
func TestNPMClientThroughLualambdaMCP(t *testing.T) {
	modules := npmModules(t)
	testenv.Image(t)
	c := startChain(t)
	receiver := c.newReceiver(t)
	feePayer := c.newFeePayer(t)
	payer := c.newPayer(t)
	wallet := writeWallet(t, payer)
	runtimeDir := proxyRuntimeDir(t)
	srv := startCaddy(t, fmt.Sprintf("lualambda {\n\t\taccel tcg\n\t\truntime_dir %s\n\t}", runtimeDir),
		proxyVMSite(c, receiver.Addr, devnettest.MnemonicFile(t, feePayer.Account)))
	endpoint := srv.URL + "/mcp"

	// The tools as the server lists them, read with the go-sdk client.
	want := proxiedServerTools(t, endpoint)

	calls := []map[string]any{
		{"name": "list_profiles", "arguments": map[string]any{}},
		{"name": "run_lua", "arguments": map[string]any{"code": `print("hello from the VM") return 6 * 7`}},
		{"name": "run_lua", "arguments": map[string]any{"code": `return "must not run"`}},
	}
	callsJSON, _ := json.Marshal(calls)
	args, _ := json.Marshal([]string{
		"mcp", "--server", endpoint, "--network", "testnet", "--algod", c.Dev.URL(),
		"--max-price", price, "--max-total", "0.0015",
	})
	home := t.TempDir()
	p := c.watch(t, payer, receiver, feePayer)
	var res mcpStdioResult
	err := runNode(t, modules, "mcp_stdio.cjs", &res,
		"MCP_COMMAND="+binary(t, "lualambda"),
		"MCP_ARGS="+string(args),
		"MCP_CALLS="+string(callsJSON),
		"LUALAMBDA_WALLET="+wallet,
		"LUALAMBDA_MNEMONIC=",
		"LUALAMBDA_NETWORK=",
		"LUALAMBDA_ALGOD=",
		"LUALAMBDA_ALGOD_TOKEN="+c.Dev.Token(),
		"HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home,
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lualambda mcp stderr:\n%s", tail(res.Stderr, 4000))
	if !res.OK {
		t.Fatalf("npm client failed: %s\n%s", res.Error, res.Stack)
	}

	// The same tools, names, descriptions and schemas.
	if len(res.Tools) != len(want) {
		t.Fatalf("the proxy offers %d tools, the server %d", len(res.Tools), len(want))
	}
	for _, tool := range res.Tools {
		w, ok := want[tool.Name]
		if !ok {
			t.Errorf("the proxy offers %q, which the server does not list", tool.Name)
			continue
		}
		if tool.Description != w.Description || !proxySameJSON(t, tool.InputSchema, w.InputSchema) || !proxySameJSON(t, tool.OutputSchema, w.OutputSchema) {
			t.Errorf("tool %s differs from the server's:\nproxy  %q %v %v\nserver %q %v %v", tool.Name,
				tool.Description, tool.InputSchema, tool.OutputSchema, w.Description, w.InputSchema, w.OutputSchema)
		}
	}
	if len(res.Results) != len(calls) {
		t.Fatalf("%d results for %d calls", len(res.Results), len(calls))
	}

	// list_profiles: free.
	if r := res.Results[0]; r.CallError != "" || r.IsError || !strings.Contains(string(r.StructuredContent), `"t"`) {
		t.Errorf("list_profiles: %+v", r)
	}

	// The first run: paid, run in a VM, settled.
	r := res.Results[1]
	if r.CallError != "" || r.IsError {
		t.Fatalf("the paid run_lua failed: %s %s", r.CallError, r.text())
	}
	var run struct {
		Reason string          `json:"reason"`
		Result json.RawMessage `json:"result"`
		Stdout string          `json:"stdout"`
	}
	if err := json.Unmarshal(r.StructuredContent, &run); err != nil || string(run.Result) != "42" || !strings.Contains(run.Stdout, "hello from the VM") {
		t.Fatalf("run_lua's output %s (%v): want result 42 and the printed line", r.StructuredContent, err)
	}
	var settle x402.SettleResponse
	if err := json.Unmarshal(r.Meta["x402/payment-response"], &settle); err != nil || !settle.Success || settle.Transaction == "" || settle.Payer != payer.Addr {
		t.Fatalf("the paid result's _meta[\"x402/payment-response\"] is %s (%v): want a success by the payer", r.Meta["x402/payment-response"], err)
	}

	// The second run: refused before signing, nothing sent.
	r = res.Results[2]
	if r.CallError != "" || !r.IsError || !strings.Contains(r.text(), "--max-total 0.0015") || !strings.Contains(r.text(), "nothing was signed") {
		t.Fatalf("the second run_lua: want a refusal naming --max-total 0.0015; got %+v", r)
	}
	if n := strings.Count(res.Stderr, "msg=paying"); n != 1 {
		t.Errorf("the proxy signed %d payments, want 1 (its log says \"paying\" after each signature)", n)
	}

	// The price moved once, in the settled transaction.
	c.checkPaid(t, p, settle.Transaction)

	// The wallet's secret never shows.
	words := strings.Fields(devnettest.Mnemonic(t, payer.Account))
	if strings.Contains(res.Stderr, strings.Join(words[:3], " ")) {
		t.Errorf("the proxy's standard error shows the mnemonic")
	}
}

// proxiedServerTools lists the server's tools with the go-sdk client.
func proxiedServerTools(t *testing.T, endpoint string) map[string]*mcp.Tool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	sess, err := mcp.NewClient(&mcp.Implementation{Name: "interop", Version: "1"}, nil).
		Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect to %s: %v", endpoint, err)
	}
	defer sess.Close()
	list, err := sess.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tools := map[string]*mcp.Tool{}
	for _, tool := range list.Tools {
		tools[tool.Name] = tool
	}
	if tools["run_lua"] == nil {
		t.Fatalf("the server lists no run_lua: %v", list.Tools)
	}
	return tools
}

// proxySameJSON reports whether a and b encode to the same JSON value.
func proxySameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	var va, vb any
	for _, p := range []struct {
		v   any
		out *any
	}{{a, &va}, {b, &vb}} {
		j, err := json.Marshal(p.v)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(j, p.out); err != nil {
			t.Fatal(err)
		}
	}
	return reflect.DeepEqual(va, vb)
}

package interop

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// mcpToolResult is an MCP tool result as mcp_client.cjs prints it.
type mcpToolResult struct {
	IsError           bool            `json:"isError"`
	StructuredContent json.RawMessage `json:"structuredContent"`
	Content           []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	Meta map[string]json.RawMessage `json:"_meta"`
}

// mcpClientResult is what mcp_client.cjs prints.
type mcpClientResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Stack string `json:"stack"`
	Payer string `json:"payer"`
	Tools []struct {
		Name         string          `json:"name"`
		Description  string          `json:"description"`
		InputSchema  json.RawMessage `json:"inputSchema"`
		OutputSchema json.RawMessage `json:"outputSchema"`
	} `json:"tools"`
	Profiles mcpToolResult `json:"profiles"`
	Unpaid   mcpToolResult `json:"unpaid"`
	Paid     mcpToolResult `json:"paid"`
	Replay   mcpToolResult `json:"replay"`
}

// mcpSite serves lualambda's invocation API under /invoke/ and its MCP
// endpoint at /mcp, both behind the same x402pay gate without a price and
// with the same profiles, imported from the file profiles.
func mcpSite(c *chain, payTo, feePayer, profiles string) string {
	gate := fmt.Sprintf(`x402pay {
			pay_to %s
			network testnet
			facilitator builtin {
				algod %s
				algod_token %s
				fee_payer {file.%s}
			}
		}`, payTo, c.Dev.URL(), c.Dev.Token(), feePayer)
	return fmt.Sprintf(`handle_path /invoke/* {
		%[1]s
		lualambda {
			import %[2]s
		}
	}
	route /mcp* {
		%[1]s
		lualambda_mcp {
			import %[2]s
		}
	}`, gate, profiles)
}

// TestNPMMCPClientPaysRunLua: the npm MCP client (@modelcontextprotocol/sdk)
// lists lualambda_mcp's tools, calls list_profiles free, gets the payment
// requirements from an unpaid run_lua, pays with a PaymentPayload built by
// the npm x402 client (@x402/core + @x402/avm) in _meta["x402/payment"],
// and gets the run's result and the settlement; the price moves once; the
// same payment again buys nothing. Real caddy, real VMs, the devnet as
// testnet.
func TestNPMMCPClientPaysRunLua(t *testing.T) {
	modules := npmModules(t)
	c := startChain(t)
	receiver := c.newReceiver(t)
	feePayer := c.newFeePayer(t)
	payer := c.newPayer(t)

	runtimeDir := testenv.VMsDir(t, "interop-vms-")
	profiles := filepath.Join(t.TempDir(), "profiles")
	if err := os.WriteFile(profiles, []byte(`acquire_timeout 60s
profile nano {
	price `+price+`
	warm 1
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	global := fmt.Sprintf("lualambda {\n\t\taccel tcg\n\t\truntime_dir %s\n\t}", runtimeDir)
	srv := startCaddy(t, global, mcpSite(c, receiver.Addr, devnettest.MnemonicFile(t, feePayer.Account), profiles))

	p := c.watch(t, payer, receiver, feePayer)
	var res mcpClientResult
	if err := runNode(t, modules, "mcp_client.cjs", &res,
		"MCP_URL="+srv.URL+"/mcp",
		"RUN_ID=npm-mcp-1",
		"AVM_PRIVATE_KEY="+payer.KeyBase64(),
		"ALGOD_URL="+c.Dev.URL(),
		"ALGOD_TOKEN="+c.Dev.Token(),
	); err != nil {
		t.Fatal(err)
	}
	if !res.OK {
		t.Fatalf("npm MCP client failed: %s\n%s", res.Error, res.Stack)
	}

	// The tools, with their schemas.
	names := map[string]bool{}
	for _, tool := range res.Tools {
		names[tool.Name] = true
		if tool.Name == "run_lua" && (!strings.Contains(string(tool.InputSchema), `"code"`) || !strings.Contains(tool.Description, "$0.001 per run") || len(tool.OutputSchema) == 0) {
			t.Errorf("run_lua as listed: %+v", tool)
		}
	}
	if len(names) != 3 || !names["run_lua"] || !names["list_profiles"] || !names["get_output"] {
		t.Fatalf("tools %v", names)
	}

	// list_profiles: free, with the price.
	var profs struct {
		Profiles []struct {
			Name  string `json:"name"`
			Price string `json:"price"`
		} `json:"profiles"`
	}
	if res.Profiles.IsError || json.Unmarshal(res.Profiles.StructuredContent, &profs) != nil || len(profs.Profiles) != 1 ||
		profs.Profiles[0].Name != "nano" || profs.Profiles[0].Price != price {
		t.Fatalf("list_profiles: %+v", res.Profiles)
	}

	// Unpaid: the requirements, as structuredContent and as its text.
	var pr x402.PaymentRequired
	if !res.Unpaid.IsError || json.Unmarshal(res.Unpaid.StructuredContent, &pr) != nil || len(res.Unpaid.Content) == 0 ||
		!json.Valid([]byte(res.Unpaid.Content[0].Text)) || !strings.Contains(res.Unpaid.Content[0].Text, `"accepts"`) {
		t.Fatalf("unpaid run_lua: %+v", res.Unpaid)
	}
	if pr.X402Version != 2 || len(pr.Accepts) != 1 || pr.Accepts[0].Amount != fmt.Sprint(priceUnits) || pr.Accepts[0].PayTo != receiver.Addr ||
		!x402.AlgorandTestnet.Matches(pr.Accepts[0].Network) || pr.Resource.URL != "mcp://tool/run_lua" {
		t.Fatalf("requirements %+v", pr)
	}

	// Paid: the run's output and the settlement.
	var out struct {
		ID     string          `json:"id"`
		Reason string          `json:"reason"`
		Result json.RawMessage `json:"result"`
		Stdout string          `json:"stdout"`
		Token  string          `json:"token"`
	}
	if res.Paid.IsError || json.Unmarshal(res.Paid.StructuredContent, &out) != nil {
		t.Fatalf("paid run_lua: %+v", res.Paid)
	}
	if out.ID != "npm-mcp-1" || out.Reason != "ok" || string(out.Result) != `{"sum":42}` || out.Stdout != "npm run\n" || out.Token == "" {
		t.Fatalf("paid run: %+v", out)
	}
	var settle x402.SettleResponse
	if err := json.Unmarshal(res.Paid.Meta["x402/payment-response"], &settle); err != nil || !settle.Success || settle.Transaction == "" || settle.Payer != payer.Addr {
		t.Fatalf(`_meta["x402/payment-response"] = %s (%v)`, res.Paid.Meta["x402/payment-response"], err)
	}

	// The replay: requirements again, naming the duplicate; no run.
	var again x402.PaymentRequired
	if !res.Replay.IsError || json.Unmarshal(res.Replay.StructuredContent, &again) != nil || !strings.Contains(again.Error, avm.ReasonDuplicateSettlement) {
		t.Fatalf("replayed payment: %+v", res.Replay)
	}
	if resp, body := get(t, srv.URL+"/invoke/npm-mcp-1-replay"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the replay ran: status %d %s", resp.StatusCode, body)
	}
	if resp, body := get(t, srv.URL+"/invoke/npm-mcp-1"); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"paid":true`) {
		t.Fatalf("status of the paid run: %d %s", resp.StatusCode, body)
	}

	// Exactly one payment of the price moved, in the settlement's transaction.
	c.checkPaid(t, p, settle.Transaction)
}

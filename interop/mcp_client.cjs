// Drives lualambda's MCP endpoint with the published npm MCP client
// (@modelcontextprotocol/sdk, StreamableHTTPClientTransport) and pays its
// run_lua tool over x402's MCP transport with the published npm x402 client
// (@x402/core's x402Client with @x402/avm's exact scheme), then prints what
// happened as one JSON line on stdout. Run by mcp_server_test.go.
//
// Environment:
//   MCP_URL          the MCP endpoint
//   RUN_ID           the id of the paid run (the replay uses RUN_ID-replay)
//   AVM_PRIVATE_KEY  base64 of the payer's 64-byte ed25519 secret key
//   ALGOD_URL        algod the scheme asks for suggested params
//   ALGOD_TOKEN      its X-Algo-API-Token (may be empty)
//
// Steps: list the tools; call list_profiles; call run_lua without payment
// (the result must carry the x402 PaymentRequired); build a PaymentPayload
// for it; call run_lua again with it in _meta["x402/payment"]; call run_lua
// once more for another id with the same payload (a replay).
//
// Output: {"ok": true, "payer", "tools", "profiles", "unpaid", "payment",
// "paid", "replay"} (each call's whole result) or {"ok": false, "error",
// "stack"} with exit code 1.
"use strict";

function env(name, required = true) {
  const v = process.env[name];
  if (required && (v === undefined || v === "")) {
    throw new Error(`environment variable ${name} is required`);
  }
  return v ?? "";
}

// paymentRequiredOf reads x402's PaymentRequired from a tool result as the
// transport says a client should: structuredContent, else content[0].text.
function paymentRequiredOf(result) {
  const sc = result.structuredContent;
  if (sc && sc.x402Version !== undefined && Array.isArray(sc.accepts)) {
    return sc;
  }
  const text = result.content && result.content[0] && result.content[0].text;
  if (text) {
    try {
      const parsed = JSON.parse(text);
      if (parsed && parsed.x402Version !== undefined && Array.isArray(parsed.accepts)) {
        return parsed;
      }
    } catch {
      // Not JSON: no requirements.
    }
  }
  return null;
}

async function main() {
  const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
  const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
  const { x402Client } = require("@x402/core/client");
  const { toClientAvmSigner } = require("@x402/avm");
  const { ExactAvmScheme } = require("@x402/avm/exact/client");

  const url = env("MCP_URL");
  const runID = env("RUN_ID");
  const signer = toClientAvmSigner(env("AVM_PRIVATE_KEY"));
  const payments = new x402Client();
  payments.register("algorand:*", new ExactAvmScheme(signer, { algodUrl: env("ALGOD_URL"), algodToken: env("ALGOD_TOKEN", false) }));

  const client = new Client({ name: "lualambda-interop", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  const opts = { timeout: 60000 };
  const out = { ok: true, payer: signer.address };

  out.tools = (await client.listTools()).tools;
  out.profiles = await client.callTool({ name: "list_profiles", arguments: {} }, undefined, opts);

  const args = { code: 'print("npm run") return {sum = ... + 1}', args: [41], id: runID };
  out.unpaid = await client.callTool({ name: "run_lua", arguments: args }, undefined, opts);
  const required = paymentRequiredOf(out.unpaid);
  if (!out.unpaid.isError || !required) {
    throw new Error("the unpaid call did not return payment requirements: " + JSON.stringify(out.unpaid));
  }
  out.payment = await payments.createPaymentPayload(required);
  out.paid = await client.callTool({ name: "run_lua", arguments: args, _meta: { "x402/payment": out.payment } }, undefined, opts);
  out.replay = await client.callTool(
    { name: "run_lua", arguments: { code: "return 1", id: runID + "-replay" }, _meta: { "x402/payment": out.payment } },
    undefined,
    opts,
  );
  await client.close();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stdout.write(
    JSON.stringify({ ok: false, error: String(err && err.message ? err.message : err), stack: err && err.stack }) + "\n",
  );
  process.exitCode = 1;
});

// Starts a stdio MCP server with the npm @modelcontextprotocol/sdk client
// (StdioClientTransport), lists its tools, makes the tool calls it is given
// one after the other, and prints what happened as one JSON line on stdout.
// Run by interop/mcp_proxy_test.go against `lualambda mcp`.
//
// Environment:
//   MCP_COMMAND  the server's executable
//   MCP_ARGS     a JSON array of its arguments
//   MCP_CALLS    a JSON array of {"name", "arguments"} to call in order
//   The server gets this script's whole environment (the wallet variables).
//
// Output: {"ok": true, "tools": [...], "results": [...], "stderr"} where each
// result is the CallToolResult as the client returned it, or {"callError"}
// when the call threw; or {"ok": false, "error", "stack", "stderr"} with
// exit code 1. "stderr" is what the server wrote on its standard error.
"use strict";

const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");

function env(name) {
  const v = process.env[name];
  if (v === undefined || v === "") {
    throw new Error(`environment variable ${name} is required`);
  }
  return v;
}

async function main(out) {
  const transport = new StdioClientTransport({
    command: env("MCP_COMMAND"),
    args: JSON.parse(env("MCP_ARGS")),
    env: { ...process.env },
    stderr: "pipe",
  });
  transport.stderr.on("data", (chunk) => {
    out.stderr += chunk.toString();
  });
  const client = new Client({ name: "interop-mcp-stdio", version: "1.0.0" });
  await client.connect(transport);
  try {
    const { tools } = await client.listTools();
    out.tools = tools;
    out.results = [];
    for (const call of JSON.parse(env("MCP_CALLS"))) {
      try {
        out.results.push(await client.callTool({ name: call.name, arguments: call.arguments ?? {} }));
      } catch (err) {
        out.results.push({ callError: String(err && err.message ? err.message : err) });
      }
    }
  } finally {
    await client.close();
  }
}

const out = { ok: false, stderr: "" };
main(out).then(
  () => {
    out.ok = true;
    process.stdout.write(JSON.stringify(out) + "\n");
  },
  (err) => {
    out.error = String(err && err.message ? err.message : err);
    out.stack = err && err.stack ? String(err.stack) : "";
    process.stdout.write(JSON.stringify(out) + "\n");
    process.exitCode = 1;
  },
);

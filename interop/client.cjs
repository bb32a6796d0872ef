// Pays one x402-protected URL with a published npm x402 client stack and
// prints what happened as one JSON line on stdout. Run by the Go tests of
// this directory.
//
// Environment:
//   X402_URL         the protected URL (GET)
//   X402_STACK       upstream       @x402/core + @x402/fetch + @x402/avm (v2)
//                    goplausible    @x402-avm/core + @x402-avm/avm + @x402/fetch@2.11.0 (v2)
//                    goplausible-v1 the same stack on its v1 path: the 402's
//                                   PAYMENT-REQUIRED header is hidden from the
//                                   library, so it must read the v1 JSON body
//                                   and answer with X-PAYMENT
//   AVM_PRIVATE_KEY  base64 of the payer's 64-byte ed25519 secret key
//   ALGOD_URL        algod the scheme asks for suggested params
//   ALGOD_TOKEN      its X-Algo-API-Token (may be empty)
//
// Output: {"ok": true, "status", "body", "paymentHeader", "paymentResponse",
// "xPaymentResponse", "settle", "requests"} or {"ok": false, "error", "stack"}
// with exit code 1. "requests" lists, for every HTTP request the library
// made, the x402 header it sent, so the caller can tell v1 from v2.
"use strict";

function env(name, required = true) {
  const v = process.env[name];
  if (required && (v === undefined || v === "")) {
    throw new Error(`environment variable ${name} is required`);
  }
  return v ?? "";
}

// recordingFetch wraps the global fetch: it notes which payment header each
// request carried and, when hideV2 is set, removes PAYMENT-REQUIRED from 402
// answers so the library under test takes its v1 path.
function recordingFetch(requests, hideV2) {
  return async (input, init) => {
    const req = new Request(input, init);
    requests.push({
      method: req.method,
      url: req.url,
      paymentSignature: req.headers.has("PAYMENT-SIGNATURE"),
      xPayment: req.headers.has("X-PAYMENT"),
    });
    const resp = await fetch(req);
    if (!hideV2 || resp.status !== 402) {
      return resp;
    }
    const headers = new Headers(resp.headers);
    headers.delete("PAYMENT-REQUIRED");
    return new Response(await resp.arrayBuffer(), {
      status: resp.status,
      statusText: resp.statusText,
      headers,
    });
  };
}

function upstreamFetch(base, key, algod) {
  const { x402Client } = require("@x402/core/client");
  const { wrapFetchWithPayment } = require("@x402/fetch");
  const { toClientAvmSigner } = require("@x402/avm");
  const { ExactAvmScheme } = require("@x402/avm/exact/client");
  const signer = toClientAvmSigner(key);
  const client = new x402Client();
  client.register("algorand:*", new ExactAvmScheme(signer, algod));
  return { fetch: wrapFetchWithPayment(base, client), address: signer.address };
}

function goplausibleFetch(base, key, algod) {
  const { x402Client } = require("@x402-avm/core/client");
  const { registerExactAvmScheme } = require("@x402-avm/avm/exact/client");
  const { toClientAvmSigner } = require("@x402-avm/avm");
  // @x402-avm/fetch is not published; @x402/fetch 2.11.0 is the newest
  // upstream wrapper whose calls @x402-avm/core 2.6.1 implements.
  const { wrapFetchWithPayment } = require("x402-fetch-2-11");
  const signer = toClientAvmSigner(key);
  const client = new x402Client();
  registerExactAvmScheme(client, { signer, algodConfig: algod });
  return { fetch: wrapFetchWithPayment(base, client), address: signer.address };
}

function decodeHeader(value) {
  if (!value) {
    return null;
  }
  return JSON.parse(Buffer.from(value, "base64").toString("utf8"));
}

async function main() {
  const url = env("X402_URL");
  const stack = env("X402_STACK");
  const key = env("AVM_PRIVATE_KEY");
  const algod = { algodUrl: env("ALGOD_URL"), algodToken: env("ALGOD_TOKEN", false) };
  const requests = [];
  let made;
  switch (stack) {
    case "upstream":
      made = upstreamFetch(recordingFetch(requests, false), key, algod);
      break;
    case "goplausible":
      made = goplausibleFetch(recordingFetch(requests, false), key, algod);
      break;
    case "goplausible-v1":
      made = goplausibleFetch(recordingFetch(requests, true), key, algod);
      break;
    default:
      throw new Error(`unknown X402_STACK ${JSON.stringify(stack)}`);
  }
  const resp = await made.fetch(url, { method: "GET", signal: AbortSignal.timeout(60000) });
  const body = await resp.text();
  const paymentResponse = resp.headers.get("PAYMENT-RESPONSE");
  const xPaymentResponse = resp.headers.get("X-PAYMENT-RESPONSE");
  const out = {
    ok: true,
    payer: made.address,
    status: resp.status,
    body,
    paymentResponse,
    xPaymentResponse,
    settle: decodeHeader(paymentResponse || xPaymentResponse),
    requests,
  };
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stdout.write(
    JSON.stringify({ ok: false, error: String(err && err.message ? err.message : err), stack: err && err.stack }) + "\n",
  );
  process.exitCode = 1;
});

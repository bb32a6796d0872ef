// An x402-protected HTTP server built from the published npm x402 server
// stack, for our client to pay. Run by the Go tests of this directory.
//
// It serves GET /paid ("paid content from express", text/plain) behind the
// stack's Express paymentMiddleware and x402ResourceServer, and GET /health
// unpaid. It prints {"listening": PORT} on stdout once it accepts
// connections, then one JSON line per settlement ({"settled": ...}), and exits
// when its stdin closes or on SIGTERM/SIGINT.
//
// Environment:
//   PORT             port on 127.0.0.1 to listen on; 0 picks a free one
//   X402_SERVER_STACK  upstream     @x402/express + @x402/core + @x402/avm
//                      goplausible  @x402-avm/express + @x402-avm/core + @x402-avm/avm
//                      mixed        @x402/express 2.21.0 + @x402-avm/avm
//   PAY_TO           the receiver's Algorand address
//   NETWORK          the CAIP-2 network id to offer
//   PRICE            the price, e.g. "$0.001"
//   FACILITATOR_URL  an HTTP facilitator (/verify, /settle, /supported), or
//   FACILITATOR_KEY  base64 of a 64-byte key: run the stack's facilitator in
//                    process with that fee payer, talking to ALGOD_URL, and
//                    serve it under /facilitator
//   ALGOD_URL, ALGOD_TOKEN  algod for the in-process facilitator
"use strict";

const http = require("node:http");

function env(name, required = true) {
  const v = process.env[name];
  if (required && (v === undefined || v === "")) {
    throw new Error(`environment variable ${name} is required`);
  }
  return v ?? "";
}

// stacks are the npm server stacks this script can run. Each names its
// packages: the Express middleware (which also exports x402ResourceServer),
// the core (HTTP facilitator client, in-process facilitator), and the AVM
// exact scheme for the server and the facilitator.
const stacks = {
  // Upstream: x402-foundation's packages, Algorand support merged in.
  upstream: {
    express: "@x402/express",
    coreServer: "@x402/core/server",
    coreFacilitator: "@x402/core/facilitator",
    avm: "@x402/avm",
    avmServer: "@x402/avm/exact/server",
    avmFacilitator: "@x402/avm/exact/facilitator",
  },
  // Upstream's Express middleware and core at 2.21.0, the last before
  // @x402/core 2.22.0 began to require paymentFlows and
  // defaultAssetTransferMethod of every scheme, with GoPlausible's AVM
  // scheme, which has neither.
  mixed: {
    express: "x402-express-2-21",
    coreServer: "@x402/core/server",
    coreFacilitator: "@x402-avm/core/facilitator",
    avm: "@x402-avm/avm",
    avmServer: "@x402-avm/avm/exact/server",
    avmFacilitator: "@x402-avm/avm/exact/facilitator",
  },
  // GoPlausible's fork of the same packages.
  goplausible: {
    express: "@x402-avm/express",
    coreServer: "@x402-avm/core/server",
    coreFacilitator: "@x402-avm/core/facilitator",
    avm: "@x402-avm/avm",
    avmServer: "@x402-avm/avm/exact/server",
    avmFacilitator: "@x402-avm/avm/exact/facilitator",
  },
};

// localFacilitator returns the stack's facilitator with its AVM exact scheme
// for network, running here with the fee payer FACILITATOR_KEY and algod
// ALGOD_URL (as testnet's and mainnet's algod: the only networks the npm
// AVM packages know).
function localFacilitator(stack, network) {
  const { x402Facilitator } = require(stack.coreFacilitator);
  const { toFacilitatorAvmSigner } = require(stack.avm);
  const { ExactAvmScheme } = require(stack.avmFacilitator);
  const algodUrl = env("ALGOD_URL");
  const signer = toFacilitatorAvmSigner(env("FACILITATOR_KEY"), {
    testnetUrl: algodUrl,
    mainnetUrl: algodUrl,
    algodToken: env("ALGOD_TOKEN", false),
  });
  const facilitator = new x402Facilitator();
  facilitator.register(network, new ExactAvmScheme(signer));
  return {
    verify: (payload, requirements) => facilitator.verify(payload, requirements),
    settle: (payload, requirements) => facilitator.settle(payload, requirements),
    getSupported: async () => facilitator.getSupported(),
  };
}

// serveFacilitator exposes a facilitator in the standard HTTP API
// (POST verify and settle with {x402Version, paymentPayload,
// paymentRequirements}, GET supported) under /facilitator, so that other
// servers can use the npm facilitator.
function serveFacilitator(app, express, facilitator) {
  const json = express.json({ limit: "1mb" });
  const call = (fn) => async (req, res) => {
    try {
      const { paymentPayload, paymentRequirements } = req.body ?? {};
      if (!paymentPayload || !paymentRequirements) {
        res.status(400).json({ error: "paymentPayload and paymentRequirements are required" });
        return;
      }
      const result = await fn(paymentPayload, paymentRequirements);
      process.stdout.write(JSON.stringify({ facilitator: req.path, result }) + "\n");
      res.json(result);
    } catch (err) {
      process.stderr.write(`facilitator ${req.path}: ${err && err.stack ? err.stack : err}\n`);
      res.status(500).json({ error: String(err && err.message ? err.message : err) });
    }
  };
  app.post("/facilitator/verify", json, call((p, r) => facilitator.verify(p, r)));
  app.post("/facilitator/settle", json, call((p, r) => facilitator.settle(p, r)));
  app.get("/facilitator/supported", async (_req, res) => res.json(await facilitator.getSupported()));
}

async function main() {
  const name = env("X402_SERVER_STACK");
  const stack = stacks[name];
  if (!stack) {
    throw new Error(`unknown X402_SERVER_STACK ${JSON.stringify(name)}`);
  }
  const express = require("express");
  const { paymentMiddleware, x402ResourceServer } = require(stack.express);
  const { ExactAvmScheme } = require(stack.avmServer);

  const network = env("NETWORK");
  const app = express();
  let facilitator;
  const url = env("FACILITATOR_URL", false);
  if (url) {
    const { HTTPFacilitatorClient } = require(stack.coreServer);
    // Our x402facilitator takes a bearer token: its fee payer pays for
    // what it settles.
    const token = env("FACILITATOR_TOKEN", false);
    const auth = token ? { Authorization: `Bearer ${token}` } : {};
    facilitator = new HTTPFacilitatorClient({
      url,
      timeoutMs: 30000,
      createAuthHeaders: async () => ({ verify: auth, settle: auth, supported: auth }),
    });
  } else {
    facilitator = localFacilitator(stack, network);
    serveFacilitator(app, express, facilitator);
  }
  const resourceServer = new x402ResourceServer(facilitator);
  resourceServer.register(network, new ExactAvmScheme());
  resourceServer.onAfterSettle(async (ctx) => {
    process.stdout.write(JSON.stringify({ settled: ctx.result }) + "\n");
  });

  app.get("/health", (_req, res) => res.type("text/plain").send("ok"));
  app.use(
    paymentMiddleware(
      {
        "GET /paid": {
          accepts: { scheme: "exact", price: env("PRICE"), network, payTo: env("PAY_TO") },
          description: "interop test content",
          mimeType: "text/plain",
        },
      },
      resourceServer,
    ),
  );
  app.get("/paid", (_req, res) => res.type("text/plain").send("paid content from express"));
  app.use((err, _req, res, _next) => {
    process.stderr.write(`server error: ${err && err.stack ? err.stack : err}\n`);
    res.status(500).json({ error: String(err && err.message ? err.message : err) });
  });

  const server = http.createServer(app);
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(env("PORT", false) || 0), "127.0.0.1", resolve);
  });
  process.stdout.write(JSON.stringify({ listening: server.address().port }) + "\n");

  const stop = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // The test holds our stdin open: when it goes away, so do we.
  process.stdin.on("end", stop);
  process.stdin.on("error", stop);
  process.stdin.resume();
}

main().catch((err) => {
  process.stderr.write(`server failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});

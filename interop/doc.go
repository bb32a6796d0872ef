// Package interop holds the interoperability tests of caddy-lualambda with x402
// software no one here wrote: the published npm client stacks (upstream
// @x402/core + @x402/fetch + @x402/avm, and GoPlausible's @x402-avm/core +
// @x402-avm/avm with @x402/fetch 2.11.0) paying an x402pay route served by the
// real caddy binary (with our built-in facilitator, and with the npm
// facilitators over HTTP), and the npm server stacks (@x402/express with
// @x402/avm, @x402-avm/express with @x402-avm/avm, and @x402/express 2.21.0
// with @x402-avm/avm) paid by `lualambda pay`, with their own facilitators
// and with ours served by Caddy's x402facilitator. The npm MCP client
// (@modelcontextprotocol/sdk) calls the lualambda_mcp endpoint, paying with
// @x402/core + @x402/avm through x402's MCP transport, both directly over
// Streamable HTTP and through `lualambda mcp` over stdio.
// Everything settles on the in-process devnet, which impersonates Algorand
// testnet because the npm AVM packages accept only testnet and mainnet.
//
// The npm packages are pinned in package.json and package-lock.json and
// installed with `npm ci` into the lualambda cache directory
// ($LUALAMBDA_CACHE, else ~/.cache/lualambda) under npm/<hash of the lock>,
// so later runs reuse them. The tests need node (20 or later) and npm, and
// the npm registry the first time:
//
//	go test -p 1 -count=1 ./interop/
//
// The package has no non-test code; this file only documents it.
package interop

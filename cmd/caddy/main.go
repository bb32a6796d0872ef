// Command caddy is Caddy with this project's plugins built in: lualambda
// (the invocation API and its VM pools), lualambda_mcp (the same runs as
// MCP tools for AI agents) and x402pay (x402 payments for any route, and
// the x402facilitator handler).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// This project's plugins.
	_ "github.com/lualambda/caddy-lualambda"
	_ "github.com/lualambda/caddy-lualambda/mcpserver"
	_ "github.com/lualambda/caddy-lualambda/storage/redis"
	_ "github.com/lualambda/caddy-lualambda/x402pay"
)

func main() {
	caddycmd.Main()
}

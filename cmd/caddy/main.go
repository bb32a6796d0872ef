// Command caddy is Caddy with the caddy-lualambda plugin built in.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// This plugin.
	_ "github.com/lualambda/caddy-lualambda"
)

func main() {
	caddycmd.Main()
}

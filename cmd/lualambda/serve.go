package main

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"

	// Caddy's standard modules, which the quick server's config uses.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	caddylualambda "github.com/lualambda/caddy-lualambda"
	// The MCP endpoint the quick server also serves at /mcp.
	_ "github.com/lualambda/caddy-lualambda/mcpserver"
)

// newServeCommand is `lualambda serve`: `caddy lualambda-server` run in
// this process, with the same flags and the same config.
func newServeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the invocation API with no Caddyfile, free or paid with x402",
		Long: caddylualambda.ServeLong + `

This is "caddy lualambda-server" run in this process: the same flags, the
same config. Ctrl-C stops it and its VMs.`,
		Example: `  lualambda serve
  lualambda serve --pay-to ADDRESS            # paid on the devnet of "lualambda devnet"
  lualambda serve --pay-to ADDRESS --network testnet --fee-payer '{env.FEE_PAYER_MNEMONIC}'
  lualambda serve --domain lua.example.com --pay-to ADDRESS --network mainnet`,
		Args: noArgs,
	}
	opts := caddylualambda.ServeFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		plan, err := caddylualambda.PlanServe(opts())
		if err != nil {
			return usageErrorf("%v", err)
		}
		cfg, err := plan.Config()
		if err != nil {
			return err
		}
		if err := plan.Preflight(cmd.Context()); err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "lualambda serve: warning:", err)
		}
		if err := caddy.Load(cfg, true); err != nil {
			return fmt.Errorf("start the server: %w", err)
		}
		plan.Describe(cmd.OutOrStdout())
		<-cmd.Context().Done()
		fmt.Fprintln(cmd.ErrOrStderr(), "lualambda serve: stopping")
		if err := caddy.Stop(); err != nil {
			return fmt.Errorf("stop the server: %w", err)
		}
		return nil
	}
	return cmd
}

package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/wallet"
	"github.com/lualambda/caddy-lualambda/x402"
)

func newDevnetCommand() *cobra.Command {
	var (
		listen        string
		token         string
		asTestnet     bool
		blockInterval time.Duration
		verbose       bool
	)
	cmd := &cobra.Command{
		Use:   "devnet",
		Short: "Run a local algod-compatible Algorand devnet with a faucet and USDC",
		Long: `Run an in-memory Algorand network that answers the algod v2 REST API
(go-algorand-sdk, algosdk and the x402 clients work against it) with a real
ledger: ed25519 signatures, atomic groups, pooled fees, minimum balances, ASA
opt-ins, close-to and rekeying, validity windows and duplicate detection.

At start it creates a faucet holding the ALGO supply and a USDC asset (6
decimals). Fund an account from another process with
  POST /devnet/fund {"address": "...", "microalgos": N, "usdc": N}
and read the network's ids with GET /devnet/info (both need the token).
Each accepted group is committed at once in its own round; --block-interval
also makes empty rounds on a timer. --as-testnet reports testnet's genesis
hash and ID and puts USDC at testnet's asset id, for clients that accept only
testnet and mainnet. The state is lost when it stops.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkLoopback(listen); err != nil {
				return err
			}
			if token == "" || strings.ContainsAny(token, " \t\r\n") {
				return usageErrorf("--token must be non-empty and contain no white space")
			}
			if blockInterval < 0 {
				return usageErrorf("--block-interval must not be negative")
			}
			cfg := devnet.Config{Addr: listen, Token: token, BlockInterval: blockInterval}
			if asTestnet {
				cfg.Impersonate = x402.AlgorandTestnet
			}
			if verbose {
				cfg.Log = cmd.ErrOrStderr()
			}
			dev, err := devnet.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer dev.Close()
			printDevnet(cmd, dev)
			<-cmd.Context().Done()
			fmt.Fprintln(cmd.ErrOrStderr(), "lualambda devnet: stopping")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", strings.TrimPrefix(wallet.DevnetAlgod, "http://"), "loopback address to serve the algod API on")
	f.StringVar(&token, "token", wallet.DevnetToken, "API token clients send in X-Algo-API-Token")
	f.BoolVar(&asTestnet, "as-testnet", false, "impersonate Algorand testnet (genesis hash and ID, USDC asset 10458941)")
	f.DurationVar(&blockInterval, "block-interval", 0, "also make an empty round at this interval (0: rounds only advance with transactions)")
	f.BoolVarP(&verbose, "verbose", "v", false, "log every submitted group to standard error")
	return cmd
}

// checkLoopback refuses listen addresses that are not on the loopback
// interface: the devnet's faucet is open to anyone holding the token.
func checkLoopback(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return usageErrorf("--listen %q: %v", listen, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return usageErrorf("--listen %q: the devnet serves loopback addresses only (e.g. 127.0.0.1:4001)", listen)
	}
	return nil
}

func printDevnet(cmd *cobra.Command, dev *devnet.Devnet) {
	n := dev.NetworkInfo()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "lualambda devnet: algod API on %s\n", dev.URL())
	fmt.Fprintf(out, "  token          %s\n", dev.Token())
	fmt.Fprintf(out, "  genesis id     %s\n", n.GenesisID)
	fmt.Fprintf(out, "  network        %s\n", n.CAIP2())
	fmt.Fprintf(out, "  network short  %s\n", n.CAIP2Short())
	fmt.Fprintf(out, "  USDC asset     %d\n", dev.USDC())
	fmt.Fprintf(out, "  faucet         %s\n", dev.Faucet().Address)
	fmt.Fprintf(out, "fund an account: curl -H 'X-Algo-API-Token: %s' -d '{\"address\":\"ADDR\",\"microalgos\":10000000,\"usdc\":0}' %s/devnet/fund\n",
		dev.Token(), dev.URL())
	fmt.Fprintln(out, "press Ctrl-C to stop")
}

package wallet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
)

// startDevnet runs an in-process devnet for the test.
func startDevnet(t *testing.T) *devnet.Devnet {
	t.Helper()
	return devnettest.Start(t, devnet.Config{}).Dev
}

func TestDevnetFundOptInBalances(t *testing.T) {
	d := startDevnet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Connect(ctx, Settings{Network: Devnet, Algod: d.URL(), AlgodToken: d.Token()})
	if err != nil {
		t.Fatal(err)
	}
	if c.Chain.USDC != d.USDC() || c.Chain.GenesisHash != d.GenesisHash() || !c.Chain.Matches(d.Network()) || c.Chain.Name != devnet.NetworkName {
		t.Fatalf("connected chain %+v; devnet %s USDC %d", c.Chain, d.Network(), d.USDC())
	}
	w := Generate(Devnet)
	b, err := c.Balances(ctx, w.Address())
	if err != nil {
		t.Fatal(err)
	}
	if b.MicroAlgos != 0 || b.OptedIn || !strings.Contains(strings.Join(b.Hints(Devnet), "\n"), "lualambda wallet fund") {
		t.Fatalf("a new account: %+v, hints %q", b, b.Hints(Devnet))
	}
	// Opting in without ALGO fails with the amount it needs.
	if _, _, err := c.OptIn(ctx, w); err == nil || !strings.Contains(err.Error(), "needs 0.201 ALGO") {
		t.Fatalf("opt-in of an empty account: %v", err)
	}
	if _, err := c.Fund(ctx, w.Address(), 1_000_000, 0); err != nil {
		t.Fatal(err)
	}
	round := d.Round()
	txid, already, err := c.OptIn(ctx, w)
	if err != nil || already || txid == "" {
		t.Fatalf("opt-in: %q %v %v", txid, already, err)
	}
	if d.Round() != round+1 {
		t.Fatalf("opt-in committed no round: %d -> %d", round, d.Round())
	}
	// Idempotent: no second transaction.
	if txid2, already, err := c.OptIn(ctx, w); err != nil || !already || txid2 != "" || d.Round() != round+1 {
		t.Fatalf("second opt-in: %q %v %v, round %d", txid2, already, err, d.Round())
	}
	if _, err := c.Fund(ctx, w.Address(), 0, 2_500_000); err != nil {
		t.Fatal(err)
	}
	b, err = c.Balances(ctx, w.Address())
	if err != nil {
		t.Fatal(err)
	}
	// 1 ALGO minus the opt-in's fee; min balance covers the account and
	// one asset.
	if b.MicroAlgos != 1_000_000-1000 || b.MinBalance != 200_000 || !b.OptedIn || b.USDC != 2_500_000 || len(b.Hints(Devnet)) != 0 {
		t.Fatalf("funded account: %+v hints %q", b, b.Hints(Devnet))
	}
	if got := USDC(b.USDC); got != "2.5 USDC" {
		t.Fatalf("USDC(%d) = %q", b.USDC, got)
	}
}

func TestConnectChecksTheNetwork(t *testing.T) {
	d := startDevnet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A devnet is not testnet: the genesis hash tells.
	if _, err := Connect(ctx, Settings{Network: Testnet, Algod: d.URL(), AlgodToken: d.Token()}); err == nil || !strings.Contains(err.Error(), "not testnet") {
		t.Fatalf("testnet settings against a devnet: %v", err)
	}
	if _, err := Connect(ctx, Settings{Network: Devnet, Algod: d.URL(), AlgodToken: "wrong"}); err == nil {
		t.Fatal("a wrong token connected")
	}
	if _, err := Connect(ctx, Settings{Network: "sepolia"}); err == nil || !strings.Contains(err.Error(), "unknown network") {
		t.Fatalf("unknown network: %v", err)
	}
	// The devnet by its CAIP-2 id is a custom network: it needs --usdc.
	if _, err := Connect(ctx, Settings{Network: d.Network(), Algod: d.URL(), AlgodToken: d.Token()}); err == nil || !strings.Contains(err.Error(), "--usdc") {
		t.Fatalf("custom network without a USDC id: %v", err)
	}
	c, err := Connect(ctx, Settings{Network: d.Network(), Algod: d.URL(), AlgodToken: d.Token(), USDC: d.USDC()})
	if err != nil || c.Chain.GenesisHash != d.GenesisHash() {
		t.Fatalf("custom network: %v", err)
	}
	if _, err := c.Fund(ctx, Generate("").Address(), 1, 0); !errors.Is(err, errNotDevnet) {
		t.Fatalf("fund on a network not named devnet: %v", err)
	}
	// Impersonating testnet, the devnet passes as testnet (genesis and USDC id).
	tn := devnettest.Start(t, devnet.Config{Impersonate: x402.AlgorandTestnet}).Dev
	c, err = Connect(ctx, Settings{Network: Testnet, Algod: tn.URL(), AlgodToken: tn.Token()})
	if err != nil || c.Chain.USDC != 10458941 || c.Chain.ExplorerTxURL == "" {
		t.Fatalf("testnet look-alike: %+v %v", c, err)
	}
}

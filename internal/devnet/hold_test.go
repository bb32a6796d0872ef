package devnet_test

import (
	"sync/atomic"
	"testing"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
)

// TestHoldGroups: a held group is accepted but unconfirmed until released;
// a dropped one never commits; lookups are reported.
func TestHoldGroups(t *testing.T) {
	var lookups atomic.Int64
	n := start(t, devnet.Config{OnPendingLookup: func(string) { lookups.Add(1) }})
	a := n.NewAccount(1_000_000, false, 0)
	pending := func(txid string) uint64 {
		t.Helper()
		info, _, err := n.c.PendingTransactionInformation(txid).Do(n.ctx)
		if err != nil {
			t.Fatalf("pending %s: %v", txid, err)
		}
		if info.PoolError != "" {
			t.Fatalf("pool error %q", info.PoolError)
		}
		return info.ConfirmedRound
	}

	n.dev.HoldGroups(true)
	round := n.dev.Round()
	txid, err := n.send(sign(t, a.PrivateKey, n.pay(a.Address, a.Address, 0, "")))
	if err != nil {
		t.Fatal(err)
	}
	if r := pending(txid); r != 0 || n.dev.Held() != 1 || n.dev.Round() != round {
		t.Fatalf("held group: confirmed round %d, %d held, round %d -> %d", r, n.dev.Held(), round, n.dev.Round())
	}
	if lookups.Load() == 0 {
		t.Fatal("the lookup was not reported")
	}
	if err := n.dev.ReleaseHeld(); err != nil {
		t.Fatal(err)
	}
	if r := pending(txid); r != round+1 || n.dev.Held() != 0 {
		t.Fatalf("released group: confirmed round %d, want %d; %d held", r, round+1, n.dev.Held())
	}

	// A dropped group is forgotten and never commits.
	txid, err = n.send(sign(t, a.PrivateKey, n.pay(a.Address, a.Address, 1, "")))
	if err != nil {
		t.Fatal(err)
	}
	n.dev.DropHeld()
	if _, _, err := n.c.PendingTransactionInformation(txid).Do(n.ctx); err == nil {
		t.Fatal("a dropped transaction is still known")
	}
	// An invalid group is refused while holding, as without.
	n.reject("overspend", sign(t, a.PrivateKey, n.pay(a.Address, a.Address, 1<<40, "")))
	n.dev.HoldGroups(false)
}

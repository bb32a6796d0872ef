package devnettest

import (
	"os"
	"strings"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
	"github.com/algorand/go-algorand-sdk/v2/transaction"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

func TestNewPreparesTheParties(t *testing.T) {
	p := New(t, Options{PayerUSDC: 5000, FeePayerMicroAlgos: 3_000_000})
	// An opt-in costs its sender the minimum fee.
	want := map[string]Balance{
		"payer":     {MicroAlgos: 1_000_000 - devnet.MinTxnFee, USDC: 5000},
		"receiver":  {MicroAlgos: 1_000_000 - devnet.MinTxnFee},
		"fee payer": {MicroAlgos: 3_000_000},
	}
	got := map[string]Balance{
		"payer":     p.Balance(p.Payer.Address),
		"receiver":  p.Balance(p.PayTo.Address),
		"fee payer": p.Balance(p.FeePayer.Address),
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %+v, want %+v", name, got[name], w)
		}
	}
	if u := p.USDC(p.Payer.Address); u != 5000 {
		t.Errorf("payer USDC %d, want 5000", u)
	}
	ledger := avm.Ledger(p.Algod)
	if h, err := ledger.AssetHolding(t.Context(), p.FeePayer.Address, p.Dev.USDC()); err != nil || h.OptedIn {
		t.Errorf("fee payer holding %+v, %v: want not opted in", h, err)
	}
}

func TestSubmitCommits(t *testing.T) {
	c := Start(t, devnet.Config{})
	from := c.NewAccount(2_000_000, false, 0)
	to := c.NewAccount(500_000, true, 0)
	round := c.Dev.Round()
	txn, err := transaction.MakePaymentTxn(from.Address.String(), to.Address.String(), 300_000, nil, "", c.Params())
	if err != nil {
		t.Fatal(err)
	}
	txid := c.Submit(avm.AccountSigner(from), txn)
	if len(txid) != 52 || c.Dev.Round() != round+1 {
		t.Fatalf("txid %q, round %d -> %d", txid, round, c.Dev.Round())
	}
	if b := c.Balance(from.Address); b.MicroAlgos != 2_000_000-300_000-devnet.MinTxnFee {
		t.Errorf("sender %+v", b)
	}
	if b := c.Balance(to.Address); b.MicroAlgos != 500_000-devnet.MinTxnFee+300_000 || b.USDC != 0 {
		t.Errorf("receiver %+v", b)
	}
}

func TestMnemonicFile(t *testing.T) {
	c := Start(t, devnet.Config{})
	a := c.NewAccount(1_000_000, false, 0)
	path := MnemonicFile(t, a)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode of %s: %v %v", path, fi.Mode(), err)
	}
	key, err := mnemonic.ToPrivateKey(strings.TrimSpace(string(b)))
	if err != nil || string(key) != string(a.PrivateKey) {
		t.Fatalf("the file holds another key: %v", err)
	}
}

func TestForBindsASubtest(t *testing.T) {
	c := Start(t, devnet.Config{})
	t.Run("sub", func(t *testing.T) {
		sub := c.For(t)
		if sub.Dev != c.Dev || sub.Algod != c.Algod || sub.t != t {
			t.Fatalf("For(t) = %+v", sub)
		}
		a := sub.NewAccount(1_000_000, true, 7)
		if b := c.Balance(a.Address); b.USDC != 7 {
			t.Fatalf("account made in the subtest: %+v", b)
		}
	})
}

package interop

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/client/v2/common/models"
	"github.com/algorand/go-algorand-sdk/v2/crypto"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
)

// chain is a devnet that impersonates Algorand testnet (genesis hash and ID,
// USDC at ASA 10458941), with an algod client of it. The npm AVM packages
// refuse every network but testnet and mainnet, so this is the only way they
// can be pointed at a local ledger.
type chain struct {
	*devnettest.Chain
}

func startChain(t testing.TB) *chain {
	t.Helper()
	c := devnettest.Start(t, devnet.Config{Impersonate: x402.AlgorandTestnet})
	if d := c.Dev; d.USDC() != x402.AlgorandTestnet.USDC || d.GenesisHash() != x402.AlgorandTestnet.GenesisHash {
		t.Fatalf("devnet does not impersonate testnet: USDC %d, genesis %x", d.USDC(), d.GenesisHash())
	}
	return &chain{Chain: c}
}

// account is a devnet account and its key in the forms the tools take.
type account struct {
	crypto.Account
	Addr string
}

// KeyBase64 is the form the npm signers take: base64 of the 64-byte key.
func (a account) KeyBase64() string { return base64.StdEncoding.EncodeToString(a.PrivateKey) }

// newAccount creates an account with microAlgos from the faucet, opted in to
// USDC when optIn is set, then given usdc base units.
func (c *chain) newAccount(t testing.TB, microAlgos uint64, optIn bool, usdc uint64) account {
	t.Helper()
	a := c.For(t).NewAccount(microAlgos, optIn, usdc)
	return account{Account: a, Addr: a.Address.String()}
}

// newReceiver makes an account that can receive USDC.
func (c *chain) newReceiver(t testing.TB) account { return c.newAccount(t, 1_000_000, true, 0) }

// newFeePayer makes an account with ALGO only, to pay a facilitator's fees.
func (c *chain) newFeePayer(t testing.TB) account { return c.newAccount(t, 10_000_000, false, 0) }

// newPayer makes an account that holds enough USDC for five payments.
func (c *chain) newPayer(t testing.TB) account { return c.newAccount(t, 1_000_000, true, 5*priceUnits) }

// balance is an account's ALGO and USDC, read through algod's REST API.
func (c *chain) balance(t testing.TB, a account) devnettest.Balance {
	t.Helper()
	return c.For(t).Balance(a.Address)
}

// confirmed returns a committed transaction as algod reports it, failing the
// test when it is unknown or not committed.
func (c *chain) confirmed(t testing.TB, txid string) models.PendingTransactionInfoResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, _, err := c.Algod.Client.PendingTransactionInformation(txid).Do(ctx)
	if err != nil {
		t.Fatalf("transaction %s: %v", txid, err)
	}
	if info.ConfirmedRound == 0 {
		t.Fatalf("transaction %s is not committed: %+v", txid, info)
	}
	return info
}

// payment watches the accounts of one payment: the payer, the receiver and
// the fee payer that co-signs the group.
type payment struct {
	payer, receiver, feePayer account
	before                    [3]devnettest.Balance
}

// watch records the accounts' balances before a payment.
func (c *chain) watch(t testing.TB, payer, receiver, feePayer account) *payment {
	t.Helper()
	p := &payment{payer: payer, receiver: receiver, feePayer: feePayer}
	p.before = c.balances(t, p)
	return p
}

func (c *chain) balances(t testing.TB, p *payment) [3]devnettest.Balance {
	t.Helper()
	return [3]devnettest.Balance{c.balance(t, p.payer), c.balance(t, p.receiver), c.balance(t, p.feePayer)}
}

// checkPaid checks that exactly one payment of the price went from the payer
// to the receiver, in the committed transaction txid, and that the fee payer,
// not the payer, paid the group's fees.
func (c *chain) checkPaid(t testing.TB, p *payment, txid string) {
	t.Helper()
	info := c.confirmed(t, txid)
	tx := info.Transaction.Txn
	if tx.Type != "axfer" || tx.Sender.String() != p.payer.Addr || tx.AssetReceiver.String() != p.receiver.Addr ||
		uint64(tx.XferAsset) != c.Dev.USDC() || tx.AssetAmount != priceUnits {
		t.Errorf("transaction %s is not a %d-unit USDC transfer %s -> %s: %+v", txid, priceUnits, p.payer.Addr, p.receiver.Addr, tx)
	}
	b := p.before
	want := [3]devnettest.Balance{
		{MicroAlgos: b[0].MicroAlgos, USDC: b[0].USDC - priceUnits},
		{MicroAlgos: b[1].MicroAlgos, USDC: b[1].USDC + priceUnits},
		{MicroAlgos: b[2].MicroAlgos - feePayerFee, USDC: b[2].USDC},
	}
	if got := c.balances(t, p); got != want {
		t.Errorf("balances [payer receiver feePayer] %+v -> %+v, want %+v", b, got, want)
	}
}

// checkUnchanged checks that no balance moved.
func (c *chain) checkUnchanged(t testing.TB, p *payment) {
	t.Helper()
	if got := c.balances(t, p); got != p.before {
		t.Errorf("balances [payer receiver feePayer] moved: %+v -> %+v", p.before, got)
	}
}

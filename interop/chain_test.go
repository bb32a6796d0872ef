package interop

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/client/v2/algod"
	"github.com/algorand/go-algorand-sdk/v2/client/v2/common/models"
	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/devnet"
	"github.com/lualambda/caddy-lualambda/x402"
)

// chain is a devnet that impersonates Algorand testnet (genesis hash and ID,
// USDC at ASA 10458941), plus an algod client of it. The npm AVM packages
// refuse every network but testnet and mainnet, so this is the only way they
// can be pointed at a local ledger.
type chain struct {
	*devnet.Devnet
	algod *algod.Client
}

func startChain(t testing.TB) *chain {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	d, err := devnet.Start(ctx, devnet.Config{Impersonate: x402.AlgorandTestnet})
	if err != nil {
		t.Fatalf("start devnet: %v", err)
	}
	t.Cleanup(d.Close)
	if d.USDC() != x402.AlgorandTestnet.USDC || d.GenesisHash() != x402.AlgorandTestnet.GenesisHash {
		t.Fatalf("devnet does not impersonate testnet: USDC %d, genesis %x", d.USDC(), d.GenesisHash())
	}
	c, err := algod.MakeClient(d.URL(), d.Token())
	if err != nil {
		t.Fatal(err)
	}
	return &chain{Devnet: d, algod: c}
}

// account is a devnet account and its key in the forms the tools take.
type account struct {
	crypto.Account
	Addr string
}

// KeyBase64 is the form the npm signers take: base64 of the 64-byte key.
func (a account) KeyBase64() string { return base64.StdEncoding.EncodeToString(a.PrivateKey) }

// Mnemonic is the 25-word form.
func (a account) Mnemonic(t testing.TB) string {
	t.Helper()
	m, err := mnemonic.FromPrivateKey(a.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// mnemonicFile writes the account's mnemonic to a private file, the way a
// Caddyfile takes a secret ({file./path}), and returns its path.
func mnemonicFile(t testing.TB, a account) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fee-payer.mnemonic")
	if err := os.WriteFile(path, []byte(a.Mnemonic(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newAccount creates an account with microAlgos from the faucet, opted in to
// USDC when optIn is set, then given usdc base units.
func (c *chain) newAccount(t testing.TB, microAlgos uint64, optIn bool, usdc uint64) account {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := account{Account: crypto.GenerateAccount()}
	a.Addr = a.Address.String()
	if err := c.Fund(ctx, a.Address, microAlgos, 0); err != nil {
		t.Fatalf("fund %s: %v", a.Addr, err)
	}
	if !optIn {
		return a
	}
	sp, err := c.algod.SuggestedParams().Do(ctx)
	if err != nil {
		t.Fatalf("suggested params: %v", err)
	}
	txn, err := transaction.MakeAssetAcceptanceTxn(a.Addr, nil, sp, c.USDC())
	if err != nil {
		t.Fatal(err)
	}
	c.submit(ctx, t, a.PrivateKey, txn)
	if usdc > 0 {
		if err := c.Fund(ctx, a.Address, 0, usdc); err != nil {
			t.Fatalf("fund %s with USDC: %v", a.Addr, err)
		}
	}
	return a
}

// submit signs one transaction, sends it and waits for its confirmation.
func (c *chain) submit(ctx context.Context, t testing.TB, key []byte, txn types.Transaction) string {
	t.Helper()
	txid, stx, err := crypto.SignTransaction(key, txn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.algod.SendRawTransaction(stx).Do(ctx); err != nil {
		t.Fatalf("send %s: %v", txid, err)
	}
	if _, err := transaction.WaitForConfirmation(c.algod, txid, 5, ctx); err != nil {
		t.Fatalf("confirm %s: %v", txid, err)
	}
	return txid
}

// balance is an account's ALGO and USDC, read through algod's REST API.
type balance struct {
	MicroAlgos uint64
	USDC       uint64
}

func (c *chain) balance(t testing.TB, addr string) balance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.algod.AccountInformation(addr).Do(ctx)
	if err != nil {
		t.Fatalf("account %s: %v", addr, err)
	}
	b := balance{MicroAlgos: info.Amount}
	for _, h := range info.Assets {
		if h.AssetId == c.USDC() {
			b.USDC = h.Amount
		}
	}
	return b
}

// confirmed returns a committed transaction as algod reports it, failing the
// test when it is unknown or not committed.
func (c *chain) confirmed(t testing.TB, txid string) models.PendingTransactionInfoResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, _, err := c.algod.PendingTransactionInformation(txid).Do(ctx)
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
	before                    [3]balance
}

// watch records the accounts' balances before a payment.
func (c *chain) watch(t testing.TB, payer, receiver, feePayer account) *payment {
	t.Helper()
	p := &payment{payer: payer, receiver: receiver, feePayer: feePayer}
	p.before = c.balances(t, p)
	return p
}

func (c *chain) balances(t testing.TB, p *payment) [3]balance {
	t.Helper()
	return [3]balance{c.balance(t, p.payer.Addr), c.balance(t, p.receiver.Addr), c.balance(t, p.feePayer.Addr)}
}

// checkPaid checks that exactly one payment of the price went from the payer
// to the receiver, in the committed transaction txid, and that the fee payer,
// not the payer, paid the group's fees.
func (c *chain) checkPaid(t testing.TB, p *payment, txid string) {
	t.Helper()
	info := c.confirmed(t, txid)
	tx := info.Transaction.Txn
	if tx.Type != "axfer" || tx.Sender.String() != p.payer.Addr || tx.AssetReceiver.String() != p.receiver.Addr ||
		uint64(tx.XferAsset) != c.USDC() || tx.AssetAmount != priceUnits {
		t.Errorf("transaction %s is not a %d-unit USDC transfer %s -> %s: %+v", txid, priceUnits, p.payer.Addr, p.receiver.Addr, tx)
	}
	b := p.before
	want := [3]balance{
		{b[0].MicroAlgos, b[0].USDC - priceUnits},
		{b[1].MicroAlgos, b[1].USDC + priceUnits},
		{b[2].MicroAlgos - feePayerFee, b[2].USDC},
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

// Package devnettest sets up in-process devnets for tests: it starts a
// devnet, creates and funds accounts, opts them in to USDC, signs, submits
// and confirms transactions, and reads balances, all through the public
// devnet, avm and go-algorand-sdk APIs (real signed transactions on a real
// ledger). Every helper takes the test's testing.TB and fails the test on
// error, so a test reads as the steps it takes.
package devnettest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// Time limits: starting a devnet, and each call a helper makes to it. Every
// call is also cancelled when the test ends.
const (
	startTimeout = 30 * time.Second
	callTimeout  = 30 * time.Second
)

// confirmRounds is how many rounds Submit waits for its transaction.
const confirmRounds = 10

// Chain is a running devnet and an avm.Algod client of it, bound to one
// test, which closes it when it ends.
type Chain struct {
	// Dev is the devnet.
	Dev *devnet.Devnet
	// Algod is an algod client of the devnet; Algod.Client is the SDK's.
	Algod *avm.Algod

	t testing.TB
}

// Start starts a devnet configured by cfg for the test and closes it when
// the test ends.
func Start(t testing.TB, cfg devnet.Config) *Chain {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	dev, err := devnet.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start devnet: %v", err)
	}
	t.Cleanup(dev.Close)
	a, err := avm.NewAlgod(dev.URL(), dev.Token())
	if err != nil {
		t.Fatalf("algod client of the devnet: %v", err)
	}
	return &Chain{Dev: dev, Algod: a, t: t}
}

// For returns the chain bound to another test, such as a subtest of the
// one that started it: its helpers then fail that test.
func (c *Chain) For(t testing.TB) *Chain {
	return &Chain{Dev: c.Dev, Algod: c.Algod, t: t}
}

// call returns a context for one call to the devnet: bounded by
// callTimeout and cancelled when the test ends.
func (c *Chain) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.t.Context(), callTimeout)
}

// Fund gives addr microAlgos from the faucet, then usdc base units of USDC
// (which needs the account opted in).
func (c *Chain) Fund(addr types.Address, microAlgos, usdc uint64) {
	c.t.Helper()
	ctx, cancel := c.call()
	defer cancel()
	if err := c.Dev.Fund(ctx, addr, microAlgos, usdc); err != nil {
		c.t.Fatalf("fund %s with %d µALGO and %d USDC units: %v", addr, microAlgos, usdc, err)
	}
}

// Prepare gives an account microAlgos, opts it in to USDC when optIn (with
// a transaction it signs), then gives it usdc base units.
func (c *Chain) Prepare(a crypto.Account, microAlgos uint64, optIn bool, usdc uint64) {
	c.t.Helper()
	c.Fund(a.Address, microAlgos, 0)
	if optIn {
		c.OptIn(a)
	}
	if usdc > 0 {
		c.Fund(a.Address, 0, usdc)
	}
}

// NewAccount creates an account and prepares it as Prepare does.
func (c *Chain) NewAccount(microAlgos uint64, optIn bool, usdc uint64) crypto.Account {
	c.t.Helper()
	a := crypto.GenerateAccount()
	c.Prepare(a, microAlgos, optIn, usdc)
	return a
}

// OptIn opts the account in to USDC and waits for the transaction.
func (c *Chain) OptIn(a crypto.Account) {
	c.t.Helper()
	txn, err := transaction.MakeAssetAcceptanceTxn(a.Address.String(), nil, c.Params(), c.Dev.USDC())
	if err != nil {
		c.t.Fatalf("opt-in transaction: %v", err)
	}
	c.Submit(avm.AccountSigner(a), txn)
}

// Submit signs txn with signer, submits it alone and waits until it is
// committed; it returns the transaction id.
func (c *Chain) Submit(signer avm.Signer, txn types.Transaction) string {
	c.t.Helper()
	ctx, cancel := c.call()
	defer cancel()
	stx, err := signer.Sign(ctx, txn)
	if err != nil {
		c.t.Fatalf("sign: %v", err)
	}
	txid := crypto.GetTxID(txn)
	if err := c.Algod.Submit(ctx, []types.SignedTxn{stx}); err != nil {
		c.t.Fatalf("submit %s: %v", txid, err)
	}
	if _, err := c.Algod.WaitConfirmed(ctx, txid, confirmRounds); err != nil {
		c.t.Fatalf("confirm %s: %v", txid, err)
	}
	return txid
}

// Params returns the suggested parameters for a new transaction.
func (c *Chain) Params() types.SuggestedParams {
	c.t.Helper()
	ctx, cancel := c.call()
	defer cancel()
	p, err := c.Algod.SuggestedParams(ctx)
	if err != nil {
		c.t.Fatalf("suggested params: %v", err)
	}
	return p
}

// USDC returns an account's USDC balance in base units (0 when it is not
// opted in).
func (c *Chain) USDC(addr types.Address) uint64 {
	c.t.Helper()
	ctx, cancel := c.call()
	defer cancel()
	h, err := c.Algod.AssetHolding(ctx, addr, c.Dev.USDC())
	if err != nil {
		c.t.Fatalf("USDC holding of %s: %v", addr, err)
	}
	return h.Amount
}

// Balance is an account's ALGO and USDC.
type Balance struct {
	MicroAlgos uint64
	USDC       uint64
}

// Balance returns an account's ALGO and USDC, read together from algod's
// account information.
func (c *Chain) Balance(addr types.Address) Balance {
	c.t.Helper()
	ctx, cancel := c.call()
	defer cancel()
	info, err := c.Algod.Client.AccountInformation(addr.String()).Do(ctx)
	if err != nil {
		c.t.Fatalf("account %s: %v", addr, err)
	}
	b := Balance{MicroAlgos: info.Amount}
	for _, h := range info.Assets {
		if h.AssetId == c.Dev.USDC() {
			b.USDC = h.Amount
		}
	}
	return b
}

// Options shape the accounts New makes.
type Options struct {
	// Devnet configures the devnet.
	Devnet devnet.Config
	// MicroAlgos is what the payer and the receiver get (0: 1 ALGO).
	MicroAlgos uint64
	// FeePayerMicroAlgos is what the fee payer gets (0: 10 ALGO).
	FeePayerMicroAlgos uint64
	// PayerUSDC is the USDC, in base units, the payer gets.
	PayerUSDC uint64
}

// Parties is a Chain with the three accounts of an x402 payment.
type Parties struct {
	*Chain
	// Payer is opted in to USDC and holds Options.PayerUSDC of it.
	Payer crypto.Account
	// PayTo is the receiver, opted in to USDC.
	PayTo crypto.Account
	// FeePayer has ALGO only, to pay a facilitator's fees.
	FeePayer crypto.Account
}

// New starts a devnet as Start does and prepares a payer, a receiver and a
// fee payer on it as opts says.
func New(t testing.TB, opts Options) *Parties {
	t.Helper()
	algos, feeAlgos := opts.MicroAlgos, opts.FeePayerMicroAlgos
	if algos == 0 {
		algos = 1_000_000
	}
	if feeAlgos == 0 {
		feeAlgos = 10_000_000
	}
	c := Start(t, opts.Devnet)
	return &Parties{
		Chain:    c,
		PayTo:    c.NewAccount(algos, true, 0),
		Payer:    c.NewAccount(algos, true, opts.PayerUSDC),
		FeePayer: c.NewAccount(feeAlgos, false, 0),
	}
}

// Mnemonic returns the account's 25-word mnemonic.
func Mnemonic(t testing.TB, a crypto.Account) string {
	t.Helper()
	words, err := mnemonic.FromPrivateKey(a.PrivateKey)
	if err != nil {
		t.Fatalf("mnemonic: %v", err)
	}
	return words
}

// MnemonicFile writes the account's mnemonic to a private file in a
// temporary directory of the test, the way a Caddyfile reads a secret
// ({file./path}), and returns its path.
func MnemonicFile(t testing.TB, a crypto.Account) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fee-payer.mnemonic")
	if err := os.WriteFile(path, []byte(Mnemonic(t, a)+"\n"), 0o600); err != nil {
		t.Fatalf("write mnemonic file: %v", err)
	}
	return path
}

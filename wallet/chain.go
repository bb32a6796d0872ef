package wallet

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/dustin/go-humanize"

	"github.com/lualambda/caddy-lualambda/x402"
)

// Minimum balances of the Algorand protocol, in µALGO.
const (
	// MinAccountBalance is what an account must keep.
	MinAccountBalance = 100_000
	// MinAssetBalance is what each asset holding adds to it.
	MinAssetBalance = 100_000
)

// OptInWaitRounds is how many rounds OptIn waits for its confirmation.
const OptInWaitRounds = 10

// Balances is an account's position on a network.
type Balances struct {
	// Address is the account.
	Address string
	// MicroAlgos is its ALGO balance and MinBalance what it must keep.
	MicroAlgos uint64
	MinBalance uint64
	// USDCAsset is the network's USDC id.
	USDCAsset uint64
	// OptedIn says whether the account can hold USDC; USDC is its balance
	// in base units (6 decimals) and Frozen whether the holding is frozen.
	OptedIn bool
	USDC    uint64
	Frozen  bool
}

// Balances reads an account's ALGO and USDC balances.
func (c *Conn) Balances(ctx context.Context, addr string) (Balances, error) {
	a, err := types.DecodeAddress(addr)
	if err != nil {
		return Balances{}, fmt.Errorf("wallet: address %q: %w", addr, err)
	}
	acct, err := c.Ledger.Client.AccountInformation(addr).Exclude([]string{"all"}).Do(ctx)
	if err != nil {
		return Balances{}, fmt.Errorf("wallet: read account %s: %w", addr, err)
	}
	h, err := c.Ledger.AssetHolding(ctx, a, c.Chain.USDC)
	if err != nil {
		return Balances{}, fmt.Errorf("wallet: %w", err)
	}
	return Balances{
		Address: addr, MicroAlgos: acct.Amount, MinBalance: acct.MinBalance,
		USDCAsset: c.Chain.USDC, OptedIn: h.OptedIn, USDC: h.Amount, Frozen: h.Frozen,
	}, nil
}

// OptIn opts the wallet's account in to the network's USDC with a 0-amount
// asset transfer to itself and waits for it to be confirmed. It returns the
// transaction id, or already=true and no transaction when the account was
// opted in before.
func (c *Conn) OptIn(ctx context.Context, w *Wallet) (txid string, already bool, err error) {
	h, err := c.Ledger.AssetHolding(ctx, w.Account.Address, c.Chain.USDC)
	if err != nil {
		return "", false, fmt.Errorf("wallet: opt-in: %w", err)
	}
	if h.OptedIn {
		return "", true, nil
	}
	params, err := c.Ledger.SuggestedParams(ctx)
	if err != nil {
		return "", false, fmt.Errorf("wallet: opt-in: %w", err)
	}
	addr := w.Address()
	txn, err := transaction.MakeAssetTransferTxn(addr, addr, 0, []byte("lualambda wallet opt-in"), params, "", c.Chain.USDC)
	if err != nil {
		return "", false, fmt.Errorf("wallet: opt-in: %w", err)
	}
	stx, err := w.Signer().Sign(ctx, txn)
	if err != nil {
		return "", false, fmt.Errorf("wallet: opt-in: %w", err)
	}
	if err := c.Ledger.Submit(ctx, []types.SignedTxn{stx}); err != nil {
		return "", false, fmt.Errorf("wallet: opt-in (the account needs %s ALGO for it): %w",
			x402.FormatAmount(MinAccountBalance+MinAssetBalance+uint64(txn.Fee), 6), err)
	}
	txid = crypto.GetTxID(stx.Txn)
	if _, err := c.Ledger.WaitConfirmed(ctx, txid, OptInWaitRounds); err != nil {
		return txid, false, fmt.Errorf("wallet: opt-in sent as %s but not confirmed: %w", txid, err)
	}
	return txid, false, nil
}

// Fund asks a devnet's faucet (POST /devnet/fund) for ALGO and USDC, both
// in base units, and returns the funding's first transaction id once it is
// committed. USDC reaches the account only once it is opted in.
func (c *Conn) Fund(ctx context.Context, addr string, microAlgos, usdcUnits uint64) (string, error) {
	if !c.IsDevnet() {
		return "", fmt.Errorf("wallet: fund on %s: %w", c.Name, errNotDevnet)
	}
	a, err := types.DecodeAddress(addr)
	if err != nil {
		return "", fmt.Errorf("wallet: fund: address %q: %w", addr, err)
	}
	resp, err := c.devnet().Fund(ctx, a, microAlgos, usdcUnits)
	if err != nil {
		return "", fmt.Errorf("wallet: %w", err)
	}
	return resp.TxID, nil
}

// Humanize renders base units of an asset with the given decimals for
// people: thousands separated, no trailing zeros ("1,234.5").
func Humanize(units uint64, decimals int) string {
	s := x402.FormatAmount(units, decimals)
	whole, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return s // beyond int64: left unseparated
	}
	out := humanize.Comma(n)
	if frac != "" {
		out += "." + frac
	}
	return out
}

// ALGO renders µALGO as ALGO.
func ALGO(micro uint64) string { return Humanize(micro, 6) + " ALGO" }

// USDC renders USDC base units as USDC.
func USDC(units uint64) string { return Humanize(units, x402.USDCDecimals) + " USDC" }

// Hints says what the account still needs before it can pay.
func (b Balances) Hints(network string) []string {
	var hints []string
	need := uint64(MinAccountBalance + MinAssetBalance + 1000)
	switch {
	case b.MicroAlgos == 0:
		hints = append(hints, "the account has no ALGO: "+FundingHint(network, b.Address))
	case !b.OptedIn && b.MicroAlgos < need:
		hints = append(hints, fmt.Sprintf("needs at least %s to opt in to USDC (has %s): %s",
			ALGO(need), ALGO(b.MicroAlgos), FundingHint(network, b.Address)))
	}
	switch {
	case !b.OptedIn:
		hints = append(hints, "not opted in to USDC: run lualambda wallet opt-in")
	case b.Frozen:
		hints = append(hints, "the USDC holding is frozen: it cannot pay")
	case b.USDC == 0:
		hints = append(hints, "no USDC yet: "+USDCHint(network))
	}
	return hints
}

// FundingHint tells how to get ALGO on a network.
func FundingHint(network, addr string) string {
	switch network {
	case Devnet:
		return "run lualambda wallet fund"
	case Testnet:
		return "get testnet ALGO from https://bank.testnet.algorand.network/ (or https://lora.algokit.io/testnet/fund) for " + addr
	case Mainnet:
		return "buy ALGO on an exchange and withdraw it to " + addr
	}
	return "send ALGO to " + addr
}

// USDCHint tells how to get USDC on a network, once opted in.
func USDCHint(network string) string {
	switch network {
	case Devnet:
		return "run lualambda wallet fund"
	case Testnet:
		return "get testnet USDC from https://faucet.circle.com/ (choose Algorand Testnet)"
	case Mainnet:
		return "buy USDC and withdraw it to this address on Algorand (ASA 31566704)"
	}
	return "send USDC to this address"
}

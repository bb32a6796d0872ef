package devnet

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/client/v2/algod"
	"github.com/algorand/go-algorand-sdk/v2/client/v2/common"
	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"
)

// tnet is a running devnet with an SDK algod client on it.
type tnet struct {
	t   *testing.T
	ctx context.Context
	dev *Devnet
	c   *algod.Client
}

func start(t *testing.T, cfg Config) *tnet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	dev, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(dev.Close)
	c, err := algod.MakeClient(dev.URL(), dev.Token())
	if err != nil {
		t.Fatal(err)
	}
	return &tnet{t: t, ctx: ctx, dev: dev, c: c}
}

func (n *tnet) params() types.SuggestedParams {
	n.t.Helper()
	p, err := n.c.SuggestedParams().Do(n.ctx)
	if err != nil {
		n.t.Fatalf("params: %v", err)
	}
	return p
}

// sign signs txn with key; the SDK sets sgnr when key is not the sender's.
func sign(t *testing.T, key ed25519.PrivateKey, txn types.Transaction) []byte {
	t.Helper()
	_, raw, err := crypto.SignTransaction(key, txn)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return raw
}

// send posts the concatenated signed transactions as one group.
func (n *tnet) send(stxs ...[]byte) (string, error) {
	var raw []byte
	for _, s := range stxs {
		raw = append(raw, s...)
	}
	return n.c.SendRawTransaction(raw).Do(n.ctx)
}

// mustSend sends and waits for confirmation, returning the round.
func (n *tnet) mustSend(stxs ...[]byte) uint64 {
	n.t.Helper()
	txid, err := n.send(stxs...)
	if err != nil {
		n.t.Fatalf("send: %v", err)
	}
	info, err := transaction.WaitForConfirmation(n.c, txid, 4, n.ctx)
	if err != nil {
		n.t.Fatalf("confirm %s: %v", txid, err)
	}
	return info.ConfirmedRound
}

// reject sends and expects a 400 whose message contains want.
func (n *tnet) reject(want string, stxs ...[]byte) {
	n.t.Helper()
	before := n.dev.Round()
	_, err := n.send(stxs...)
	var bad common.BadRequest
	if !errors.As(err, &bad) {
		n.t.Fatalf("send: got %v, want 400 containing %q", err, want)
	}
	if !strings.Contains(bad.Message, want) || !strings.Contains(bad.Message, `"message"`) {
		n.t.Fatalf("send: 400 %s, want a message containing %q", bad.Message, want)
	}
	if after := n.dev.Round(); after != before {
		n.t.Fatalf("a rejected group moved the round from %d to %d", before, after)
	}
}

// account makes a new account funded with algos µAlgo, opted in to USDC
// and holding usdc units when optIn.
func (n *tnet) account(algos uint64, optIn bool, usdc uint64) crypto.Account {
	n.t.Helper()
	a := crypto.GenerateAccount()
	if err := n.dev.Fund(n.ctx, a.Address, algos, 0); err != nil {
		n.t.Fatalf("fund: %v", err)
	}
	if optIn {
		n.optIn(a)
	}
	if usdc > 0 {
		if err := n.dev.Fund(n.ctx, a.Address, 0, usdc); err != nil {
			n.t.Fatalf("fund usdc: %v", err)
		}
	}
	return a
}

func (n *tnet) optIn(a crypto.Account) {
	n.t.Helper()
	txn, err := transaction.MakeAssetAcceptanceTxn(a.Address.String(), nil, n.params(), n.dev.USDC())
	if err != nil {
		n.t.Fatal(err)
	}
	n.mustSend(sign(n.t, a.PrivateKey, txn))
}

func (n *tnet) pay(from, to types.Address, amount uint64, close string) types.Transaction {
	n.t.Helper()
	txn, err := transaction.MakePaymentTxn(from.String(), to.String(), amount, nil, close, n.params())
	if err != nil {
		n.t.Fatal(err)
	}
	return txn
}

func (n *tnet) usdcXfer(from, to types.Address, amount uint64, closeTo string) types.Transaction {
	n.t.Helper()
	txn, err := transaction.MakeAssetTransferTxn(from.String(), to.String(), amount, nil, n.params(), closeTo, n.dev.USDC())
	if err != nil {
		n.t.Fatal(err)
	}
	return txn
}

// algo returns an account's balance through the SDK.
func (n *tnet) algo(addr types.Address) uint64 {
	n.t.Helper()
	acct, err := n.c.AccountInformation(addr.String()).Do(n.ctx)
	if err != nil {
		n.t.Fatalf("account %s: %v", addr, err)
	}
	return acct.Amount
}

// usdc returns an account's USDC holding and whether it is opted in.
func (n *tnet) usdc(addr types.Address) (uint64, bool) {
	n.t.Helper()
	h, err := n.c.AccountAssetInformation(addr.String(), n.dev.USDC()).Do(n.ctx)
	var nf common.NotFound
	if errors.As(err, &nf) {
		return 0, false
	}
	if err != nil {
		n.t.Fatalf("holding %s: %v", addr, err)
	}
	return h.AssetHolding.Amount, true
}

// group assigns a group id to txns.
func group(t *testing.T, txns ...types.Transaction) []types.Transaction {
	t.Helper()
	g, err := transaction.AssignGroupID(txns, "")
	if err != nil {
		t.Fatal(err)
	}
	return g
}

package devnet_test

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

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
)

// tnet is a running devnet with an SDK algod client (c) on it, and the
// devnettest helpers.
type tnet struct {
	*devnettest.Chain
	t   *testing.T
	ctx context.Context
	dev *devnet.Devnet
	c   *algod.Client
}

func start(t *testing.T, cfg devnet.Config) *tnet {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	ch := devnettest.Start(t, cfg)
	return &tnet{Chain: ch, t: t, ctx: ctx, dev: ch.Dev, c: ch.Algod.Client}
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

func (n *tnet) pay(from, to types.Address, amount uint64, close string) types.Transaction {
	n.t.Helper()
	txn, err := transaction.MakePaymentTxn(from.String(), to.String(), amount, nil, close, n.Params())
	if err != nil {
		n.t.Fatal(err)
	}
	return txn
}

func (n *tnet) usdcXfer(from, to types.Address, amount uint64, closeTo string) types.Transaction {
	n.t.Helper()
	txn, err := transaction.MakeAssetTransferTxn(from.String(), to.String(), amount, nil, n.Params(), closeTo, n.dev.USDC())
	if err != nil {
		n.t.Fatal(err)
	}
	return txn
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

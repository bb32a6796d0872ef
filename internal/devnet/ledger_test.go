package devnet_test

import (
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
)

func TestGoodPaymentAndConfirmation(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(2_000_000, true, 5_000)
	b := n.NewAccount(1_000_000, true, 0)
	txn := n.usdcXfer(a.Address, b.Address, 1_234, "")
	stx := sign(t, a.PrivateKey, txn)
	before := n.dev.Round()
	txid, err := n.send(stx)
	if err != nil {
		t.Fatal(err)
	}
	if txid != crypto.GetTxID(txn) {
		t.Fatalf("txId %s, want %s", txid, crypto.GetTxID(txn))
	}
	info, err := transaction.WaitForConfirmation(n.c, txid, 4, n.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.ConfirmedRound != before+1 || n.dev.Round() != before+1 {
		t.Fatalf("confirmed in %d, round %d, want %d (one round per group)", info.ConfirmedRound, n.dev.Round(), before+1)
	}
	if info.Transaction.Txn.AssetAmount != 1_234 || info.Transaction.Sig == (types.Signature{}) {
		t.Fatalf("pending txn %+v", info.Transaction)
	}
	if got, _ := n.usdc(b.Address); got != 1_234 {
		t.Fatalf("receiver holds %d", got)
	}
	if got, _ := n.usdc(a.Address); got != 5_000-1_234 {
		t.Fatalf("sender holds %d", got)
	}
	if got := n.Balance(a.Address).MicroAlgos; got != 2_000_000-2*devnet.MinTxnFee { // opt-in + transfer fees
		t.Fatalf("sender has %d µAlgo", got)
	}
}

func TestSignatures(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, false, 0)
	b := crypto.GenerateAccount()
	txn := n.pay(a.Address, b.Address, 200_000, "")

	// A tampered signature.
	var stx types.SignedTxn
	if err := msgpack.Decode(sign(t, a.PrivateKey, txn), &stx); err != nil {
		t.Fatal(err)
	}
	stx.Sig[3] ^= 1
	n.reject("signature verification failed", msgpack.Encode(stx))

	// A signed body that was changed after signing.
	stx.Sig[3] ^= 1
	stx.Txn.Amount++
	n.reject("signature verification failed", msgpack.Encode(stx))

	// Another key claiming to be the sender (no sgnr).
	other := crypto.GenerateAccount()
	if err := msgpack.Decode(sign(t, other.PrivateKey, txn), &stx); err != nil {
		t.Fatal(err)
	}
	stx.AuthAddr = types.Address{}
	n.reject("signature verification failed", msgpack.Encode(stx))

	// Another key signing openly as authorizer (sgnr) of an account that
	// was not rekeyed to it.
	n.reject("should have been authorized by "+a.Address.String(), sign(t, other.PrivateKey, txn))

	// No signature at all.
	n.reject("signedtxn has no sig", msgpack.Encode(types.SignedTxn{Txn: txn}))

	if got := n.Balance(b.Address).MicroAlgos; got != 0 {
		t.Fatalf("rejected payments moved %d µAlgo", got)
	}
	n.mustSend(sign(t, a.PrivateKey, txn))
	if got := n.Balance(b.Address).MicroAlgos; got != 200_000 {
		t.Fatalf("receiver has %d", got)
	}
}

func TestRekey(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, false, 0)
	auth := crypto.GenerateAccount()
	rekey := n.pay(a.Address, a.Address, 0, "")
	if err := rekey.Rekey(auth.Address.String()); err != nil {
		t.Fatal(err)
	}
	n.mustSend(sign(t, a.PrivateKey, rekey))
	acct, err := n.c.AccountInformation(a.Address.String()).Exclude([]string{"all"}).Do(n.ctx)
	if err != nil || acct.AuthAddr != auth.Address.String() {
		t.Fatalf("auth-addr %q, %v", acct.AuthAddr, err)
	}

	dest := crypto.GenerateAccount().Address
	txn := n.pay(a.Address, dest, 100_000, "")
	n.reject("should have been authorized by "+auth.Address.String(), sign(t, a.PrivateKey, txn))
	n.mustSend(sign(t, auth.PrivateKey, txn)) // sgnr = auth
	if got := n.Balance(dest).MicroAlgos; got != 100_000 {
		t.Fatalf("receiver has %d", got)
	}

	// Rekeying back to itself, signed by the auth key, restores the account's key.
	back := n.pay(a.Address, a.Address, 0, "")
	if err := back.Rekey(a.Address.String()); err != nil {
		t.Fatal(err)
	}
	n.mustSend(sign(t, auth.PrivateKey, back))
	n.mustSend(sign(t, a.PrivateKey, n.pay(a.Address, dest, 100_000, "")))

	// Within a group, a rekey takes effect for the members after it.
	rk := n.pay(a.Address, a.Address, 0, "")
	if err := rk.Rekey(auth.Address.String()); err != nil {
		t.Fatal(err)
	}
	g := group(t, rk, n.pay(a.Address, dest, 1_000, ""))
	n.reject("should have been authorized by "+auth.Address.String(), sign(t, a.PrivateKey, g[0]), sign(t, a.PrivateKey, g[1]))
	n.mustSend(sign(t, a.PrivateKey, g[0]), sign(t, auth.PrivateKey, g[1]))
}

func TestCloseTo(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, false, 0)
	to := crypto.GenerateAccount().Address
	closer := n.NewAccount(1_000_000, false, 0)
	txn := n.pay(a.Address, to, 300_000, closer.Address.String())
	txid, err := n.send(sign(t, a.PrivateKey, txn))
	if err != nil {
		t.Fatal(err)
	}
	info, _, err := n.c.PendingTransactionInformation(txid).Do(n.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(1_000_000 - 300_000 - devnet.MinTxnFee)
	if info.ClosingAmount != want || info.ConfirmedRound == 0 {
		t.Fatalf("closing amount %d in round %d, want %d", info.ClosingAmount, info.ConfirmedRound, want)
	}
	if got := n.Balance(a.Address).MicroAlgos; got != 0 {
		t.Fatalf("closed account has %d", got)
	}
	if got := n.Balance(closer.Address).MicroAlgos; got != 1_000_000+want {
		t.Fatalf("close-to has %d", got)
	}
	if got := n.Balance(to).MicroAlgos; got != 300_000 {
		t.Fatalf("receiver has %d", got)
	}

	// An account holding an asset cannot close.
	h := n.NewAccount(1_000_000, true, 0)
	n.reject("cannot close: 1 outstanding assets", sign(t, h.PrivateKey, n.pay(h.Address, to, 0, closer.Address.String())))

	// Asset close-to moves the whole holding and opts out.
	holder := n.NewAccount(1_000_000, true, 700)
	sink := n.NewAccount(1_000_000, true, 0)
	n.mustSend(sign(t, holder.PrivateKey, n.usdcXfer(holder.Address, sink.Address, 200, sink.Address.String())))
	if got, _ := n.usdc(sink.Address); got != 700 {
		t.Fatalf("asset close-to holds %d", got)
	}
	if _, opted := n.usdc(holder.Address); opted {
		t.Fatal("closed-out holder is still opted in")
	}
	// The creator cannot close out of its own asset.
	f := n.dev.Faucet()
	n.reject("cannot close asset ID in allocating account", sign(t, f.PrivateKey, n.usdcXfer(f.Address, sink.Address, 1, sink.Address.String())))
}

func TestGroups(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, true, 1_000)
	b := n.NewAccount(1_000_000, true, 0)

	// A good group: ALGO one way, USDC the other, fees pooled on one member.
	p := n.Params()
	p.FlatFee, p.Fee = true, 2*devnet.MinTxnFee
	pay, _ := transaction.MakePaymentTxn(b.Address.String(), a.Address.String(), 5_000, nil, "", p)
	p.Fee = 0
	xfer, _ := transaction.MakeAssetTransferTxn(a.Address.String(), b.Address.String(), 400, nil, p, "", n.dev.USDC())
	g := group(t, pay, xfer)
	n.mustSend(sign(t, b.PrivateKey, g[0]), sign(t, a.PrivateKey, g[1]))
	if got, _ := n.usdc(b.Address); got != 400 {
		t.Fatalf("group: receiver holds %d", got)
	}
	if got := n.Balance(b.Address).MicroAlgos; got != 1_000_000-devnet.MinTxnFee-5_000-2*devnet.MinTxnFee {
		t.Fatalf("group: fee payer has %d", got)
	}

	// Group id mismatch: one member's group changed (and re-signed).
	g = group(t, n.pay(a.Address, b.Address, 1_000, ""), n.pay(b.Address, a.Address, 1_000, ""))
	bad := g[1]
	bad.Group[0] ^= 1
	n.reject("inconsistent group values", sign(t, a.PrivateKey, g[0]), sign(t, b.PrivateKey, bad))
	// Both members carry the same wrong id.
	wrong := g
	wrong[0].Group, wrong[1].Group = bad.Group, bad.Group
	n.reject("incomplete group", sign(t, a.PrivateKey, wrong[0]), sign(t, b.PrivateKey, wrong[1]))
	// A member of a group sent alone.
	g = group(t, n.pay(a.Address, b.Address, 1_000, ""), n.pay(b.Address, a.Address, 1_000, ""))
	n.reject("incomplete group", sign(t, a.PrivateKey, g[0]))
	// Two ungrouped transactions in one POST.
	n.reject("had zero Group", sign(t, a.PrivateKey, n.pay(a.Address, b.Address, 1_000, "")), sign(t, b.PrivateKey, n.pay(b.Address, a.Address, 2_000, "")))
	// An unsigned member.
	n.reject("signedtxn has no sig", sign(t, a.PrivateKey, g[0]), msgpack.Encode(types.SignedTxn{Txn: g[1]}))

	// Atomicity: the second member overspends, so the first is not applied.
	beforeA, beforeB := n.Balance(a.Address).MicroAlgos, n.Balance(b.Address).MicroAlgos
	g = group(t, n.pay(a.Address, b.Address, 10_000, ""), n.pay(b.Address, a.Address, 50_000_000, ""))
	n.reject("overspend", sign(t, a.PrivateKey, g[0]), sign(t, b.PrivateKey, g[1]))
	if n.Balance(a.Address).MicroAlgos != beforeA || n.Balance(b.Address).MicroAlgos != beforeB {
		t.Fatal("a rejected group changed balances")
	}
}

func TestFees(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, false, 0)
	b := crypto.GenerateAccount().Address
	p := n.Params()
	p.FlatFee, p.Fee = true, 0
	zero, _ := transaction.MakePaymentTxn(a.Address.String(), b.String(), 200_000, nil, "", p)
	n.reject("txgroup had 0 in fees, which is less than the minimum 1 * 1000", sign(t, a.PrivateKey, zero))
	p.Fee = devnet.MinTxnFee - 1
	low, _ := transaction.MakePaymentTxn(a.Address.String(), b.String(), 200_000, nil, "", p)
	n.reject("which is less than the minimum", sign(t, a.PrivateKey, low))

	// A pooled group whose total is one short.
	p.Fee = 2*devnet.MinTxnFee - 1
	t1, _ := transaction.MakePaymentTxn(a.Address.String(), b.String(), 200_000, nil, "", p)
	p.Fee = 0
	t2, _ := transaction.MakePaymentTxn(a.Address.String(), b.String(), 100_000, nil, "", p)
	g := group(t, t1, t2)
	n.reject("less than the minimum 2 * 1000", sign(t, a.PrivateKey, g[0]), sign(t, a.PrivateKey, g[1]))

	// An account that cannot pay the fee: a fee payer with nothing.
	empty := crypto.GenerateAccount()
	p.Fee = devnet.MinTxnFee
	noFee, _ := transaction.MakePaymentTxn(empty.Address.String(), b.String(), 0, nil, "", p)
	n.reject("overspend", sign(t, empty.PrivateKey, noFee))
}

func TestMinimumBalances(t *testing.T) {
	n := start(t, devnet.Config{})
	f := n.dev.Faucet()
	fresh := crypto.GenerateAccount()
	n.reject("below min 100000", sign(t, f.PrivateKey, n.pay(f.Address, fresh.Address, 99_999, "")))

	a := n.NewAccount(200_000, false, 0)
	// Keeping less than 0.1 ALGO without closing is refused.
	n.reject("balance 99999 below min 100000", sign(t, a.PrivateKey, n.pay(a.Address, fresh.Address, 100_000-devnet.MinTxnFee+1, "")))
	// Opting in to an asset needs another 0.1 ALGO.
	opt, _ := transaction.MakeAssetAcceptanceTxn(a.Address.String(), nil, n.Params(), n.dev.USDC())
	n.reject("below min 200000 (1 assets)", sign(t, a.PrivateKey, opt))
	// Spending down to exactly zero empties (deletes) the account, as on algod.
	n.mustSend(sign(t, f.PrivateKey, n.pay(f.Address, fresh.Address, 100_000, "")))
	n.mustSend(sign(t, a.PrivateKey, n.pay(a.Address, fresh.Address, 200_000-devnet.MinTxnFee, "")))
	acct, err := n.c.AccountInformation(a.Address.String()).Do(n.ctx)
	if err != nil || acct.Amount != 0 || acct.MinBalance != devnet.MinBalance {
		t.Fatalf("emptied account %+v, %v", acct, err)
	}
}

func TestAssetOptIns(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, true, 1_000)
	out := n.NewAccount(1_000_000, false, 0)
	n.reject("receiver error: must optin", sign(t, a.PrivateKey, n.usdcXfer(a.Address, out.Address, 10, "")))
	n.reject("missing from "+out.Address.String(), sign(t, out.PrivateKey, n.usdcXfer(out.Address, a.Address, 0, "")))
	if err := n.dev.Fund(n.ctx, out.Address, 0, 5); err == nil {
		t.Fatal("funding USDC to an account that is not opted in succeeded")
	}
	n.reject("underflow on subtracting 1001 from sender amount 1000", sign(t, a.PrivateKey, n.usdcXfer(a.Address, a.Address, 1_001, "")))
	txn, _ := transaction.MakeAssetTransferTxn(a.Address.String(), a.Address.String(), 1, nil, n.Params(), "", 999_999)
	n.reject("asset 999999 does not exist", sign(t, a.PrivateKey, txn))

	n.OptIn(out)
	acct, err := n.c.AccountInformation(out.Address.String()).Do(n.ctx)
	if err != nil || acct.MinBalance != 2*devnet.MinBalance || len(acct.Assets) != 1 || acct.Assets[0].AssetId != n.dev.USDC() {
		t.Fatalf("opted-in account %+v, %v", acct, err)
	}
	n.mustSend(sign(t, a.PrivateKey, n.usdcXfer(a.Address, out.Address, 10, "")))
	if got, _ := n.usdc(out.Address); got != 10 {
		t.Fatalf("holds %d", got)
	}
}

func TestValidityWindows(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, false, 0)
	b := crypto.GenerateAccount().Address
	p := n.Params()
	p.LastRoundValid = p.FirstRoundValid + 5
	expired, _ := transaction.MakePaymentTxn(a.Address.String(), b.String(), 100_000, nil, "", p)
	if err := n.dev.AdvanceRounds(10); err != nil {
		t.Fatal(err)
	}
	n.reject("txn dead", sign(t, a.PrivateKey, expired))

	p = n.Params()
	p.FirstRoundValid += 5
	p.LastRoundValid = p.FirstRoundValid + 10
	future, _ := transaction.MakePaymentTxn(a.Address.String(), b.String(), 100_000, nil, "", p)
	n.reject("txn dead", sign(t, a.PrivateKey, future))
	if err := n.dev.AdvanceRounds(4); err != nil {
		t.Fatal(err)
	}
	n.mustSend(sign(t, a.PrivateKey, future)) // now first valid == current + 1

	p = n.Params()
	p.LastRoundValid = p.FirstRoundValid + devnet.MaxTxnLife + 1
	long, _ := transaction.MakePaymentTxn(a.Address.String(), b.String(), 100_000, nil, "", p)
	n.reject("window size excessive", sign(t, a.PrivateKey, long))
}

func TestDuplicatesAndLeases(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, false, 0)
	b := crypto.GenerateAccount().Address
	stx := sign(t, a.PrivateKey, n.pay(a.Address, b, 100_000, ""))
	n.mustSend(stx)
	n.reject("transaction already in ledger", stx)

	var lease [32]byte
	lease[0] = 7
	l1 := n.pay(a.Address, b, 1_000, "")
	l1.AddLeaseWithFlatFee(lease, devnet.MinTxnFee)
	l2 := n.pay(a.Address, b, 2_000, "")
	l2.AddLeaseWithFlatFee(lease, devnet.MinTxnFee)
	n.mustSend(sign(t, a.PrivateKey, l1))
	n.reject("overlapping lease", sign(t, a.PrivateKey, l2))
}

func TestGenesisChecks(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, false, 0)
	b := crypto.GenerateAccount().Address
	txn := n.pay(a.Address, b, 100_000, "")
	txn.GenesisHash[0] ^= 1
	n.reject("genesis hash mismatch", sign(t, a.PrivateKey, txn))
	txn = n.pay(a.Address, b, 100_000, "")
	txn.GenesisID = "testnet-v1.0"
	n.reject("genesis id mismatch", sign(t, a.PrivateKey, txn))
	txn.GenesisID = "" // optional
	n.mustSend(sign(t, a.PrivateKey, txn))

	big := n.pay(a.Address, b, 100_000, "")
	big.Note = make([]byte, devnet.MaxNoteBytes+1)
	n.reject("note too big", sign(t, a.PrivateKey, big))
}

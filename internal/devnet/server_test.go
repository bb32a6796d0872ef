package devnet_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/client/v2/algod"
	"github.com/algorand/go-algorand-sdk/v2/client/v2/common"
	"github.com/algorand/go-algorand-sdk/v2/client/v2/common/models"
	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/x402"
)

// get performs a raw GET with the given token and returns status and body.
func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set(devnet.TokenHeader, token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestSDKReadEndpoints(t *testing.T) {
	n := start(t, devnet.Config{})
	if err := n.c.HealthCheck().Do(n.ctx); err != nil {
		t.Fatalf("health: %v", err)
	}
	h := n.dev.GenesisHash()
	v, err := n.c.Versions().Do(n.ctx)
	if err != nil || v.GenesisID != devnet.DefaultGenesisID || string(v.GenesisHash) != string(h[:]) {
		t.Fatalf("versions %+v, %v", v, err)
	}
	p := n.Params()
	if string(p.GenesisHash) != string(h[:]) || p.GenesisID != devnet.DefaultGenesisID || p.MinFee != devnet.MinTxnFee ||
		uint64(p.FirstRoundValid) != n.dev.Round() || p.LastRoundValid != p.FirstRoundValid+1000 {
		t.Fatalf("params %+v", p)
	}
	st, err := n.c.Status().Do(n.ctx)
	if err != nil || st.LastRound != n.dev.Round() || st.LastRound == 0 {
		t.Fatalf("status %+v, %v", st, err)
	}

	asset, err := n.c.GetAssetByID(n.dev.USDC()).Do(n.ctx)
	f := n.dev.Faucet().Address.String()
	if err != nil || asset.Index != devnet.DefaultUSDC || asset.Params.Decimals != 6 || asset.Params.UnitName != "USDC" ||
		asset.Params.Total != devnet.USDCSupply || asset.Params.Creator != f {
		t.Fatalf("asset %+v, %v", asset, err)
	}
	var nf common.NotFound
	if _, err := n.c.GetAssetByID(77).Do(n.ctx); !errors.As(err, &nf) {
		t.Fatalf("unknown asset: %v", err)
	}
	acct, err := n.c.AccountInformation(f).Do(n.ctx)
	if err != nil || acct.Amount != devnet.FaucetMicroAlgos-devnet.MinTxnFee || len(acct.Assets) != 1 || acct.Assets[0].Amount != devnet.USDCSupply ||
		len(acct.CreatedAssets) != 1 || acct.MinBalance != 2*devnet.MinBalance || acct.TotalCreatedAssets != 1 {
		t.Fatalf("faucet %+v, %v", acct, err)
	}
	acct, err = n.c.AccountInformation(f).Exclude([]string{"all"}).Do(n.ctx)
	if err != nil || len(acct.Assets) != 0 || acct.TotalAssetsOptedIn != 1 || acct.Amount == 0 {
		t.Fatalf("faucet, exclude=all: %+v, %v", acct, err)
	}
	holding, err := n.c.AccountAssetInformation(f, n.dev.USDC()).Do(n.ctx)
	if err != nil || holding.AssetHolding.Amount != devnet.USDCSupply || holding.CreatedAsset.Creator != f {
		t.Fatalf("faucet holding %+v, %v", holding, err)
	}
	stranger := crypto.GenerateAccount().Address.String()
	if _, err := n.c.AccountAssetInformation(stranger, n.dev.USDC()).Do(n.ctx); !errors.As(err, &nf) {
		t.Fatalf("holding of a stranger: %v", err)
	}
	acct, err = n.c.AccountInformation(stranger).Do(n.ctx)
	if err != nil || acct.Amount != 0 || acct.Address != stranger {
		t.Fatalf("stranger %+v, %v", acct, err)
	}
	var bad common.BadRequest
	if _, err := n.c.AccountInformation("NOTANADDRESS").Do(n.ctx); !errors.As(err, &bad) {
		t.Fatalf("bad address: %v", err)
	}
}

// algosdk (npm v3) decodes the params with these exact JSON keys, fee
// included when it is 0.
func TestParamsJSONForAlgosdk(t *testing.T) {
	n := start(t, devnet.Config{})
	status, body := get(t, n.dev.URL()+"/v2/transactions/params", n.dev.Token())
	if status != http.StatusOK {
		t.Fatalf("params: %d %s", status, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"consensus-version", "fee", "genesis-hash", "genesis-id", "last-round", "min-fee"} {
		if _, ok := m[k]; !ok {
			t.Errorf("params lack %q: %s", k, body)
		}
	}
	h := n.dev.GenesisHash()
	if m["genesis-hash"] != base64.StdEncoding.EncodeToString(h[:]) || m["min-fee"] != float64(devnet.MinTxnFee) || m["fee"] != float64(0) {
		t.Fatalf("params %s", body)
	}
}

func TestAuthAndErrors(t *testing.T) {
	n := start(t, devnet.Config{Token: "sesame"})
	for _, path := range []string{"/v2/status", "/v2/transactions/params", "/devnet/info"} {
		for _, tok := range []string{"", "wrong"} {
			status, body := get(t, n.dev.URL()+path, tok)
			var e struct{ Message string }
			if status != http.StatusUnauthorized || json.Unmarshal(body, &e) != nil || e.Message == "" {
				t.Fatalf("%s with token %q: %d %s", path, tok, status, body)
			}
		}
	}
	if status, _ := get(t, n.dev.URL()+"/health", ""); status != http.StatusOK {
		t.Fatalf("health without token: %d", status)
	}
	status, body := get(t, n.dev.URL()+"/v2/nope", "sesame")
	if status != http.StatusNotFound || !strings.Contains(string(body), `"message"`) {
		t.Fatalf("unknown path: %d %s", status, body)
	}
	status, body = get(t, n.dev.URL()+"/v2/transactions", "sesame")
	if status != http.StatusMethodNotAllowed || !strings.Contains(string(body), `"message"`) {
		t.Fatalf("GET /v2/transactions: %d %s", status, body)
	}
	status, body = get(t, n.dev.URL()+"/v2/status?format=xml", "sesame")
	if status != http.StatusBadRequest {
		t.Fatalf("bad format: %d %s", status, body)
	}
	bad, _ := algod.MakeClient(n.dev.URL(), "wrong")
	var inv common.InvalidToken
	if _, err := bad.Status().Do(n.ctx); !errors.As(err, &inv) {
		t.Fatalf("SDK with a wrong token: %v", err)
	}
	var br common.BadRequest
	if _, err := n.c.SendRawTransaction([]byte{0xc1, 0x00}).Do(n.ctx); !errors.As(err, &br) {
		t.Fatalf("garbage body: %v", err)
	}
	if _, err := n.c.SendRawTransaction(nil).Do(n.ctx); !errors.As(err, &br) || !strings.Contains(br.Message, "empty txgroup") {
		t.Fatalf("empty body: %v", err)
	}
}

func TestPendingFormats(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, false, 0)
	txn := n.pay(a.Address, crypto.GenerateAccount().Address, 0, "")
	round := n.mustSend(sign(t, a.PrivateKey, txn))
	txid := crypto.GetTxID(txn)
	status, body := get(t, n.dev.URL()+"/v2/transactions/pending/"+txid+"?format=json", n.dev.Token())
	var m map[string]any
	if status != http.StatusOK || json.Unmarshal(body, &m) != nil || m["confirmed-round"] != float64(round) || m["txn"] == nil {
		t.Fatalf("pending json: %d %s", status, body)
	}
	if _, ok := m["pool-error"]; !ok {
		t.Fatalf("pending json lacks pool-error: %s", body)
	}
	status, body = get(t, n.dev.URL()+"/v2/transactions/pending/"+txid+"?format=msgpack", n.dev.Token())
	var info models.PendingTransactionInfoResponse
	if status != http.StatusOK || msgpack.NewLenientDecoder(strings.NewReader(string(body))).Decode(&info) != nil || info.ConfirmedRound != round {
		t.Fatalf("pending msgpack: %d %+v", status, info)
	}
	var nf common.NotFound
	if _, _, err := n.c.PendingTransactionInformation("UNKNOWNTXID").Do(n.ctx); !errors.As(err, &nf) {
		t.Fatalf("unknown txid: %v", err)
	}
}

func TestSimulateDoesNotCommit(t *testing.T) {
	n := start(t, devnet.Config{})
	a := n.NewAccount(1_000_000, true, 100)
	b := n.NewAccount(1_000_000, true, 0)
	var good, bad types.SignedTxn
	_ = msgpack.Decode(sign(t, a.PrivateKey, n.usdcXfer(a.Address, b.Address, 60, "")), &good)
	_ = msgpack.Decode(sign(t, a.PrivateKey, n.usdcXfer(a.Address, b.Address, 101, "")), &bad)
	round := n.dev.Round()

	resp, err := n.c.SimulateTransaction(models.SimulateRequest{TxnGroups: []models.SimulateRequestTransactionGroup{{Txns: []types.SignedTxn{bad}}}}).Do(n.ctx)
	if err != nil || len(resp.TxnGroups) != 1 || !strings.Contains(resp.TxnGroups[0].FailureMessage, "underflow") ||
		len(resp.TxnGroups[0].FailedAt) != 1 || resp.TxnGroups[0].FailedAt[0] != 0 || resp.LastRound != round {
		t.Fatalf("simulate bad: %+v, %v", resp, err)
	}
	// A failing second member of a group.
	g := group(t, n.pay(b.Address, a.Address, 1_000, ""), n.usdcXfer(a.Address, b.Address, 101, ""))
	var g0, g1 types.SignedTxn
	_ = msgpack.Decode(sign(t, b.PrivateKey, g[0]), &g0)
	_ = msgpack.Decode(sign(t, a.PrivateKey, g[1]), &g1)
	resp, err = n.c.SimulateTransaction(models.SimulateRequest{TxnGroups: []models.SimulateRequestTransactionGroup{{Txns: []types.SignedTxn{g0, g1}}}}).Do(n.ctx)
	if err != nil || len(resp.TxnGroups[0].FailedAt) != 1 || resp.TxnGroups[0].FailedAt[0] != 1 {
		t.Fatalf("simulate group: %+v, %v", resp, err)
	}

	resp, err = n.c.SimulateTransaction(models.SimulateRequest{TxnGroups: []models.SimulateRequestTransactionGroup{{Txns: []types.SignedTxn{good}}}}).Do(n.ctx)
	if err != nil || resp.TxnGroups[0].FailureMessage != "" || len(resp.TxnGroups[0].TxnResults) != 1 ||
		resp.TxnGroups[0].TxnResults[0].TxnResult.Transaction.Txn.AssetAmount != 60 {
		t.Fatalf("simulate good: %+v, %v", resp, err)
	}
	// Nothing was committed: same round, same holdings, and the simulated
	// transaction can still be sent.
	if got, _ := n.usdc(b.Address); got != 0 || n.dev.Round() != round {
		t.Fatalf("simulation committed: holding %d, round %d", got, n.dev.Round())
	}
	n.mustSend(msgpack.Encode(good))
	if got, _ := n.usdc(b.Address); got != 60 {
		t.Fatalf("after send: %d", got)
	}
	// A duplicate is reported by simulation too; an unsigned transaction
	// only with allow-empty-signatures.
	resp, err = n.c.SimulateTransaction(models.SimulateRequest{TxnGroups: []models.SimulateRequestTransactionGroup{{Txns: []types.SignedTxn{good}}}}).Do(n.ctx)
	if err != nil || !strings.Contains(resp.TxnGroups[0].FailureMessage, "already in ledger") {
		t.Fatalf("simulate duplicate: %+v, %v", resp, err)
	}
	unsigned := types.SignedTxn{Txn: n.usdcXfer(a.Address, b.Address, 1, "")}
	resp, err = n.c.SimulateTransaction(models.SimulateRequest{TxnGroups: []models.SimulateRequestTransactionGroup{{Txns: []types.SignedTxn{unsigned}}}}).Do(n.ctx)
	if err != nil || !strings.Contains(resp.TxnGroups[0].FailureMessage, "no sig") {
		t.Fatalf("simulate unsigned: %+v, %v", resp, err)
	}
	resp, err = n.c.SimulateTransaction(models.SimulateRequest{AllowEmptySignatures: true, TxnGroups: []models.SimulateRequestTransactionGroup{{Txns: []types.SignedTxn{unsigned}}}}).Do(n.ctx)
	if err != nil || resp.TxnGroups[0].FailureMessage != "" {
		t.Fatalf("simulate unsigned, allowed: %+v, %v", resp, err)
	}
}

func TestWaitForBlock(t *testing.T) {
	// The wait's timeout is long against what "at once" means here, so
	// that a busy machine cannot blur the two.
	const wait = 3 * time.Second
	n := start(t, devnet.Config{WaitTimeout: wait})
	r := n.dev.Round()
	done := make(chan models.NodeStatus, 1)
	go func() {
		st, err := n.c.StatusAfterBlock(r).Do(n.ctx)
		if err != nil {
			t.Errorf("wait: %v", err)
		}
		done <- st
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case st := <-done:
		t.Fatalf("returned before a new round: %+v", st)
	default:
	}
	if err := n.dev.AdvanceRounds(1); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-done:
		if st.LastRound != r+1 {
			t.Fatalf("after wait: round %d, want %d", st.LastRound, r+1)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait-for-block did not return after the round advanced")
	}
	// Without a new round it returns the current status after the timeout.
	begin := time.Now()
	st, err := n.c.StatusAfterBlock(r + 1).Do(n.ctx)
	if err != nil || st.LastRound != r+1 || time.Since(begin) < wait-50*time.Millisecond {
		t.Fatalf("timeout wait: %+v, %v after %v", st, err, time.Since(begin))
	}
	// A round already past answers at once.
	begin = time.Now()
	if st, err := n.c.StatusAfterBlock(0).Do(n.ctx); err != nil || st.LastRound != r+1 || time.Since(begin) > wait/2 {
		t.Fatalf("past round: %+v, %v", st, err)
	}
	// Close wakes a waiter.
	go func() {
		time.Sleep(50 * time.Millisecond)
		n.dev.Close()
	}()
	begin = time.Now()
	_, _ = n.c.StatusAfterBlock(r + 1).Do(context.Background())
	if time.Since(begin) > wait/2 {
		t.Fatalf("Close left a waiter blocked for %v", time.Since(begin))
	}
}

func TestBlockInterval(t *testing.T) {
	n := start(t, devnet.Config{BlockInterval: 20 * time.Millisecond})
	r := n.dev.Round()
	st, err := n.c.StatusAfterBlock(r + 2).Do(n.ctx)
	if err != nil || st.LastRound < r+3 {
		t.Fatalf("timer rounds: %+v, %v", st, err)
	}
}

func TestFundEndpointAndInfo(t *testing.T) {
	n := start(t, devnet.Config{})
	c := &devnet.Client{URL: n.dev.URL(), Token: n.dev.Token()}
	info, err := c.Info(n.ctx)
	if err != nil {
		t.Fatal(err)
	}
	nw, err := info.X402Network()
	if err != nil || nw != n.dev.NetworkInfo() || info.Network != n.dev.Network() || info.NetworkShort != nw.CAIP2Short() ||
		info.USDC != n.dev.USDC() || info.Faucet != n.dev.Faucet().Address.String() || info.Name != devnet.NetworkName {
		t.Fatalf("info %+v (%+v, %v)", info, nw, err)
	}
	a := crypto.GenerateAccount()
	resp, err := c.Fund(n.ctx, a.Address, 3_000_000, 0)
	if err != nil || resp.TxID == "" || resp.Round != n.dev.Round() {
		t.Fatalf("fund: %+v, %v", resp, err)
	}
	n.OptIn(a)
	if _, err := c.Fund(n.ctx, a.Address, 0, 42); err != nil {
		t.Fatal(err)
	}
	if got, _ := n.usdc(a.Address); got != 42 || n.Balance(a.Address).MicroAlgos != 3_000_000-devnet.MinTxnFee {
		t.Fatalf("funded account: %d USDC, %d µAlgo", got, n.Balance(a.Address).MicroAlgos)
	}
	if _, err := c.Fund(n.ctx, crypto.GenerateAccount().Address, 0, 1); err == nil || !strings.Contains(err.Error(), "must optin") {
		t.Fatalf("USDC to an account not opted in: %v", err)
	}
	if _, err := (&devnet.Client{URL: n.dev.URL(), Token: "x"}).Info(n.ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, n.dev.URL()+"/devnet/fund", strings.NewReader(`{"address":"nope","microalgos":1}`))
	req.Header.Set(devnet.TokenHeader, n.dev.Token())
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad address: %d", r.StatusCode)
	}
}

func TestImpersonateTestnet(t *testing.T) {
	n := start(t, devnet.Config{Impersonate: x402.AlgorandTestnet})
	if n.dev.USDC() != x402.AlgorandTestnet.USDC || n.dev.Network() != x402.AlgorandTestnet.CAIP2() ||
		n.dev.GenesisID() != "testnet-v1.0" || n.dev.NetworkInfo().ExplorerTxURL != "" {
		t.Fatalf("impersonated: %+v", n.dev.NetworkInfo())
	}
	p := n.Params()
	if p.GenesisID != "testnet-v1.0" || string(p.GenesisHash) != string(x402.AlgorandTestnet.GenesisHash[:]) {
		t.Fatalf("params %+v", p)
	}
	a := n.NewAccount(1_000_000, true, 7)
	if got, _ := n.usdc(a.Address); got != 7 {
		t.Fatalf("holds %d", got)
	}
}

// Many payers at once: every payment lands exactly once and the USDC
// supply is conserved.
func TestConcurrentPayments(t *testing.T) {
	n := start(t, devnet.Config{})
	recv := n.NewAccount(1_000_000, true, 0)
	const payers, each = 8, 10
	accts := make([]crypto.Account, payers)
	for i := range accts {
		accts[i] = n.NewAccount(1_000_000, true, 1_000)
	}
	var wg sync.WaitGroup
	for _, a := range accts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := algod.MakeClient(n.dev.URL(), n.dev.Token())
			for i := 0; i < each; i++ {
				p, err := c.SuggestedParams().Do(n.ctx)
				if err != nil {
					t.Error(err)
					return
				}
				txn, _ := transaction.MakeAssetTransferTxn(a.Address.String(), recv.Address.String(), 3, nil, p, "", n.dev.USDC())
				_, raw, _ := crypto.SignTransaction(a.PrivateKey, txn)
				if _, err := c.SendRawTransaction(raw).Do(n.ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got, _ := n.usdc(recv.Address); got != payers*each*3 {
		t.Fatalf("receiver holds %d, want %d", got, payers*each*3)
	}
	for _, a := range accts {
		if got, _ := n.usdc(a.Address); got != 1_000-each*3 {
			t.Fatalf("payer holds %d", got)
		}
	}
}

func BenchmarkSendPayment(b *testing.B) {
	ctx := context.Background()
	dev, err := devnet.Start(ctx, devnet.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	c, _ := algod.MakeClient(dev.URL(), dev.Token())
	a := crypto.GenerateAccount()
	if err := dev.Fund(ctx, a.Address, 1_000_000_000, 0); err != nil {
		b.Fatal(err)
	}
	to := crypto.GenerateAccount().Address.String()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := c.SuggestedParams().Do(ctx)
		if err != nil {
			b.Fatal(err)
		}
		txn, _ := transaction.MakePaymentTxn(a.Address.String(), to, 100_000+uint64(i), nil, "", p)
		_, raw, _ := crypto.SignTransaction(a.PrivateKey, txn)
		txid, err := c.SendRawTransaction(raw).Do(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := transaction.WaitForConfirmation(c, txid, 2, ctx); err != nil {
			b.Fatal(err)
		}
	}
}

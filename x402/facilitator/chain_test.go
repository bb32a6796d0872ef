package facilitator

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/transaction"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

const price = 1000 // 0.001 USDC

// chain is a devnet with a payer (holding USDC), a receiver (opted in) and a
// fee payer, and a Builtin facilitator for it.
type chain struct {
	*devnettest.Parties
	t       testing.TB
	ctx     context.Context
	network x402.Network
	builtin *Builtin
}

func newChain(t testing.TB) *chain {
	t.Helper()
	return newChainOn(t, devnet.Config{})
}

// newChainOn is newChain on a devnet configured by cfg.
func newChainOn(t testing.TB, cfg devnet.Config) *chain {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	p := devnettest.New(t, devnettest.Options{Devnet: cfg, FeePayerMicroAlgos: 1_000_000, PayerUSDC: 10 * price})
	dev := p.Dev
	c := &chain{
		Parties: p, t: t, ctx: ctx,
		network: x402.Network{Name: "algorand-devnet", GenesisHash: dev.GenesisHash(), GenesisID: dev.GenesisID(), USDC: dev.USDC()},
	}
	if c.network.CAIP2() != dev.Network() {
		t.Fatalf("devnet network %q, derived %q", dev.Network(), c.network.CAIP2())
	}
	c.builtin = c.newBuiltin(true)
	return c
}

func (c *chain) newBuiltin(withFeePayer bool) *Builtin {
	cfg := BuiltinConfig{Ledger: c.Algod, Network: c.network}
	if withFeePayer {
		cfg.FeePayerMnemonic = devnettest.Mnemonic(c.t, c.FeePayer)
	}
	b, err := NewBuiltin(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// requirementV2 offers price on the given network spelling, with the fee
// payer when withFeePayer.
func (c *chain) requirementV2(network string, amount uint64, withFeePayer bool) x402.Requirement {
	r := &x402.PaymentRequirements{
		Scheme: x402.SchemeExact, Network: network, Asset: strconv.FormatUint(c.network.USDC, 10),
		Amount: strconv.FormatUint(amount, 10), PayTo: c.PayTo.Address.String(), MaxTimeoutSeconds: 60,
	}
	if withFeePayer {
		r.Extra = json.RawMessage(`{"feePayer":"` + c.FeePayer.Address.String() + `"}`)
	}
	return x402.Requirement{V2: r}
}

func (c *chain) requirementV1(amount uint64) x402.Requirement {
	return x402.Requirement{V1: &x402.PaymentRequirementsV1{
		Scheme: x402.SchemeExact, Network: "algorand-devnet", MaxAmountRequired: strconv.FormatUint(amount, 10),
		Resource: "http://127.0.0.1/x", PayTo: c.PayTo.Address.String(), MaxTimeoutSeconds: 60,
		Asset: strconv.FormatUint(c.network.USDC, 10),
	}}
}

// pay builds the payer's payment for r with the signer.
func (c *chain) pay(signer avm.Signer, r x402.Requirement) x402.Payment {
	c.t.Helper()
	req, err := avm.ParseRequirement(r.Terms())
	if err != nil {
		c.t.Fatal(err)
	}
	payload, err := avm.BuildPayment(c.ctx, c.Params(), signer, req)
	if err != nil {
		c.t.Fatal(err)
	}
	p, err := avm.NewPayment(r, &x402.ResourceInfo{URL: "http://127.0.0.1/x"}, payload)
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *chain) expectInvalid(f Facilitator, p x402.Payment, r x402.Requirement, reason string) {
	c.t.Helper()
	v, err := f.Verify(c.ctx, p, r)
	if err != nil {
		c.t.Fatalf("verify: %v", err)
	}
	if v.IsValid || v.InvalidReason != reason {
		c.t.Fatalf("verify = %+v, want invalid %q", v, reason)
	}
}

func (c *chain) expectSettled(f Facilitator, p x402.Payment, r x402.Requirement) x402.SettleResponse {
	c.t.Helper()
	before := c.USDC(c.PayTo.Address)
	v, err := f.Verify(c.ctx, p, r)
	if err != nil || !v.IsValid || v.Payer != c.Payer.Address.String() {
		c.t.Fatalf("verify = %+v, %v", v, err)
	}
	s, err := f.Settle(c.ctx, p, r)
	if err != nil || !s.Success {
		c.t.Fatalf("settle = %+v, %v", s, err)
	}
	var payload avm.ExactPayload
	_ = json.Unmarshal(p.SchemePayload(), &payload)
	txid, _ := payload.PaymentTxID()
	if s.Transaction != txid || s.Network != r.Terms().Network || s.Payer != c.Payer.Address.String() {
		c.t.Fatalf("settle = %+v, want transaction %s on %s", s, txid, r.Terms().Network)
	}
	amount, _ := strconv.ParseUint(r.Terms().Amount, 10, 64)
	if got := c.USDC(c.PayTo.Address) - before; got != amount {
		c.t.Fatalf("receiver got %d, want %d", got, amount)
	}
	return s
}

func TestChainSettleV2WithFeePayerBothForms(t *testing.T) {
	c := newChain(t)
	for _, network := range []string{c.network.CAIP2(), c.network.CAIP2Short()} {
		r := c.requirementV2(network, price, true)
		p := c.pay(avm.AccountSigner(c.Payer), r)
		if len(p.V2.Payload) == 0 {
			t.Fatal("no payload")
		}
		c.expectSettled(c.builtin, p, r)

		// Replays are refused by verify and settle, before reaching the chain.
		c.expectInvalid(c.builtin, p, r, avm.ReasonDuplicateSettlement)
		s, err := c.builtin.Settle(c.ctx, p, r)
		if err != nil || s.Success || s.ErrorReason != avm.ReasonDuplicateSettlement {
			t.Fatalf("replayed settle = %+v, %v", s, err)
		}
	}
}

func TestChainSettleV1WithoutFeePayer(t *testing.T) {
	c := newChain(t)
	r := c.requirementV1(price)
	p := c.pay(avm.AccountSigner(c.Payer), r)
	if p.V1 == nil || p.V1.Network != "algorand-devnet" {
		t.Fatalf("payment %+v", p)
	}
	c.expectSettled(c.builtin, p, r)
	// A fresh facilitator (empty record) still cannot settle it twice: the
	// chain refuses the duplicate.
	other := c.newBuiltin(true)
	s, err := other.Settle(c.ctx, p, r)
	if err != nil || s.Success {
		t.Fatalf("second settlement on the chain = %+v, %v", s, err)
	}
}

func TestChainConcurrentSettleOnce(t *testing.T) {
	c := newChain(t)
	r := c.requirementV2(c.network.CAIP2(), price, true)
	p := c.pay(avm.AccountSigner(c.Payer), r)
	before := c.USDC(c.PayTo.Address)
	const n = 8
	var wg sync.WaitGroup
	results := make([]x402.SettleResponse, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = c.builtin.Settle(c.ctx, p, r)
		}()
	}
	wg.Wait()
	ok := 0
	for _, s := range results {
		if s.Success {
			ok++
		} else if s.ErrorReason != avm.ReasonDuplicateSettlement && s.ErrorReason != avm.ReasonSettlementFailed {
			t.Errorf("unexpected failure %+v", s)
		}
	}
	if ok != 1 {
		t.Fatalf("%d settlements succeeded, want exactly 1", ok)
	}
	if got := c.USDC(c.PayTo.Address) - before; got != price {
		t.Fatalf("receiver got %d", got)
	}
}

func TestChainBalancesAndOptIns(t *testing.T) {
	c := newChain(t)
	// More than the payer holds.
	r := c.requirementV2(c.network.CAIP2(), 100*price, true)
	c.expectInvalid(c.builtin, c.pay(avm.AccountSigner(c.Payer), r), r, avm.ReasonInsufficientFunds)

	// Without the balance check, simulation catches it.
	noCheck, err := NewBuiltin(BuiltinConfig{Ledger: c.Algod, Network: c.network, FeePayerMnemonic: devnettest.Mnemonic(t, c.FeePayer), SkipBalanceCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	c.expectInvalid(noCheck, c.pay(avm.AccountSigner(c.Payer), r), r, avm.ReasonSimulationFailed)

	// A receiver that is not opted in.
	stranger := crypto.GenerateAccount()
	c.Fund(stranger.Address, 1_000_000, 0)
	r = c.requirementV2(c.network.CAIP2(), price, true)
	r.V2.PayTo = stranger.Address.String()
	c.expectInvalid(c.builtin, c.pay(avm.AccountSigner(c.Payer), r), r, avm.ReasonReceiverNotOptedIn)

	// A payer that is not opted in.
	r = c.requirementV2(c.network.CAIP2(), price, true)
	c.expectInvalid(c.builtin, c.pay(avm.AccountSigner(stranger), r), r, avm.ReasonInsufficientFunds)
}

func TestChainRounds(t *testing.T) {
	c := newChain(t)
	r := c.requirementV2(c.network.CAIP2(), price, true) // 60 s: a 20-round window
	p := c.pay(avm.AccountSigner(c.Payer), r)
	if err := c.Dev.AdvanceRounds(25); err != nil {
		t.Fatal(err)
	}
	c.expectInvalid(c.builtin, p, r, avm.ReasonPaymentExpired)

	// A payment not valid before a future round.
	req, _ := avm.ParseRequirement(r.Terms())
	params := c.Params()
	params.FirstRoundValid += 50
	payload, err := avm.BuildPayment(c.ctx, params, avm.AccountSigner(c.Payer), req)
	if err != nil {
		t.Fatal(err)
	}
	future, _ := avm.NewPayment(r, nil, payload)
	c.expectInvalid(c.builtin, future, r, avm.ReasonValidityWindow)
}

func TestChainRekeyedPayer(t *testing.T) {
	c := newChain(t)
	auth := crypto.GenerateAccount()
	rekey, err := transaction.MakePaymentTxn(c.Payer.Address.String(), c.Payer.Address.String(), 0, nil, "", c.Params())
	if err != nil {
		t.Fatal(err)
	}
	if err := rekey.Rekey(auth.Address.String()); err != nil {
		t.Fatal(err)
	}
	c.Submit(avm.AccountSigner(c.Payer), rekey)

	r := c.requirementV2(c.network.CAIP2(), price, true)
	// The payer's own key no longer controls the account.
	c.expectInvalid(c.builtin, c.pay(avm.AccountSigner(c.Payer), r), r, avm.ReasonInvalidSignature)
	// A key that is neither.
	c.expectInvalid(c.builtin, c.pay(avm.KeySigner{Sender: c.Payer.Address, Key: crypto.GenerateAccount().PrivateKey}, r), r, avm.ReasonInvalidSignature)
	// The auth key is accepted and settles.
	c.expectSettled(c.builtin, c.pay(avm.KeySigner{Sender: c.Payer.Address, Key: auth.PrivateKey}, r), r)
}

func TestChainFeePayerNotOurs(t *testing.T) {
	c := newChain(t)
	noFeePayer := c.newBuiltin(false)
	r := c.requirementV2(c.network.CAIP2(), price, true)
	c.expectInvalid(noFeePayer, c.pay(avm.AccountSigner(c.Payer), r), r, avm.ReasonUnsignedNonFacilitator)
	// The same facilitator settles a self-paid payment.
	r = c.requirementV2(c.network.CAIP2Short(), price, false)
	c.expectSettled(noFeePayer, c.pay(avm.AccountSigner(c.Payer), r), r)
}

func TestChainNetworkAndEchoMismatch(t *testing.T) {
	c := newChain(t)
	r := c.requirementV2(c.network.CAIP2(), price, true)
	p := c.pay(avm.AccountSigner(c.Payer), r)
	// Requirements for another network.
	wrong := c.requirementV2(x402.AlgorandTestnet.CAIP2(), price, true)
	c.expectInvalid(c.builtin, p, wrong, avm.ReasonNetworkMismatch)
	// accepted that differs from the requirements.
	cheaper := c.requirementV2(c.network.CAIP2(), price-1, true)
	c.expectInvalid(c.builtin, p, cheaper, avm.ReasonPayload)
}

// A Remote client talks to a Handler serving the Builtin over real HTTP.
func TestChainRemoteThroughHandler(t *testing.T) {
	c := newChain(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(NewHandler(c.builtin))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	remote, err := NewRemote(RemoteConfig{URL: srv.URL + "/facilitator"})
	if err != nil {
		t.Fatal(err)
	}
	fp, err := remote.FeePayer(c.ctx, 2, x402.SchemeExact, c.network.CAIP2Short())
	if err != nil || fp != c.FeePayer.Address.String() {
		t.Fatalf("fee payer %q, %v", fp, err)
	}
	v2 := c.requirementV2(c.network.CAIP2(), price, true)
	c.expectSettled(remote, c.pay(avm.AccountSigner(c.Payer), v2), v2)
	v1 := c.requirementV1(price)
	p1 := c.pay(avm.AccountSigner(c.Payer), v1)
	c.expectSettled(remote, p1, v1)
	c.expectInvalid(remote, p1, v1, avm.ReasonDuplicateSettlement)
	wrongAmount := c.requirementV1(price + 1)
	c.expectInvalid(remote, c.pay(avm.AccountSigner(c.Payer), v1), wrongAmount, avm.ReasonAmountMismatch)
	var _ http.Handler = NewHandler(remote) // a facilitator for others, in front of a remote one
}

package facilitator

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// lookups counts the devnet's pending lookups of one transaction and
// signals once there have been enough.
type lookups struct {
	mu      sync.Mutex
	txid    string
	n, want int
	reached chan struct{}
}

func (l *lookups) seen(txid string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if txid != l.txid || l.reached == nil {
		return
	}
	if l.n++; l.n == l.want {
		close(l.reached)
	}
}

// watch starts counting the lookups of txid; the channel closes at want.
func (l *lookups) watch(txid string, want int) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.txid, l.n, l.want, l.reached = txid, 0, want, make(chan struct{})
	return l.reached
}

// confirmWaitRounds is the facilitator's confirmation wait in these tests;
// within it the facilitator looks the payment up at most 1 + rounds times.
const confirmWaitRounds = 2

// slowSettlement verifies a fee-paid payment, holds the devnet's pool and
// starts settling it. It returns once the facilitator has looked the
// payment up more often than its confirmation wait allows, which shows it
// is still waiting past that wait; a settlement that answers before that
// fails the test.
func slowSettlement(t *testing.T, ctx context.Context) (*chain, *avm.Verified, <-chan x402.SettleResponse) {
	t.Helper()
	l := &lookups{}
	c := newChainOn(t, devnet.Config{WaitTimeout: 20 * time.Millisecond, OnPendingLookup: l.seen})
	b, err := NewBuiltin(BuiltinConfig{Ledger: c.Algod, Network: c.network, FeePayerMnemonic: devnettest.Mnemonic(t, c.FeePayer), WaitRounds: confirmWaitRounds})
	if err != nil {
		t.Fatal(err)
	}
	r := c.requirementV2(c.network.CAIP2(), price, true)
	p := c.pay(avm.AccountSigner(c.Payer), r)
	if v, err := b.Verify(c.ctx, p, r); err != nil || !v.IsValid {
		t.Fatalf("verify = %+v, %v", v, err)
	}
	var payload avm.ExactPayload
	if err := json.Unmarshal(p.SchemePayload(), &payload); err != nil {
		t.Fatal(err)
	}
	members, err := avm.DecodeGroup(payload)
	if err != nil {
		t.Fatal(err)
	}
	v := &avm.Verified{Members: members, LastValid: uint64(members[1].Txn.Txn.LastValid)}
	if v.PaymentTxID, err = payload.PaymentTxID(); err != nil {
		t.Fatal(err)
	}
	waiting := l.watch(v.PaymentTxID, 1+confirmWaitRounds+3)
	c.Dev.HoldGroups(true)
	done := make(chan x402.SettleResponse, 1)
	go func() {
		s, err := b.Settle(ctx, p, r)
		if err != nil {
			s = x402.SettleResponse{ErrorReason: "error", ErrorMessage: err.Error()}
		}
		done <- s
	}()
	select {
	case <-waiting:
	case s := <-done:
		t.Fatalf("the settlement answered %+v while the group could still commit", s)
	case <-c.ctx.Done():
		t.Fatal("the facilitator stopped looking the payment up")
	}
	if c.Dev.Held() != 1 {
		t.Fatalf("%d groups held, want the payment's", c.Dev.Held())
	}
	return c, v, done
}

// TestSettleWaitsPastConfirmationTimeout: a group that commits after the
// confirmation wait is a successful settlement, not a failed one.
func TestSettleWaitsPastConfirmationTimeout(t *testing.T) {
	c, v, done := slowSettlement(t, t.Context())
	before := c.USDC(c.PayTo.Address)
	c.Dev.HoldGroups(false)
	if err := c.Dev.ReleaseHeld(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-done:
		if !s.Success || s.Transaction != v.PaymentTxID {
			t.Fatalf("settle = %+v, want success with %s", s, v.PaymentTxID)
		}
	case <-c.ctx.Done():
		t.Fatal("no answer after the group committed")
	}
	if got := c.USDC(c.PayTo.Address) - before; got != price {
		t.Fatalf("receiver got %d, want %d", got, price)
	}
}

// TestSettleFailsOnlyPastLastValid: a group that never commits is a failed
// settlement once its last valid round has passed, not before.
func TestSettleFailsOnlyPastLastValid(t *testing.T) {
	c, v, done := slowSettlement(t, t.Context())
	c.Dev.DropHeld()
	c.Dev.HoldGroups(false)
	// Still waiting: the group could commit until its last valid round.
	select {
	case s := <-done:
		t.Fatalf("settle answered %+v before the last valid round passed", s)
	default:
	}
	if err := c.Dev.AdvanceRounds(v.LastValid - c.Dev.Round() + 1); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-done:
		if s.Success || s.ErrorReason != avm.ReasonConfirmationFailed || !strings.Contains(s.ErrorMessage, "last valid round") {
			t.Fatalf("settle = %+v, want a confirmation failure past the last valid round", s)
		}
	case <-c.ctx.Done():
		t.Fatal("no answer after the last valid round passed")
	}
}

// TestSettleWaitIsBoundedByContext: the wait ends with the context.
func TestSettleWaitIsBoundedByContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c, _, done := slowSettlement(t, ctx)
	cancel()
	select {
	case s := <-done:
		if s.Success || s.ErrorReason != avm.ReasonConfirmationFailed {
			t.Fatalf("settle = %+v, want a confirmation failure", s)
		}
	case <-c.ctx.Done():
		t.Fatal("the settlement outlived its context")
	}
}

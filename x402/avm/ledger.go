package avm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/algorand/go-algorand-sdk/v2/client/v2/algod"
	"github.com/algorand/go-algorand-sdk/v2/client/v2/common"
	"github.com/algorand/go-algorand-sdk/v2/client/v2/common/models"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
)

// Ledger is the view of the chain that online verification and settlement
// need. Algod implements it over algod's REST API.
type Ledger interface {
	// LastRound returns the latest committed round.
	LastRound(ctx context.Context) (uint64, error)
	// AuthAddr returns the address an account is rekeyed to, or the zero
	// address when it signs for itself.
	AuthAddr(ctx context.Context, addr types.Address) (types.Address, error)
	// AssetHolding returns an account's holding of an asset; OptedIn is false
	// when the account cannot hold it.
	AssetHolding(ctx context.Context, addr types.Address, asset uint64) (Holding, error)
	// Simulate evaluates a signed group without committing it; a group the
	// ledger would reject yields an error describing why.
	Simulate(ctx context.Context, group []types.SignedTxn) error
	// Submit sends a signed group to the network.
	Submit(ctx context.Context, group []types.SignedTxn) error
	// WaitConfirmed waits up to rounds rounds for txid to be committed and
	// returns its confirmed round; with rounds 0 it only looks it up. When
	// the rounds pass first, its error wraps ErrNotConfirmed.
	WaitConfirmed(ctx context.Context, txid string, rounds uint64) (uint64, error)
	// SuggestedParams returns the parameters for new transactions.
	SuggestedParams(ctx context.Context) (types.SuggestedParams, error)
}

// Holding is an account's position in one asset.
type Holding struct {
	OptedIn bool
	Amount  uint64
	Frozen  bool
}

// Algod is a Ledger backed by an algod node.
type Algod struct {
	// Client is the SDK client. An Algod made by NewAlgod or
	// NewAlgodWithTransport makes its per-payment calls (simulate, submit,
	// confirmation) itself, in msgpack, reading only the fields it needs;
	// one made as a literal uses Client for everything.
	Client *algod.Client
	// direct makes the per-payment calls; nil in a literal Algod.
	direct *directAlgod
}

var _ Ledger = (*Algod)(nil)

// NewAlgod returns a Ledger for the algod at url with the given API token.
func NewAlgod(url, token string) (*Algod, error) {
	return NewAlgodWithTransport(url, token, nil)
}

// NewAlgodWithTransport returns a Ledger for the algod at url with the
// given API token whose requests go through tr (http.DefaultTransport when
// nil). Give a transport that keeps enough idle connections for the
// payments settled at once.
func NewAlgodWithTransport(url, token string, tr http.RoundTripper) (*Algod, error) {
	var c *algod.Client
	var err error
	if tr == nil {
		c, err = algod.MakeClient(url, token)
	} else {
		c, err = algod.MakeClientWithTransport(url, token, nil, tr)
	}
	if err != nil {
		return nil, fmt.Errorf("avm: algod client: %w", err)
	}
	if tr == nil {
		tr = http.DefaultTransport
	}
	return &Algod{Client: c, direct: &directAlgod{base: strings.TrimRight(url, "/"), token: token, hc: &http.Client{Transport: tr}}}, nil
}

// LastRound implements Ledger.
func (a *Algod) LastRound(ctx context.Context) (uint64, error) {
	st, err := a.Client.Status().Do(ctx)
	if err != nil {
		return 0, fmt.Errorf("avm: algod status: %w", err)
	}
	return st.LastRound, nil
}

// AuthAddr implements Ledger.
func (a *Algod) AuthAddr(ctx context.Context, addr types.Address) (types.Address, error) {
	acct, err := a.Client.AccountInformation(addr.String()).Exclude([]string{"all"}).Do(ctx)
	if err != nil {
		return types.Address{}, fmt.Errorf("avm: algod account %s: %w", addr, err)
	}
	if acct.AuthAddr == "" {
		return types.Address{}, nil
	}
	auth, err := types.DecodeAddress(acct.AuthAddr)
	if err != nil {
		return types.Address{}, fmt.Errorf("avm: algod account %s: auth-addr: %w", addr, err)
	}
	return auth, nil
}

// AssetHolding implements Ledger.
func (a *Algod) AssetHolding(ctx context.Context, addr types.Address, asset uint64) (Holding, error) {
	if a.direct != nil {
		h, err := a.direct.holding(ctx, addr, asset)
		if err != nil {
			return Holding{}, fmt.Errorf("avm: algod holding of %d by %s: %w", asset, addr, err)
		}
		return h, nil
	}
	r, err := a.Client.AccountAssetInformation(addr.String(), asset).Do(ctx)
	if err != nil {
		var nf common.NotFound
		if errors.As(err, &nf) {
			return Holding{}, nil
		}
		return Holding{}, fmt.Errorf("avm: algod holding of %d by %s: %w", asset, addr, err)
	}
	return Holding{OptedIn: true, Amount: r.AssetHolding.Amount, Frozen: r.AssetHolding.IsFrozen}, nil
}

// Simulate implements Ledger.
func (a *Algod) Simulate(ctx context.Context, group []types.SignedTxn) error {
	if a.direct != nil {
		return a.direct.simulate(ctx, group)
	}
	resp, err := a.Client.SimulateTransaction(models.SimulateRequest{
		TxnGroups: []models.SimulateRequestTransactionGroup{{Txns: group}},
	}).Do(ctx)
	if err != nil {
		return fmt.Errorf("avm: algod simulate: %w", err)
	}
	if len(resp.TxnGroups) == 0 {
		return errors.New("avm: algod simulate: no group result")
	}
	if msg := resp.TxnGroups[0].FailureMessage; msg != "" {
		return fmt.Errorf("avm: simulation failed at %v: %s", resp.TxnGroups[0].FailedAt, msg)
	}
	return nil
}

// simulateEncoded simulates a group given with its msgpack, member by
// member, building the request around those bytes.
func (a *Algod) simulateEncoded(ctx context.Context, group []types.SignedTxn, wire [][]byte) error {
	if a.direct == nil {
		return a.Simulate(ctx, group)
	}
	return a.direct.simulateBody(ctx, simulateBody(wire))
}

// submitEncoded submits a group given with its msgpack, member by member.
func (a *Algod) submitEncoded(ctx context.Context, group []types.SignedTxn, wire [][]byte) error {
	if a.direct == nil {
		return a.Submit(ctx, group)
	}
	n := 0
	for _, w := range wire {
		n += len(w)
	}
	raw := make([]byte, 0, n)
	for _, w := range wire {
		raw = append(raw, w...)
	}
	return a.direct.submit(ctx, raw)
}

// Submit implements Ledger.
func (a *Algod) Submit(ctx context.Context, group []types.SignedTxn) error {
	var raw []byte
	for _, stx := range group {
		raw = append(raw, msgpack.Encode(stx)...)
	}
	if a.direct != nil {
		return a.direct.submit(ctx, raw)
	}
	if _, err := a.Client.SendRawTransaction(raw).Do(ctx); err != nil {
		return fmt.Errorf("avm: algod submit: %w", err)
	}
	return nil
}

// WaitConfirmed implements Ledger. It looks the transaction up first, since
// a node in dev mode (and often a fast network) has committed it by then,
// and only then reads the round and waits block by block. A pending-lookup
// error is not final (behind a load balancer another node may answer), a
// pool error is.
func (a *Algod) WaitConfirmed(ctx context.Context, txid string, rounds uint64) (uint64, error) {
	round, done, err := a.confirmed(ctx, txid)
	if done || err != nil {
		return round, err
	}
	st, err := a.Client.Status().Do(ctx)
	if err != nil {
		return 0, fmt.Errorf("avm: confirm %s: algod status: %w", txid, err)
	}
	for next := st.LastRound + 1; next <= st.LastRound+rounds; next++ {
		if _, err := a.Client.StatusAfterBlock(next).Do(ctx); err != nil {
			return 0, fmt.Errorf("avm: confirm %s: waiting for round %d: %w", txid, next, err)
		}
		if round, done, err := a.confirmed(ctx, txid); done || err != nil {
			return round, err
		}
	}
	return 0, fmt.Errorf("avm: confirm %s: not committed within %d rounds: %w", txid, rounds, ErrNotConfirmed)
}

// ErrNotConfirmed marks a WaitConfirmed that ran out of rounds: the
// transaction is not committed yet, but it may still be.
var ErrNotConfirmed = errors.New("not committed yet")

// confirmed looks a submitted transaction up: done with its round when it
// is committed, an error when the pool rejected it (or ctx ended).
func (a *Algod) confirmed(ctx context.Context, txid string) (uint64, bool, error) {
	var info pendingInfo
	var err error
	if a.direct != nil {
		info, err = a.direct.pending(ctx, txid)
	} else {
		var full models.PendingTransactionInfoResponse
		full, _, err = a.Client.PendingTransactionInformation(txid).Do(ctx)
		info = pendingInfo{ConfirmedRound: full.ConfirmedRound, PoolError: full.PoolError}
	}
	switch {
	case ctx.Err() != nil:
		return 0, false, fmt.Errorf("avm: confirm %s: %w", txid, ctx.Err())
	case err != nil:
		return 0, false, nil
	case info.PoolError != "":
		return 0, false, fmt.Errorf("avm: confirm %s: transaction rejected: %s", txid, info.PoolError)
	case info.ConfirmedRound > 0:
		return info.ConfirmedRound, true, nil
	}
	return 0, false, nil
}

// SuggestedParams implements Ledger.
func (a *Algod) SuggestedParams(ctx context.Context) (types.SuggestedParams, error) {
	p, err := a.Client.SuggestedParams().Do(ctx)
	if err != nil {
		return types.SuggestedParams{}, fmt.Errorf("avm: algod params: %w", err)
	}
	return p, nil
}

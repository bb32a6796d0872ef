package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// Per paid request, the work that no implementation can avoid: the payer's
// signature checked by the facilitator and twice more by the ledger (the
// fee payer's too), the fee payer's transaction signed, and the group
// decoded once.
const (
	floorVerifies = 3
	floorSigns    = 1
	floorDecodes  = 1
)

// floorWindow is how long each operation of the floor is timed.
const floorWindow = time.Second

// cryptoFloor is the cryptographic floor of a paid request on this
// machine, each operation timed on Parallel goroutines at once.
type cryptoFloor struct {
	// Parallel is how many goroutines ran each operation (GOMAXPROCS).
	Parallel int
	// VerifyPerS, SignPerS and DecodePerS are the aggregate rates of an
	// ed25519 verify, a transaction signature and a msgpack decode of a
	// two-transaction group.
	VerifyPerS, SignPerS, DecodePerS float64
}

// PerS is the paid requests per second the floor allows: one over the
// per-request cost of its operations, at the measured parallel rates.
func (f cryptoFloor) PerS() float64 {
	if f.VerifyPerS <= 0 || f.SignPerS <= 0 || f.DecodePerS <= 0 {
		return 0
	}
	cost := floorVerifies/f.VerifyPerS + floorSigns/f.SignPerS + floorDecodes/f.DecodePerS
	return 1 / cost
}

// floorGroup is a payment group like the ones the payment row sends: the
// fee payer's zero payment and the payer's USDC transfer, grouped.
type floorGroup struct {
	payerPub       ed25519.PublicKey
	feePayer       ed25519.PrivateKey
	feeTxn, payTxn types.Transaction
	// payMsg is what the payer signed ("TX" + msgpack of its transaction)
	// and paySig its signature.
	payMsg []byte
	paySig []byte
	// wire is the group as submitted to algod: both signed transactions,
	// msgpack-encoded one after the other.
	wire []byte
}

// newFloorGroup builds and signs a payment group with avm.BuildPayment,
// as the payment row's client does, with fresh keys.
func newFloorGroup(ctx context.Context) (*floorGroup, error) {
	payer, feePayer, payTo := crypto.GenerateAccount(), crypto.GenerateAccount(), crypto.GenerateAccount()
	genesis := make([]byte, 32)
	copy(genesis, "lualambda bench floor genesis...")
	params := types.SuggestedParams{
		Fee: 0, MinFee: 1000, FirstRoundValid: 1000, LastRoundValid: 2000,
		GenesisID: "bench-floor", GenesisHash: genesis, FlatFee: true,
	}
	req := avm.Requirement{
		Network: "bench-floor", Asset: 10458941, Amount: 1000, PayTo: payTo.Address,
		FeePayer: feePayer.Address, MaxTimeoutSeconds: 60,
	}
	payload, err := avm.BuildPayment(ctx, params, avm.AccountSigner(payer), req)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	members, err := avm.DecodeGroup(payload)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	if len(members) != 2 || payload.PaymentIndex != 1 {
		return nil, fmt.Errorf("floor: the payment group has %d members, paid at %d; want 2, at 1", len(members), payload.PaymentIndex)
	}
	g := &floorGroup{payerPub: payer.PublicKey, feePayer: feePayer.PrivateKey,
		feeTxn: members[0].Txn.Txn, payTxn: members[1].Txn.Txn}
	g.payMsg = append([]byte("TX"), msgpack.Encode(g.payTxn)...)
	g.paySig = append([]byte(nil), members[1].Txn.Sig[:]...)
	if !ed25519.Verify(payer.PublicKey, g.payMsg, g.paySig) {
		return nil, errors.New("floor: the payer's signature does not verify")
	}
	_, feeSigned, err := crypto.SignTransaction(g.feePayer, g.feeTxn)
	if err != nil {
		return nil, fmt.Errorf("floor: sign the fee payer's transaction: %w", err)
	}
	g.wire = append(feeSigned, msgpack.Encode(members[1].Txn)...)
	return g, nil
}

// verify checks the payer's signature, as the facilitator and the ledger do.
func (g *floorGroup) verify() error {
	if !ed25519.Verify(g.payerPub, g.payMsg, g.paySig) {
		return errors.New("the payer's signature does not verify")
	}
	return nil
}

// sign signs the fee payer's transaction, as the facilitator does.
func (g *floorGroup) sign() error {
	if _, _, err := crypto.SignTransaction(g.feePayer, g.feeTxn); err != nil {
		return fmt.Errorf("sign the fee payer's transaction: %w", err)
	}
	return nil
}

// decode decodes the submitted group, as the ledger does, and checks that
// both members came back grouped.
func (g *floorGroup) decode() error {
	dec := msgpack.NewDecoder(bytes.NewReader(g.wire))
	n := 0
	for ; ; n++ {
		var stx types.SignedTxn
		err := dec.Decode(&stx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("decode the group: %w", err)
		}
		if stx.Txn.Group == (types.Digest{}) || stx.Sig == (types.Signature{}) {
			return fmt.Errorf("decode the group: member %d is not a signed group member", n)
		}
	}
	if n != 2 {
		return fmt.Errorf("decode the group: %d members, want 2", n)
	}
	return nil
}

// measureFloor times each operation of the floor for window on
// GOMAXPROCS goroutines.
func measureFloor(ctx context.Context, window time.Duration) (cryptoFloor, error) {
	g, err := newFloorGroup(ctx)
	if err != nil {
		return cryptoFloor{}, err
	}
	f := cryptoFloor{Parallel: runtime.GOMAXPROCS(0)}
	for _, op := range []struct {
		name string
		fn   func() error
		rate *float64
	}{
		{"ed25519 verify", g.verify, &f.VerifyPerS},
		{"transaction signature", g.sign, &f.SignPerS},
		{"group decode", g.decode, &f.DecodePerS},
	} {
		r, err := parallelRate(ctx, f.Parallel, window, op.fn)
		if err != nil {
			return cryptoFloor{}, fmt.Errorf("floor: %s: %w", op.name, err)
		}
		*op.rate = r
	}
	if p := f.PerS(); p <= 0 || math.IsInf(p, 0) || math.IsNaN(p) {
		return cryptoFloor{}, fmt.Errorf("floor: rates %+v give no floor", f)
	}
	return f, nil
}

// parallelRate calls fn from n goroutines for window and returns the calls
// completed per second, all goroutines together. An error from fn stops it.
func parallelRate(ctx context.Context, n int, window time.Duration, fn func() error) (float64, error) {
	var calls atomic.Int64
	var firstErr error
	var once sync.Once
	var stop atomic.Bool
	start := time.Now()
	end := start.Add(window)
	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				// Check the clock every few calls: each is microseconds.
				for i := 0; i < 16; i++ {
					if err := fn(); err != nil {
						once.Do(func() { firstErr = err })
						stop.Store(true)
						return
					}
				}
				calls.Add(16)
				if time.Now().After(end) || ctx.Err() != nil {
					stop.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if calls.Load() == 0 || took <= 0 {
		return 0, errors.New("no call completed")
	}
	return float64(calls.Load()) / took.Seconds(), nil
}

package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

const (
	// payPrice is what the gated route charges, in USDC.
	payPrice = "0.001"
	// payBatch is how many payments are built before each timed stretch.
	// Every settled payment makes a devnet round, and a payment is valid
	// for at most 1000 rounds, so batches stay well under that.
	payBatch = 400
	// maxPayWindow caps the payment row's windows, each route's.
	maxPayWindow = 15 * time.Second
)

// paymentEnv is the payment row's chain: a devnet with a funded payer, a
// receiver and a fee payer for the built-in facilitator.
type paymentEnv struct {
	net      *devnet.Devnet
	algod    *avm.Algod
	payer    avm.KeySigner
	payTo    crypto.Account
	feePayer crypto.Account
}

func (p *paymentEnv) close() { p.net.Close() }

// x402payBuiltIn reports whether this build has the x402pay middleware.
func x402payBuiltIn() bool {
	_, err := caddy.GetModule("http.handlers.x402pay")
	return err == nil
}

// preparePayment starts the devnet and funds the accounts when the payment
// row is to run, and adds the gated route to the site.
func (r *run) preparePayment(ctx context.Context, spec *siteSpec) (*paymentEnv, error) {
	if r.o.skips(RowX402) || !x402payBuiltIn() {
		return nil, nil
	}
	fmt.Fprintln(r.o.Progress, "bench: starting the devnet and funding the payment accounts")
	pay, err := startPaymentEnv(ctx)
	if err != nil {
		return nil, err
	}
	words, err := mnemonic.FromPrivateKey(pay.feePayer.PrivateKey)
	if err != nil {
		pay.close()
		return nil, fmt.Errorf("fee payer mnemonic: %w", err)
	}
	spec.Payment = &paymentSite{
		PayTo: pay.payTo.Address.String(), AlgodURL: pay.net.URL(), AlgodToken: pay.net.Token(),
		FeePayer: words, Price: payPrice, Network: "devnet",
	}
	return pay, nil
}

// startPaymentEnv starts an in-process devnet, then makes and funds the
// payer (ALGO and USDC), the receiver and the fee payer, opting the first
// two in to USDC with real signed transactions.
func startPaymentEnv(ctx context.Context) (*paymentEnv, error) {
	net, err := devnet.Start(ctx, devnet.Config{})
	if err != nil {
		return nil, fmt.Errorf("start the devnet: %w", err)
	}
	p := &paymentEnv{net: net, payTo: crypto.GenerateAccount(), feePayer: crypto.GenerateAccount()}
	p.payer = avm.AccountSigner(crypto.GenerateAccount())
	if p.algod, err = avm.NewAlgod(net.URL(), net.Token()); err != nil {
		net.Close()
		return nil, fmt.Errorf("devnet algod client: %w", err)
	}
	steps := []func() error{
		func() error { return net.Fund(ctx, p.payer.Address(), 100_000_000, 0) },
		func() error { return net.Fund(ctx, p.payTo.Address, 10_000_000, 0) },
		func() error { return net.Fund(ctx, p.feePayer.Address, 10_000_000_000, 0) },
		func() error { return p.optIn(ctx, p.payer) },
		func() error { return p.optIn(ctx, avm.AccountSigner(p.payTo)) },
		// A million USDC: far more payments than any run makes.
		func() error { return net.Fund(ctx, p.payer.Address(), 0, 1_000_000*1_000_000) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			net.Close()
			return nil, fmt.Errorf("prepare payment accounts: %w", err)
		}
	}
	return p, nil
}

// optIn opts an account in to the devnet's USDC.
func (p *paymentEnv) optIn(ctx context.Context, s avm.KeySigner) error {
	params, err := p.algod.SuggestedParams(ctx)
	if err != nil {
		return fmt.Errorf("opt in: %w", err)
	}
	txn, err := transaction.MakeAssetAcceptanceTxn(s.Address().String(), []byte("bench opt-in"), params, p.net.USDC())
	if err != nil {
		return fmt.Errorf("opt in: %w", err)
	}
	stx, err := s.Sign(ctx, txn)
	if err != nil {
		return fmt.Errorf("opt in: %w", err)
	}
	if err := p.algod.Submit(ctx, []types.SignedTxn{stx}); err != nil {
		return fmt.Errorf("opt in: %w", err)
	}
	if _, err := p.algod.WaitConfirmed(ctx, crypto.GetTxID(txn), 10); err != nil {
		return fmt.Errorf("opt in: %w", err)
	}
	return nil
}

// paymentInProcess measures the payment row on a Caddy of its own in this
// process (used with --server, whose routes are not ours to gate).
func (r *run) paymentInProcess(ctx context.Context) error {
	if !x402payBuiltIn() {
		return errUnavailable{"the x402pay middleware is not built in"}
	}
	ip, err := newInProcess()
	if err != nil {
		return err
	}
	defer func() {
		if err := ip.stop(); err != nil {
			r.o.Logger.Warn("stopping the payment server", zap.Error(err))
		}
	}()
	spec := siteSpec{Accel: r.o.Accel, Image: r.im.Dir, Snapshots: true}
	pay, err := r.preparePayment(ctx, &spec)
	if err != nil {
		return err
	}
	defer pay.close()
	if err := ip.load(ctx, spec); err != nil {
		return err
	}
	return r.paymentOn(ctx, ip.URL(), pay)
}

// payment measures the payment row on the in-process server.
func (r *run) payment(ctx context.Context, pay *paymentEnv) error {
	if !x402payBuiltIn() {
		return errUnavailable{"the x402pay middleware is not built in"}
	}
	if pay == nil {
		return fmt.Errorf("the payment accounts were not prepared")
	}
	return r.paymentOn(ctx, r.ip.URL(), pay)
}

// paymentOn compares the throughput of base/paid, where each request
// carries a fresh payment built beforehand, with that of base/plain.
func (r *run) paymentOn(ctx context.Context, base string, pay *paymentEnv) error {
	window := min(r.o.Duration, maxPayWindow)
	hc := newInvoker(base, r.o.Concurrency).hc
	reqs, err := pay.requirement(ctx, hc, base+"/paid")
	if err != nil {
		return err
	}
	gated, paid, err := r.gatedRate(ctx, hc, base+"/paid", reqs, pay, window)
	if err != nil {
		return err
	}
	plain, err := r.plainRate(ctx, hc, base+"/plain", window)
	if err != nil {
		return err
	}
	r.rep.X402GatedPS, r.rep.X402PlainPS, r.rep.X402Payments = gated, plain, paid
	r.rep.X402Ratio = gated / plain
	// The floor is timed while the server is idle, on the cores it has.
	fmt.Fprintf(r.o.Progress, "bench: x402: timing the cryptographic floor (%s per operation)\n", floorWindow)
	floor, err := measureFloor(ctx, floorWindow)
	if err != nil {
		return err
	}
	r.rep.recordFloor(gated, floor)
	return nil
}

// recordFloor records the floor beside the paid rate.
func (rep *Report) recordFloor(paid float64, f cryptoFloor) {
	rep.X402PaidPS, rep.X402FloorPS = paid, f.PerS()
	rep.X402FloorPct = 100 * paid / rep.X402FloorPS
	rep.X402VerifyPS, rep.X402SignPS, rep.X402DecodePS = f.VerifyPerS, f.SignPerS, f.DecodePerS
	rep.X402FloorParallel = f.Parallel
}

// offer is the requirement a 402 answer offered, as the client must echo it.
type offer struct {
	required x402.PaymentRequired
	x402req  x402.Requirement
	avmReq   avm.Requirement
}

// requirement asks the gated route for its price: it must answer 402 with
// a v2 PAYMENT-REQUIRED header offering the exact scheme.
func (p *paymentEnv) requirement(ctx context.Context, hc *http.Client, url string) (offer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return offer{}, fmt.Errorf("ask for the price: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return offer{}, fmt.Errorf("ask for the price: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPaymentRequired {
		return offer{}, fmt.Errorf("the gated route answered %s without a payment, want 402", resp.Status)
	}
	var o offer
	if err := x402.DecodeHeader(resp.Header.Get(x402.HeaderPaymentRequired), &o.required); err != nil {
		return offer{}, fmt.Errorf("the gated route's %s header: %w", x402.HeaderPaymentRequired, err)
	}
	for i := range o.required.Accepts {
		a := o.required.Accepts[i]
		if a.Scheme != x402.SchemeExact {
			continue
		}
		o.x402req = x402.Requirement{V2: &a}
		if o.avmReq, err = avm.ParseRequirement(o.x402req.Terms()); err != nil {
			return offer{}, fmt.Errorf("the gated route's requirement: %w", err)
		}
		if o.avmReq.Asset != p.net.USDC() {
			return offer{}, fmt.Errorf("the gated route asks for asset %d, not the devnet's USDC %d", o.avmReq.Asset, p.net.USDC())
		}
		return o, nil
	}
	return offer{}, fmt.Errorf("the gated route offers no exact-scheme payment")
}

// buildPayments builds and signs n payments for the offer with fresh
// suggested params, each encoded for the PAYMENT-SIGNATURE header.
func (p *paymentEnv) buildPayments(ctx context.Context, o offer, n int) ([]string, error) {
	params, err := p.algod.SuggestedParams(ctx)
	if err != nil {
		return nil, fmt.Errorf("build payments: %w", err)
	}
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		payload, err := avm.BuildPayment(ctx, params, p.payer, o.avmReq)
		if err != nil {
			return nil, fmt.Errorf("build payment: %w", err)
		}
		payment, err := avm.NewPayment(o.x402req, &o.required.Resource, payload)
		if err != nil {
			return nil, fmt.Errorf("build payment: %w", err)
		}
		h, err := x402.EncodeHeader(payment)
		if err != nil {
			return nil, fmt.Errorf("encode payment: %w", err)
		}
		out = append(out, h)
	}
	return out, nil
}

// gatedRate sends paid requests for window, counting only the time spent
// sending: payments are built in batches between the timed stretches.
// Every request must be answered 200 with a settlement receipt.
func (r *run) gatedRate(ctx context.Context, hc *http.Client, url string, o offer, pay *paymentEnv, window time.Duration) (float64, int, error) {
	var spent time.Duration
	done := 0
	for spent < window {
		batch, err := pay.buildPayments(ctx, o, payBatch)
		if err != nil {
			return 0, 0, err
		}
		n, took, err := r.hammer(ctx, window-spent, len(batch), func(ctx context.Context, i int) error {
			return sendPaid(ctx, hc, url, batch[i])
		})
		spent += took
		done += n
		if err != nil {
			return 0, 0, fmt.Errorf("paid requests: %w", err)
		}
	}
	return float64(done) / spent.Seconds(), done, nil
}

// plainRate sends requests to the plain route for window.
func (r *run) plainRate(ctx context.Context, hc *http.Client, url string, window time.Duration) (float64, error) {
	n, took, err := r.hammer(ctx, window, -1, func(ctx context.Context, _ int) error {
		status, err := get(ctx, hc, url, nil)
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("plain route answered %d", status)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("plain requests: %w", err)
	}
	return float64(n) / took.Seconds(), nil
}

// hammer calls f from Concurrency workers until window has passed or limit
// calls were made (limit < 0: no limit). It returns how many completed, how
// long it took and the first error, which stops it.
func (r *run) hammer(ctx context.Context, window time.Duration, limit int, f func(context.Context, int) error) (int, time.Duration, error) {
	start := time.Now()
	end := start.Add(window)
	var next, completed atomic.Int64
	var firstErr error
	var once sync.Once
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < r.o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for hctx.Err() == nil && time.Now().Before(end) {
				i := int(next.Add(1) - 1)
				if limit >= 0 && i >= limit {
					return
				}
				if err := f(hctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				completed.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if firstErr != nil {
		return 0, took, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, took, err
	}
	return int(completed.Load()), took, nil
}

// sendPaid sends one paid request and checks it was served and settled.
func sendPaid(ctx context.Context, hc *http.Client, url, payment string) error {
	h := http.Header{}
	h.Set(x402.HeaderPaymentSignature, payment)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("paid request: %w", err)
	}
	req.Header = h
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("paid request: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("paid request: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("paid request answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if resp.Header.Get(x402.HeaderPaymentResponse) == "" {
		return fmt.Errorf("paid request answered 200 without a %s receipt", x402.HeaderPaymentResponse)
	}
	return nil
}

package x402pay

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// sale is one payment being sold for one answer, from its claim to its
// settlement, whatever carries it (HTTP headers or an MCP tool call).
type sale struct {
	h       *X402Pay
	payment x402.Payment
	req     x402.Requirement
	offer   *offer
	key     string
	payer   string
	gate    *payhook.Gate
	// used turns true once the payment has bought its answer: then it is
	// remembered as spent, charged or not, and buys nothing more.
	used, settled bool
	// settleResponse is the one settlement's answer, once tried.
	settleResponse *x402.SettleResponse
	releaseShared  func(used, settled bool) error
	leavePayer     func()
}

// refusal is why a payment buys nothing. status 402 means the client may pay
// again (msg is the reason, with the requirements); others are the server's
// failures, answered with an error.
type refusal struct {
	status     int
	msg        string
	payer      string
	retryAfter bool
}

// open matches the payment to the offer, claims it (in this process and in
// shared storage), verifies it and admits its payer. A nil refusal means the
// sale is open: close must be called.
func (h *X402Pay) open(ctx context.Context, payment x402.Payment, o *offer) (*sale, *refusal) {
	req, err := x402.MatchRequirement(payment, o.requirements(), nil)
	if err != nil {
		h.metrics.count(outcomeNoMatch)
		return nil, &refusal{status: http.StatusPaymentRequired, msg: "No matching payment requirements"}
	}
	key, err := h.paymentKey(ctx, payment)
	if err != nil {
		h.metrics.count(outcomeInvalid)
		return nil, &refusal{status: http.StatusPaymentRequired, msg: avm.ReasonOf(err) + ": " + err.Error()}
	}
	if reason := h.payments.claim(key); reason != "" {
		h.metrics.count(outcomeDuplicate)
		return nil, &refusal{status: http.StatusPaymentRequired, msg: avm.ReasonDuplicateSettlement + ": " + reason}
	}
	s := &sale{h: h, payment: payment, req: req, offer: o, key: key,
		releaseShared: func(used, settled bool) error { return nil }, leavePayer: func() {}}
	// The payment is free in this process; now across the nodes that share
	// this storage.
	if h.shared != nil {
		rel, reason, err := h.shared.claim(ctx, key)
		switch {
		case err != nil:
			h.payments.release(key, false, false)
			h.logger.Error("claiming a payment in storage", zap.Error(err))
			h.metrics.count(outcomeError)
			return nil, &refusal{status: http.StatusServiceUnavailable, msg: "the payment records are unavailable; nothing was paid"}
		case reason != "":
			h.payments.release(key, false, false)
			h.metrics.count(outcomeDuplicate)
			return nil, &refusal{status: http.StatusPaymentRequired, msg: avm.ReasonDuplicateSettlement + ": " + reason}
		}
		s.releaseShared = rel
	}
	if ref := s.verify(ctx); ref != nil {
		s.close()
		return nil, ref
	}
	return s, nil
}

// verify asks the facilitator whether the payment is good, then admits its
// payer.
func (s *sale) verify(ctx context.Context) *refusal {
	h := s.h
	verifyStart := time.Now()
	vr, err := h.fac.Verify(ctx, s.payment, s.req)
	h.metrics.observe(h.metrics.verifyHist(), verifyStart)
	if err != nil {
		h.logger.Error("verifying a payment", zap.Error(err))
		h.metrics.count(outcomeError)
		return &refusal{status: http.StatusBadGateway, msg: "the payment could not be verified: " + err.Error()}
	}
	if !vr.IsValid {
		msg := vr.InvalidReason
		if msg == "" {
			msg = "invalid payment"
		}
		if msg == avm.ReasonDuplicateSettlement {
			h.metrics.count(outcomeDuplicate)
		} else {
			h.metrics.count(outcomeInvalid)
		}
		return &refusal{status: http.StatusPaymentRequired, msg: msg, payer: vr.Payer}
	}
	s.payer = vr.Payer
	leave, why, err := h.payments.enterPayer(vr.Payer, s.offer.asset, s.offer.amount, func() (uint64, bool, error) {
		sp, ok := h.fac.(spendableReader)
		if !ok {
			return 0, false, nil
		}
		bal, err := sp.Spendable(ctx, vr.Payer, s.offer.asset)
		return bal, true, err
	})
	if err != nil {
		h.logger.Error("reading a payer's balance", zap.Error(err))
		h.metrics.count(outcomeError)
		return &refusal{status: http.StatusBadGateway, msg: "the payer's balance could not be read: " + err.Error()}
	}
	if why != "" {
		h.metrics.count(outcomeDuplicate)
		return &refusal{status: http.StatusTooManyRequests, msg: why, retryAfter: true}
	}
	s.leavePayer = leave
	return nil
}

// begin returns ctx with the sale's gate for the handler that serves the
// paid answer. From here on the payment is spent, whatever the answer.
func (s *sale) begin(ctx context.Context) context.Context {
	ctx, s.gate = payhook.WithGate(ctx)
	s.gate.SetPayer(s.payer)
	s.used = true
	return ctx
}

// settle settles the payment once; later calls return the first answer.
// ok reports whether the payment moved.
func (s *sale) settle(ctx context.Context) (x402.SettleResponse, bool) {
	if s.settleResponse != nil {
		return *s.settleResponse, s.settled
	}
	h := s.h
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	settleStart := time.Now()
	sr, err := h.fac.Settle(sctx, s.payment, s.req)
	h.metrics.observe(h.metrics.settleHist(), settleStart)
	if err != nil {
		sr = x402.SettleResponse{Success: false, ErrorReason: avm.ReasonUnexpectedSettle, ErrorMessage: err.Error(), Network: s.req.Terms().Network}
	}
	s.settleResponse = &sr
	if !sr.Success {
		h.logger.Warn("settlement failed", zap.String("reason", sr.ErrorReason), zap.String("message", sr.ErrorMessage), zap.String("txid", sr.Transaction))
		h.metrics.count(outcomeSettleError)
		return sr, false
	}
	s.settled = true
	o := s.offer
	h.metrics.count(outcomeSettled)
	h.metrics.settledAmount(o.v2[0].Network, o.asset, o.amount)
	h.recordPayment(ctx, sr, o)
	s.gate.Settled(s.receipt(sr))
	return sr, true
}

// receipt describes the settled payment for the handler.
func (s *sale) receipt(sr x402.SettleResponse) payhook.Receipt {
	o := s.offer
	return payhook.Receipt{
		TxID: sr.Transaction, Network: sr.Network, Payer: sr.Payer, Amount: strconv.FormatUint(o.amount, 10),
		Asset: strconv.FormatUint(o.asset, 10), ExplorerURL: o.network.ExplorerURL(sr.Transaction),
	}
}

// charged reports whether the handler's answer is to be paid for: what it
// said through the gate, or else a success status.
func (s *sale) charged(status int) (charge bool, reason string) {
	charge, decided, reason := s.gate.Decision()
	if !decided {
		charge = status >= 200 && status < 300
	}
	return charge, reason
}

// close releases the payment's claims, remembering it as spent when it
// was used.
func (s *sale) close() {
	if err := s.releaseShared(s.used, s.settled); err != nil {
		s.h.logger.Error("releasing a payment in storage", zap.Error(err))
	}
	s.leavePayer()
	s.h.payments.release(s.key, s.used, s.settled)
}

// seller sells answers for payments carried in requests' bodies (x402's MCP
// transport) with this handler's terms and facilitator.
type seller struct {
	h *X402Pay
}

// Required implements payhook.Seller.
func (s seller) Required(ctx context.Context, price string, resource x402.ResourceInfo, msg string) (x402.PaymentRequired, error) {
	o, err := s.offer(ctx, price, resource)
	if err != nil {
		return x402.PaymentRequired{}, err
	}
	s.h.metrics.count(outcomeRequired)
	return o.required(msg), nil
}

// offer builds the offer of price for resource.
func (s seller) offer(ctx context.Context, price string, resource x402.ResourceInfo) (*offer, error) {
	amount, err := x402.ParsePrice(price, s.h.decimals)
	if err != nil {
		return nil, fmt.Errorf("price %q: %w", price, err)
	}
	if amount == 0 {
		return nil, fmt.Errorf("price %q is free: nothing to sell", price)
	}
	o, err := s.h.terms(ctx, resource, amount)
	if err != nil {
		s.h.metrics.count(outcomeError)
		return nil, fmt.Errorf("building payment requirements: %w", err)
	}
	return o, nil
}

// Sell implements payhook.Seller.
func (s seller) Sell(ctx context.Context, payment json.RawMessage, price string, resource x402.ResourceInfo, serve func(context.Context) error) (payhook.Sale, error) {
	h := s.h
	o, err := s.offer(ctx, price, resource)
	if err != nil {
		return payhook.Sale{}, err
	}
	var p x402.Payment
	if err := p.UnmarshalJSON(payment); err != nil {
		h.metrics.count(outcomeBadHeader)
		pr := o.required("invalid payment: " + err.Error())
		return payhook.Sale{Refused: &pr}, nil
	}
	sl, ref := h.open(ctx, p, o)
	if ref != nil {
		if ref.status != http.StatusPaymentRequired {
			return payhook.Sale{}, fmt.Errorf("%s", ref.msg)
		}
		pr := o.required(ref.msg)
		return payhook.Sale{Refused: &pr}, nil
	}
	defer sl.close()
	sctx := sl.begin(ctx)
	sl.gate.SetCommitter(func(ctx context.Context) error {
		if _, ok := sl.settle(ctx); !ok {
			return errSettlementFailed
		}
		return nil
	})
	out := payhook.Sale{Served: true}
	if err := serve(sctx); err != nil {
		return out, err
	}
	charge, reason := sl.charged(http.StatusOK)
	if !charge {
		h.metrics.count(outcomeNotCharged)
		if c := h.logger.Check(zap.DebugLevel, "not charging"); c != nil {
			c.Write(zap.String("reason", reason))
		}
		return out, nil
	}
	out.Charged = true
	sr, ok := sl.settle(ctx)
	out.Settlement = &sr
	if !ok {
		pr := o.required("settlement failed: " + sr.ErrorReason)
		out.Refused = &pr
		return out, nil
	}
	rc := sl.receipt(sr)
	out.Receipt = &rc
	return out, nil
}

// paymentKeyer is a facilitator that names a payment itself, and may keep
// what it decoded for the verification that follows (the built-in one).
type paymentKeyer interface {
	PaymentKey(ctx context.Context, p x402.Payment) (string, error)
}

// paymentKey names a payment: through the facilitator when it can, so
// that the payment is decoded once per request.
func (h *X402Pay) paymentKey(ctx context.Context, p x402.Payment) (string, error) {
	if pk, ok := h.fac.(paymentKeyer); ok {
		return pk.PaymentKey(ctx, p)
	}
	return paymentKey(p)
}

// errSettlementFailed is Commit's answer when the payment did not settle.
var errSettlementFailed = fmt.Errorf("x402pay: the payment did not settle")

// required is the offer's v2 PaymentRequired with msg as its error.
func (o *offer) required(msg string) x402.PaymentRequired {
	return x402.PaymentRequired{X402Version: x402.Version2, Error: msg, Resource: o.resource, Accepts: o.v2, Extensions: o.extensions}
}

var _ payhook.Seller = seller{}

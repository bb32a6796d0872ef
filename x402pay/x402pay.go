package x402pay

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
	"github.com/lualambda/caddy-lualambda/x402/facilitator"
)

func init() {
	caddy.RegisterModule(X402Pay{})
}

// Defaults of X402Pay.
const (
	// DefaultMaxTimeout is the default maxTimeoutSeconds offered.
	DefaultMaxTimeout = 60 * time.Second
	// DefaultMaxBuffer is the default cap of a paid response, which is
	// held back until the payment settles.
	DefaultMaxBuffer = 16 << 20
	// settleTimeout bounds one settlement, which waits for the chain.
	settleTimeout = 2 * time.Minute
)

//go:embed paywall.html
var paywallHTML string

// X402Pay is a middleware that sells the responses of the handlers after
// it for x402 payments in USDC (or another asset) on Algorand.
//
// A request without a payment gets 402 Payment Required with the payment
// requirements twice: as an x402 v2 PAYMENT-REQUIRED header and as an x402
// v1 JSON body (browsers get an HTML page that explains how to pay). A
// request with a payment (PAYMENT-SIGNATURE for v2, X-PAYMENT for v1) is
// verified with the facilitator, the next handler runs with its response
// held back, and the payment is settled only when that handler succeeded
// (status below 400, and, for lualambda, when the run happened). Then the
// response goes out with PAYMENT-RESPONSE (v2) or X-PAYMENT-RESPONSE (v1).
// A failed settlement answers 402 with the reason, never the content. One
// payment buys one response, also when it is sent twice at once.
//
// Without a price, the next handler quotes one (lualambda: the price of the
// profile the request runs), so a price is written once; a request it
// quotes as free, or does not price (lualambda: discovery, status, output),
// passes without payment.
//
// Placeholders set after a settled payment, also added to the access log:
//
//	{http.x402.payer}    the paying address
//	{http.x402.amount}   the amount paid, in the asset's base units
//	{http.x402.asset}    the asset id
//	{http.x402.txid}     the payment transaction's id
//	{http.x402.network}  the network, as the client named it
type X402Pay struct {
	// PayTo is the Algorand address that receives the payments. It must
	// be opted in to the asset. Required.
	PayTo string `json:"pay_to,omitempty"`
	// Network is mainnet, testnet, devnet (the network the builtin
	// facilitator's algod runs) or an Algorand CAIP-2 id. Default: testnet.
	Network string `json:"network,omitempty"`
	// Asset is usdc (the network's USDC) or an ASA id. Default: usdc.
	Asset string `json:"asset,omitempty"`
	// Decimals is the asset's number of decimals, used to read Price.
	// Default: 6 (USDC).
	Decimals int `json:"decimals,omitempty"`
	// Price is the price as a decimal amount of the asset, e.g. "0.01" or
	// "$0.01". Placeholders are allowed (e.g. {http.vars.price} set by a
	// map). When empty, or when it resolves to empty, the next handler
	// quotes the price. "0" means free.
	Price string `json:"price,omitempty"`
	// Description describes the resource in the payment requirements.
	Description string `json:"description,omitempty"`
	// MimeType is the resource's media type in the payment requirements.
	MimeType string `json:"mime_type,omitempty"`
	// MaxTimeout is offered as maxTimeoutSeconds: how long a payment may
	// take. Default: 60s.
	MaxTimeout caddy.Duration `json:"max_timeout,omitempty"`
	// MaxBuffer caps the paid response, in bytes: it is held back until
	// the payment settles. A larger response is not sold (500, no
	// settlement). Default: 16 MiB.
	MaxBuffer int64 `json:"max_buffer,omitempty"`
	// PaymentRecords is where the payments in flight and spent are kept:
	// "storage" (Caddy's storage, so that every node sharing it sells a
	// payment once; one lock and one small write per paid request),
	// "process" (this process only), or "auto" (the default: storage,
	// unless Caddy's storage is the local file system, where a paid request
	// would pay for the lock and write with fsyncs and one node is the
	// usual case).
	PaymentRecords string `json:"payment_records,omitempty"`
	// Facilitator verifies and settles the payments. Required.
	Facilitator *FacilitatorConfig `json:"facilitator,omitempty"`

	spec       x402.NetworkSpec
	asset      uint64
	decimals   int
	payTo      types.Address
	fac        facilitator.Facilitator
	builtin    *sharedBuiltin
	builtinKey string
	remote     *facilitator.Remote
	payments   *paymentLocks
	shared     *sharedPayments
	metrics    *payMetrics
	paywall    *template.Template
	logger     *zap.Logger
	// extra remembers the requirements' extra made from the
	// facilitator's last supported-kind extra (set by Provision).
	extra *atomic.Pointer[offerExtra]
}

// offerExtra is the extra offered for a supported kind's extra.
type offerExtra struct {
	kind  string
	extra json.RawMessage
}

// FacilitatorConfig chooses the facilitator: a remote one by URL, or the
// built-in one.
type FacilitatorConfig struct {
	// URL is a remote facilitator's base URL; /verify, /settle and
	// /supported are appended.
	URL string `json:"url,omitempty"`
	// Headers are sent with every request to the remote facilitator
	// (e.g. an API key). Values may be {env.*} or {file.*} placeholders.
	Headers http.Header `json:"headers,omitempty"`
	// Builtin, when set, makes this server its own facilitator.
	Builtin *BuiltinFacilitator `json:"builtin,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (X402Pay) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.x402pay", New: func() caddy.Module { return new(X402Pay) }}
}

// Provision sets defaults and sets up the facilitator. It contacts no
// network: a devnet's genesis is read from algod on the first payment.
func (h *X402Pay) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.extra = new(atomic.Pointer[offerExtra])
	if h.MaxTimeout == 0 {
		h.MaxTimeout = caddy.Duration(DefaultMaxTimeout)
	}
	if h.MaxBuffer == 0 {
		h.MaxBuffer = DefaultMaxBuffer
	}
	h.decimals = h.Decimals
	if h.decimals == 0 {
		h.decimals = x402.USDCDecimals
	}
	var err error
	if h.spec, err = x402.ParseNetworkSpec(h.Network); err != nil {
		return err
	}
	payTo := strings.TrimSpace(caddy.NewReplacer().ReplaceAll(h.PayTo, ""))
	if payTo == "" {
		return errors.New("x402pay: pay_to is required")
	}
	if h.payTo, err = types.DecodeAddress(payTo); err != nil {
		return fmt.Errorf("x402pay: pay_to %q is not an Algorand address: %w", payTo, err)
	}
	switch h.Asset {
	case "", "usdc", "USDC":
	default:
		if h.asset, err = strconv.ParseUint(h.Asset, 10, 64); err != nil || h.asset == 0 {
			return fmt.Errorf("x402pay: asset %q: want usdc or an ASA id", h.Asset)
		}
	}
	if h.asset == 0 && !h.usesBuiltin() && !h.spec.Devnet && (h.spec.Network == nil || h.spec.Network.USDC == 0) {
		return fmt.Errorf("x402pay: no USDC id is known for network %s: set asset to its ASA id", h.spec.ID)
	}
	if h.Price != "" && !strings.Contains(h.Price, "{") {
		if _, err := x402.ParsePrice(h.Price, h.decimals); err != nil {
			return fmt.Errorf("x402pay: %w", err)
		}
	}
	var reg prometheus.Registerer
	if r := ctx.GetMetricsRegistry(); r != nil {
		reg = r
	}
	if h.metrics, err = newPayMetrics(reg); err != nil {
		return fmt.Errorf("x402pay: metrics: %w", err)
	}
	if h.paywall, err = template.New("paywall").Parse(paywallHTML); err != nil {
		return fmt.Errorf("x402pay: paywall template: %w", err)
	}
	if err := h.provisionFacilitator(); err != nil {
		return fmt.Errorf("x402pay: facilitator: %w", err)
	}
	v, _, err := paymentRecords.LoadOrNew(paymentLocksKey, func() (caddy.Destructor, error) { return newPaymentLocks(), nil })
	if err != nil {
		return err
	}
	h.payments = v.(*paymentLocks)
	if st := configStorage(ctx); st != nil {
		_, local := st.(*certmagic.FileStorage)
		switch h.PaymentRecords {
		case "storage":
			h.shared = newSharedPayments(ctx, st)
		case "", "auto":
			if !local {
				h.shared = newSharedPayments(ctx, st)
			}
		}
	}
	return nil
}

func (h *X402Pay) usesBuiltin() bool { return h.Facilitator != nil && h.Facilitator.Builtin != nil }

// provisionFacilitator builds the remote client or loads the shared
// builtin facilitator.
func (h *X402Pay) provisionFacilitator() error {
	fc := h.Facilitator
	switch {
	case fc == nil:
		return errors.New("no facilitator configured: give a URL or builtin")
	case fc.URL != "" && fc.Builtin != nil:
		return errors.New("give either a URL or builtin, not both")
	case fc.Builtin != nil:
		b, key, err := loadBuiltin(h.spec, fc.Builtin.resolvePlaceholders())
		if err != nil {
			return err
		}
		h.builtin, h.builtinKey, h.fac = b, key, b
		return nil
	case fc.URL == "":
		return errors.New("no facilitator configured: give a URL or builtin")
	}
	if h.spec.Devnet {
		return errors.New("network devnet needs the builtin facilitator (or name the devnet by its CAIP-2 id)")
	}
	repl := caddy.NewReplacer()
	hdr := http.Header{}
	for k, vs := range fc.Headers {
		for _, v := range vs {
			hdr.Add(k, repl.ReplaceAll(v, ""))
		}
	}
	r, err := facilitator.NewRemote(facilitator.RemoteConfig{URL: fc.URL, Header: hdr})
	if err != nil {
		return err
	}
	h.remote, h.fac = r, r
	return nil
}

// Validate checks the configuration.
func (h *X402Pay) Validate() error {
	switch {
	case h.PaymentRecords != "" && h.PaymentRecords != "auto" && h.PaymentRecords != "storage" && h.PaymentRecords != "process":
		return fmt.Errorf("x402pay: payment_records %q: want auto, storage or process", h.PaymentRecords)
	case h.MaxTimeout < 0 || time.Duration(h.MaxTimeout) > time.Hour:
		return fmt.Errorf("x402pay: max_timeout %s out of range (0-1h)", time.Duration(h.MaxTimeout))
	case h.MaxBuffer < 0:
		return errors.New("x402pay: max_buffer must not be negative")
	case h.Decimals < 0 || h.Decimals > 19:
		return errors.New("x402pay: decimals out of range 0-19")
	}
	return nil
}

// Cleanup releases the shared facilitator and payment record.
func (h *X402Pay) Cleanup() error {
	releaseBuiltin(h.builtinKey)
	h.builtinKey = ""
	if h.payments != nil {
		_, _ = paymentRecords.Delete(paymentLocksKey)
		h.payments = nil
	}
	return nil
}

// offer is what this handler asks for on a request.
type offer struct {
	v2       []x402.PaymentRequirements
	v1       []x402.PaymentRequirementsV1
	resource x402.ResourceInfo
	network  x402.Network
	asset    uint64
	amount   uint64
	// extensions are the x402 v2 extensions offered with the
	// requirements (the guarded handler's, from its quote).
	extensions json.RawMessage
}

// requirements lists the offer's requirements of both versions.
func (o *offer) requirements() []x402.Requirement {
	out := make([]x402.Requirement, 0, len(o.v2)+len(o.v1))
	for i := range o.v2 {
		out = append(out, x402.Requirement{V2: &o.v2[i]})
	}
	for i := range o.v1 {
		out = append(out, x402.Requirement{V1: &o.v1[i]})
	}
	return out
}

// terms finds how the facilitator names the network (for each protocol
// version) and its fee payer, and builds the requirements for amount.
func (h *X402Pay) terms(ctx context.Context, resource x402.ResourceInfo, amount uint64) (*offer, error) {
	var (
		net       x402.Network
		supported x402.SupportedResponse
		err       error
	)
	if h.builtin != nil {
		var b *facilitator.Builtin
		if b, net, err = h.builtin.get(ctx); err != nil {
			return nil, err
		}
		supported, err = b.Supported(ctx)
	} else {
		if h.spec.Network != nil {
			net = *h.spec.Network
		}
		supported, err = h.remote.Supported(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("ask the facilitator what it supports: %w", err)
	}
	id := h.spec.ID
	if net.GenesisHash != ([32]byte{}) {
		id = net.CAIP2()
	}
	k2, ok := facilitator.FindKind(supported, x402.Version2, x402.SchemeExact, id)
	if !ok {
		return nil, fmt.Errorf("the facilitator does not support the exact scheme on %s", id)
	}
	o := &offer{network: net, amount: amount, asset: h.asset}
	if o.asset == 0 {
		o.asset = net.USDC
	}
	if o.asset == 0 {
		return nil, fmt.Errorf("no USDC id is known for network %s: set asset to its ASA id", id)
	}
	extra := h.offerExtra(k2.Extra)
	o.resource = resource
	assetStr, amountStr := strconv.FormatUint(o.asset, 10), strconv.FormatUint(amount, 10)
	timeout := int(time.Duration(h.MaxTimeout).Seconds())
	o.v2 = []x402.PaymentRequirements{{
		Scheme: x402.SchemeExact, Network: k2.Network, Asset: assetStr, Amount: amountStr,
		PayTo: h.payTo.String(), MaxTimeoutSeconds: timeout, Extra: extra,
	}}
	if net.Name != "" {
		if k1, ok := facilitator.FindKind(supported, x402.Version1, x402.SchemeExact, net.Name); ok {
			o.v1 = []x402.PaymentRequirementsV1{{
				Scheme: x402.SchemeExact, Network: k1.Network, MaxAmountRequired: amountStr,
				Resource: o.resource.URL, Description: o.resource.Description, MimeType: o.resource.MimeType,
				PayTo: h.payTo.String(), MaxTimeoutSeconds: timeout, Asset: assetStr, Extra: extra,
			}}
		}
	}
	return o, nil
}

// offerExtra returns the requirements' extra for the facilitator's
// supported-kind extra: {"feePayer": ...} when it names one, else nil. The
// answer for the last kind extra is remembered (it rarely changes) and
// shared: callers must not modify it.
func (h *X402Pay) offerExtra(kindExtra json.RawMessage) json.RawMessage {
	if h.extra != nil {
		if m := h.extra.Load(); m != nil && m.kind == string(kindExtra) {
			return m.extra
		}
	}
	var extra json.RawMessage
	if fp := x402.ExtraString(kindExtra, "feePayer"); fp != "" {
		extra, _ = json.Marshal(map[string]string{"feePayer": fp})
	}
	if h.extra != nil {
		h.extra.Store(&offerExtra{kind: string(kindExtra), extra: extra})
	}
	return extra
}

// resourceURL is the full URL the client asked for, before any rewrite.
func resourceURL(r *http.Request) string {
	u := r.URL.RequestURI()
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		u = orig.URL.RequestURI()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + u
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *X402Pay) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	pr, err := h.price(r, next)
	amount, free, sells := pr.amount, pr.free, pr.sells
	if err != nil {
		h.logger.Error("pricing a request", zap.Error(err))
		h.metrics.count(outcomeError)
		writeError(w, http.StatusInternalServerError, "x402pay: "+err.Error())
		return nil
	}
	if sells {
		// The handler takes its payments inside its requests (x402 over
		// MCP): it gets a Seller with this gate's terms.
		return next.ServeHTTP(w, r.WithContext(payhook.WithSeller(r.Context(), seller{h: h})))
	}
	if free {
		h.metrics.count(outcomeFree)
		return next.ServeHTTP(w, r)
	}
	w.Header().Set("Access-Control-Expose-Headers", exposedHeaders)
	o, err := h.terms(r.Context(), x402.ResourceInfo{URL: resourceURL(r), Description: h.Description, MimeType: h.MimeType}, amount)
	if err != nil {
		h.logger.Error("building payment requirements", zap.Error(err))
		h.metrics.count(outcomeError)
		writeError(w, http.StatusBadGateway, "x402pay: "+err.Error())
		return nil
	}
	o.extensions = pr.extensions
	payment, version, err := paymentFrom(r)
	switch {
	case err != nil:
		h.metrics.count(outcomeBadHeader)
		writeError(w, http.StatusBadRequest, "invalid payment header: "+err.Error())
		return nil
	case version == 0:
		h.metrics.count(outcomeRequired)
		if isBrowser(r) {
			return h.writePaywall(w, o)
		}
		h.writeRequired(w, o, "Payment required", "")
		return nil
	}
	s, ref := h.open(r.Context(), payment, o)
	if ref != nil {
		h.refuse(w, o, ref)
		return nil
	}
	defer s.close()
	ctx := s.begin(r.Context())
	buf := newBufferedResponse(w.Header(), h.MaxBuffer)
	s.gate.SetCommitter(func(ctx context.Context) error {
		sr, ok := s.settle(ctx)
		if !ok {
			return errSettlementFailed
		}
		buf.header.Set("Access-Control-Expose-Headers", exposedHeaders)
		setSettleHeader(buf, payment.Version(), sr)
		buf.passThrough(w)
		return nil
	})
	if err := next.ServeHTTP(buf, r.WithContext(ctx)); err != nil {
		return err
	}
	if committed, _ := s.gate.Committed(); committed {
		if s.settled {
			// Paid before the first byte; the answer went out as written.
			return nil
		}
		h.writeSettleFailure(w, o, payment.Version(), s.settleResponse)
		return nil
	}
	if buf.overflow {
		h.logger.Error("a paid response exceeds max_buffer; not sold", zap.Int64("max_buffer", h.MaxBuffer))
		h.metrics.count(outcomeError)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("the response exceeds this server's max_buffer (%d bytes); the payment was not taken", h.MaxBuffer))
		return nil
	}
	status := buf.statusCode()
	charge, reason := s.charged(status)
	if status >= 400 || !charge {
		if c := h.logger.Check(zap.DebugLevel, "not charging"); c != nil {
			c.Write(zap.Int("status", status), zap.String("reason", reason))
		}
		h.metrics.count(outcomeNotCharged)
		if status < 400 {
			// Content is sold, never given: a success the handler did not
			// charge for is withheld.
			h.logger.Error("the guarded handler answered with success but did not charge; the answer is withheld", zap.Int("status", status), zap.String("reason", reason))
			writeError(w, http.StatusBadGateway, "the server answered without charging, so the answer is withheld; nothing was paid")
			return nil
		}
		buf.writeTo(w)
		return nil
	}
	sr, ok := s.settle(r.Context())
	if !ok {
		h.writeSettleFailure(w, o, payment.Version(), &sr)
		return nil
	}
	buf.header.Set("Access-Control-Expose-Headers", exposedHeaders)
	setSettleHeader(buf, payment.Version(), sr)
	buf.writeTo(w)
	return nil
}

// exposedHeaders are the payment headers a browser's script may read.
const exposedHeaders = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE"

// refuse answers a payment that buys nothing: 402 with the requirements, or
// the server's error.
func (h *X402Pay) refuse(w http.ResponseWriter, o *offer, ref *refusal) {
	if ref.status == http.StatusPaymentRequired {
		h.writeRequired(w, o, ref.msg, ref.payer)
		return
	}
	if ref.retryAfter {
		w.Header().Set("Retry-After", "1")
	}
	writeError(w, ref.status, ref.msg)
}

// writeSettleFailure answers a failed settlement: 402 with the reason, never
// the content.
func (h *X402Pay) writeSettleFailure(w http.ResponseWriter, o *offer, version int, sr *x402.SettleResponse) {
	reason := avm.ReasonUnexpectedSettle
	if sr != nil {
		setSettleHeader(w, version, *sr)
		if sr.ErrorReason != "" {
			reason = sr.ErrorReason
		}
	}
	h.writeRequired(w, o, "settlement failed: "+reason, "")
}

// price returns the amount the request costs in base units, or free. With
// no price configured (or one that resolves to empty) it asks the next
// handler for a quote.
func (h *X402Pay) price(r *http.Request, next caddyhttp.Handler) (pricing, error) {
	p := h.Price
	if strings.Contains(p, "{") {
		if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
			p = repl.ReplaceAll(p, "")
		}
	}
	p = strings.TrimSpace(p)
	var out pricing
	if p == "" {
		q, err := quote(r, next)
		if err != nil {
			return pricing{}, err
		}
		if q == nil {
			return pricing{}, errNoQuote
		}
		if q.Sells() {
			return pricing{free: true, sells: true}, nil
		}
		quoted, _ := q.Price()
		p = strings.TrimSpace(quoted)
		if p == "" {
			return pricing{free: true}, nil
		}
		out.extensions = q.Extensions()
	}
	amount, err := x402.ParsePrice(p, h.decimals)
	if err != nil {
		return pricing{}, err
	}
	out.amount, out.free = amount, amount == 0
	return out, nil
}

// pricing is what a request costs.
type pricing struct {
	amount uint64
	free   bool
	// sells is the handler's answer that it sells per call itself
	// (payhook.Quote.SellsItself).
	sells bool
	// extensions are the x402 v2 extensions the handler's quote added.
	extensions json.RawMessage
}

// errNoQuote is a configuration error: x402pay has no price and guards a
// handler that cannot quote one.
var errNoQuote = errors.New("no price is configured and the guarded handler does not quote one: set price (only lualambda quotes its own)")

// quote asks the next handler for the request's price. The handler sees
// the request with an ended context, no body and a response that goes
// nowhere, so a handler that does not know quotes cannot act on it: a
// reverse proxy gives up before it dials (no unpaid request reaches its
// backend), and whatever else it does is discarded.
func quote(r *http.Request, next caddyhttp.Handler) (*payhook.Quote, error) {
	qctx, q := payhook.WithQuote(r.Context())
	qctx, cancel := context.WithCancel(qctx)
	cancel()
	qr := r.WithContext(qctx)
	qr.Body, qr.ContentLength, qr.GetBody = http.NoBody, 0, nil
	qr.Header = r.Header.Clone()
	qr.Header.Del("Content-Length")
	err := next.ServeHTTP(discardResponse{header: http.Header{}}, qr)
	if _, answered := q.Price(); answered {
		return q, nil
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return nil, fmt.Errorf("quote: %w", err)
	}
	return nil, nil
}

// paymentFrom decodes the request's payment header: PAYMENT-SIGNATURE
// must carry a v2 payment, X-PAYMENT a v1 payment. version is 0 when
// there is none.
func paymentFrom(r *http.Request) (x402.Payment, int, error) {
	if v := r.Header.Get(x402.HeaderPaymentSignature); v != "" {
		p, err := x402.DecodePaymentHeader(v)
		if err != nil {
			return x402.Payment{}, 0, fmt.Errorf("%s: %w", x402.HeaderPaymentSignature, err)
		}
		if p.Version() != x402.Version2 {
			return x402.Payment{}, 0, fmt.Errorf("%s carries x402Version %d, want 2", x402.HeaderPaymentSignature, p.Version())
		}
		return p, x402.Version2, nil
	}
	if v := r.Header.Get(x402.HeaderXPayment); v != "" {
		p, err := x402.DecodePaymentHeader(v)
		if err != nil {
			return x402.Payment{}, 0, fmt.Errorf("%s: %w", x402.HeaderXPayment, err)
		}
		if p.Version() != x402.Version1 {
			return x402.Payment{}, 0, fmt.Errorf("%s carries x402Version %d, want 1", x402.HeaderXPayment, p.Version())
		}
		return p, x402.Version1, nil
	}
	return x402.Payment{}, 0, nil
}

// paymentKey identifies a payment: the id of its payment transaction,
// which commits to the whole group.
func paymentKey(p x402.Payment) (string, error) {
	payload, err := avm.ParsePayload(p.SchemePayload())
	if err != nil {
		return "", err
	}
	return payload.PaymentTxID()
}

// isBrowser reports whether the request comes from a web browser, as the
// reference servers decide it.
func isBrowser(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html") && strings.Contains(r.Header.Get("User-Agent"), "Mozilla")
}

// writeRequired answers 402 with the v2 PAYMENT-REQUIRED header and the v1
// JSON body.
func (h *X402Pay) writeRequired(w http.ResponseWriter, o *offer, msg, payer string) {
	pr := o.required(msg)
	if enc, err := x402.EncodeHeader(pr); err == nil {
		w.Header().Set(x402.HeaderPaymentRequired, enc)
	}
	accepts := o.v1
	if accepts == nil {
		accepts = []x402.PaymentRequirementsV1{}
	}
	writeJSON(w, http.StatusPaymentRequired, x402.PaymentRequiredV1{X402Version: x402.Version1, Error: msg, Accepts: accepts, Payer: payer})
}

// paywallData is what the HTML page shows, and window.x402.
type paywallData struct {
	Amount          string               `json:"amount"`
	AssetName       string               `json:"assetName"`
	Asset           string               `json:"asset"`
	Network         string               `json:"network"`
	PayTo           string               `json:"payTo"`
	CurrentURL      string               `json:"currentUrl"`
	Description     string               `json:"description,omitempty"`
	PaymentRequired x402.PaymentRequired `json:"paymentRequired"`
}

// writePaywall answers a browser with the HTML 402 page.
func (h *X402Pay) writePaywall(w http.ResponseWriter, o *offer) error {
	pr := o.required("Payment required")
	if enc, err := x402.EncodeHeader(pr); err == nil {
		w.Header().Set(x402.HeaderPaymentRequired, enc)
	}
	d := paywallData{
		Amount: x402.FormatAmount(o.amount, h.decimals), AssetName: "ASA " + strconv.FormatUint(o.asset, 10),
		Asset: strconv.FormatUint(o.asset, 10), Network: o.v2[0].Network, PayTo: h.payTo.String(),
		CurrentURL: o.resource.URL, Description: h.Description, PaymentRequired: pr,
	}
	if o.asset == o.network.USDC {
		d.AssetName = "USDC"
	}
	var b bytes.Buffer
	if err := h.paywall.Execute(&b, d); err != nil {
		h.logger.Error("rendering the paywall", zap.Error(err))
		h.writeRequired(w, o, "Payment required", "")
		return nil
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusPaymentRequired)
	_, _ = w.Write(b.Bytes())
	return nil
}

// setSettleHeader adds the settlement answer in the header of the
// payment's version.
func setSettleHeader(w http.ResponseWriter, version int, sr x402.SettleResponse) {
	enc, err := x402.EncodeHeader(sr)
	if err != nil {
		return
	}
	if version == x402.Version1 {
		w.Header().Set(x402.HeaderXPaymentResponse, enc)
	} else {
		w.Header().Set(x402.HeaderPaymentResponse, enc)
	}
}

// recordPayment publishes a settled payment as placeholders and in the
// access log.
func (h *X402Pay) recordPayment(ctx context.Context, sr x402.SettleResponse, o *offer) {
	amount, asset := strconv.FormatUint(o.amount, 10), strconv.FormatUint(o.asset, 10)
	if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.x402.payer", sr.Payer)
		repl.Set("http.x402.amount", amount)
		repl.Set("http.x402.asset", asset)
		repl.Set("http.x402.txid", sr.Transaction)
		repl.Set("http.x402.network", sr.Network)
	}
	if extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.String("x402_payer", sr.Payer))
		extra.Add(zap.String("x402_amount", amount))
		extra.Add(zap.String("x402_asset", asset))
		extra.Add(zap.String("x402_txid", sr.Transaction))
		extra.Add(zap.String("x402_network", sr.Network))
	}
	if c := h.logger.Check(zap.DebugLevel, "payment settled"); c != nil {
		c.Write(zap.String("txid", sr.Transaction), zap.String("payer", sr.Payer), zap.String("amount", amount))
	}
}

// paymentLocksKey names the process-wide payment record in the pool.
const paymentLocksKey = "x402pay.payments"

// settledTTL is how long a settled payment is remembered: longer than any
// Algorand transaction stays valid (1000 rounds), after which the network
// refuses it anyway.
const settledTTL = 2 * time.Hour

// paymentLocks makes one payment buy one response in this process: a
// payment is locked while its request runs, and remembered once settled.
// Facilitators keep their own record; this one covers remote facilitators
// between verify and settle.
type paymentLocks struct {
	mu       sync.Mutex
	inFlight map[string]struct{}
	settled  map[string]spentPayment
	// payers holds what each payer has in flight, by payer and asset.
	payers map[string]*payerFlight
	// order lists the settled payments oldest first, so that forgetting
	// the expired ones costs only those.
	order []settledPayment
}

// settledPayment is a remembered payment and when it was spent.
type settledPayment struct {
	key string
	at  time.Time
}

func newPaymentLocks() *paymentLocks {
	return &paymentLocks{inFlight: map[string]struct{}{}, settled: map[string]spentPayment{}, payers: map[string]*payerFlight{}}
}

// Destruct implements caddy.Destructor.
func (l *paymentLocks) Destruct() error { return nil }

// claim locks a payment; it returns why not when it is in use or spent.
func (l *paymentLocks) claim(key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, busy := l.inFlight[key]; busy {
		return reasonInUse
	}
	if spent, done := l.settled[key]; done {
		return spentReason(spent.settled)
	}
	l.inFlight[key] = struct{}{}
	return ""
}

// spentPayment is a payment that bought its answer, and whether it settled.
type spentPayment struct {
	at      time.Time
	settled bool
}

// release unlocks a payment, remembering it as spent when it was used
// (settled or not).
func (l *paymentLocks) release(key string, used, settled bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.inFlight, key)
	if !used {
		return
	}
	now := time.Now()
	l.settled[key] = spentPayment{at: now, settled: settled}
	l.order = append(l.order, settledPayment{key: key, at: now})
	for len(l.order) > 0 && now.Sub(l.order[0].at) > settledTTL {
		if old := l.order[0]; l.settled[old.key].at.Equal(old.at) {
			delete(l.settled, old.key)
		}
		l.order = l.order[1:]
	}
}

// spendableReader is a facilitator that can tell what a payer holds (the
// built-in one, through algod).
type spendableReader interface {
	Spendable(ctx context.Context, payer string, asset uint64) (uint64, error)
}

// payerFlight is what one payer has in flight in one asset.
type payerFlight struct {
	count  int
	amount uint64
}

// enterPayer bounds what one payer has in flight to what its balance
// covers. Its first payment in flight was checked by the facilitator's
// verification; each further one is admitted only when the balance
// (spendable) covers everything in flight with it. Without a way to read
// the balance, a payer has one payment in flight at a time. why is
// non-empty when the payment must wait.
func (l *paymentLocks) enterPayer(payer string, asset, amount uint64, spendable func() (uint64, bool, error)) (leave func(), why string, err error) {
	key := payer + "/" + strconv.FormatUint(asset, 10)
	l.mu.Lock()
	f := l.payers[key]
	if f == nil {
		f = &payerFlight{}
		l.payers[key] = f
	}
	first := f.count == 0
	f.count++
	f.amount += amount
	total := f.amount
	l.mu.Unlock()
	var once sync.Once
	leave = func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			f.count--
			f.amount -= amount
			if f.count == 0 {
				delete(l.payers, key)
			}
		})
	}
	if first {
		return leave, "", nil
	}
	bal, known, err := spendable()
	switch {
	case err != nil:
		leave()
		return nil, "", err
	case !known:
		leave()
		return nil, "this payer already has a payment in progress here; send the next one when it has settled", nil
	case total > bal:
		leave()
		return nil, "this payer's payments in progress here already use its balance; send the next one when they have settled", nil
	}
	return leave, "", nil
}

// bufferedResponse holds a response back until the payment settles, or,
// once the handler has committed (the payment settled before its first
// byte), passes it straight through.
type bufferedResponse struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	limit    int64
	overflow bool
	// dst is the client's writer once the response passes through.
	dst         http.ResponseWriter
	wroteHeader bool
}

// errResponseTooLarge stops a handler whose response exceeds max_buffer.
var errResponseTooLarge = errors.New("x402pay: response exceeds max_buffer")

func newBufferedResponse(h http.Header, limit int64) *bufferedResponse {
	return &bufferedResponse{header: h.Clone(), limit: limit}
}

// Header implements http.ResponseWriter.
func (b *bufferedResponse) Header() http.Header { return b.header }

// WriteHeader implements http.ResponseWriter; informational statuses are
// dropped.
func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 && code >= 200 {
		b.status = code
	}
	if b.dst != nil && !b.wroteHeader && b.status != 0 {
		b.wroteHeader = true
		b.dst.WriteHeader(b.status)
	}
}

// Write implements http.ResponseWriter.
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.dst != nil {
		if !b.wroteHeader {
			b.WriteHeader(http.StatusOK)
		}
		return b.dst.Write(p)
	}
	if b.status == 0 {
		b.status = http.StatusOK
	}
	if b.overflow || int64(b.body.Len()+len(p)) > b.limit {
		b.overflow = true
		return 0, errResponseTooLarge
	}
	return b.body.Write(p)
}

func (b *bufferedResponse) statusCode() int {
	if b.status == 0 {
		return http.StatusOK
	}
	return b.status
}

// headerTo makes w's header the held one and returns it.
func (b *bufferedResponse) headerTo(w http.ResponseWriter) http.Header {
	dst := w.Header()
	for k := range dst {
		if _, keep := b.header[k]; !keep {
			delete(dst, k)
		}
	}
	for k, v := range b.header {
		dst[k] = v
	}
	return dst
}

// writeTo sends the held response.
func (b *bufferedResponse) writeTo(w http.ResponseWriter) {
	dst := b.headerTo(w)
	if dst.Get("Content-Length") == "" && dst.Get("Transfer-Encoding") == "" {
		dst.Set("Content-Length", strconv.Itoa(b.body.Len()))
	}
	w.WriteHeader(b.statusCode())
	_, _ = w.Write(b.body.Bytes())
}

// passThrough sends what is held to w and lets everything written later go
// straight to it, unbuffered and unbounded: the payment has settled.
func (b *bufferedResponse) passThrough(w http.ResponseWriter) {
	dst := b.headerTo(w)
	b.header, b.dst = dst, w
	if b.status != 0 {
		b.WriteHeader(b.status)
	}
	if b.body.Len() > 0 {
		_, _ = w.Write(b.body.Bytes())
		b.body = bytes.Buffer{}
	}
}

// FlushError flushes a response that passes through; a held one has
// nothing to flush. It lets http.ResponseController stream through the
// buffer.
func (b *bufferedResponse) FlushError() error {
	if b.dst == nil {
		return nil
	}
	if !b.wroteHeader {
		b.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(b.dst).Flush()
}

// Flush implements http.Flusher (see FlushError).
func (b *bufferedResponse) Flush() { _ = b.FlushError() }

// discardResponse is the response writer of a quote: everything written
// is dropped.
type discardResponse struct{ header http.Header }

func (d discardResponse) Header() http.Header         { return d.header }
func (d discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d discardResponse) WriteHeader(int)             {}

// Interface guards.
var (
	_ caddy.Provisioner           = (*X402Pay)(nil)
	_ caddy.Validator             = (*X402Pay)(nil)
	_ caddy.CleanerUpper          = (*X402Pay)(nil)
	_ caddyhttp.MiddlewareHandler = (*X402Pay)(nil)
	_ http.ResponseWriter         = (*bufferedResponse)(nil)
)

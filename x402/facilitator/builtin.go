package facilitator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// BuiltinConfig configures a Builtin facilitator.
type BuiltinConfig struct {
	// AlgodURL and AlgodToken reach the algod node. Ignored when Ledger is set.
	AlgodURL   string
	AlgodToken string
	// Ledger, when set, is used instead of an algod client.
	Ledger avm.Ledger
	// Network is the one network served. Payments and requirements may name
	// it by its v1 name or either CAIP-2 form.
	Network x402.Network
	// FeePayerMnemonic, when set, makes the facilitator offer its account as
	// fee payer (extra.feePayer) and co-sign fee-payer members.
	FeePayerMnemonic string
	// Settled records settled payments; nil means a new MemoryStore.
	Settled SettledStore
	// WaitRounds is how many rounds a settlement first waits for
	// confirmation; 0 means avm.DefaultWaitRounds. Past them it keeps
	// waiting until the group's last valid round has passed (see
	// avm.Settle), bounded by the caller's context.
	WaitRounds uint64
	// SkipBalanceCheck turns off the payer-balance and opt-in checks.
	SkipBalanceCheck bool
	// SkipSimulate turns off simulating the group before accepting it.
	SkipSimulate bool
	// FeeCap overrides avm.DefaultFeeCap, the cap on the fee of a payment
	// that pays its own fee.
	FeeCap uint64
}

// minFeeTTL is how long the network's minimum fee, read from algod's
// suggested params, is reused.
const minFeeTTL = 10 * time.Minute

// Builtin verifies and settles Algorand exact payments through algod. One
// payment is settled at most once: a payment being settled is locked, and a
// settled one is recorded in the SettledStore and refused afterwards, by
// Verify as well as Settle. A payment Verify accepted is remembered for a
// minute, so that its Settle (same payment, same requirement) submits it
// without verifying it again.
type Builtin struct {
	ledger   avm.Ledger
	network  x402.Network
	networks *x402.Networks
	feePayer *avm.KeySigner
	settled  SettledStore
	cfg      BuiltinConfig

	verified *verifiedCache
	decoded  *decodedCache
	// ids are the forms of the network's id, matched before normalising.
	ids map[string]bool

	mu       sync.Mutex
	inFlight map[string]struct{}

	// spend answers Spendable from recent reads.
	spend *spendTracker

	// termsMu guards parsed, the requirements parsed from x402 terms.
	termsMu sync.Mutex
	parsed  map[termsKey]avm.Requirement

	// feeMu guards the network's minimum fee and when it was read.
	feeMu    sync.Mutex
	minFee   uint64
	minFeeAt time.Time
}

var _ Facilitator = (*Builtin)(nil)

// NewBuiltin returns a Builtin facilitator. It does not contact algod.
func NewBuiltin(cfg BuiltinConfig) (*Builtin, error) {
	if cfg.Network.GenesisHash == ([32]byte{}) {
		return nil, errors.New("facilitator: builtin: network has no genesis hash")
	}
	b := &Builtin{ledger: cfg.Ledger, network: cfg.Network, settled: cfg.Settled, cfg: cfg, verified: newVerifiedCache(), decoded: newDecodedCache(), inFlight: make(map[string]struct{}), parsed: make(map[termsKey]avm.Requirement), spend: newSpendTracker(spendableTTL)}
	if b.ledger == nil {
		if cfg.AlgodURL == "" {
			return nil, errors.New("facilitator: builtin: no algod URL")
		}
		a, err := avm.NewAlgod(cfg.AlgodURL, cfg.AlgodToken)
		if err != nil {
			return nil, fmt.Errorf("facilitator: builtin: %w", err)
		}
		b.ledger = a
	}
	b.ids = map[string]bool{cfg.Network.CAIP2(): true, cfg.Network.CAIP2Short(): true}
	if cfg.Network.Name != "" {
		b.ids[cfg.Network.Name] = true
	}
	b.networks = x402.NewNetworks()
	if err := b.networks.Register(cfg.Network); err != nil {
		return nil, fmt.Errorf("facilitator: builtin: %w", err)
	}
	if cfg.FeePayerMnemonic != "" {
		s, err := avm.SignerFromMnemonic(cfg.FeePayerMnemonic)
		if err != nil {
			return nil, fmt.Errorf("facilitator: builtin: fee payer: %w", err)
		}
		b.feePayer = &s
	}
	if b.settled == nil {
		b.settled = NewMemoryStore()
	}
	return b, nil
}

// FeePayerAddress returns the fee payer's address, or "" when none is set.
func (b *Builtin) FeePayerAddress() string {
	if b.feePayer == nil {
		return ""
	}
	return b.feePayer.Address().String()
}

// Supported lists the exact scheme on the network in v2 (full-hash CAIP-2
// first, then the truncated form) and, when the network has a v1 name, v1;
// each with extra.feePayer when a fee payer is configured.
func (b *Builtin) Supported(context.Context) (x402.SupportedResponse, error) {
	var extra json.RawMessage
	signers := map[string][]string{}
	if fp := b.FeePayerAddress(); fp != "" {
		extra, _ = json.Marshal(map[string]string{"feePayer": fp})
		signers[x402.AlgorandNamespace+":*"] = []string{fp}
	}
	kinds := []x402.SupportedKind{
		{X402Version: x402.Version2, Scheme: x402.SchemeExact, Network: b.network.CAIP2(), Extra: extra},
		{X402Version: x402.Version2, Scheme: x402.SchemeExact, Network: b.network.CAIP2Short(), Extra: extra},
	}
	if b.network.Name != "" {
		kinds = append(kinds, x402.SupportedKind{X402Version: x402.Version1, Scheme: x402.SchemeExact, Network: b.network.Name, Extra: extra})
	}
	return x402.SupportedResponse{Kinds: kinds, Extensions: []string{}, Signers: signers}, nil
}

// Verify implements Facilitator. A payment that is being settled, or was
// settled, is refused with duplicate_settlement.
func (b *Builtin) Verify(ctx context.Context, p x402.Payment, r x402.Requirement) (x402.VerifyResponse, error) {
	req, err := b.terms(p, r)
	if err != nil {
		return invalid(err)
	}
	payload, err := b.decode(p.SchemePayload())
	if err != nil {
		return invalid(err)
	}
	// A settled payment is refused as a duplicate before the other checks,
	// which would otherwise report the chain's own refusal of the replay.
	v, err := b.verify(ctx, req, payload, b.checkNotSettled)
	if err != nil {
		return invalid(err)
	}
	if b.inFlightNow(v.PaymentTxID) {
		return invalid(errBeingSettled)
	}
	if err := b.checkNotSettled(ctx, v.PaymentTxID); err != nil {
		return invalid(err)
	}
	b.verified.put(p.SchemePayload(), req, payload, v, time.Now())
	return x402.VerifyResponse{IsValid: true, Payer: v.Payer.String()}, nil
}

// Settle implements Facilitator. It locks the payment (by its transaction
// id) before anything else, so concurrent attempts fail fast with
// duplicate_settlement, then checks the record, verifies again (or reuses
// Verify's verification of this very payment and requirement), submits and
// records the payment as soon as the network has accepted it. It answers
// failure for a submitted group only once the group can no longer commit
// (its last valid round has passed) or ctx ends.
func (b *Builtin) Settle(ctx context.Context, p x402.Payment, r x402.Requirement) (x402.SettleResponse, error) {
	resp := x402.SettleResponse{Network: r.Terms().Network, Amount: r.Terms().Amount}
	raw := p.SchemePayload()
	payload, key, cached := b.verified.lookup(raw)
	if !cached {
		var err error
		if payload, err = b.decode(raw); err != nil {
			return failed(resp, err)
		}
		key = payload.PaymentTxID()
	}
	if !b.claim(key) {
		return failed(resp, errBeingSettled)
	}
	defer b.release(key)
	if err := b.checkNotSettled(ctx, key); err != nil {
		return failed(resp, err)
	}
	req, err := b.terms(p, r)
	if err != nil {
		return failed(resp, err)
	}
	v := b.verified.take(raw, req, time.Now())
	if v == nil {
		if v, err = b.verify(ctx, req, payload, nil); err != nil {
			return failed(resp, err)
		}
	}
	resp.Payer = v.Payer.String()
	done := b.spend.submitting(spendKey{payer: v.Payer, asset: req.Asset}, req.Amount)
	s, err := avm.Settle(ctx, b.ledger, v, b.signers(), b.cfg.WaitRounds)
	done()
	if s.TxID != "" {
		// The group reached the network: whatever happens next, this
		// payment must not be offered again.
		if merr := b.settled.MarkSettled(ctx, key, v.LastValid); merr != nil && !errors.Is(merr, ErrAlreadySettled) {
			err = errors.Join(err, fmt.Errorf("facilitator: record settlement: %w", merr))
		}
	}
	resp.Transaction = s.TxID
	if err != nil {
		return failed(resp, err)
	}
	_ = b.settled.Prune(ctx, s.Round)
	resp.Success = true
	return resp, nil
}

// terms checks versions, scheme, network and the accepted echo, and parses
// the requirement.
func (b *Builtin) terms(p x402.Payment, r x402.Requirement) (avm.Requirement, error) {
	if p.Version() == 0 || p.Version() != r.Version() {
		return avm.Requirement{}, &avm.Error{Reason: avm.ReasonInvalidVersion, Message: fmt.Sprintf("payment version %d, requirement version %d", p.Version(), r.Version())}
	}
	terms := r.Terms()
	if terms.Scheme != x402.SchemeExact || p.Scheme() != x402.SchemeExact {
		return avm.Requirement{}, &avm.Error{Reason: avm.ReasonScheme, Message: fmt.Sprintf("scheme %q / %q is not exact", p.Scheme(), terms.Scheme)}
	}
	if !b.ids[terms.Network] && !b.network.Matches(terms.Network) {
		return avm.Requirement{}, &avm.Error{Reason: avm.ReasonNetworkMismatch, Message: fmt.Sprintf("network %q is not served here", terms.Network)}
	}
	if p.Network() != terms.Network && !b.networks.Same(p.Network(), terms.Network) {
		return avm.Requirement{}, &avm.Error{Reason: avm.ReasonNetworkMismatch, Message: fmt.Sprintf("payment is for %q, requirement for %q", p.Network(), terms.Network)}
	}
	if p.V2 != nil && !sameV2(p.V2.Accepted, *r.V2) && x402.MatchV2(p.V2.Accepted, []x402.PaymentRequirements{*r.V2}, b.networks) != 0 {
		return avm.Requirement{}, &avm.Error{Reason: avm.ReasonPayload, Message: "accepted differs from the payment requirements"}
	}
	return b.parseTerms(terms)
}

// maxParsedTerms bounds the cache of parsed requirements.
const maxParsedTerms = 256

// termsKey names x402 terms in the cache of parsed requirements.
type termsKey struct {
	scheme, network, asset, amount, payTo, extra string
	maxTimeout                                   int
}

// parseTerms returns avm.ParseRequirement(terms), from a cache of the
// requirements parsed before: a server offers the same few terms on every
// request, and parsing them (the addresses' checksums, extra's JSON) costs
// more than the lookup. Only successful parses are kept.
func (b *Builtin) parseTerms(terms x402.Terms) (avm.Requirement, error) {
	k := termsKey{scheme: terms.Scheme, network: terms.Network, asset: terms.Asset, amount: terms.Amount,
		payTo: terms.PayTo, extra: string(terms.Extra), maxTimeout: terms.MaxTimeoutSeconds}
	b.termsMu.Lock()
	req, ok := b.parsed[k]
	b.termsMu.Unlock()
	if ok {
		return req, nil
	}
	req, err := avm.ParseRequirement(terms)
	if err != nil {
		return avm.Requirement{}, err
	}
	b.termsMu.Lock()
	defer b.termsMu.Unlock()
	if len(b.parsed) >= maxParsedTerms {
		clear(b.parsed)
	}
	b.parsed[k] = req
	return req, nil
}

// sameV2 reports whether two v2 requirements are identical in every field
// x402.MatchV2 compares, so that it would match them (it normalises the
// networks and compares extra as JSON, which identical values pass).
func sameV2(a, b x402.PaymentRequirements) bool {
	return a.Scheme == b.Scheme && a.Network == b.Network && a.Asset == b.Asset && a.Amount == b.Amount &&
		a.PayTo == b.PayTo && a.MaxTimeoutSeconds == b.MaxTimeoutSeconds && bytes.Equal(a.Extra, b.Extra)
}

// verify runs avm.Verify with the facilitator's settings and precheck, at
// the network's minimum fee.
func (b *Builtin) verify(ctx context.Context, req avm.Requirement, payload *avm.Decoded, precheck func(context.Context, string) error) (*avm.Verified, error) {
	minFee, err := b.networkMinFee(ctx)
	if err != nil {
		return nil, &avm.Error{Reason: avm.ReasonUnexpectedVerify, Message: "cannot read the network's minimum fee", Err: err}
	}
	return avm.VerifyDecoded(ctx, avm.VerifyConfig{
		MinFee:        minFee,
		GenesisHash:   b.network.GenesisHash,
		FeePayers:     b.signers(),
		Ledger:        b.ledger,
		CheckBalances: !b.cfg.SkipBalanceCheck,
		Simulate:      !b.cfg.SkipSimulate,
		FeeCap:        b.cfg.FeeCap,
		Precheck:      precheck,
	}, req, payload)
}

// networkMinFee returns the network's minimum fee per transaction, as
// algod's suggested params report it (avm.MinTxnFee when they report none),
// read at most every minFeeTTL.
func (b *Builtin) networkMinFee(ctx context.Context) (uint64, error) {
	b.feeMu.Lock()
	defer b.feeMu.Unlock()
	if b.minFee != 0 && time.Since(b.minFeeAt) < minFeeTTL {
		return b.minFee, nil
	}
	params, err := b.ledger.SuggestedParams(ctx)
	if err != nil {
		return 0, err
	}
	b.minFee, b.minFeeAt = params.MinFee, time.Now()
	if b.minFee == 0 {
		b.minFee = avm.MinTxnFee
	}
	return b.minFee, nil
}

// Spendable returns how much of the asset (an ASA id) the payer can spend
// now, read from algod: its balance, or 0 when it is not opted in or its
// holding is frozen. It tells a server how much of one payer's money its
// payments in flight can cover; it reserves nothing. A read answers for
// spendableTTL, less every payment of the payer this facilitator submitted
// since the read started or had not seen confirmed by then: within that
// second the answer can only be lower than the ledger's, unless the payer
// spent elsewhere meanwhile.
func (b *Builtin) Spendable(ctx context.Context, payer string, asset uint64) (uint64, error) {
	addr, err := types.DecodeAddress(payer)
	if err != nil {
		return 0, fmt.Errorf("facilitator: spendable: payer %q: %w", payer, err)
	}
	if asset == 0 {
		return 0, errors.New("facilitator: spendable: asset 0 is ALGO, not an ASA")
	}
	k := spendKey{payer: addr, asset: asset}
	now := time.Now()
	if n, ok := b.spend.cached(k, now); ok {
		return n, nil
	}
	finish := b.spend.startRead(k, now)
	h, err := b.ledger.AssetHolding(ctx, addr, asset)
	if err != nil {
		return 0, fmt.Errorf("facilitator: spendable: %w", err)
	}
	if !h.OptedIn || h.Frozen {
		return finish(0), nil
	}
	return finish(h.Amount), nil
}

// errBeingSettled refuses a payment whose settlement is under way.
var errBeingSettled = &avm.Error{Reason: avm.ReasonDuplicateSettlement, Message: "the payment is being settled"}

// checkNotSettled refuses a payment in the settlement record.
func (b *Builtin) checkNotSettled(ctx context.Context, key string) error {
	done, err := b.settled.IsSettled(ctx, key)
	if err != nil {
		return &avm.Error{Reason: avm.ReasonUnexpectedVerify, Message: "cannot read the settlement record", Err: err}
	}
	if done {
		return &avm.Error{Reason: avm.ReasonDuplicateSettlement, Message: "the payment was settled already"}
	}
	return nil
}

// inFlightNow reports whether key is being settled.
func (b *Builtin) inFlightNow(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, busy := b.inFlight[key]
	return busy
}

// claim locks key for settlement; false when it is locked already.
func (b *Builtin) claim(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, busy := b.inFlight[key]; busy {
		return false
	}
	b.inFlight[key] = struct{}{}
	return true
}

func (b *Builtin) release(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.inFlight, key)
}

func (b *Builtin) signers() []avm.Signer {
	if b.feePayer == nil {
		return nil
	}
	return []avm.Signer{*b.feePayer}
}

// invalid turns a rejection into a negative answer. When verification could
// not be completed (algod unreachable: unexpected_verify_error) it returns
// the error instead, since the payment itself may be fine.
func invalid(err error) (x402.VerifyResponse, error) {
	reason := avm.ReasonOf(err)
	if reason == "" || reason == avm.ReasonUnexpectedVerify {
		return x402.VerifyResponse{}, fmt.Errorf("facilitator: verify: %w", err)
	}
	return x402.VerifyResponse{IsValid: false, InvalidReason: reason, InvalidMessage: err.Error()}, nil
}

func failed(resp x402.SettleResponse, err error) (x402.SettleResponse, error) {
	reason := avm.ReasonOf(err)
	if reason == "" {
		reason = avm.ReasonUnexpectedSettle
	}
	resp.Success = false
	resp.ErrorReason = reason
	resp.ErrorMessage = err.Error()
	return resp, nil
}

package x402

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Payment is a client's payment payload in either protocol version: exactly
// one of V1 and V2 is set. It encodes to, and decodes from, the JSON object of
// its version (the version is read from x402Version).
type Payment struct {
	V1 *PaymentPayloadV1
	V2 *PaymentPayload
}

// Requirement is one payment requirement in either protocol version: exactly
// one of V1 and V2 is set.
type Requirement struct {
	V1 *PaymentRequirementsV1
	V2 *PaymentRequirements
}

// Terms is the version-neutral view of a requirement: what must be paid,
// in which asset, to whom, on which network.
type Terms struct {
	Version           int
	Scheme            string
	Network           string
	Asset             string
	Amount            string
	PayTo             string
	MaxTimeoutSeconds int
	Extra             json.RawMessage
}

// ErrVersion reports an x402Version this package does not handle.
var ErrVersion = errors.New("x402: unsupported x402Version")

// Version returns 1 or 2, or 0 for an empty Payment.
func (p Payment) Version() int {
	switch {
	case p.V2 != nil:
		return Version2
	case p.V1 != nil:
		return Version1
	}
	return 0
}

// Scheme returns the payment's scheme (v2: from accepted).
func (p Payment) Scheme() string {
	switch {
	case p.V2 != nil:
		return p.V2.Accepted.Scheme
	case p.V1 != nil:
		return p.V1.Scheme
	}
	return ""
}

// Network returns the network string the client sent (v2: from accepted).
func (p Payment) Network() string {
	switch {
	case p.V2 != nil:
		return p.V2.Accepted.Network
	case p.V1 != nil:
		return p.V1.Network
	}
	return ""
}

// SchemePayload returns the scheme-specific "payload" object.
func (p Payment) SchemePayload() json.RawMessage {
	switch {
	case p.V2 != nil:
		return p.V2.Payload
	case p.V1 != nil:
		return p.V1.Payload
	}
	return nil
}

// MarshalJSON encodes the payload of the set version.
func (p Payment) MarshalJSON() ([]byte, error) {
	switch {
	case p.V2 != nil:
		return json.Marshal(p.V2)
	case p.V1 != nil:
		return json.Marshal(p.V1)
	}
	return nil, errors.New("x402: empty payment")
}

// UnmarshalJSON decodes a v1 or v2 payload, chosen by its x402Version.
func (p *Payment) UnmarshalJSON(data []byte) error {
	version, err := peekVersion(data)
	if err != nil {
		return err
	}
	*p = Payment{}
	switch version {
	case Version1:
		var v PaymentPayloadV1
		if err := json.Unmarshal(data, &v); err != nil {
			return fmt.Errorf("x402: decode v1 payment payload: %w", err)
		}
		p.V1 = &v
	case Version2:
		var v PaymentPayload
		if err := json.Unmarshal(data, &v); err != nil {
			return fmt.Errorf("x402: decode v2 payment payload: %w", err)
		}
		p.V2 = &v
	default:
		return fmt.Errorf("%w: %d", ErrVersion, version)
	}
	if len(bytes.TrimSpace(p.SchemePayload())) == 0 || bytes.Equal(bytes.TrimSpace(p.SchemePayload()), []byte("null")) {
		return errors.New("x402: payment payload has no payload object")
	}
	return nil
}

// Version returns 1 or 2, or 0 for an empty Requirement.
func (r Requirement) Version() int {
	switch {
	case r.V2 != nil:
		return Version2
	case r.V1 != nil:
		return Version1
	}
	return 0
}

// Terms returns the version-neutral view of the requirement.
func (r Requirement) Terms() Terms {
	switch {
	case r.V2 != nil:
		return Terms{
			Version: Version2, Scheme: r.V2.Scheme, Network: r.V2.Network, Asset: r.V2.Asset,
			Amount: r.V2.Amount, PayTo: r.V2.PayTo, MaxTimeoutSeconds: r.V2.MaxTimeoutSeconds, Extra: r.V2.Extra,
		}
	case r.V1 != nil:
		return Terms{
			Version: Version1, Scheme: r.V1.Scheme, Network: r.V1.Network, Asset: r.V1.Asset,
			Amount: r.V1.MaxAmountRequired, PayTo: r.V1.PayTo, MaxTimeoutSeconds: r.V1.MaxTimeoutSeconds, Extra: r.V1.Extra,
		}
	}
	return Terms{}
}

// MarshalJSON encodes the requirement of the set version.
func (r Requirement) MarshalJSON() ([]byte, error) {
	switch {
	case r.V2 != nil:
		return json.Marshal(r.V2)
	case r.V1 != nil:
		return json.Marshal(r.V1)
	}
	return nil, errors.New("x402: empty requirement")
}

// DecodeRequirement decodes a requirement object of the given version.
func DecodeRequirement(version int, data []byte) (Requirement, error) {
	switch version {
	case Version1:
		var v PaymentRequirementsV1
		if err := json.Unmarshal(data, &v); err != nil {
			return Requirement{}, fmt.Errorf("x402: decode v1 payment requirements: %w", err)
		}
		return Requirement{V1: &v}, nil
	case Version2:
		var v PaymentRequirements
		if err := json.Unmarshal(data, &v); err != nil {
			return Requirement{}, fmt.Errorf("x402: decode v2 payment requirements: %w", err)
		}
		return Requirement{V2: &v}, nil
	}
	return Requirement{}, fmt.Errorf("%w: %d", ErrVersion, version)
}

// NewFacilitatorRequest builds the /verify and /settle body for a payment and
// the requirement it was matched to. Both must have the same version.
func NewFacilitatorRequest(p Payment, r Requirement) (FacilitatorRequest, error) {
	if p.Version() == 0 || p.Version() != r.Version() {
		return FacilitatorRequest{}, fmt.Errorf("x402: payment version %d and requirement version %d differ", p.Version(), r.Version())
	}
	payload, err := p.MarshalJSON()
	if err != nil {
		return FacilitatorRequest{}, err
	}
	req, err := r.MarshalJSON()
	if err != nil {
		return FacilitatorRequest{}, err
	}
	return FacilitatorRequest{X402Version: p.Version(), PaymentPayload: payload, PaymentRequirements: req}, nil
}

// Decode returns the payment and requirement of a facilitator request,
// checking that both are of the request's x402Version.
func (fr FacilitatorRequest) Decode() (Payment, Requirement, error) {
	if len(fr.PaymentPayload) == 0 || len(fr.PaymentRequirements) == 0 {
		return Payment{}, Requirement{}, errors.New("x402: missing paymentPayload or paymentRequirements")
	}
	var p Payment
	if err := p.UnmarshalJSON(fr.PaymentPayload); err != nil {
		return Payment{}, Requirement{}, err
	}
	if fr.X402Version != 0 && fr.X402Version != p.Version() {
		return Payment{}, Requirement{}, fmt.Errorf("x402: request x402Version %d but payload version %d", fr.X402Version, p.Version())
	}
	r, err := DecodeRequirement(p.Version(), fr.PaymentRequirements)
	if err != nil {
		return Payment{}, Requirement{}, err
	}
	return p, r, nil
}

// peekVersion reads the x402Version of a JSON object.
func peekVersion(data []byte) (int, error) {
	var head struct {
		X402Version *int `json:"x402Version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return 0, fmt.Errorf("x402: decode payment payload: %w", err)
	}
	if head.X402Version == nil {
		return 0, errors.New("x402: payment payload has no x402Version")
	}
	return *head.X402Version, nil
}

// ExtraString returns the string value of key in a requirement's extra
// object, or "" when extra is absent, not an object, or the value is not a
// string.
func ExtraString(extra json.RawMessage, key string) string {
	if len(extra) == 0 {
		return ""
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(extra, &m); err != nil {
		return ""
	}
	var s string
	if err := json.Unmarshal(m[key], &s); err != nil {
		return ""
	}
	return s
}

// FeePayer returns extra.feePayer of the terms, or "".
func (t Terms) FeePayer() string { return ExtraString(t.Extra, "feePayer") }

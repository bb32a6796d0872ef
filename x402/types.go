// Package x402 holds the wire types and helpers of the x402 payment protocol,
// versions 1 and 2: the JSON objects carried in the payment headers and
// exchanged with facilitators, the header codec, requirement matching,
// network identifiers (CAIP-2 and v1 names) and exact decimal price math.
//
// Scheme-specific objects (extra, payload, extensions, outputSchema) are kept
// as json.RawMessage so that keys this package does not know survive a
// decode/encode round trip unchanged.
package x402

import (
	"encoding/json"
)

// Protocol versions.
const (
	// Version1 is the first x402 protocol version (X-PAYMENT headers).
	Version1 = 1
	// Version2 is the second x402 protocol version (PAYMENT-* headers).
	Version2 = 2
)

// SchemeExact is the name of the "exact" payment scheme.
const SchemeExact = "exact"

// ResourceInfo describes the paid resource in v2 messages.
type ResourceInfo struct {
	URL         string `json:"url"`
	Description string `json:"description,omitempty"`
	MimeType    string `json:"mimeType,omitempty"`
}

// PaymentRequirements is one payment option offered by a v2 server.
type PaymentRequirements struct {
	Scheme            string          `json:"scheme"`
	Network           string          `json:"network"`
	Asset             string          `json:"asset"`
	Amount            string          `json:"amount"`
	PayTo             string          `json:"payTo"`
	MaxTimeoutSeconds int             `json:"maxTimeoutSeconds"`
	Extra             json.RawMessage `json:"extra,omitempty"`
}

// PaymentRequirementsV1 is one payment option offered by a v1 server.
type PaymentRequirementsV1 struct {
	Scheme            string          `json:"scheme"`
	Network           string          `json:"network"`
	MaxAmountRequired string          `json:"maxAmountRequired"`
	Resource          string          `json:"resource"`
	Description       string          `json:"description"`
	MimeType          string          `json:"mimeType,omitempty"`
	OutputSchema      json.RawMessage `json:"outputSchema,omitempty"`
	PayTo             string          `json:"payTo"`
	MaxTimeoutSeconds int             `json:"maxTimeoutSeconds"`
	Asset             string          `json:"asset"`
	Extra             json.RawMessage `json:"extra,omitempty"`
}

// PaymentRequired is the v2 402 message carried in the PAYMENT-REQUIRED header.
type PaymentRequired struct {
	X402Version int                   `json:"x402Version"`
	Error       string                `json:"error,omitempty"`
	Resource    ResourceInfo          `json:"resource"`
	Accepts     []PaymentRequirements `json:"accepts"`
	Extensions  json.RawMessage       `json:"extensions,omitempty"`
}

// PaymentRequiredV1 is the v1 402 response body.
type PaymentRequiredV1 struct {
	X402Version int                     `json:"x402Version"`
	Error       string                  `json:"error"`
	Accepts     []PaymentRequirementsV1 `json:"accepts"`
	Payer       string                  `json:"payer,omitempty"`
}

// PaymentPayload is a v2 client payment, carried in the PAYMENT-SIGNATURE
// header. Accepted is the requirement the client chose, copied verbatim.
type PaymentPayload struct {
	X402Version int                 `json:"x402Version"`
	Resource    *ResourceInfo       `json:"resource,omitempty"`
	Accepted    PaymentRequirements `json:"accepted"`
	Payload     json.RawMessage     `json:"payload"`
	Extensions  json.RawMessage     `json:"extensions,omitempty"`
}

// PaymentPayloadV1 is a v1 client payment, carried in the X-PAYMENT header.
type PaymentPayloadV1 struct {
	X402Version int             `json:"x402Version"`
	Scheme      string          `json:"scheme"`
	Network     string          `json:"network"`
	Payload     json.RawMessage `json:"payload"`
}

// VerifyResponse is a facilitator's answer to POST /verify.
type VerifyResponse struct {
	IsValid        bool            `json:"isValid"`
	InvalidReason  string          `json:"invalidReason,omitempty"`
	InvalidMessage string          `json:"invalidMessage,omitempty"`
	Payer          string          `json:"payer,omitempty"`
	Extensions     json.RawMessage `json:"extensions,omitempty"`
}

// SettleResponse is a facilitator's answer to POST /settle, and the content
// of the PAYMENT-RESPONSE and X-PAYMENT-RESPONSE headers. Transaction is
// always present ("" on failure).
type SettleResponse struct {
	Success      bool            `json:"success"`
	ErrorReason  string          `json:"errorReason,omitempty"`
	ErrorMessage string          `json:"errorMessage,omitempty"`
	Payer        string          `json:"payer,omitempty"`
	Transaction  string          `json:"transaction"`
	Network      string          `json:"network"`
	Amount       string          `json:"amount,omitempty"`
	Extensions   json.RawMessage `json:"extensions,omitempty"`
}

// SupportedKind is one (version, scheme, network) a facilitator handles.
type SupportedKind struct {
	X402Version int             `json:"x402Version"`
	Scheme      string          `json:"scheme"`
	Network     string          `json:"network"`
	Extra       json.RawMessage `json:"extra,omitempty"`
}

// SupportedResponse is a facilitator's answer to GET /supported.
type SupportedResponse struct {
	Kinds      []SupportedKind     `json:"kinds"`
	Extensions []string            `json:"extensions"`
	Signers    map[string][]string `json:"signers"`
}

// FacilitatorRequest is the body of POST /verify and POST /settle.
// PaymentPayload and PaymentRequirements hold the JSON objects of the
// protocol version named by X402Version.
type FacilitatorRequest struct {
	X402Version         int             `json:"x402Version"`
	PaymentPayload      json.RawMessage `json:"paymentPayload"`
	PaymentRequirements json.RawMessage `json:"paymentRequirements"`
}

package x402

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// HTTP header names of both protocol versions.
const (
	// HeaderPaymentRequired carries a v2 PaymentRequired on a 402 response.
	HeaderPaymentRequired = "PAYMENT-REQUIRED"
	// HeaderPaymentSignature carries a v2 PaymentPayload on the paid request.
	HeaderPaymentSignature = "PAYMENT-SIGNATURE"
	// HeaderPaymentResponse carries a v2 SettleResponse on the paid response.
	HeaderPaymentResponse = "PAYMENT-RESPONSE"
	// HeaderXPayment carries a v1 PaymentPayloadV1 on the paid request.
	HeaderXPayment = "X-PAYMENT"
	// HeaderXPaymentResponse carries a v1 SettleResponse on the paid response.
	HeaderXPaymentResponse = "X-PAYMENT-RESPONSE"
)

// MaxHeaderSize bounds an encoded x402 header value. Longer values are
// rejected before any decoding. A full 16-transaction Algorand group is
// about 6 KiB encoded, so 64 KiB leaves ample room.
const MaxHeaderSize = 64 << 10

// ErrHeaderTooLarge reports a header value longer than MaxHeaderSize.
var ErrHeaderTooLarge = errors.New("x402: header value too large")

// EncodeHeader returns the standard, padded base64 of v's JSON encoding, the
// form every x402 header carries.
func EncodeHeader(v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("x402: encode header: %w", err)
	}
	return base64.StdEncoding.EncodeToString(data), nil
}

// DecodeHeaderBytes returns the JSON text inside a header value. It accepts
// standard base64 with or without padding and, leniently, the URL-safe
// alphabet; surrounding white space is ignored.
func DecodeHeaderBytes(value string) ([]byte, error) {
	if len(value) > MaxHeaderSize {
		return nil, ErrHeaderTooLarge
	}
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, errors.New("x402: empty header value")
	}
	trimmed := strings.TrimRight(value, "=")
	if len(value)-len(trimmed) > 2 {
		return nil, errors.New("x402: header value is not base64: too much padding")
	}
	enc := base64.RawStdEncoding
	if strings.ContainsAny(trimmed, "-_") {
		if strings.ContainsAny(trimmed, "+/") {
			return nil, errors.New("x402: header value mixes base64 alphabets")
		}
		enc = base64.RawURLEncoding
	}
	data, err := enc.DecodeString(trimmed)
	if err != nil {
		return nil, fmt.Errorf("x402: header value is not base64: %w", err)
	}
	return data, nil
}

// DecodeHeader decodes a header value (see DecodeHeaderBytes) into v. The
// JSON must be a single value with nothing after it.
func DecodeHeader(value string, v any) error {
	data, err := DecodeHeaderBytes(value)
	if err != nil {
		return err
	}
	return decodeJSONStrict(data, v)
}

// DecodePaymentHeader decodes a PAYMENT-SIGNATURE or X-PAYMENT header value
// into a Payment of the version it declares.
func DecodePaymentHeader(value string) (Payment, error) {
	var p Payment
	if err := DecodeHeader(value, &p); err != nil {
		return Payment{}, err
	}
	return p, nil
}

// decodeJSONStrict unmarshals exactly one JSON value from data.
func decodeJSONStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("x402: header JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("x402: header JSON: trailing data after the value")
	}
	return nil
}

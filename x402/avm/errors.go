package avm

import (
	"errors"
	"fmt"
)

// Invalid-reason codes. This package emits the upstream @x402/avm family
// (snake case, prefix "invalid_exact_avm_"), plus the generic x402 codes
// payment_expired, insufficient_funds and duplicate_settlement, and four
// codes of its own in the same family for rules upstream does not check:
// ReasonGenesisMismatch, ReasonValidityWindow, ReasonFeeTooLow and
// ReasonReceiverNotOptedIn. Details go in the error's Message.
const (
	ReasonScheme                  = "invalid_exact_avm_scheme"
	ReasonNetworkMismatch         = "invalid_exact_avm_network_mismatch"
	ReasonInvalidVersion          = "invalid_exact_avm_invalid_version"
	ReasonPayload                 = "invalid_exact_avm_payload"
	ReasonGroupSizeExceeded       = "invalid_exact_avm_group_size_exceeded"
	ReasonPaymentIndex            = "invalid_exact_avm_payment_index"
	ReasonInvalidTransaction      = "invalid_exact_avm_invalid_transaction"
	ReasonInvalidGroupID          = "invalid_exact_avm_invalid_group_id"
	ReasonNotAssetTransfer        = "invalid_exact_avm_not_asset_transfer"
	ReasonAmountMismatch          = "invalid_exact_avm_amount_mismatch"
	ReasonReceiverMismatch        = "invalid_exact_avm_receiver_mismatch"
	ReasonAssetMismatch           = "invalid_exact_avm_asset_mismatch"
	ReasonInvalidFeePayer         = "invalid_exact_avm_invalid_fee_payer"
	ReasonFeeTooHigh              = "invalid_exact_avm_fee_too_high"
	ReasonPaymentNotSigned        = "invalid_exact_avm_payment_not_signed"
	ReasonInvalidSignature        = "invalid_exact_avm_invalid_signature"
	ReasonSimulationFailed        = "invalid_exact_avm_simulation_failed"
	ReasonFacilitatorTransferring = "invalid_exact_avm_facilitator_transferring"
	ReasonUnsignedNonFacilitator  = "invalid_exact_avm_unsigned_non_facilitator"
	ReasonSettlementFailed        = "invalid_exact_avm_settlement_failed"
	ReasonConfirmationFailed      = "invalid_exact_avm_confirmation_failed"

	// ReasonGenesisMismatch: a transaction's genesis hash is not the network's.
	ReasonGenesisMismatch = "invalid_exact_avm_genesis_hash_mismatch"
	// ReasonValidityWindow: first valid is in the future or last valid is
	// too far ahead.
	ReasonValidityWindow = "invalid_exact_avm_invalid_validity_window"
	// ReasonFeeTooLow: the group's fees do not cover the minimum fee.
	ReasonFeeTooLow = "invalid_exact_avm_fee_too_low"
	// ReasonReceiverNotOptedIn: payTo cannot receive the asset.
	ReasonReceiverNotOptedIn = "invalid_exact_avm_receiver_not_opted_in"

	// ReasonPaymentExpired: the current round is past last valid.
	ReasonPaymentExpired = "payment_expired"
	// ReasonInsufficientFunds: the payer lacks the amount, or is not opted in.
	ReasonInsufficientFunds = "insufficient_funds"
	// ReasonDuplicateSettlement: the payment was settled, or is being settled.
	ReasonDuplicateSettlement = "duplicate_settlement"
	// ReasonUnexpectedVerify: verification could not be completed (e.g.
	// algod unreachable); the payment itself may be fine.
	ReasonUnexpectedVerify = "unexpected_verify_error"
	// ReasonUnexpectedSettle: settlement could not be attempted.
	ReasonUnexpectedSettle = "unexpected_settle_error"
)

// Error is a rejected payment: Reason is an x402 invalid-reason code (see the
// Reason constants), Message a human explanation, Err an optional cause.
type Error struct {
	Reason  string
	Message string
	Err     error
}

// Error returns "reason: message: cause".
func (e *Error) Error() string {
	s := e.Reason
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of the first *Error in err's chain, or "".
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func reject(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func rejectErr(reason string, cause error, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...), Err: cause}
}

package x402

import (
	"fmt"
	"math"
	"strings"
)

// maxDecimals bounds the decimals argument of ParsePrice and FormatAmount:
// 10^19 is the largest power of ten a uint64 holds.
const maxDecimals = 19

// ParsePrice converts a decimal price such as "0.001", "$0.001", ".5" or "2" into
// base units of an asset with the given number of decimals ("0.001" with 6
// decimals is 1000). It is the one price parser of the project: the
// Caddyfile, discovery and the 402 all read prices with it. The math is
// exact (no floating point). A leading "$" and surrounding spaces are
// allowed; signs, exponents, separators and more
// significant fraction digits than the asset has are errors.
func ParsePrice(price string, decimals int) (uint64, error) {
	if decimals < 0 || decimals > maxDecimals {
		return 0, fmt.Errorf("x402: price: unsupported decimals %d", decimals)
	}
	s := strings.TrimSpace(price)
	s = strings.TrimPrefix(s, "$")
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" && frac != "" {
		whole = "0" // ".5" is 0.5
	}
	if whole == "" || (hasDot && frac == "") || !allDigits(whole) || !allDigits(frac) {
		return 0, fmt.Errorf("x402: price %q is not a plain decimal number", price)
	}
	significant := strings.TrimRight(frac, "0")
	if len(significant) > decimals {
		return 0, fmt.Errorf("x402: price %q has more than %d decimals", price, decimals)
	}
	digits := strings.TrimLeft(whole+significant+strings.Repeat("0", decimals-len(significant)), "0")
	var units uint64
	for _, c := range digits {
		d := uint64(c - '0')
		if units > (math.MaxUint64-d)/10 {
			return 0, fmt.Errorf("x402: price %q is too large", price)
		}
		units = units*10 + d
	}
	return units, nil
}

// FormatAmount renders base units as a decimal number with the given number
// of decimals, without trailing zeros: 1000 with 6 decimals is "0.001".
func FormatAmount(units uint64, decimals int) string {
	s := fmt.Sprintf("%d", units)
	if decimals <= 0 {
		return s
	}
	if len(s) <= decimals {
		s = strings.Repeat("0", decimals-len(s)+1) + s
	}
	whole, frac := s[:len(s)-decimals], strings.TrimRight(s[len(s)-decimals:], "0")
	if frac == "" {
		return whole
	}
	return whole + "." + frac
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

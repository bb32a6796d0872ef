package x402

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
)

// ErrNoMatch reports a payment that matches none of the offered requirements.
var ErrNoMatch = errors.New("x402: no matching payment requirements")

// MatchV2 returns the index of the offered requirement that a v2 client's
// accepted object was copied from, or -1. As in the reference servers, the
// core fields must be equal: scheme, network (compared normalised, so both
// CAIP-2 genesis-hash forms match), asset, amount, payTo and
// maxTimeoutSeconds; and accepted.extra must contain every key of the
// offer's extra with an equal value (the client may add keys). ns may be nil.
func MatchV2(accepted PaymentRequirements, offered []PaymentRequirements, ns *Networks) int {
	for i, o := range offered {
		if accepted.Scheme == o.Scheme &&
			ns.Same(accepted.Network, o.Network) &&
			accepted.Asset == o.Asset &&
			accepted.Amount == o.Amount &&
			accepted.PayTo == o.PayTo &&
			accepted.MaxTimeoutSeconds == o.MaxTimeoutSeconds &&
			extraContains(accepted.Extra, o.Extra) {
			return i
		}
	}
	return -1
}

// MatchV1 returns the index of the first offered v1 requirement with the
// payment's scheme and network (compared normalised), or -1.
func MatchV1(p PaymentPayloadV1, offered []PaymentRequirementsV1, ns *Networks) int {
	for i, o := range offered {
		if p.Scheme == o.Scheme && ns.Same(p.Network, o.Network) {
			return i
		}
	}
	return -1
}

// MatchRequirement finds the offered requirement, of the payment's version,
// that the payment was made for (see MatchV1 and MatchV2). The returned copy
// carries the network string exactly as the client sent it, so that
// facilitators and the payment response echo the client's form; offered
// requirements of the other version are skipped. It returns ErrNoMatch when
// nothing matches.
func MatchRequirement(p Payment, offered []Requirement, ns *Networks) (Requirement, error) {
	switch {
	case p.V2 != nil:
		var list []PaymentRequirements
		for _, o := range offered {
			if o.V2 != nil {
				list = append(list, *o.V2)
			}
		}
		i := MatchV2(p.V2.Accepted, list, ns)
		if i < 0 {
			return Requirement{}, ErrNoMatch
		}
		m := list[i]
		m.Network = p.V2.Accepted.Network
		return Requirement{V2: &m}, nil
	case p.V1 != nil:
		var list []PaymentRequirementsV1
		for _, o := range offered {
			if o.V1 != nil {
				list = append(list, *o.V1)
			}
		}
		i := MatchV1(*p.V1, list, ns)
		if i < 0 {
			return Requirement{}, ErrNoMatch
		}
		m := list[i]
		m.Network = p.V1.Network
		return Requirement{V1: &m}, nil
	}
	return Requirement{}, ErrNoMatch
}

// extraContains reports whether the JSON object have holds every key of want
// with a deep-equal value. An empty or null want is always contained.
func extraContains(have, want json.RawMessage) bool {
	want = bytes.TrimSpace(want)
	if len(want) == 0 || bytes.Equal(want, []byte("null")) {
		return true
	}
	var w map[string]any
	if err := json.Unmarshal(want, &w); err != nil {
		return bytes.Equal(bytes.TrimSpace(have), want)
	}
	if len(w) == 0 {
		return true
	}
	var h map[string]any
	if err := json.Unmarshal(have, &h); err != nil {
		return false
	}
	for k, v := range w {
		hv, ok := h[k]
		if !ok || !reflect.DeepEqual(hv, v) {
			return false
		}
	}
	return true
}

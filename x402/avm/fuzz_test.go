package avm

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
)

// FuzzDecodeGroup feeds arbitrary members (joined by "|") to the group
// decoder and the offline verifier: neither may panic, and every decoded
// member must encode back to a transaction with the same id.
func FuzzDecodeGroup(f *testing.F) {
	o := newOffline(f)
	p, err := BuildPayment(context.Background(), o.params, AccountSigner(o.payer), o.req)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(strings.Join(p.PaymentGroup, "|"), 1)
	f.Add(p.PaymentGroup[1], 0)
	f.Add(base64.StdEncoding.EncodeToString(msgpack.Encode(types.SignedTxn{})), 0)
	f.Add("gaN0eG6A", 0)
	f.Add("", 0)
	f.Fuzz(func(t *testing.T, joined string, index int) {
		payload := ExactPayload{PaymentGroup: strings.Split(joined, "|"), PaymentIndex: index}
		members, err := DecodeGroup(payload)
		if err == nil {
			for i, m := range members {
				back, err := DecodeMember(EncodeMember(m.Txn, m.Signed()))
				if err != nil {
					t.Fatalf("member %d does not decode after encoding: %v", i, err)
				}
				if crypto.GetTxID(back.Txn.Txn) != crypto.GetTxID(m.Txn.Txn) {
					t.Fatalf("member %d changed id in a round trip", i)
				}
			}
		}
		_, _ = Verify(context.Background(), o.cfg, o.req, payload)
	})
}

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

// FuzzDecodeMsgpackGroup feeds arbitrary msgpack, as the members of a group
// of one or two, to the member decoder and the offline verifier: neither
// may panic; a member that decodes encodes back to the same transaction;
// and nothing the verifier accepts breaks the sponsoring rules.
func FuzzDecodeMsgpackGroup(f *testing.F) {
	o := newOffline(f)
	p, err := BuildPayment(context.Background(), o.params, AccountSigner(o.payer), o.req)
	if err != nil {
		f.Fatal(err)
	}
	fee, _ := base64.StdEncoding.DecodeString(p.PaymentGroup[0])
	pay, _ := base64.StdEncoding.DecodeString(p.PaymentGroup[1])
	f.Add(fee, pay, uint8(1))
	f.Add(pay, fee, uint8(0))
	f.Add(pay, []byte(nil), uint8(0))
	f.Add(msgpack.Encode(types.SignedTxn{}), []byte{0x80}, uint8(0))
	f.Add([]byte{0x81, 0xa3, 't', 'x', 'n', 0x80}, []byte{0xc1}, uint8(1))
	f.Fuzz(func(t *testing.T, a, b []byte, index uint8) {
		payload := ExactPayload{PaymentGroup: []string{base64.StdEncoding.EncodeToString(a)}, PaymentIndex: int(index % 2)}
		if len(b) > 0 {
			payload.PaymentGroup = append(payload.PaymentGroup, base64.StdEncoding.EncodeToString(b))
		}
		for i, s := range payload.PaymentGroup {
			m, err := DecodeMember(s)
			if err != nil {
				continue
			}
			back, err := DecodeMember(EncodeMember(m.Txn, m.Signed()))
			if err != nil {
				t.Fatalf("member %d does not decode after encoding: %v", i, err)
			}
			if crypto.GetTxID(back.Txn.Txn) != crypto.GetTxID(m.Txn.Txn) {
				t.Fatalf("member %d changed id in a round trip", i)
			}
		}
		v, err := Verify(context.Background(), o.cfg, o.req, payload)
		if err != nil {
			return
		}
		if len(v.Members) > 2 || len(v.FeePayerIndexes) > 1 {
			t.Fatalf("accepted a group of %d with %d fee-payer members", len(v.Members), len(v.FeePayerIndexes))
		}
		for _, i := range v.FeePayerIndexes {
			txn := v.Members[i].Txn.Txn
			if uint64(txn.Fee) != MinTxnFee*uint64(len(v.Members)) || txn.Amount != 0 || txn.Receiver != txn.Sender {
				t.Fatalf("accepted a fee-payer member paying %d µAlgo and moving %d to %s", txn.Fee, txn.Amount, txn.Receiver)
			}
		}
		if pt := v.Members[v.PaymentIndex].Txn.Txn; pt.AssetAmount != o.req.Amount || pt.AssetReceiver != o.req.PayTo {
			t.Fatal("accepted a payment of the wrong amount or receiver")
		}
	})
}

// FuzzParsePayload feeds arbitrary JSON to the scheme payload parser and
// the payment id: no panics, and an accepted payload has members.
func FuzzParsePayload(f *testing.F) {
	f.Add([]byte(`{"paymentGroup":["gaN0eG6A"],"paymentIndex":0}`))
	f.Add([]byte(`{"paymentGroup":[],"paymentIndex":-1}`))
	f.Add([]byte(`{"paymentGroup":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParsePayload(raw)
		if err != nil {
			return
		}
		if len(p.PaymentGroup) == 0 {
			t.Fatal("accepted an empty group")
		}
		_, _ = p.PaymentTxID()
		_, _ = DecodeGroup(p)
	})
}

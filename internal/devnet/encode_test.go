package devnet

import (
	"bytes"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"
)

// TestTxnEncoderIsTheSDKs: the messages and group ids the devnet computes
// with reused buffers are the SDK's, for groups of 1, 2 and 16 members of
// different shapes, a large note among them (which grows the buffer).
func TestTxnEncoderIsTheSDKs(t *testing.T) {
	a, b := crypto.GenerateAccount(), crypto.GenerateAccount()
	params := types.SuggestedParams{Fee: 1000, FlatFee: true, FirstRoundValid: 10, LastRoundValid: 20, GenesisID: "t", GenesisHash: make([]byte, 32)}
	pay, err := transaction.MakePaymentTxn(a.Address.String(), b.Address.String(), 5, []byte("hi"), "", params)
	if err != nil {
		t.Fatal(err)
	}
	axfer, err := transaction.MakeAssetTransferTxn(b.Address.String(), a.Address.String(), 7, nil, params, "", 42)
	if err != nil {
		t.Fatal(err)
	}
	big := pay
	big.Note = bytes.Repeat([]byte{0x81}, MaxNoteBytes)
	shapes := []types.Transaction{pay, axfer, big}
	var enc txnEncoder
	for _, n := range []int{1, 2, MaxGroupSize} {
		txns := make([]types.Transaction, n)
		for i := range txns {
			txns[i] = shapes[i%len(shapes)]
		}
		want, err := crypto.ComputeGroupID(txns)
		if err != nil {
			t.Fatal(err)
		}
		if got := enc.groupID(txns); got != want {
			t.Fatalf("group of %d: %x, the SDK's %x", n, got, want)
		}
		for i := range txns {
			if got, want := enc.message(&txns[i]), append([]byte("TX"), msgpack.Encode(txns[i])...); !bytes.Equal(got, want) {
				t.Fatalf("member %d of %d: message differs from the codec's", i, n)
			}
		}
	}
}

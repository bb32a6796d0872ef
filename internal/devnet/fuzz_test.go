package devnet

import (
	"crypto/sha512"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"
)

// FuzzSubmit feeds arbitrary bodies to the decoder and the ledger: nothing
// may panic, and whatever is accepted must have been signed by the faucet,
// the only key that holds funds.
func FuzzSubmit(f *testing.F) {
	faucet := crypto.GenerateAccount()
	gh := types.Digest(sha512.Sum512_256([]byte("fuzz")))
	params := types.SuggestedParams{Fee: MinTxnFee, FlatFee: true, GenesisID: "fuzz", GenesisHash: gh[:], FirstRoundValid: 0, LastRoundValid: 100}
	pay, _ := transaction.MakePaymentTxn(faucet.Address.String(), crypto.GenerateAccount().Address.String(), 200_000, nil, "", params)
	_, good, _ := crypto.SignTransaction(faucet.PrivateKey, pay)
	f.Add(good)
	f.Add(append(append([]byte{}, good...), good...))
	f.Add([]byte{0x80})
	f.Add([]byte{0x81, 0xa3, 't', 'x', 'n', 0x80})
	f.Fuzz(func(t *testing.T, body []byte) {
		l := newLedger(gh, "fuzz", 1)
		l.genesis(faucet.Address, 1_000_000_000)
		group, err := decodeGroup(body)
		if err != nil {
			return
		}
		if _, _, err := l.submit(group); err != nil {
			return
		}
		for _, stx := range group {
			if stx.Txn.Sender != faucet.Address {
				t.Fatalf("accepted a transaction from %s", stx.Txn.Sender)
			}
		}
	})
}

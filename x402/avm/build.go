package avm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
)

// Protocol constants.
const (
	// MinTxnFee is Algorand's minimum fee per transaction, in µAlgo.
	MinTxnFee = transaction.MinTxnFee
	// MaxTxnLife is the longest validity window, in rounds.
	MaxTxnLife = 1000
	// SecondsPerRound is the round time assumed when converting
	// maxTimeoutSeconds to rounds.
	SecondsPerRound = 3
	// MinValidityRounds is the shortest validity window BuildPayment uses, so
	// that a payment survives the round trip to the server.
	MinValidityRounds = 10
)

// Signer signs transactions sent by one Algorand account.
type Signer interface {
	// Address is the account that sends the transactions.
	Address() types.Address
	// Sign signs txn, whose sender is Address().
	Sign(ctx context.Context, txn types.Transaction) (types.SignedTxn, error)
}

// KeySigner signs with an ed25519 key for Sender. When Sender has been
// rekeyed to the key's account, the signature carries that auth address.
type KeySigner struct {
	Sender types.Address
	Key    ed25519.PrivateKey
}

// AccountSigner returns a KeySigner for an account's own key.
func AccountSigner(a crypto.Account) KeySigner {
	return KeySigner{Sender: a.Address, Key: a.PrivateKey}
}

// SignerFromMnemonic returns a KeySigner for the account of a 25-word
// Algorand mnemonic (words separated by any white space). Its error never
// holds a word of the mnemonic: it names the problem and the position.
func SignerFromMnemonic(words string) (KeySigner, error) {
	words = strings.Join(strings.Fields(words), " ")
	sk, err := mnemonic.ToPrivateKey(words)
	if err != nil {
		return KeySigner{}, fmt.Errorf("avm: mnemonic: %s", mnemonicProblem(words))
	}
	a, err := crypto.AccountFromPrivateKey(sk)
	if err != nil {
		return KeySigner{}, errors.New("avm: mnemonic: it does not give an ed25519 key")
	}
	return AccountSigner(a), nil
}

// mnemonicLen is the number of words of an Algorand mnemonic.
const mnemonicLen = 25

// mnemonicProblem says what is wrong with a mnemonic the SDK refused,
// without quoting it (the SDK's own error quotes the unknown word).
func mnemonicProblem(words string) string {
	list := strings.Fields(words)
	if len(list) != mnemonicLen {
		return fmt.Sprintf("it has %d words, %d expected", len(list), mnemonicLen)
	}
	known := mnemonicWords()
	for i, w := range list {
		if !known[w] {
			return fmt.Sprintf("word %d of %d is not in the word list (mistyped?)", i+1, mnemonicLen)
		}
	}
	return "the checksum (the last word) does not match the others: a word is mistyped or out of order"
}

// mnemonicWords returns the SDK's word list, read back through
// mnemonic.FromKey: a key whose first 11 bits are i starts with word i.
func mnemonicWords() map[string]bool {
	known := make(map[string]bool, 2048)
	key := make([]byte, ed25519.SeedSize)
	for i := range 2048 {
		key[0], key[1] = byte(i), byte(i>>8)
		m, err := mnemonic.FromKey(key)
		if err != nil {
			continue
		}
		first, _, _ := strings.Cut(m, " ")
		known[first] = true
	}
	return known
}

// Address returns Sender.
func (s KeySigner) Address() types.Address { return s.Sender }

// KeyAddress returns the address of the signing key (the auth address).
func (s KeySigner) KeyAddress() types.Address {
	var a types.Address
	copy(a[:], s.Key.Public().(ed25519.PublicKey))
	return a
}

// Sign signs txn with the key: an ed25519 signature over "TX" +
// msgpack(txn), with the key's address as auth address when it is not
// txn's sender.
func (s KeySigner) Sign(_ context.Context, txn types.Transaction) (types.SignedTxn, error) {
	if len(s.Key) != ed25519.PrivateKeySize {
		return types.SignedTxn{}, fmt.Errorf("avm: sign: key is %d bytes, want %d", len(s.Key), ed25519.PrivateKeySize)
	}
	stx := types.SignedTxn{Txn: txn}
	copy(stx.Sig[:], ed25519.Sign(s.Key, append([]byte("TX"), msgpack.Encode(txn)...)))
	if key := s.KeyAddress(); key != txn.Sender {
		stx.AuthAddr = key
	}
	return stx, nil
}

// ValidityRounds converts maxTimeoutSeconds to a validity window in rounds:
// ceil(seconds / SecondsPerRound), at least MinValidityRounds and at most
// MaxTxnLife.
func ValidityRounds(maxTimeoutSeconds int) uint64 {
	rounds := uint64(0)
	if maxTimeoutSeconds > 0 {
		rounds = uint64((maxTimeoutSeconds + SecondsPerRound - 1) / SecondsPerRound)
	}
	return min(max(rounds, MinValidityRounds), MaxTxnLife)
}

// BuildPayment builds and signs the payment for req from the payer's
// account, using suggested params from algod. With a fee payer in req the
// group is [unsigned 0-ALGO pay feePayer→feePayer carrying the pooled fee,
// signed asset transfer with fee 0] and the payment index is 1; without one
// it is a single signed asset transfer paying its own fee. The validity
// window starts at params.FirstRoundValid and lasts
// ValidityRounds(req.MaxTimeoutSeconds).
func BuildPayment(ctx context.Context, params types.SuggestedParams, payer Signer, req Requirement) (ExactPayload, error) {
	if len(params.GenesisHash) != 32 {
		return ExactPayload{}, fmt.Errorf("avm: build payment: suggested params carry a %d-byte genesis hash", len(params.GenesisHash))
	}
	if want, ok := x402.GenesisHashOf(req.Network); ok && !bytes.Equal(want[:], params.GenesisHash) {
		return ExactPayload{}, fmt.Errorf("avm: build payment: algod serves another network than %s", req.Network)
	}
	minFee := max(params.MinFee, MinTxnFee)
	p := params
	p.FlatFee = true
	p.LastRoundValid = params.FirstRoundValid + types.Round(ValidityRounds(req.MaxTimeoutSeconds))

	nonce := make([]byte, 6)
	if _, err := rand.Read(nonce); err != nil {
		return ExactPayload{}, fmt.Errorf("avm: build payment: %w", err)
	}
	stamp := fmt.Sprintf("%d-%s", time.Now().UnixMilli(), hex.EncodeToString(nonce))

	pay, err := transaction.MakeAssetTransferTxn(payer.Address().String(), req.PayTo.String(), req.Amount,
		[]byte("x402-payment-v2-"+stamp), p, "", req.Asset)
	if err != nil {
		return ExactPayload{}, fmt.Errorf("avm: build payment: %w", err)
	}
	ownFee, err := memberFee(pay, params.Fee, minFee)
	if err != nil {
		return ExactPayload{}, err
	}

	if req.FeePayer.IsZero() {
		pay.Fee = types.MicroAlgos(ownFee)
		stx, err := payer.Sign(ctx, pay)
		if err != nil {
			return ExactPayload{}, fmt.Errorf("avm: build payment: %w", err)
		}
		return ExactPayload{PaymentGroup: []string{EncodeMember(stx, true)}, PaymentIndex: 0}, nil
	}

	feeTxn, err := transaction.MakePaymentTxn(req.FeePayer.String(), req.FeePayer.String(), 0,
		[]byte("x402-fee-payer-"+stamp), "", p)
	if err != nil {
		return ExactPayload{}, fmt.Errorf("avm: build payment: %w", err)
	}
	feeOwn, err := memberFee(feeTxn, params.Fee, minFee)
	if err != nil {
		return ExactPayload{}, err
	}
	feeTxn.Fee = types.MicroAlgos(feeOwn + ownFee)
	pay.Fee = 0
	group, err := transaction.AssignGroupID([]types.Transaction{feeTxn, pay}, "")
	if err != nil {
		return ExactPayload{}, fmt.Errorf("avm: build payment: group: %w", err)
	}
	stx, err := payer.Sign(ctx, group[1])
	if err != nil {
		return ExactPayload{}, fmt.Errorf("avm: build payment: %w", err)
	}
	return ExactPayload{
		PaymentGroup: []string{EncodeMember(types.SignedTxn{Txn: group[0]}, false), EncodeMember(stx, true)},
		PaymentIndex: 1,
	}, nil
}

// memberFee is the fee one transaction owes: its size times the per-byte
// fee, at least the minimum fee.
func memberFee(txn types.Transaction, perByte types.MicroAlgos, minFee uint64) (uint64, error) {
	size, err := transaction.EstimateSize(txn)
	if err != nil {
		return 0, fmt.Errorf("avm: estimate fee: %w", err)
	}
	return max(size*uint64(perByte), minFee), nil
}

// PaymentTxID returns the transaction id of paymentGroup[paymentIndex].
func (p ExactPayload) PaymentTxID() (string, error) {
	if p.PaymentIndex < 0 || p.PaymentIndex >= len(p.PaymentGroup) {
		return "", reject(ReasonPaymentIndex, "paymentIndex %d outside a group of %d", p.PaymentIndex, len(p.PaymentGroup))
	}
	m, err := DecodeMember(p.PaymentGroup[p.PaymentIndex])
	if err != nil {
		return "", err
	}
	return crypto.GetTxID(m.Txn.Txn), nil
}

// NewPayment wraps a built payload into the x402 payment of the requirement's
// version: a v2 payload echoing the requirement as accepted (with resource
// when given), or a v1 payload with its scheme and network.
func NewPayment(r x402.Requirement, resource *x402.ResourceInfo, p ExactPayload) (x402.Payment, error) {
	inner, err := json.Marshal(p)
	if err != nil {
		return x402.Payment{}, fmt.Errorf("avm: encode payload: %w", err)
	}
	switch {
	case r.V2 != nil:
		return x402.Payment{V2: &x402.PaymentPayload{X402Version: x402.Version2, Resource: resource, Accepted: *r.V2, Payload: inner}}, nil
	case r.V1 != nil:
		return x402.Payment{V1: &x402.PaymentPayloadV1{X402Version: x402.Version1, Scheme: r.V1.Scheme, Network: r.V1.Network, Payload: inner}}, nil
	}
	return x402.Payment{}, fmt.Errorf("avm: empty requirement")
}

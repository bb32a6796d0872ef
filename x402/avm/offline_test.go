package avm

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
	"github.com/algorand/go-algorand-sdk/v2/transaction"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
)

const testRound = 5000

// offline holds the accounts and parameters of an offline test.
type offline struct {
	payer, payTo, feePayer crypto.Account
	params                 types.SuggestedParams
	req                    Requirement
	cfg                    VerifyConfig
}

func newOffline(t testing.TB) *offline {
	t.Helper()
	o := &offline{payer: crypto.GenerateAccount(), payTo: crypto.GenerateAccount(), feePayer: crypto.GenerateAccount()}
	gh := x402.AlgorandTestnet.GenesisHash
	o.params = types.SuggestedParams{
		Fee: 0, MinFee: 1000, GenesisID: "testnet-v1.0", GenesisHash: gh[:],
		FirstRoundValid: testRound, LastRoundValid: testRound + 1000,
	}
	o.req = Requirement{
		Network: x402.AlgorandTestnet.CAIP2(), Asset: x402.AlgorandTestnet.USDC, Amount: 1000,
		PayTo: o.payTo.Address, FeePayer: o.feePayer.Address, MaxTimeoutSeconds: 60,
	}
	o.cfg = VerifyConfig{GenesisHash: gh, FeePayers: []Signer{AccountSigner(o.feePayer)}, CurrentRound: testRound}
	return o
}

func (o *offline) build(t *testing.T, req Requirement) ExactPayload {
	t.Helper()
	p, err := BuildPayment(context.Background(), o.params, AccountSigner(o.payer), req)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (o *offline) expect(t *testing.T, p ExactPayload, reason string) {
	t.Helper()
	_, err := Verify(context.Background(), o.cfg, o.req, p)
	if reason == "" {
		if err != nil {
			t.Fatalf("rejected a valid payment: %v", err)
		}
		return
	}
	if got := ReasonOf(err); got != reason {
		t.Fatalf("reason = %q (%v), want %q", got, err, reason)
	}
}

// axfer returns the payer's transfer for req with the given params.
func (o *offline) axfer(t *testing.T, amount uint64, fee uint64) types.Transaction {
	t.Helper()
	p := o.params
	p.FlatFee, p.Fee = true, types.MicroAlgos(fee)
	p.LastRoundValid = testRound + 20
	txn, err := transaction.MakeAssetTransferTxn(o.payer.Address.String(), o.payTo.Address.String(), amount, []byte("t"), p, "", o.req.Asset)
	if err != nil {
		t.Fatal(err)
	}
	return txn
}

func (o *offline) feeTxn(t *testing.T, fee uint64) types.Transaction {
	t.Helper()
	p := o.params
	p.FlatFee, p.Fee = true, types.MicroAlgos(fee)
	p.LastRoundValid = testRound + 20
	txn, err := transaction.MakePaymentTxn(o.feePayer.Address.String(), o.feePayer.Address.String(), 0, nil, "", p)
	if err != nil {
		t.Fatal(err)
	}
	return txn
}

// assemble groups txns (when more than one) and signs those with a key.
func assemble(t *testing.T, txns []types.Transaction, keys []crypto.Account, index int) ExactPayload {
	t.Helper()
	if len(txns) > 1 {
		var err error
		if txns, err = transaction.AssignGroupID(txns, ""); err != nil {
			t.Fatal(err)
		}
	}
	out := ExactPayload{PaymentIndex: index}
	for i, txn := range txns {
		if i < len(keys) && keys[i].PrivateKey != nil {
			_, raw, err := crypto.SignTransaction(keys[i].PrivateKey, txn)
			if err != nil {
				t.Fatal(err)
			}
			out.PaymentGroup = append(out.PaymentGroup, base64.StdEncoding.EncodeToString(raw))
		} else {
			out.PaymentGroup = append(out.PaymentGroup, base64.StdEncoding.EncodeToString(msgpack.Encode(txn)))
		}
	}
	return out
}

func TestBuildAndVerifyWithFeePayer(t *testing.T) {
	o := newOffline(t)
	p := o.build(t, o.req)
	if len(p.PaymentGroup) != 2 || p.PaymentIndex != 1 {
		t.Fatalf("group of %d, index %d", len(p.PaymentGroup), p.PaymentIndex)
	}
	fee, err := DecodeMember(p.PaymentGroup[0])
	if err != nil {
		t.Fatal(err)
	}
	pay, _ := DecodeMember(p.PaymentGroup[1])
	if fee.Signed() || !pay.Signed() {
		t.Error("fee payer must be unsigned and the payment signed")
	}
	if fee.Txn.Txn.Fee != 2000 || pay.Txn.Txn.Fee != 0 || fee.Txn.Txn.Amount != 0 || fee.Txn.Txn.Receiver != o.feePayer.Address {
		t.Errorf("fees %d/%d, fee-payer txn %+v", fee.Txn.Txn.Fee, pay.Txn.Txn.Fee, fee.Txn.Txn.PaymentTxnFields)
	}
	if lv := pay.Txn.Txn.LastValid - pay.Txn.Txn.FirstValid; lv != 20 {
		t.Errorf("validity window of %d rounds for 60 s, want 20", lv)
	}
	v, err := Verify(context.Background(), o.cfg, o.req, p)
	if err != nil {
		t.Fatal(err)
	}
	txid, _ := p.PaymentTxID()
	if v.Payer != o.payer.Address || v.PaymentTxID != txid || len(v.FeePayerIndexes) != 1 || v.FeePayerIndexes[0] != 0 {
		t.Errorf("verified %+v", v)
	}
	if v.GroupID == (types.Digest{}) {
		t.Error("no group id")
	}
}

func TestBuildAndVerifyWithoutFeePayer(t *testing.T) {
	o := newOffline(t)
	o.req.FeePayer = types.Address{}
	o.req.MaxTimeoutSeconds = 100000
	p := o.build(t, o.req)
	if len(p.PaymentGroup) != 1 || p.PaymentIndex != 0 {
		t.Fatalf("group of %d, index %d", len(p.PaymentGroup), p.PaymentIndex)
	}
	m, _ := DecodeMember(p.PaymentGroup[0])
	if m.Txn.Txn.Fee != 1000 || m.Txn.Txn.Group != (types.Digest{}) {
		t.Errorf("fee %d group %v", m.Txn.Txn.Fee, m.Txn.Txn.Group)
	}
	if w := m.Txn.Txn.LastValid - m.Txn.Txn.FirstValid; w != MaxTxnLife {
		t.Errorf("window %d, want the cap %d", w, MaxTxnLife)
	}
	o.expect(t, p, "")
}

func TestBuildRefusesWrongNetwork(t *testing.T) {
	o := newOffline(t)
	o.req.Network = x402.AlgorandMainnet.CAIP2Short()
	if _, err := BuildPayment(context.Background(), o.params, AccountSigner(o.payer), o.req); err == nil {
		t.Fatal("signed for mainnet with testnet params")
	}
}

func TestVerifyPaymentMismatches(t *testing.T) {
	o := newOffline(t)
	p := o.build(t, o.req)
	cases := map[string]func(r *Requirement){
		ReasonAmountMismatch:   func(r *Requirement) { r.Amount = 1001 },
		ReasonAssetMismatch:    func(r *Requirement) { r.Asset = 31566704 },
		ReasonReceiverMismatch: func(r *Requirement) { r.PayTo = o.payer.Address },
	}
	for reason, mutate := range cases {
		t.Run(reason, func(t *testing.T) {
			req := o.req
			mutate(&req)
			_, err := Verify(context.Background(), o.cfg, req, p)
			if ReasonOf(err) != reason {
				t.Fatalf("got %v", err)
			}
		})
	}
	// Paying less than required, built as such by the client.
	less := o.req
	less.Amount = 999
	o.expect(t, o.build(t, less), ReasonAmountMismatch)
}

func TestVerifyRounds(t *testing.T) {
	o := newOffline(t)
	p := o.build(t, o.req) // valid testRound .. testRound+20
	o.cfg.CurrentRound = testRound + 20
	o.expect(t, p, ReasonPaymentExpired)
	o.cfg.CurrentRound = testRound + 19 // next round is the last valid one
	o.expect(t, p, "")
	o.cfg.CurrentRound = testRound - 2 // next round precedes first valid
	o.expect(t, p, ReasonValidityWindow)

	// A window ending more than MaxTxnLife rounds ahead.
	o.cfg.CurrentRound = testRound
	pay := o.axfer(t, 1000, 1000)
	pay.FirstValid, pay.LastValid = testRound+1, testRound+1+MaxTxnLife+5
	o.expect(t, assemble(t, []types.Transaction{pay}, []crypto.Account{o.payer}, 0), ReasonValidityWindow)
}

func TestVerifySignatures(t *testing.T) {
	o := newOffline(t)
	o.req.FeePayer = types.Address{}
	pay := o.axfer(t, 1000, 1000)

	o.expect(t, assemble(t, []types.Transaction{pay}, []crypto.Account{o.payer}, 0), "")
	o.expect(t, assemble(t, []types.Transaction{pay}, nil, 0), ReasonPaymentNotSigned)
	o.expect(t, assemble(t, []types.Transaction{pay}, []crypto.Account{crypto.GenerateAccount()}, 0), ReasonInvalidSignature)

	// Tampered: sign, then change the note under the signature.
	signed := assemble(t, []types.Transaction{pay}, []crypto.Account{o.payer}, 0)
	m, _ := DecodeMember(signed.PaymentGroup[0])
	m.Txn.Txn.Note = []byte("changed")
	signed.PaymentGroup[0] = EncodeMember(m.Txn, true)
	o.expect(t, signed, ReasonInvalidSignature)

	// A signature by another key without sgnr.
	other := crypto.GenerateAccount()
	sig := assemble(t, []types.Transaction{pay}, []crypto.Account{other}, 0)
	m, _ = DecodeMember(sig.PaymentGroup[0])
	m.Txn.AuthAddr = types.Address{}
	sig.PaymentGroup[0] = EncodeMember(m.Txn, true)
	o.expect(t, sig, ReasonInvalidSignature)
}

func TestVerifyMultisigPayer(t *testing.T) {
	o := newOffline(t)
	o.req.FeePayer = types.Address{}
	a, b := crypto.GenerateAccount(), crypto.GenerateAccount()
	ma, err := crypto.MultisigAccountWithParams(1, 1, []types.Address{a.Address, b.Address})
	if err != nil {
		t.Fatal(err)
	}
	msigAddr, _ := ma.Address()
	p := o.params
	p.FlatFee, p.Fee, p.LastRoundValid = true, 1000, testRound+20
	pay, err := transaction.MakeAssetTransferTxn(msigAddr.String(), o.payTo.Address.String(), 1000, nil, p, "", o.req.Asset)
	if err != nil {
		t.Fatal(err)
	}
	_, raw, err := crypto.SignMultisigTransaction(b.PrivateKey, ma, pay)
	if err != nil {
		t.Fatal(err)
	}
	payload := ExactPayload{PaymentGroup: []string{base64.StdEncoding.EncodeToString(raw)}}
	o.expect(t, payload, "")

	// Two of two required, one given.
	ma2, _ := crypto.MultisigAccountWithParams(1, 2, []types.Address{a.Address, b.Address})
	msig2, _ := ma2.Address()
	pay.Sender = msig2
	_, raw, err = crypto.SignMultisigTransaction(b.PrivateKey, ma2, pay)
	if err != nil {
		t.Fatal(err)
	}
	o.expect(t, ExactPayload{PaymentGroup: []string{base64.StdEncoding.EncodeToString(raw)}}, ReasonInvalidSignature)
}

func TestVerifyDangerousFields(t *testing.T) {
	o := newOffline(t)
	o.req.FeePayer = types.Address{}
	closeTo := o.axfer(t, 1000, 1000)
	closeTo.AssetCloseTo = o.payTo.Address
	o.expect(t, assemble(t, []types.Transaction{closeTo}, []crypto.Account{o.payer}, 0), ReasonInvalidTransaction)

	rekey := o.axfer(t, 1000, 1000)
	rekey.RekeyTo = o.payTo.Address
	o.expect(t, assemble(t, []types.Transaction{rekey}, []crypto.Account{o.payer}, 0), ReasonInvalidTransaction)

	// A second signed member that closes the payer's ALGO account.
	p := o.params
	p.FlatFee, p.Fee, p.LastRoundValid = true, 1000, testRound+20
	drain, _ := transaction.MakePaymentTxn(o.payer.Address.String(), o.payTo.Address.String(), 0, nil, o.payTo.Address.String(), p)
	o.expect(t, assemble(t, []types.Transaction{o.axfer(t, 1000, 1000), drain}, []crypto.Account{o.payer, o.payer}, 0), ReasonInvalidTransaction)

	keyreg, _ := transaction.MakeKeyRegTxn(o.payer.Address.String(), nil, p, "", "", 0, 0, 0)
	o.expect(t, assemble(t, []types.Transaction{o.axfer(t, 1000, 1000), keyreg}, []crypto.Account{o.payer, o.payer}, 0), ReasonInvalidTransaction)

	clawback := o.axfer(t, 1000, 1000)
	clawback.AssetSender = o.feePayer.Address
	o.expect(t, assemble(t, []types.Transaction{clawback}, []crypto.Account{o.payer}, 0), ReasonInvalidTransaction)

	notAxfer, _ := transaction.MakePaymentTxn(o.payer.Address.String(), o.payTo.Address.String(), 1000, nil, "", p)
	o.expect(t, assemble(t, []types.Transaction{notAxfer}, []crypto.Account{o.payer}, 0), ReasonNotAssetTransfer)
}

func TestVerifyFeePayerRules(t *testing.T) {
	o := newOffline(t)
	noKey := crypto.Account{}
	group := func(fee types.Transaction, payFee uint64, keys ...crypto.Account) ExactPayload {
		return assemble(t, []types.Transaction{fee, o.axfer(t, 1000, payFee)}, keys, 1)
	}
	o.expect(t, group(o.feeTxn(t, 2000), 0, noKey, o.payer), "")

	o.expect(t, group(o.feeTxn(t, 2000), 0, o.feePayer, o.payer), ReasonInvalidFeePayer)
	o.expect(t, group(o.feeTxn(t, 10001), 0, noKey, o.payer), ReasonFeeTooHigh)
	o.expect(t, group(o.feeTxn(t, 1000), 0, noKey, o.payer), ReasonFeeTooLow)

	moves := o.feeTxn(t, 2000)
	moves.Amount = 1
	o.expect(t, group(moves, 0, noKey, o.payer), ReasonInvalidFeePayer)
	elsewhere := o.feeTxn(t, 2000)
	elsewhere.Receiver = o.payer.Address
	o.expect(t, group(elsewhere, 0, noKey, o.payer), ReasonInvalidFeePayer)
	closes := o.feeTxn(t, 2000)
	closes.CloseRemainderTo = o.payer.Address
	o.expect(t, group(closes, 0, noKey, o.payer), ReasonInvalidFeePayer)
	rekeys := o.feeTxn(t, 2000)
	rekeys.RekeyTo = o.payer.Address
	o.expect(t, group(rekeys, 0, noKey, o.payer), ReasonInvalidFeePayer)

	// Two fee-payer members.
	two := assemble(t, []types.Transaction{o.feeTxn(t, 1500), o.feeTxn(t, 1500), o.axfer(t, 1000, 0)}, []crypto.Account{noKey, noKey, o.payer}, 2)
	o.expect(t, two, ReasonGroupSizeExceeded)

	// An unsigned member whose sender is not ours.
	cfg := o.cfg
	o.cfg.FeePayers = nil
	o.expect(t, group(o.feeTxn(t, 2000), 0, noKey, o.payer), ReasonUnsignedNonFacilitator)
	o.cfg = cfg

	// The facilitator's address as payer.
	p := o.params
	p.FlatFee, p.Fee, p.LastRoundValid = true, 0, testRound+20
	theft, _ := transaction.MakeAssetTransferTxn(o.feePayer.Address.String(), o.payTo.Address.String(), 1000, nil, p, "", o.req.Asset)
	o.expect(t, assemble(t, []types.Transaction{o.feeTxn(t, 2000), theft}, []crypto.Account{noKey, o.feePayer}, 1), ReasonFacilitatorTransferring)

	// Without a fee payer a fee-0 payment (a GoPlausible 2.6.1 quirk) cannot pay.
	o.req.FeePayer = types.Address{}
	o.expect(t, assemble(t, []types.Transaction{o.axfer(t, 1000, 0)}, []crypto.Account{o.payer}, 0), ReasonFeeTooLow)
}

func TestVerifyGroupStructure(t *testing.T) {
	o := newOffline(t)
	a := o.build(t, o.req)
	b := o.build(t, o.req)
	mixed := ExactPayload{PaymentGroup: []string{a.PaymentGroup[0], b.PaymentGroup[1]}, PaymentIndex: 1}
	o.expect(t, mixed, ReasonInvalidGroupID)

	// Members without any group id.
	ungrouped := ExactPayload{PaymentIndex: 1}
	for _, txn := range []types.Transaction{o.feeTxn(t, 2000), o.axfer(t, 1000, 0)} {
		ungrouped.PaymentGroup = append(ungrouped.PaymentGroup, EncodeMember(types.SignedTxn{Txn: txn}, false))
	}
	_, raw, _ := crypto.SignTransaction(o.payer.PrivateKey, o.axfer(t, 1000, 0))
	ungrouped.PaymentGroup[1] = base64.StdEncoding.EncodeToString(raw)
	o.expect(t, ungrouped, ReasonInvalidGroupID)

	o.expect(t, ExactPayload{PaymentGroup: a.PaymentGroup, PaymentIndex: 2}, ReasonPaymentIndex)
	o.expect(t, ExactPayload{PaymentGroup: a.PaymentGroup, PaymentIndex: -1}, ReasonPaymentIndex)
	big := ExactPayload{PaymentIndex: 0}
	for range 17 {
		big.PaymentGroup = append(big.PaymentGroup, a.PaymentGroup[1])
	}
	o.expect(t, big, ReasonGroupSizeExceeded)
	o.expect(t, ExactPayload{PaymentGroup: []string{"not base64!"}}, ReasonInvalidTransaction)

	// Trailing bytes after a member.
	raw, _ = base64.StdEncoding.DecodeString(a.PaymentGroup[1])
	trailing := ExactPayload{PaymentGroup: []string{a.PaymentGroup[0], base64.StdEncoding.EncodeToString(append(raw, raw...))}, PaymentIndex: 1}
	o.expect(t, trailing, ReasonInvalidTransaction)
}

func TestVerifyGenesisHash(t *testing.T) {
	o := newOffline(t)
	p := o.build(t, o.req)
	o.cfg.GenesisHash = x402.AlgorandMainnet.GenesisHash
	o.expect(t, p, ReasonGenesisMismatch)
}

func TestVerifyRekeyedSignerNeedsLedger(t *testing.T) {
	o := newOffline(t)
	o.req.FeePayer = types.Address{}
	auth := crypto.GenerateAccount()
	stx, err := KeySigner{Sender: o.payer.Address, Key: auth.PrivateKey}.Sign(context.Background(), o.axfer(t, 1000, 1000))
	if err != nil {
		t.Fatal(err)
	}
	if stx.AuthAddr != auth.Address {
		t.Fatalf("sgnr = %s, want %s", stx.AuthAddr, auth.Address)
	}
	o.expect(t, ExactPayload{PaymentGroup: []string{EncodeMember(stx, true)}}, ReasonInvalidSignature)
}

// The two members of the exact-scheme spec's example decode, with the spec's
// payment txid and a consistent group; the example's signature is not a real
// one, which is the first rule it fails.
func TestSpecVector(t *testing.T) {
	const (
		fee = "gaN0eG6Jo2ZlZc0H0KJmds4DLgNro2dlbqxtYWlubmV0LXYxLjCiZ2jEIMBhxNj8Hb3e0tdgS+RWjj9tBBmHrDe95LYgtas5JIrfo2dycMQgfy1Szr+lgvgTJsviMY2KnHSsXqyfCJ1UOCE+2Tf3vS+ibHbOAy4HU6NyY3bEICgEhaJgm6IBjiSUgAAAAAAAAAAAAAAAAAAAAAAAAAAAo3NuZMQgKASFomCbogGOJJSAAAAAAAAAAAAAAAAAAAAAAAAAAACkdHlwZaNwYXk="
		pay = "gqNzaWfEQP3J1DI6GLSfK0nLZftvSyVMJuFOE48xPlnZpNdEJWbGbcxsD5aASwza4TjbwhgEF0dXOv8E3W/f22vkEzfFywWjdHhuiaRhYW10zgBMS0CkYXJjdsQgiSTqRESRI1JEAxxJKQAAAAAAAAAAAAAAAAAAAAAAAACiZnbOAy4Da6JnaMQgwGHE2Pwdvd7S12BL5FaOP20EGYesN73ktiC1qzkkit+jZ3JwxCB/LVLOv6WC+BMmy+IxjYqcdKxerJ8InVQ4IT7ZN/e9L6Jsds4DLgdTo3NuZMQgEtBGzAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACkdHlwZaVheGZlcqR4YWlkzgHhq3A="
	)
	var payload ExactPayload
	if err := json.Unmarshal([]byte(`{"paymentIndex":1,"paymentGroup":["`+fee+`","`+pay+`"]}`), &payload); err != nil {
		t.Fatal(err)
	}
	txid, err := payload.PaymentTxID()
	if err != nil || txid != "NTRZR6HGMMZGYMJKUNVNLKLA427ACAVIPFNC6JHA5XNBQQHW7MWA" {
		t.Fatalf("txid %q, %v", txid, err)
	}
	members, err := DecodeGroup(payload)
	if err != nil {
		t.Fatal(err)
	}
	facilitator := members[0].Txn.Txn.Sender
	if members[0].Signed() || !members[1].Signed() || members[0].Txn.Txn.Fee != 2000 {
		t.Fatal("spec members decoded wrongly")
	}
	payTo, _ := types.DecodeAddress("RESOURCESERVERADDRESSAAAAAAAAAAAAAAAAAAAAAAAAAAAAAALTSRPAE")
	req := Requirement{Network: x402.AlgorandMainnet.CAIP2(), Asset: 31566704, Amount: 5000000, PayTo: payTo, FeePayer: facilitator}
	cfg := VerifyConfig{
		GenesisHash:  x402.AlgorandMainnet.GenesisHash,
		FeePayers:    []Signer{KeySigner{Sender: facilitator}},
		CurrentRound: 53347179,
	}
	_, err = Verify(context.Background(), cfg, req, payload)
	if ReasonOf(err) != ReasonInvalidSignature {
		t.Fatalf("got %v, want the signature to be the failing rule", err)
	}
}

func TestSignerFromMnemonic(t *testing.T) {
	a := crypto.GenerateAccount()
	words, err := mnemonic.FromPrivateKey(a.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := SignerFromMnemonic(words)
	if err != nil || s.Address() != a.Address || s.KeyAddress() != a.Address {
		t.Fatalf("signer %v, %v", s.Address(), err)
	}
	if _, err := SignerFromMnemonic("not a mnemonic"); err == nil {
		t.Error("accepted a bad mnemonic")
	}
}

func TestParseRequirement(t *testing.T) {
	payTo := crypto.GenerateAccount().Address.String()
	terms := x402.Terms{Scheme: "exact", Network: "algorand-testnet", Asset: "10458941", Amount: "1000", PayTo: payTo,
		Extra: json.RawMessage(`{"feePayer":"` + payTo + `"}`)}
	r, err := ParseRequirement(terms)
	if err != nil || r.Amount != 1000 || r.Asset != 10458941 || r.FeePayer.String() != payTo {
		t.Fatalf("%+v, %v", r, err)
	}
	bad := []func(*x402.Terms){
		func(t *x402.Terms) { t.Scheme = "upto" },
		func(t *x402.Terms) { t.Asset = "USDC" },
		func(t *x402.Terms) { t.Amount = "1.5" },
		func(t *x402.Terms) { t.Amount = "-1" },
		func(t *x402.Terms) { t.PayTo = "nope" },
		func(t *x402.Terms) { t.Extra = json.RawMessage(`{"feePayer":"nope"}`) },
	}
	for i, mutate := range bad {
		tt := terms
		mutate(&tt)
		if _, err := ParseRequirement(tt); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
	if !strings.Contains(r.String(), "1000 of ASA 10458941") {
		t.Errorf("String() = %q", r.String())
	}
}

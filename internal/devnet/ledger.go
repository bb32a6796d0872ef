package devnet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/types"
)

// account is an account's state. An account whose state is all zero does
// not exist (algod deletes it).
type account struct {
	algo    uint64
	auth    types.Address
	assets  map[uint64]holding
	created int
}

// holding is an opted-in account's position in one asset.
type holding struct {
	amount     uint64
	optedRound uint64
}

func (a *account) empty() bool {
	return a.algo == 0 && a.auth.IsZero() && len(a.assets) == 0 && a.created == 0
}

// minBalance is 0.1 ALGO plus 0.1 ALGO per asset held.
func (a *account) minBalance() uint64 {
	return MinBalance * uint64(1+len(a.assets))
}

func (a *account) clone() *account {
	c := *a
	c.assets = make(map[uint64]holding, len(a.assets)+1)
	for id, h := range a.assets {
		c.assets[id] = h
	}
	return &c
}

// asset is a created ASA.
type asset struct {
	id      uint64
	creator types.Address
	params  types.AssetParams
	round   uint64
}

// txnRecord is a committed transaction, kept for pending-transaction
// lookups and duplicate detection.
type txnRecord struct {
	txid               string
	stx                types.SignedTxn
	round              uint64
	assetIndex         uint64
	closingAmount      uint64
	assetClosingAmount uint64
}

type leaseKey struct {
	sender types.Address
	lease  [32]byte
}

// ledger is the devnet's in-memory chain state. All fields below mu are
// guarded by it.
type ledger struct {
	genesisHash types.Digest
	genesisID   string
	feeSink     types.Address
	verified    *verifiedCache // stateless checks that passed

	mu        sync.Mutex
	closed    bool
	round     uint64
	roundAt   time.Time
	roundCh   chan struct{} // closed and replaced when the round advances
	accounts  map[types.Address]*account
	assets    map[uint64]*asset
	nextAsset uint64
	txns      map[string]*txnRecord
	leases    map[leaseKey]uint64 // lease → last valid round of its holder
	expiry    map[uint64][]expiring
	pruned    uint64 // expiry buckets up to this round are gone
}

// expiring is a record or lease to forget once a round has passed.
type expiring struct {
	txid  string
	lease *leaseKey
}

func newLedger(genesisHash types.Digest, genesisID string, firstAsset uint64) *ledger {
	return &ledger{
		genesisHash: genesisHash,
		genesisID:   genesisID,
		verified:    newVerifiedCache(),
		roundAt:     time.Now(),
		roundCh:     make(chan struct{}),
		accounts:    make(map[types.Address]*account),
		assets:      make(map[uint64]*asset),
		nextAsset:   firstAsset,
		txns:        make(map[string]*txnRecord),
		leases:      make(map[leaseKey]uint64),
		expiry:      make(map[uint64][]expiring),
	}
}

// genesis credits an account at round 0, before any transaction.
func (l *ledger) genesis(addr types.Address, microAlgos uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accounts[addr] = &account{algo: microAlgos, assets: map[uint64]holding{}}
}

// errClosed is returned by operations on a closed devnet.
var errClosed = errors.New("devnet is closed")

// submit checks a group and, when every rule passes, commits it atomically
// in a new round. It returns the members' txids and the round.
func (l *ledger) submit(group []types.SignedTxn) ([]string, uint64, error) {
	in, _, err := prepare(group, l.genesisHash, l.genesisID, false, l.verified)
	if err != nil {
		return nil, 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, 0, errClosed
	}
	o := l.overlay()
	next := l.round + 1
	recs, _, err := o.evalGroup(in, next)
	if err != nil {
		return nil, 0, err
	}
	l.commit(o, recs, next)
	txids := make([]string, len(in))
	for i := range in {
		txids[i] = in[i].txid
	}
	return txids, next, nil
}

// groupResult is the outcome of one simulated group.
type groupResult struct {
	records  []*txnRecord // the members applied before any failure
	failedAt int          // -1 when the group would commit
	err      error
}

// simulate evaluates groups in order, as if in the next round, without
// committing anything. Evaluation stops at the first failing group.
func (l *ledger) simulate(groups [][]types.SignedTxn, allowEmptySigs bool) ([]groupResult, uint64) {
	out := make([]groupResult, 0, len(groups))
	prepared := make([][]txnIn, len(groups))
	for i, g := range groups {
		in, at, err := prepare(g, l.genesisHash, l.genesisID, allowEmptySigs, l.verified)
		if err != nil {
			return append(out, groupResult{failedAt: at, err: err}), l.lastRound()
		}
		prepared[i] = in
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	o := l.overlay()
	for _, in := range prepared {
		recs, at, err := o.evalGroup(in, l.round+1)
		if err != nil {
			out = append(out, groupResult{records: recs, failedAt: at, err: err})
			break
		}
		out = append(out, groupResult{records: recs, failedAt: -1})
	}
	return out, l.round
}

// lastRound returns the latest committed round.
func (l *ledger) lastRound() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.round
}

// advance makes n empty rounds.
func (l *ledger) advance(n uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	if n > math.MaxUint64/2-l.round {
		return fmt.Errorf("advancing %d rounds from round %d overflows", n, l.round)
	}
	l.setRound(l.round + n)
	return nil
}

// close wakes every waiter and refuses later changes.
func (l *ledger) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.roundCh)
	}
}

// waitAfter blocks until the round is past r, ctx ends, timeout passes or
// the devnet closes, and returns the latest round.
func (l *ledger) waitAfter(ctx context.Context, r uint64, timeout time.Duration) (uint64, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		l.mu.Lock()
		round, ch, closed := l.round, l.roundCh, l.closed
		l.mu.Unlock()
		if round > r || closed {
			return round, nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return round, nil
		case <-ctx.Done():
			return round, ctx.Err()
		}
	}
}

// setRound moves to round r, wakes waiters and forgets what expired.
// l.mu must be held.
func (l *ledger) setRound(r uint64) {
	l.round = r
	l.roundAt = time.Now()
	close(l.roundCh)
	l.roundCh = make(chan struct{})
	l.prune()
}

// prune drops the records and leases whose expiry round has passed.
// l.mu must be held.
func (l *ledger) prune() {
	if l.round <= l.pruned {
		return
	}
	drop := func(list []expiring) {
		for _, e := range list {
			if e.lease != nil {
				if lv, ok := l.leases[*e.lease]; ok && lv < l.round {
					delete(l.leases, *e.lease)
				}
				continue
			}
			delete(l.txns, e.txid)
		}
	}
	if l.round-l.pruned > uint64(len(l.expiry)) {
		for r, list := range l.expiry {
			if r < l.round {
				drop(list)
				delete(l.expiry, r)
			}
		}
	} else {
		for r := l.pruned; r < l.round; r++ {
			if list, ok := l.expiry[r]; ok {
				drop(list)
				delete(l.expiry, r)
			}
		}
	}
	l.pruned = l.round
}

// overlay returns an empty change set on top of the ledger. l.mu must be
// held while it is used.
func (l *ledger) overlay() *overlay {
	return &overlay{
		l:         l,
		accts:     make(map[types.Address]*account),
		assets:    make(map[uint64]*asset),
		nextAsset: l.nextAsset,
		txids:     make(map[string]struct{}),
		leases:    make(map[leaseKey]uint64),
	}
}

// commit applies an overlay's changes and its records in round r, the new
// latest round. l.mu must be held.
func (l *ledger) commit(o *overlay, recs []*txnRecord, r uint64) {
	for addr, a := range o.accts {
		if a.empty() {
			delete(l.accounts, addr)
		} else {
			l.accounts[addr] = a
		}
	}
	for id, as := range o.assets {
		l.assets[id] = as
	}
	l.nextAsset = o.nextAsset
	for k, lv := range o.leases {
		l.leases[k] = lv
		key := k
		l.expiry[lv] = append(l.expiry[lv], expiring{lease: &key})
	}
	for _, rec := range recs {
		rec.round = r
		l.txns[rec.txid] = rec
		// Kept past last valid so that a confirmed transaction can still
		// be looked up, as algod finds it in its recent blocks.
		until := uint64(rec.stx.Txn.LastValid) + MaxTxnLife
		l.expiry[until] = append(l.expiry[until], expiring{txid: rec.txid})
	}
	l.setRound(r)
}

// overlay is a group's pending changes: copies of the accounts it touched
// and the assets, leases and txids it adds.
type overlay struct {
	l         *ledger
	accts     map[types.Address]*account
	assets    map[uint64]*asset
	nextAsset uint64
	txids     map[string]struct{}
	leases    map[leaseKey]uint64
}

// acct returns the writable copy of an account (a new empty one when it
// does not exist).
func (o *overlay) acct(addr types.Address) *account {
	if a, ok := o.accts[addr]; ok {
		return a
	}
	var a *account
	if base, ok := o.l.accounts[addr]; ok {
		a = base.clone()
	} else {
		a = &account{assets: map[uint64]holding{}}
	}
	o.accts[addr] = a
	return a
}

func (o *overlay) asset(id uint64) *asset {
	if as, ok := o.assets[id]; ok {
		return as
	}
	return o.l.assets[id]
}

// evalGroup applies a prepared group in round next. On failure it returns
// the records applied so far, the failing member's index and the reason;
// the overlay must then be discarded.
func (o *overlay) evalGroup(in []txnIn, next uint64) ([]*txnRecord, int, error) {
	var fees uint64
	for i := range in {
		t := &in[i]
		tx := &t.stx.Txn
		if next < uint64(tx.FirstValid) || next > uint64(tx.LastValid) {
			return nil, i, fmt.Errorf("transaction %s: txn dead: round %d outside of %d--%d", t.txid, next, tx.FirstValid, tx.LastValid)
		}
		if _, dup := o.l.txns[t.txid]; dup {
			return nil, i, fmt.Errorf("transaction already in ledger: %s", t.txid)
		}
		if _, dup := o.txids[t.txid]; dup {
			return nil, i, fmt.Errorf("transaction already in ledger: %s", t.txid)
		}
		o.txids[t.txid] = struct{}{}
		if tx.Lease != ([32]byte{}) {
			k := leaseKey{sender: tx.Sender, lease: tx.Lease}
			lv, held := o.leases[k]
			if !held {
				lv, held = o.l.leases[k]
			}
			if held && lv >= next {
				return nil, i, fmt.Errorf("transaction %s using an overlapping lease (sender %s, lease %s)", t.txid, tx.Sender, b64(tx.Lease[:]))
			}
			o.leases[k] = uint64(tx.LastValid)
		}
		if fees+uint64(tx.Fee) < fees {
			return nil, i, fmt.Errorf("transaction %s: fee overflow", t.txid)
		}
		fees += uint64(tx.Fee)
	}
	if need := uint64(MinTxnFee) * uint64(len(in)); fees < need {
		return nil, 0, fmt.Errorf("transaction %s: txgroup had %d in fees, which is less than the minimum %d * %d",
			in[0].txid, fees, len(in), MinTxnFee)
	}
	recs := make([]*txnRecord, 0, len(in))
	for i := range in {
		rec, err := o.apply(&in[i], next)
		if err != nil {
			return recs, i, fmt.Errorf("transaction %s: %w", in[i].txid, err)
		}
		recs = append(recs, rec)
	}
	return recs, -1, nil
}

// apply applies one transaction: its fee, rekey and effect, then checks the
// minimum balances of the accounts it touched.
func (o *overlay) apply(t *txnIn, next uint64) (*txnRecord, error) {
	tx := &t.stx.Txn
	rec := &txnRecord{txid: t.txid, stx: t.stx}
	snd := o.acct(tx.Sender)
	if !t.unsigned {
		want := snd.auth
		if want.IsZero() {
			want = tx.Sender
		}
		if got := t.authorizer(); got != want {
			return nil, fmt.Errorf("should have been authorized by %s but was actually authorized by %s", want, got)
		}
	}
	if err := o.move(tx.Sender, snd, o.l.feeSink, uint64(tx.Fee)); err != nil {
		return nil, err
	}
	if !tx.RekeyTo.IsZero() {
		if tx.RekeyTo == tx.Sender {
			snd.auth = types.Address{}
		} else {
			snd.auth = tx.RekeyTo
		}
	}
	touched := []types.Address{tx.Sender}
	var err error
	switch tx.Type {
	case types.PaymentTx:
		touched, err = o.pay(tx, snd, rec, touched)
	case types.AssetTransferTx:
		touched, err = o.assetTransfer(tx, snd, rec, next, touched)
	case types.AssetConfigTx:
		o.createAsset(tx, snd, rec, next)
	default:
		err = fmt.Errorf("transaction type %q is not supported by the devnet", tx.Type)
	}
	if err != nil {
		return nil, err
	}
	for _, addr := range touched {
		a := o.acct(addr)
		if !a.empty() && a.algo < a.minBalance() {
			return nil, fmt.Errorf("account %s balance %d below min %d (%d assets)", addr, a.algo, a.minBalance(), len(a.assets))
		}
	}
	return rec, nil
}

// move transfers µAlgo from an account (already loaded as from) to another.
func (o *overlay) move(fromAddr types.Address, from *account, toAddr types.Address, amount uint64) error {
	if amount == 0 {
		return nil
	}
	if from.algo < amount {
		return fmt.Errorf("overspend (account %s, balance %d, tried to spend %d)", fromAddr, from.algo, amount)
	}
	from.algo -= amount
	to := o.acct(toAddr)
	if to.algo+amount < to.algo {
		return fmt.Errorf("balance overflow (account %s)", toAddr)
	}
	to.algo += amount
	return nil
}

func (o *overlay) pay(tx *types.Transaction, snd *account, rec *txnRecord, touched []types.Address) ([]types.Address, error) {
	if err := o.move(tx.Sender, snd, tx.Receiver, uint64(tx.Amount)); err != nil {
		return nil, err
	}
	touched = append(touched, tx.Receiver)
	if tx.CloseRemainderTo.IsZero() {
		return touched, nil
	}
	if n := len(snd.assets); n > 0 {
		return nil, fmt.Errorf("cannot close: %d outstanding assets", n)
	}
	if snd.created > 0 {
		return nil, fmt.Errorf("cannot close: %d outstanding created assets", snd.created)
	}
	rec.closingAmount = snd.algo
	if err := o.move(tx.Sender, snd, tx.CloseRemainderTo, snd.algo); err != nil {
		return nil, err
	}
	snd.auth = types.Address{}
	return append(touched, tx.CloseRemainderTo), nil
}

func (o *overlay) assetTransfer(tx *types.Transaction, snd *account, rec *txnRecord, next uint64, touched []types.Address) ([]types.Address, error) {
	id := uint64(tx.XferAsset)
	as := o.asset(id)
	if as == nil {
		return nil, fmt.Errorf("asset %d does not exist or has been deleted", id)
	}
	sh, optedIn := snd.assets[id]
	if tx.AssetReceiver == tx.Sender && tx.AssetAmount == 0 && !optedIn {
		// Opt-in: a 0-amount transfer to oneself.
		snd.assets[id] = holding{optedRound: next}
		return touched, nil
	}
	if !optedIn {
		return nil, fmt.Errorf("asset %d missing from %s", id, tx.Sender)
	}
	if tx.AssetAmount > 0 || !tx.AssetReceiver.IsZero() {
		rcv := o.acct(tx.AssetReceiver)
		rh, ok := rcv.assets[id]
		if !ok {
			return nil, fmt.Errorf("receiver error: must optin, asset %d missing from %s", id, tx.AssetReceiver)
		}
		if sh.amount < tx.AssetAmount {
			return nil, fmt.Errorf("underflow on subtracting %d from sender amount %d", tx.AssetAmount, sh.amount)
		}
		if tx.AssetReceiver != tx.Sender {
			sh.amount -= tx.AssetAmount
			rh.amount += tx.AssetAmount
			snd.assets[id] = sh
			rcv.assets[id] = rh
		}
		touched = append(touched, tx.AssetReceiver)
	}
	if tx.AssetCloseTo.IsZero() {
		return touched, nil
	}
	if tx.Sender == as.creator {
		return nil, errors.New("cannot close asset ID in allocating account")
	}
	cl := o.acct(tx.AssetCloseTo)
	ch, ok := cl.assets[id]
	if !ok {
		return nil, fmt.Errorf("asset %d missing from %s", id, tx.AssetCloseTo)
	}
	rec.assetClosingAmount = sh.amount
	ch.amount += sh.amount
	cl.assets[id] = ch
	delete(snd.assets, id)
	return append(touched, tx.AssetCloseTo), nil
}

func (o *overlay) createAsset(tx *types.Transaction, snd *account, rec *txnRecord, next uint64) {
	id := o.nextAsset
	o.nextAsset++
	o.assets[id] = &asset{id: id, creator: tx.Sender, params: tx.AssetParams, round: next}
	snd.assets[id] = holding{amount: tx.AssetParams.Total, optedRound: next}
	snd.created++
	rec.assetIndex = id
}

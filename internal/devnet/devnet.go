// Package devnet is an in-process, algod-compatible Algorand network for
// tests and demos: a real in-memory ledger (ed25519 signatures, atomic
// groups, pooled fees, minimum balances, ASA opt-ins and transfers,
// close-to and rekeying, validity windows, rounds and duplicate detection)
// behind the algod v2 REST endpoints that go-algorand-sdk and the npm x402
// clients use. At start it funds a faucet account and creates a USDC-like
// asset (6 decimals) from it with a real signed transaction.
package devnet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
)

// Defaults.
const (
	// DefaultAddr is the listen address when Config.Addr is empty: a free
	// loopback port.
	DefaultAddr = "127.0.0.1:0"
	// DefaultGenesisID is the genesis ID of a devnet that impersonates no
	// network.
	DefaultGenesisID = "lualambda-devnet-v1"
	// DefaultUSDC is the asset id of the devnet's USDC when it impersonates
	// no network.
	DefaultUSDC = 1001
	// DefaultWaitTimeout is how long /v2/status/wait-for-block-after waits
	// for a new round.
	DefaultWaitTimeout = 3 * time.Second
	// NetworkName is the v1 network name of a devnet that impersonates no
	// network.
	NetworkName = "algorand-devnet"
	// ConsensusVersion is the consensus version the devnet reports.
	ConsensusVersion = "https://github.com/algorandfoundation/specs/tree/devnet-lualambda"
	// FaucetMicroAlgos is the faucet's genesis balance (10 billion ALGO).
	FaucetMicroAlgos = 10_000_000_000 * 1_000_000
	// USDCSupply is the USDC asset's total supply, all held by the faucet
	// (one billion USDC in 6-decimal units).
	USDCSupply = 1_000_000_000 * 1_000_000
)

// Config configures a devnet. The zero value is a fresh devnet on a free
// loopback port with a random token.
type Config struct {
	// Addr is the listen address; DefaultAddr when empty. Only loopback
	// addresses should be used.
	Addr string
	// Token is the algod API token clients send in X-Algo-API-Token; a
	// random 64-hex-digit token when empty.
	Token string
	// Impersonate, when its GenesisHash is set, makes the devnet report
	// that network's genesis hash and ID and create its USDC at the
	// network's USDC asset id, e.g. x402.AlgorandTestnet for clients that
	// accept only testnet and mainnet.
	Impersonate x402.Network
	// GenesisID overrides the genesis ID (DefaultGenesisID, or the
	// impersonated network's).
	GenesisID string
	// GenesisHash overrides the genesis hash. By default it is the
	// impersonated network's, else SHA-512/256 of the genesis ID, so that a
	// devnet's network id is the same from run to run.
	GenesisHash [32]byte
	// USDC overrides the asset id given to the USDC asset.
	USDC uint64
	// FaucetKey is the faucet's private key; random when nil.
	FaucetKey ed25519.PrivateKey
	// BlockInterval, when positive, also makes an empty round at this
	// interval. Every accepted group is committed at once in its own new
	// round either way (algod's dev mode).
	BlockInterval time.Duration
	// WaitTimeout bounds /v2/status/wait-for-block-after;
	// DefaultWaitTimeout when zero.
	WaitTimeout time.Duration
	// Log, when set, receives one line per submitted group (accepted or
	// rejected with its reason).
	Log io.Writer
	// OnPendingLookup, when set, is called with the txid of every
	// pending-transaction lookup, before it is answered: a test can tell
	// that a client is still waiting for a transaction.
	OnPendingLookup func(txid string)
}

// Devnet is a running devnet. Its methods are safe for concurrent use.
type Devnet struct {
	ledger      *ledger
	token       string
	url         string
	network     x402.Network
	usdc        uint64
	faucet      crypto.Account
	waitTimeout time.Duration
	log         io.Writer
	logMu       sync.Mutex
	fundSeq     atomic.Uint64

	hold     atomic.Bool
	onLookup func(txid string)
	heldMu   sync.Mutex
	held     [][]types.SignedTxn
	heldIDs  map[string]bool

	srv       *http.Server
	stop      chan struct{}
	closeOnce sync.Once
	done      sync.WaitGroup
}

// Start creates the ledger (faucet, fee sink, USDC asset), listens on
// cfg.Addr and serves the algod API until Close. ctx bounds the start only.
func Start(ctx context.Context, cfg Config) (*Devnet, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("devnet: %w", err)
	}
	d, err := newDevnet(cfg)
	if err != nil {
		return nil, err
	}
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devnet: listen on %s: %w", addr, err)
	}
	d.url = "http://" + ln.Addr().String()
	d.srv = &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	d.done.Add(1)
	go func() {
		defer d.done.Done()
		_ = d.srv.Serve(ln) // returns when Close shuts the server down
	}()
	if cfg.BlockInterval > 0 {
		d.done.Add(1)
		go d.tick(cfg.BlockInterval)
	}
	return d, nil
}

// newDevnet builds the ledger and its genesis state, without serving.
func newDevnet(cfg Config) (*Devnet, error) {
	n := x402.Network{Name: NetworkName, GenesisID: DefaultGenesisID, USDC: DefaultUSDC}
	if cfg.Impersonate.GenesisHash != ([32]byte{}) {
		n = cfg.Impersonate
		n.ExplorerTxURL = ""
		if n.USDC == 0 {
			n.USDC = DefaultUSDC
		}
	}
	if cfg.GenesisID != "" {
		n.GenesisID = cfg.GenesisID
	}
	switch {
	case cfg.GenesisHash != ([32]byte{}):
		n.GenesisHash = cfg.GenesisHash
	case n.GenesisHash == ([32]byte{}):
		n.GenesisHash = sha512.Sum512_256([]byte(n.GenesisID))
	}
	if cfg.USDC != 0 {
		n.USDC = cfg.USDC
	}
	token := cfg.Token
	if token == "" {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("devnet: token: %w", err)
		}
		token = hex.EncodeToString(b[:])
	}
	faucet := crypto.GenerateAccount()
	if cfg.FaucetKey != nil {
		var err error
		if faucet, err = crypto.AccountFromPrivateKey(cfg.FaucetKey); err != nil {
			return nil, fmt.Errorf("devnet: faucet key: %w", err)
		}
	}
	wait := cfg.WaitTimeout
	if wait <= 0 {
		wait = DefaultWaitTimeout
	}
	d := &Devnet{
		ledger:      newLedger(types.Digest(n.GenesisHash), n.GenesisID, n.USDC),
		token:       token,
		network:     n,
		faucet:      faucet,
		waitTimeout: wait,
		log:         cfg.Log,
		stop:        make(chan struct{}),
		onLookup:    cfg.OnPendingLookup,
		heldIDs:     make(map[string]bool),
	}
	// The fee sink collects fees; its address is a hash, so no key for it
	// exists.
	d.ledger.feeSink = types.Address(sha512.Sum512_256([]byte("lualambda-devnet fee sink")))
	d.ledger.genesis(d.ledger.feeSink, MinBalance)
	d.ledger.genesis(faucet.Address, FaucetMicroAlgos)
	id, err := d.createUSDC()
	if err != nil {
		return nil, fmt.Errorf("devnet: create USDC: %w", err)
	}
	if id != n.USDC {
		return nil, fmt.Errorf("devnet: USDC created as asset %d, want %d", id, n.USDC)
	}
	d.usdc = id
	return d, nil
}

// createUSDC creates the USDC asset from the faucet with a signed acfg.
func (d *Devnet) createUSDC() (uint64, error) {
	first := d.ledger.lastRound()
	txn := types.Transaction{
		Type: types.AssetConfigTx,
		Header: types.Header{
			Sender: d.faucet.Address, Fee: MinTxnFee,
			FirstValid: types.Round(first), LastValid: types.Round(first + MaxTxnLife),
			GenesisID: d.network.GenesisID, GenesisHash: types.Digest(d.network.GenesisHash),
		},
		AssetConfigTxnFields: types.AssetConfigTxnFields{AssetParams: types.AssetParams{
			Total: USDCSupply, Decimals: x402.USDCDecimals, UnitName: "USDC", AssetName: "USDC (devnet)",
			URL: "https://github.com/lualambda/caddy-lualambda", Manager: d.faucet.Address, Reserve: d.faucet.Address,
		}},
	}
	txids, _, err := d.ledger.submit([]types.SignedTxn{d.sign(txn)})
	if err != nil {
		return 0, err
	}
	d.ledger.mu.Lock()
	defer d.ledger.mu.Unlock()
	rec, ok := d.ledger.txns[txids[0]]
	if !ok {
		return 0, errors.New("asset creation not recorded")
	}
	return rec.assetIndex, nil
}

// sign signs a transaction with the faucet key.
func (d *Devnet) sign(txn types.Transaction) types.SignedTxn {
	return types.SignedTxn{Sig: signTxn(d.faucet.PrivateKey, txn), Txn: txn}
}

func (d *Devnet) tick(every time.Duration) {
	defer d.done.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			if err := d.ledger.advance(1); err != nil {
				return
			}
		}
	}
}

// Close stops the server and the block timer and wakes every waiting
// request. It may be called more than once.
func (d *Devnet) Close() {
	d.closeOnce.Do(func() {
		close(d.stop)
		d.ledger.close()
		if d.srv != nil {
			_ = d.srv.Close() // closes the listener and every connection
		}
		d.done.Wait()
	})
}

// URL returns the base URL of the algod API, e.g. "http://127.0.0.1:4001".
func (d *Devnet) URL() string { return d.url }

// Token returns the API token clients send in X-Algo-API-Token.
func (d *Devnet) Token() string { return d.token }

// GenesisHash returns the genesis hash every transaction must carry.
func (d *Devnet) GenesisHash() [32]byte { return d.network.GenesisHash }

// GenesisID returns the genesis ID.
func (d *Devnet) GenesisID() string { return d.network.GenesisID }

// Network returns the full-hash CAIP-2 id, "algorand:<std base64 hash>".
func (d *Devnet) Network() string { return d.network.CAIP2() }

// NetworkInfo returns the devnet as an x402 network: Name "algorand-devnet"
// (or the impersonated network's), genesis hash and ID, the USDC asset id,
// and no explorer.
func (d *Devnet) NetworkInfo() x402.Network { return d.network }

// USDC returns the asset id of the USDC asset (6 decimals, unit USDC),
// whose supply the faucet holds.
func (d *Devnet) USDC() uint64 { return d.usdc }

// Faucet returns the faucet account: it created USDC and holds the ALGO
// and USDC supply.
func (d *Devnet) Faucet() crypto.Account { return d.faucet }

// Round returns the latest committed round.
func (d *Devnet) Round() uint64 { return d.ledger.lastRound() }

// AdvanceRounds makes n empty rounds at once.
func (d *Devnet) AdvanceRounds(n uint64) error {
	if err := d.ledger.advance(n); err != nil {
		return fmt.Errorf("devnet: advance rounds: %w", err)
	}
	return nil
}

// Fund sends microAlgos and usdcUnits of USDC from the faucet to addr in
// one atomic group of signed transactions and returns once it is
// committed. Receiving USDC needs addr opted in to it.
func (d *Devnet) Fund(ctx context.Context, addr types.Address, microAlgos, usdcUnits uint64) error {
	_, _, err := d.fund(ctx, addr, microAlgos, usdcUnits)
	return err
}

// fund is Fund returning the first txid and the round.
func (d *Devnet) fund(ctx context.Context, addr types.Address, microAlgos, usdcUnits uint64) (string, uint64, error) {
	if err := ctx.Err(); err != nil {
		return "", 0, fmt.Errorf("devnet: fund %s: %w", addr, err)
	}
	if microAlgos == 0 && usdcUnits == 0 {
		return "", 0, fmt.Errorf("devnet: fund %s: nothing to send", addr)
	}
	first := d.ledger.lastRound()
	// A unique note keeps equal fundings in one round distinct txids.
	note := []byte(fmt.Sprintf("devnet faucet #%d", d.fundSeq.Add(1)))
	hdr := types.Header{
		Sender: d.faucet.Address, Fee: MinTxnFee, Note: note,
		FirstValid: types.Round(first), LastValid: types.Round(first + MaxTxnLife),
		GenesisID: d.network.GenesisID, GenesisHash: types.Digest(d.network.GenesisHash),
	}
	var txns []types.Transaction
	if microAlgos > 0 {
		txns = append(txns, types.Transaction{Type: types.PaymentTx, Header: hdr,
			PaymentTxnFields: types.PaymentTxnFields{Receiver: addr, Amount: types.MicroAlgos(microAlgos)}})
	}
	if usdcUnits > 0 {
		txns = append(txns, types.Transaction{Type: types.AssetTransferTx, Header: hdr,
			AssetTransferTxnFields: types.AssetTransferTxnFields{XferAsset: types.AssetIndex(d.usdc), AssetAmount: usdcUnits, AssetReceiver: addr}})
	}
	if len(txns) > 1 {
		gid, err := crypto.ComputeGroupID(txns)
		if err != nil {
			return "", 0, fmt.Errorf("devnet: fund %s: group: %w", addr, err)
		}
		for i := range txns {
			txns[i].Group = gid
		}
	}
	group := make([]types.SignedTxn, len(txns))
	for i, txn := range txns {
		group[i] = d.sign(txn)
	}
	txids, round, err := d.submit(group)
	if err != nil {
		return "", 0, fmt.Errorf("devnet: fund %s: %w", addr, err)
	}
	return txids[0], round, nil
}

// submit commits a group through the ledger and logs the outcome.
func (d *Devnet) submit(group []types.SignedTxn) ([]string, uint64, error) {
	txids, round, err := d.ledger.submit(group)
	if d.log != nil {
		d.logMu.Lock()
		if err != nil {
			fmt.Fprintf(d.log, "devnet: rejected group of %d: %v\n", len(group), err)
		} else {
			fmt.Fprintf(d.log, "devnet: round %d: committed %d txn(s), first %s\n", round, len(group), txids[0])
		}
		d.logMu.Unlock()
	}
	return txids, round, err
}

// HoldGroups is a test knob for confirmation delays. While on, a group
// submitted through the API that would commit is accepted but held in the
// pool, unconfirmed (its pending lookup reports confirmed-round 0), until
// ReleaseHeld commits or DropHeld forgets the held groups. Fund is never
// held.
func (d *Devnet) HoldGroups(on bool) { d.hold.Store(on) }

// holdGroup keeps a group that would commit in the pool and returns its
// members' txids.
func (d *Devnet) holdGroup(group []types.SignedTxn) ([]string, error) {
	results, _ := d.ledger.simulate([][]types.SignedTxn{group}, false)
	if len(results) == 0 || results[0].err != nil {
		err := errors.New("group refused")
		if len(results) > 0 {
			err = results[0].err
		}
		return nil, err
	}
	txids := make([]string, len(group))
	d.heldMu.Lock()
	defer d.heldMu.Unlock()
	for i, stx := range group {
		txids[i] = crypto.GetTxID(stx.Txn)
		if d.heldIDs[txids[i]] {
			return nil, fmt.Errorf("transaction %s is already in the pool", txids[i])
		}
	}
	for _, id := range txids {
		d.heldIDs[id] = true
	}
	d.held = append(d.held, group)
	return txids, nil
}

// isHeld reports whether txid is in a held group.
func (d *Devnet) isHeld(txid string) bool {
	d.heldMu.Lock()
	defer d.heldMu.Unlock()
	return d.heldIDs[txid]
}

// Held returns how many submitted groups are held (HoldGroups).
func (d *Devnet) Held() int {
	d.heldMu.Lock()
	defer d.heldMu.Unlock()
	return len(d.held)
}

// takeHeld empties the pool of held groups and returns them.
func (d *Devnet) takeHeld() [][]types.SignedTxn {
	d.heldMu.Lock()
	defer d.heldMu.Unlock()
	groups := d.held
	d.held, d.heldIDs = nil, make(map[string]bool)
	return groups
}

// ReleaseHeld commits the held groups, each in its own new round, in the
// order they were submitted. A group that no longer commits (e.g. its last
// valid round has passed) is dropped and its error returned.
func (d *Devnet) ReleaseHeld() error {
	var errs []error
	for _, g := range d.takeHeld() {
		if _, _, err := d.submit(g); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("devnet: release held groups: %w", err)
	}
	return nil
}

// DropHeld forgets the held groups without committing them, as a node's
// pool may lose a transaction: they are then never committed.
func (d *Devnet) DropHeld() { d.takeHeld() }

// signTxn signs "TX"+msgpack(txn) with key.
func signTxn(key ed25519.PrivateKey, txn types.Transaction) types.Signature {
	var sig types.Signature
	copy(sig[:], ed25519.Sign(key, append([]byte("TX"), msgpack.Encode(txn)...)))
	return sig
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

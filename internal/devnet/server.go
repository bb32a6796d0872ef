package devnet

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/client/v2/common/models"
	sdkjson "github.com/algorand/go-algorand-sdk/v2/encoding/json"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/algorand/go-codec/codec"
)

// TokenHeader is the header that carries the algod API token.
const TokenHeader = "X-Algo-API-Token"

// Handler returns the devnet's HTTP API: the algod v2 endpoints plus the
// token-protected /devnet/fund and /devnet/info. /health and /versions are
// public, as on algod.
func (d *Devnet) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern, method string, public bool, h http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if !public && !d.authorized(r) {
				writeError(w, http.StatusUnauthorized, "Invalid API Token")
				return
			}
			if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
				w.Header().Set("Allow", method)
				writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed, use "+method)
				return
			}
			h(w, r)
		})
	}
	route("/health", http.MethodGet, true, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "null\n")
	})
	route("/versions", http.MethodGet, true, d.versions)
	route("/v2/status", http.MethodGet, false, d.status)
	route("/v2/status/wait-for-block-after/{round}", http.MethodGet, false, d.waitForBlock)
	route("/v2/transactions/params", http.MethodGet, false, d.params)
	route("/v2/transactions", http.MethodPost, false, d.sendRaw)
	route("/v2/transactions/pending/{txid}", http.MethodGet, false, d.pending)
	route("/v2/transactions/simulate", http.MethodPost, false, d.simulateHTTP)
	route("/v2/accounts/{addr}", http.MethodGet, false, d.accountHTTP)
	route("/v2/accounts/{addr}/assets/{id}", http.MethodGet, false, d.accountAsset)
	route("/v2/assets/{id}", http.MethodGet, false, d.assetHTTP)
	route("/devnet/info", http.MethodGet, false, d.infoHTTP)
	route("/devnet/fund", http.MethodPost, false, d.fundHTTP)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint on the devnet: "+r.URL.Path)
	})
	return mux
}

func (d *Devnet) authorized(r *http.Request) bool {
	got := r.Header.Get(TokenHeader)
	return subtle.ConstantTimeCompare([]byte(got), []byte(d.token)) == 1
}

// writeError answers algod's error body, {"message": "..."}.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Message string `json:"message"`
	}{msg})
}

// reply encodes an algod model as JSON (the default) or msgpack, as asked
// by ?format=, with the SDK's codecs so that field names and byte encodings
// are exactly what the SDKs decode.
func reply(w http.ResponseWriter, r *http.Request, v any) {
	var body []byte
	switch format := r.URL.Query().Get("format"); format {
	case "", "json":
		w.Header().Set("Content-Type", "application/json")
		body = sdkjson.Encode(v)
	case "msgpack":
		w.Header().Set("Content-Type", "application/msgpack")
		body = msgpack.Encode(v)
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unsupported format %q: use json or msgpack", format))
		return
	}
	_, _ = w.Write(body)
}

func (d *Devnet) versions(w http.ResponseWriter, r *http.Request) {
	reply(w, r, models.Version{
		Build:       models.BuildVersion{Major: 4, Branch: "devnet", Channel: "dev", CommitHash: "lualambda-devnet"},
		GenesisHash: d.network.GenesisHash[:],
		GenesisID:   d.network.GenesisID,
		Versions:    []string{"v2"},
	})
}

func (d *Devnet) nodeStatus() models.NodeStatus {
	l := d.ledger
	l.mu.Lock()
	round, at := l.round, l.roundAt
	l.mu.Unlock()
	return models.NodeStatus{
		LastRound:            round,
		LastVersion:          ConsensusVersion,
		NextVersion:          ConsensusVersion,
		NextVersionRound:     round + 1,
		NextVersionSupported: true,
		TimeSinceLastRound:   uint64(time.Since(at).Nanoseconds()),
	}
}

func (d *Devnet) status(w http.ResponseWriter, r *http.Request) {
	reply(w, r, d.nodeStatus())
}

func (d *Devnet) waitForBlock(w http.ResponseWriter, r *http.Request) {
	round, err := strconv.ParseUint(r.PathValue("round"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid round: "+r.PathValue("round"))
		return
	}
	if _, err := d.ledger.waitAfter(r.Context(), round, d.waitTimeout); err != nil {
		return // the client went away
	}
	reply(w, r, d.nodeStatus())
}

func (d *Devnet) params(w http.ResponseWriter, r *http.Request) {
	reply(w, r, models.TransactionParametersResponse{
		ConsensusVersion: ConsensusVersion,
		Fee:              0, // per-byte fee of an uncongested network, as algod reports
		GenesisHash:      d.network.GenesisHash[:],
		GenesisId:        d.network.GenesisID,
		LastRound:        d.ledger.lastRound(),
		MinFee:           MinTxnFee,
	})
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxBodyBytes))
		} else {
			writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		}
		return nil, false
	}
	return body, true
}

func (d *Devnet) sendRaw(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	group, err := decodeGroup(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var txids []string
	if d.hold.Load() {
		txids, err = d.holdGroup(group)
	} else {
		txids, _, err = d.submit(group)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "TransactionPool.Remember: "+err.Error())
		return
	}
	reply(w, r, models.PostTransactionsResponse{Txid: txids[0]})
}

// pendingResponse is algod's view of a transaction; round 0 means not
// committed (simulation).
func pendingResponse(rec *txnRecord, round uint64) models.PendingTransactionResponse {
	return models.PendingTransactionResponse{
		ConfirmedRound:     round,
		AssetIndex:         rec.assetIndex,
		ClosingAmount:      rec.closingAmount,
		AssetClosingAmount: rec.assetClosingAmount,
		Transaction:        rec.stx,
	}
}

func (d *Devnet) pending(w http.ResponseWriter, r *http.Request) {
	txid := r.PathValue("txid")
	if d.onLookup != nil {
		d.onLookup(txid)
	}
	if d.isHeld(txid) {
		reply(w, r, models.PendingTransactionInfoResponse{PoolError: ""})
		return
	}
	l := d.ledger
	l.mu.Lock()
	rec, ok := l.txns[txid]
	l.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "could not find the transaction in the transaction pool or in the last 1000 confirmed rounds")
		return
	}
	reply(w, r, models.PendingTransactionInfoResponse(pendingResponse(rec, rec.round)))
}

func (d *Devnet) simulateHTTP(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req models.SimulateRequest
	var err error
	if strings.Contains(r.Header.Get("Content-Type"), "json") {
		err = sdkjson.LenientDecode(body, &req)
	} else {
		err = codec.NewDecoderBytes(body, msgpack.LenientCodecHandle).Decode(&req)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "decoding the simulate request: "+err.Error())
		return
	}
	if len(req.TxnGroups) == 0 {
		writeError(w, http.StatusBadRequest, "simulate request has no transaction groups")
		return
	}
	groups := make([][]types.SignedTxn, len(req.TxnGroups))
	for i, g := range req.TxnGroups {
		groups[i] = g.Txns
	}
	results, round := d.ledger.simulate(groups, req.AllowEmptySignatures)
	resp := models.SimulateResponse{LastRound: round, Version: 2, TxnGroups: make([]models.SimulateTransactionGroupResult, len(results))}
	for i, res := range results {
		g := &resp.TxnGroups[i]
		g.TxnResults = make([]models.SimulateTransactionResult, len(res.records))
		for j, rec := range res.records {
			g.TxnResults[j] = models.SimulateTransactionResult{TxnResult: pendingResponse(rec, 0)}
		}
		if res.err != nil {
			g.FailureMessage = res.err.Error()
			g.FailedAt = []uint64{uint64(res.failedAt)}
		}
	}
	reply(w, r, resp)
}

// accountView is a consistent copy of an account's state.
type accountView struct {
	acct    account
	holding []models.AssetHolding
	created []models.Asset
	round   uint64
}

func (l *ledger) view(addr types.Address) accountView {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := accountView{round: l.round}
	a, ok := l.accounts[addr]
	if !ok {
		return v
	}
	v.acct = *a
	for id, h := range a.assets {
		v.holding = append(v.holding, models.AssetHolding{Amount: h.amount, AssetId: id, OptedInAtRound: h.optedRound})
		if as := l.assets[id]; as != nil && as.creator == addr {
			v.created = append(v.created, assetModel(as))
		}
	}
	sort.Slice(v.holding, func(i, j int) bool { return v.holding[i].AssetId < v.holding[j].AssetId })
	sort.Slice(v.created, func(i, j int) bool { return v.created[i].Index < v.created[j].Index })
	return v
}

func assetModel(as *asset) models.Asset {
	p := as.params
	addr := func(a types.Address) string {
		if a.IsZero() {
			return ""
		}
		return a.String()
	}
	m := models.Asset{Index: as.id, CreatedAtRound: as.round, Params: models.AssetParams{
		Creator: as.creator.String(), Total: p.Total, Decimals: uint64(p.Decimals), DefaultFrozen: p.DefaultFrozen,
		UnitName: p.UnitName, UnitNameB64: []byte(p.UnitName), Name: p.AssetName, NameB64: []byte(p.AssetName),
		Url: p.URL, UrlB64: []byte(p.URL),
		Manager: addr(p.Manager), Reserve: addr(p.Reserve), Freeze: addr(p.Freeze), Clawback: addr(p.Clawback),
	}}
	if p.MetadataHash != ([32]byte{}) {
		m.Params.MetadataHash = p.MetadataHash[:]
	}
	return m
}

func pathAddress(w http.ResponseWriter, r *http.Request) (types.Address, bool) {
	addr, err := types.DecodeAddress(r.PathValue("addr"))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("failed to parse the address %q: %v", r.PathValue("addr"), err))
		return types.Address{}, false
	}
	return addr, true
}

func pathAssetID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid asset id: "+r.PathValue("id"))
		return 0, false
	}
	return id, true
}

func (d *Devnet) accountHTTP(w http.ResponseWriter, r *http.Request) {
	addr, ok := pathAddress(w, r)
	if !ok {
		return
	}
	v := d.ledger.view(addr)
	a := &v.acct
	m := models.Account{
		Address: addr.String(), Amount: a.algo, AmountWithoutPendingRewards: a.algo,
		MinBalance: a.minBalance(), Round: v.round, Status: "Offline",
		TotalAssetsOptedIn: uint64(len(a.assets)), TotalCreatedAssets: uint64(a.created),
	}
	if a.empty() {
		m.MinBalance = MinBalance
	}
	if !a.auth.IsZero() {
		m.AuthAddr = a.auth.String()
	}
	exclude := r.URL.Query().Get("exclude")
	switch exclude {
	case "", "none":
		m.Assets, m.CreatedAssets = v.holding, v.created
	case "all":
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unsupported exclude value %q: use all or none", exclude))
		return
	}
	reply(w, r, m)
}

func (d *Devnet) accountAsset(w http.ResponseWriter, r *http.Request) {
	addr, ok := pathAddress(w, r)
	if !ok {
		return
	}
	id, ok := pathAssetID(w, r)
	if !ok {
		return
	}
	v := d.ledger.view(addr)
	var resp models.AccountAssetResponse
	found := false
	for _, h := range v.holding {
		if h.AssetId == id {
			resp.AssetHolding, found = h, true
		}
	}
	for _, c := range v.created {
		if c.Index == id {
			resp.CreatedAsset, found = c.Params, true
		}
	}
	if !found {
		writeError(w, http.StatusNotFound, "account asset info not found")
		return
	}
	resp.Round = v.round
	reply(w, r, resp)
}

func (d *Devnet) assetHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := pathAssetID(w, r)
	if !ok {
		return
	}
	l := d.ledger
	l.mu.Lock()
	as, found := l.assets[id]
	var m models.Asset
	if found {
		m = assetModel(as)
	}
	l.mu.Unlock()
	if !found {
		writeError(w, http.StatusNotFound, "asset does not exist")
		return
	}
	reply(w, r, m)
}

func (d *Devnet) infoHTTP(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, d.Info())
}

// FundRequest is the body of POST /devnet/fund.
type FundRequest struct {
	// Address receives the funds.
	Address string `json:"address"`
	// MicroAlgos is the ALGO amount in µAlgo.
	MicroAlgos uint64 `json:"microalgos"`
	// USDC is the USDC amount in 6-decimal units; the address must be
	// opted in.
	USDC uint64 `json:"usdc"`
}

// FundResponse is the answer of POST /devnet/fund.
type FundResponse struct {
	// TxID is the id of the group's first transaction.
	TxID string `json:"txId"`
	// Round is the round the group was committed in.
	Round uint64 `json:"round"`
}

func (d *Devnet) fundHTTP(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req FundRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid fund request: "+err.Error())
		return
	}
	addr, err := types.DecodeAddress(req.Address)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid address %q: %v", req.Address, err))
		return
	}
	txid, round, err := d.fund(r.Context(), addr, req.MicroAlgos, req.USDC)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, FundResponse{TxID: txid, Round: round})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

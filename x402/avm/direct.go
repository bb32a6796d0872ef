package avm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/algorand/go-codec/codec"
)

// maxAlgodResponse bounds an algod answer read by directAlgod.
const maxAlgodResponse = 4 << 20

// directAlgod makes the calls of a payment's verification and settlement
// to algod's REST API itself: msgpack both ways, decoding only the fields
// they need (the SDK asks for JSON for some and decodes whole models).
type directAlgod struct {
	base  string // without a trailing slash
	token string
	hc    *http.Client
}

// simulateRequest is algod's SimulateRequest with one group.
type simulateRequest struct {
	TxnGroups []simulateRequestGroup `json:"txn-groups"`
}

type simulateRequestGroup struct {
	Txns []types.SignedTxn `json:"txns"`
}

// simulateResult is the part of algod's SimulateResponse Simulate reads.
type simulateResult struct {
	TxnGroups []struct {
		FailedAt       []uint64 `json:"failed-at,omitempty"`
		FailureMessage string   `json:"failure-message,omitempty"`
	} `json:"txn-groups"`
}

// pendingInfo is the part of algod's PendingTransactionResponse a
// confirmation reads.
type pendingInfo struct {
	ConfirmedRound uint64 `json:"confirmed-round,omitempty"`
	PoolError      string `json:"pool-error"`
}

func (d *directAlgod) simulate(ctx context.Context, group []types.SignedTxn) error {
	return d.simulateBody(ctx, msgpack.Encode(&simulateRequest{TxnGroups: []simulateRequestGroup{{Txns: group}}}))
}

// simulateBody posts a msgpack SimulateRequest.
func (d *directAlgod) simulateBody(ctx context.Context, body []byte) error {
	var res simulateResult
	if err := d.call(ctx, http.MethodPost, "/v2/transactions/simulate?format=msgpack", body, &res); err != nil {
		return fmt.Errorf("avm: algod simulate: %w", err)
	}
	if len(res.TxnGroups) == 0 {
		return fmt.Errorf("avm: algod simulate: no group result")
	}
	if msg := res.TxnGroups[0].FailureMessage; msg != "" {
		return fmt.Errorf("avm: simulation failed at %v: %s", res.TxnGroups[0].FailedAt, msg)
	}
	return nil
}

func (d *directAlgod) submit(ctx context.Context, raw []byte) error {
	// The answer only repeats the first member's id: it is not decoded.
	if err := d.call(ctx, http.MethodPost, "/v2/transactions", raw, nil); err != nil {
		return fmt.Errorf("avm: algod submit: %w", err)
	}
	return nil
}

func (d *directAlgod) pending(ctx context.Context, txid string) (pendingInfo, error) {
	var res pendingInfo
	if err := d.call(ctx, http.MethodGet, "/v2/transactions/pending/"+url.PathEscape(txid)+"?format=msgpack", nil, &res); err != nil {
		return pendingInfo{}, fmt.Errorf("avm: algod pending %s: %w", txid, err)
	}
	return res, nil
}

// holdingResult is the part of algod's AccountAssetResponse a holding
// read needs.
type holdingResult struct {
	AssetHolding *struct {
		Amount   uint64 `json:"amount"`
		IsFrozen bool   `json:"is-frozen"`
	} `json:"asset-holding,omitempty"`
}

// holding reads an account's holding of an asset; algod's 404 (the account
// does not hold it, or does not exist) is a holding not opted in, as the
// SDK's NotFound is.
func (d *directAlgod) holding(ctx context.Context, addr types.Address, asset uint64) (Holding, error) {
	var res holdingResult
	path := "/v2/accounts/" + addr.String() + "/assets/" + strconv.FormatUint(asset, 10) + "?format=msgpack"
	err := d.call(ctx, http.MethodGet, path, nil, &res)
	var se *statusError
	switch {
	case errors.As(err, &se) && se.status == http.StatusNotFound:
		return Holding{}, nil
	case err != nil:
		return Holding{}, err
	case res.AssetHolding == nil:
		return Holding{}, errors.New("the answer has no asset-holding")
	}
	return Holding{OptedIn: true, Amount: res.AssetHolding.Amount, Frozen: res.AssetHolding.IsFrozen}, nil
}

// statusError is an algod answer other than 200.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.msg) }

// call sends a request with a msgpack body (nil for none) and decodes the
// answer, msgpack or JSON as its Content-Type says, into out (nil: not
// decoded). An answer other than 200 is an error carrying algod's message.
func (d *directAlgod) call(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, rd)
	if err != nil {
		return err
	}
	// Canonical keys (of X-Algo-API-Token and Content-Type), set directly.
	req.Header["X-Algo-Api-Token"] = []string{d.token}
	if body != nil {
		req.Header["Content-Type"] = []string{"application/msgpack"}
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAlgodResponse))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return &statusError{status: resp.StatusCode, msg: strings.TrimSpace(string(raw))}
	}
	if out == nil {
		return nil
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/msgpack") {
		err = codec.NewDecoderBytes(raw, msgpack.LenientCodecHandle).Decode(out)
	} else {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	return nil
}

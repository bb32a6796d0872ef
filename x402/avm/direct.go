package avm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"
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

// submitResult is algod's PostTransactionsResponse.
type submitResult struct {
	TxID string `json:"txId"`
}

func (d *directAlgod) simulate(ctx context.Context, group []types.SignedTxn) error {
	body := msgpack.Encode(&simulateRequest{TxnGroups: []simulateRequestGroup{{Txns: group}}})
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
	var res submitResult
	if err := d.call(ctx, http.MethodPost, "/v2/transactions", raw, &res); err != nil {
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

// call sends a request with a msgpack body (nil for none) and decodes the
// answer, msgpack or JSON as its Content-Type says, into out. An answer
// other than 200 is an error carrying algod's message.
func (d *directAlgod) call(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-Algo-API-Token", d.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/msgpack")
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
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/msgpack") {
		err = msgpack.NewLenientDecoder(bytes.NewReader(raw)).Decode(out)
	} else {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	return nil
}

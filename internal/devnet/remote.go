package devnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
)

// Info describes a running devnet; GET /devnet/info answers it.
type Info struct {
	// Name is the v1 network name ("algorand-devnet", or the impersonated
	// network's).
	Name string `json:"name"`
	// GenesisID is the genesis ID.
	GenesisID string `json:"genesis-id"`
	// GenesisHash is the genesis hash (standard base64 in JSON).
	GenesisHash []byte `json:"genesis-hash"`
	// Network is the full-hash CAIP-2 id.
	Network string `json:"network"`
	// NetworkShort is the truncated CAIP-2 id.
	NetworkShort string `json:"network-short"`
	// USDC is the USDC asset id.
	USDC uint64 `json:"usdc"`
	// Faucet is the faucet's address.
	Faucet string `json:"faucet"`
	// Round is the latest round.
	Round uint64 `json:"round"`
}

// Info returns the devnet's description.
func (d *Devnet) Info() Info {
	n := d.network
	return Info{
		Name: n.Name, GenesisID: n.GenesisID, GenesisHash: n.GenesisHash[:],
		Network: n.CAIP2(), NetworkShort: n.CAIP2Short(), USDC: d.usdc,
		Faucet: d.faucet.Address.String(), Round: d.ledger.lastRound(),
	}
}

// X402Network returns the network Info describes, with no explorer.
func (i Info) X402Network() (x402.Network, error) {
	if len(i.GenesisHash) != 32 {
		return x402.Network{}, fmt.Errorf("devnet info: genesis hash has %d bytes, want 32", len(i.GenesisHash))
	}
	n := x402.Network{Name: i.Name, GenesisID: i.GenesisID, USDC: i.USDC}
	copy(n.GenesisHash[:], i.GenesisHash)
	return n, nil
}

// Client talks to the devnet-only endpoints of a devnet in another
// process (e.g. one started with `lualambda devnet`).
type Client struct {
	// URL is the devnet's base URL, e.g. "http://127.0.0.1:4001".
	URL string
	// Token is its API token.
	Token string
	// HTTP is the client used; http.DefaultClient when nil.
	HTTP *http.Client
}

// Info fetches GET /devnet/info.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var info Info
	if err := c.do(ctx, http.MethodGet, "/devnet/info", nil, &info); err != nil {
		return Info{}, fmt.Errorf("devnet info: %w", err)
	}
	return info, nil
}

// Fund asks the devnet's faucet to send microAlgos and usdcUnits of USDC to
// addr (POST /devnet/fund) and returns once the group is committed.
func (c *Client) Fund(ctx context.Context, addr types.Address, microAlgos, usdcUnits uint64) (FundResponse, error) {
	body, err := json.Marshal(FundRequest{Address: addr.String(), MicroAlgos: microAlgos, USDC: usdcUnits})
	if err != nil {
		return FundResponse{}, fmt.Errorf("devnet fund: %w", err)
	}
	var resp FundResponse
	if err := c.do(ctx, http.MethodPost, "/devnet/fund", body, &resp); err != nil {
		return FundResponse{}, fmt.Errorf("devnet fund %s: %w", addr, err)
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set(TokenHeader, c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, e.Message)
		}
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	return nil
}

package wallet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// Names of the built-in networks.
const (
	Mainnet = "mainnet"
	Testnet = "testnet"
	Devnet  = "devnet"
)

// DefaultNetwork is used when neither a flag, the environment nor the key
// file names a network.
const DefaultNetwork = Testnet

// Environment variables that override a network's defaults.
const (
	EnvNetwork    = "LUALAMBDA_NETWORK"
	EnvAlgod      = "LUALAMBDA_ALGOD"
	EnvAlgodToken = "LUALAMBDA_ALGOD_TOKEN"
)

// DevnetAlgod is where `lualambda devnet` serves its algod API.
const DevnetAlgod = "http://127.0.0.1:4001"

// DevnetToken is the algod API token `lualambda devnet` uses by default
// (the token of Algorand's sandbox and AlgoKit LocalNet).
const DevnetToken = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// Preset is a network's defaults.
type Preset struct {
	// Name is mainnet, testnet or devnet.
	Name string
	// Algod is the default algod URL and AlgodToken its API token.
	Algod      string
	AlgodToken string
	// Chain is the network's identity: genesis hash, USDC id and explorer.
	// A devnet's genesis hash and USDC id are read from its algod.
	Chain x402.Network
}

// Presets returns the built-in networks.
func Presets() []Preset {
	return []Preset{
		{Name: Mainnet, Algod: "https://mainnet-api.algonode.cloud", Chain: x402.AlgorandMainnet},
		{Name: Testnet, Algod: "https://testnet-api.algonode.cloud", Chain: x402.AlgorandTestnet},
		{Name: Devnet, Algod: DevnetAlgod, AlgodToken: DevnetToken},
	}
}

// Settings choose a network and override its defaults. Empty fields keep
// the defaults.
type Settings struct {
	// Network is mainnet, testnet, devnet, or a CAIP-2 id.
	Network string
	// Algod and AlgodToken locate the network's algod.
	Algod      string
	AlgodToken string
	// USDC is the USDC asset id; 0 keeps the network's.
	USDC uint64
}

// WithEnv fills the empty fields from LUALAMBDA_NETWORK, LUALAMBDA_ALGOD
// and LUALAMBDA_ALGOD_TOKEN.
func (s Settings) WithEnv() Settings {
	if s.Network == "" {
		s.Network = os.Getenv(EnvNetwork)
	}
	if s.Algod == "" {
		s.Algod = os.Getenv(EnvAlgod)
	}
	if s.AlgodToken == "" {
		s.AlgodToken = os.Getenv(EnvAlgodToken)
	}
	return s
}

// preset resolves the network setting: a preset name, or a CAIP-2 id of
// mainnet or testnet. Any other CAIP-2 id is a custom network that needs an
// algod URL and a USDC id.
func (s Settings) preset() (Preset, error) {
	name := strings.TrimSpace(s.Network)
	if name == "" {
		name = DefaultNetwork
	}
	for _, p := range Presets() {
		if strings.EqualFold(name, p.Name) || (p.Name != Devnet && p.Chain.Matches(name)) {
			return p, nil
		}
	}
	if strings.HasPrefix(name, x402.AlgorandNamespace+":") {
		if s.Algod == "" {
			return Preset{}, fmt.Errorf("wallet: network %s: give its algod URL (--algod or %s)", name, EnvAlgod)
		}
		return Preset{Name: name}, nil
	}
	return Preset{}, fmt.Errorf("wallet: unknown network %q: want mainnet, testnet, devnet or an algorand: CAIP-2 id", name)
}

// Conn is a connection to one network's algod.
type Conn struct {
	// Name is the network's name (a preset name or a CAIP-2 id).
	Name string
	// AlgodURL is the algod the connection talks to.
	AlgodURL string
	// Chain is the network's identity, its genesis hash read from algod.
	Chain x402.Network
	// Ledger is the algod client.
	Ledger *avm.Algod

	token string
	http  *http.Client
}

// Connect resolves the settings and checks algod: its genesis hash must be
// the network's (for a devnet it defines it). A devnet's USDC id comes
// from its /devnet/info endpoint unless Settings.USDC is set.
func Connect(ctx context.Context, s Settings) (*Conn, error) {
	p, err := s.preset()
	if err != nil {
		return nil, err
	}
	c := &Conn{Name: p.Name, AlgodURL: p.Algod, Chain: p.Chain, token: p.AlgodToken, http: &http.Client{Timeout: 30 * time.Second}}
	if s.Algod != "" {
		c.AlgodURL = s.Algod
	}
	if s.AlgodToken != "" {
		c.token = s.AlgodToken
	}
	c.AlgodURL = strings.TrimSuffix(c.AlgodURL, "/")
	if c.Ledger, err = avm.NewAlgod(c.AlgodURL, c.token); err != nil {
		return nil, fmt.Errorf("wallet: %w", err)
	}
	params, err := c.Ledger.SuggestedParams(ctx)
	if err != nil {
		hint := ""
		if p.Name == Devnet {
			hint = " (is 'lualambda devnet' running?)"
		}
		return nil, fmt.Errorf("wallet: reach the %s algod at %s%s: %w", p.Name, c.AlgodURL, hint, err)
	}
	if len(params.GenesisHash) != 32 {
		return nil, fmt.Errorf("wallet: algod at %s reports a %d-byte genesis hash", c.AlgodURL, len(params.GenesisHash))
	}
	var gh [32]byte
	copy(gh[:], params.GenesisHash)
	switch {
	case c.Chain.GenesisHash != [32]byte{}:
		if gh != c.Chain.GenesisHash {
			return nil, fmt.Errorf("wallet: algod at %s serves genesis %s, not %s", c.AlgodURL, params.GenesisID, p.Name)
		}
	default:
		c.Chain.GenesisHash = gh
		c.Chain.GenesisID = params.GenesisID
		if want, ok := x402.GenesisHashOf(p.Name); ok && want != gh {
			return nil, fmt.Errorf("wallet: algod at %s serves genesis %s, not %s", c.AlgodURL, params.GenesisID, p.Name)
		}
	}
	if s.USDC != 0 {
		c.Chain.USDC = s.USDC
	}
	if c.Chain.USDC == 0 && p.Name == Devnet {
		info, err := c.DevnetInfo(ctx)
		if err != nil {
			return nil, fmt.Errorf("wallet: find the devnet's USDC id (or pass --usdc): %w", err)
		}
		if info.GenesisID != c.Chain.GenesisID {
			return nil, fmt.Errorf("wallet: the devnet's info names genesis %s, its algod %s", info.GenesisID, c.Chain.GenesisID)
		}
		c.Chain.USDC = info.USDC
		c.Chain.Name = info.Name
	}
	if c.Chain.USDC == 0 {
		return nil, fmt.Errorf("wallet: network %s has no known USDC asset: pass --usdc", p.Name)
	}
	return c, nil
}

// IsDevnet reports whether the connection is to a devnet.
func (c *Conn) IsDevnet() bool { return c.Name == Devnet }

// devnet returns a client of the devnet-only endpoints of the algod.
func (c *Conn) devnet() *devnet.Client {
	return &devnet.Client{URL: c.AlgodURL, Token: c.token, HTTP: c.http}
}

// DevnetInfo reads GET /devnet/info from the connection's algod.
func (c *Conn) DevnetInfo(ctx context.Context) (devnet.Info, error) {
	info, err := c.devnet().Info(ctx)
	if err != nil {
		return devnet.Info{}, fmt.Errorf("%w (is %s a lualambda devnet?)", err, c.AlgodURL)
	}
	return info, nil
}

// errNotDevnet reports a devnet-only operation on another network.
var errNotDevnet = errors.New("only a devnet has a faucet")

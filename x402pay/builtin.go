package x402pay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
	"github.com/caddyserver/caddy/v2"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
	"github.com/lualambda/caddy-lualambda/x402/facilitator"
)

// BuiltinFacilitator configures the built-in Algorand facilitator, which
// verifies payments itself and settles them through an algod node.
type BuiltinFacilitator struct {
	// Algod is the algod node's base URL, e.g. http://127.0.0.1:4001.
	// Placeholders such as {env.ALGOD_URL} are resolved when the config
	// loads.
	Algod string `json:"algod,omitempty"`
	// AlgodToken is sent as X-Algo-API-Token. Use {env.NAME} or
	// {file./path} to keep the secret out of the config.
	AlgodToken string `json:"algod_token,omitempty"`
	// FeePayer is the 25-word mnemonic of an account that pays the
	// transaction fees of the payments it settles (offered to clients as
	// extra.feePayer). Give it as a placeholder: {env.FEE_PAYER_MNEMONIC}
	// or {file./path/to/mnemonic}. Optional: without it payers pay their
	// own fees.
	//
	// On a devnet (network devnet) it may be "faucet" (FeePayerFaucet): the
	// facilitator then creates a fee-payer account when it first resolves
	// the network and funds it from the devnet's faucet (POST /devnet/fund),
	// so that payers need only USDC. It is refused on any other network.
	FeePayer string `json:"fee_payer,omitempty"`
}

// FeePayerFaucet is the fee_payer value that makes a devnet's builtin
// facilitator create its own fee payer, funded from the devnet's faucet.
const FeePayerFaucet = "faucet"

// faucetFeePayerMicroAlgos is what a faucet-funded fee payer gets: 100
// ALGO, the fees of some 50,000 sponsored payments.
const faucetFeePayerMicroAlgos = 100_000_000

// sharedBuiltin is a built-in facilitator shared by every handler with the
// same settings, across config reloads, so that its in-flight locks and its
// record of settled payments are shared too. A network that needs algod to
// be known (devnet) is resolved on first use, never while the config loads.
type sharedBuiltin struct {
	spec                   x402.NetworkSpec
	algod, token, feePayer string

	mu     sync.Mutex
	b      *facilitator.Builtin
	net    x402.Network
	ledger *avm.Algod
	tr     *http.Transport
}

// builtinKey names a shared builtin facilitator in the usage pool.
func builtinKey(spec x402.NetworkSpec, cfg BuiltinFacilitator) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{spec.ID, cfg.Algod, cfg.AlgodToken, cfg.FeePayer}, "\x00")))
	return "x402.builtin." + hex.EncodeToString(sum[:])
}

// loadBuiltin returns the shared facilitator for the settings, creating it
// when no loaded config uses it yet; release it with releaseBuiltin. cfg
// must have its placeholders resolved.
func loadBuiltin(spec x402.NetworkSpec, cfg BuiltinFacilitator) (*sharedBuiltin, string, error) {
	if cfg.Algod == "" {
		return nil, "", errors.New("the builtin facilitator needs an algod URL")
	}
	if cfg.FeePayer == FeePayerFaucet {
		if !spec.Devnet {
			return nil, "", fmt.Errorf("fee_payer faucet works only on a devnet (network devnet), not on %s: "+
				"give the fee payer's mnemonic as {env.NAME} or {file./path} instead", spec.ID)
		}
	} else if cfg.FeePayer != "" {
		if _, err := avm.SignerFromMnemonic(cfg.FeePayer); err != nil {
			return nil, "", fmt.Errorf("fee_payer: %w", err)
		}
	}
	key := builtinKey(spec, cfg)
	v, _, err := builtins.LoadOrNew(key, func() (caddy.Destructor, error) {
		return &sharedBuiltin{spec: spec, algod: strings.TrimRight(cfg.Algod, "/"), token: cfg.AlgodToken, feePayer: cfg.FeePayer}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return v.(*sharedBuiltin), key, nil
}

// releaseBuiltin drops one use of a shared facilitator.
func releaseBuiltin(key string) {
	if key != "" {
		_, _ = builtins.Delete(key)
	}
}

// Destruct implements caddy.Destructor: it closes the idle connections to
// algod.
func (s *sharedBuiltin) Destruct() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tr != nil {
		s.tr.CloseIdleConnections()
	}
	return nil
}

// algodLedger returns the algod client, made once. Its transport keeps
// enough idle connections for concurrent payments: each payment makes
// three algod calls (simulate, submit, confirm) or more, and the default
// of two idle connections per host would open and close connections all
// the time. Call with s.mu held.
func (s *sharedBuiltin) algodLedger() (*avm.Algod, error) {
	if s.ledger != nil {
		return s.ledger, nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	ledger, err := avm.NewAlgodWithTransport(s.algod, s.token, tr)
	if err != nil {
		return nil, fmt.Errorf("algod %s: %w", s.algod, err)
	}
	s.ledger, s.tr = ledger, tr
	return s.ledger, nil
}

// get returns the facilitator and its network, resolving the network from
// algod the first time if needed. A failure is not remembered: the next
// request tries again.
func (s *sharedBuiltin) get(ctx context.Context) (*facilitator.Builtin, x402.Network, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b != nil {
		return s.b, s.net, nil
	}
	ledger, err := s.algodLedger()
	if err != nil {
		return nil, x402.Network{}, err
	}
	n, err := s.resolve(ctx, ledger)
	if err != nil {
		return nil, x402.Network{}, err
	}
	feePayer := s.feePayer
	if feePayer == FeePayerFaucet {
		if feePayer, err = s.faucetFeePayer(ctx); err != nil {
			return nil, x402.Network{}, err
		}
	}
	b, err := facilitator.NewBuiltin(facilitator.BuiltinConfig{Ledger: ledger, Network: n, FeePayerMnemonic: feePayer})
	if err != nil {
		return nil, x402.Network{}, err
	}
	s.b, s.net = b, n
	return b, n, nil
}

// resolve returns the configured network, asking algod for its genesis
// when the configuration does not name it fully.
func (s *sharedBuiltin) resolve(ctx context.Context, ledger *avm.Algod) (x402.Network, error) {
	if n, ok := s.spec.Known(); ok {
		return n, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	params, err := ledger.SuggestedParams(ctx)
	if err != nil {
		return x402.Network{}, fmt.Errorf("ask algod %s for its network: %w", s.algod, err)
	}
	if len(params.GenesisHash) != 32 {
		return x402.Network{}, fmt.Errorf("algod %s reports a genesis hash of %d bytes", s.algod, len(params.GenesisHash))
	}
	n, err := s.spec.Resolve([32]byte(params.GenesisHash), params.GenesisID)
	if err != nil {
		return x402.Network{}, fmt.Errorf("algod %s: %w", s.algod, err)
	}
	if n.USDC == 0 {
		// A devnet tells which asset is its USDC; other networks need asset.
		n.USDC, _ = devnetUSDC(ctx, s.algod, s.token)
	}
	return n, nil
}

// faucetFeePayer creates a fee-payer account, funds it from the devnet's
// faucet (POST /devnet/fund) and returns its mnemonic. The account lives as
// long as this shared facilitator: config reloads that keep the settings
// keep it.
func (s *sharedBuiltin) faucetFeePayer(ctx context.Context) (string, error) {
	acct := crypto.GenerateAccount()
	words, err := mnemonic.FromPrivateKey(acct.PrivateKey)
	if err != nil {
		return "", fmt.Errorf("fee_payer faucet: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body, err := json.Marshal(map[string]any{"address": acct.Address.String(), "microalgos": uint64(faucetFeePayerMicroAlgos)})
	if err != nil {
		return "", fmt.Errorf("fee_payer faucet: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.algod+"/devnet/fund", bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("fee_payer faucet: %w", err)
	}
	req.Header.Set("X-Algo-API-Token", s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("fee_payer faucet: fund the fee payer from %s/devnet/fund: %w", s.algod, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fee_payer faucet: %s/devnet/fund answered %s: is algod a devnet (lualambda devnet)?", s.algod, resp.Status)
	}
	return words, nil
}

// devnetUSDC asks a devnet (GET /devnet/info) for its USDC asset id.
func devnetUSDC(ctx context.Context, base, token string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/devnet/info", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-Algo-API-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("devnet info: %s", resp.Status)
	}
	var info struct {
		USDC uint64 `json:"usdc"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&info); err != nil {
		return 0, fmt.Errorf("devnet info: %w", err)
	}
	return info.USDC, nil
}

// Supported implements facilitator.Facilitator.
func (s *sharedBuiltin) Supported(ctx context.Context) (x402.SupportedResponse, error) {
	b, _, err := s.get(ctx)
	if err != nil {
		return x402.SupportedResponse{}, err
	}
	return b.Supported(ctx)
}

// Verify implements facilitator.Facilitator.
func (s *sharedBuiltin) Verify(ctx context.Context, p x402.Payment, r x402.Requirement) (x402.VerifyResponse, error) {
	b, _, err := s.get(ctx)
	if err != nil {
		return x402.VerifyResponse{}, err
	}
	return b.Verify(ctx, p, r)
}

// Settle implements facilitator.Facilitator.
func (s *sharedBuiltin) Settle(ctx context.Context, p x402.Payment, r x402.Requirement) (x402.SettleResponse, error) {
	b, _, err := s.get(ctx)
	if err != nil {
		return x402.SettleResponse{}, err
	}
	return b.Settle(ctx, p, r)
}

// PaymentKey names a payment through the built-in facilitator, which keeps
// the decoded payment for its verification.
func (s *sharedBuiltin) PaymentKey(ctx context.Context, p x402.Payment) (string, error) {
	b, _, err := s.get(ctx)
	if err != nil {
		return paymentKey(p)
	}
	return b.PaymentKey(p)
}

// Spendable returns how much of the asset (an ASA id) the payer can spend
// now (see facilitator.Builtin.Spendable): its balance as algod read it at
// most a second ago, less what this facilitator submitted for it since; 0
// when it is not opted in or frozen. x402pay uses it to bound what one payer
// has in flight.
func (s *sharedBuiltin) Spendable(ctx context.Context, payer string, asset uint64) (uint64, error) {
	b, _, err := s.get(ctx)
	if err != nil {
		return 0, err
	}
	return b.Spendable(ctx, payer, asset)
}

// resolvePlaceholders resolves {env.*} and {file.*} in a builtin
// facilitator's settings, trimming the white space files end with.
func (c BuiltinFacilitator) resolvePlaceholders() BuiltinFacilitator {
	repl := caddy.NewReplacer()
	return BuiltinFacilitator{
		Algod:      strings.TrimSpace(repl.ReplaceAll(c.Algod, "")),
		AlgodToken: strings.TrimSpace(repl.ReplaceAll(c.AlgodToken, "")),
		FeePayer:   strings.Join(strings.Fields(repl.ReplaceAll(c.FeePayer, "")), " "),
	}
}

var _ facilitator.Facilitator = (*sharedBuiltin)(nil)

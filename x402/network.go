package x402

import (
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
)

// AlgorandNamespace is the CAIP-2 namespace of Algorand networks.
const AlgorandNamespace = "algorand"

// USDCDecimals is the number of decimals of USDC on Algorand.
const USDCDecimals = 6

// Network describes one Algorand network. Its two CAIP-2 spellings are
// derived from the genesis hash: the legacy full-hash form
// "algorand:<std base64 of the hash>" and the canonical truncated form
// "algorand:<first 32 chars of the URL-safe base64>".
type Network struct {
	// Name is the v1 network name, e.g. "algorand-testnet"; may be empty.
	Name string
	// GenesisHash is the 32-byte genesis hash carried in every transaction.
	GenesisHash [32]byte
	// GenesisID is the genesis ID, e.g. "testnet-v1.0".
	GenesisID string
	// USDC is the ASA id of USDC on this network; 0 if none.
	USDC uint64
	// ExplorerTxURL is prefixed to a transaction id to link to an explorer;
	// empty when there is none.
	ExplorerTxURL string
}

// CAIP2 returns the legacy full-hash CAIP-2 id, e.g.
// "algorand:SGO1GKSzyE7IEPItTxCByw9x8FmnrCDexi9/cOUJOiI=".
func (n Network) CAIP2() string {
	return AlgorandNamespace + ":" + base64.StdEncoding.EncodeToString(n.GenesisHash[:])
}

// CAIP2Short returns the canonical truncated CAIP-2 id, e.g.
// "algorand:SGO1GKSzyE7IEPItTxCByw9x8FmnrCDe".
func (n Network) CAIP2Short() string {
	return AlgorandNamespace + ":" + base64.URLEncoding.EncodeToString(n.GenesisHash[:])[:32]
}

// Matches reports whether id names this network in any accepted form: the v1
// name or either CAIP-2 form.
func (n Network) Matches(id string) bool {
	return (n.Name != "" && id == n.Name) || NormalizeNetwork(id) == n.CAIP2Short()
}

// ExplorerURL returns the explorer link of a transaction, or "".
func (n Network) ExplorerURL(txid string) string {
	if n.ExplorerTxURL == "" || txid == "" {
		return ""
	}
	return n.ExplorerTxURL + txid
}

// Built-in networks.
var (
	// AlgorandMainnet is Algorand's main network.
	AlgorandMainnet = Network{
		Name:          "algorand-mainnet",
		GenesisHash:   mustHash("wGHE2Pwdvd7S12BL5FaOP20EGYesN73ktiC1qzkkit8="),
		GenesisID:     "mainnet-v1.0",
		USDC:          31566704,
		ExplorerTxURL: "https://lora.algokit.io/mainnet/transaction/",
	}
	// AlgorandTestnet is Algorand's public test network.
	AlgorandTestnet = Network{
		Name:          "algorand-testnet",
		GenesisHash:   mustHash("SGO1GKSzyE7IEPItTxCByw9x8FmnrCDexi9/cOUJOiI="),
		GenesisID:     "testnet-v1.0",
		USDC:          10458941,
		ExplorerTxURL: "https://lora.algokit.io/testnet/transaction/",
	}
)

func mustHash(b64 string) [32]byte {
	var h [32]byte
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != len(h) {
		panic("x402: bad built-in genesis hash " + b64)
	}
	copy(h[:], raw)
	return h
}

// NormalizeNetwork maps a network id to the form used for comparisons: the
// built-in v1 names and full-hash Algorand CAIP-2 ids become the truncated
// CAIP-2 id; anything else is returned unchanged.
func NormalizeNetwork(id string) string {
	for _, n := range [...]Network{AlgorandMainnet, AlgorandTestnet} {
		if id == n.Name {
			return n.CAIP2Short()
		}
	}
	ref, ok := strings.CutPrefix(id, AlgorandNamespace+":")
	if !ok {
		return id
	}
	if len(ref) == 44 {
		raw, err := base64.StdEncoding.DecodeString(ref)
		if err != nil {
			raw, err = base64.URLEncoding.DecodeString(ref)
		}
		if err == nil && len(raw) == 32 {
			return AlgorandNamespace + ":" + base64.URLEncoding.EncodeToString(raw)[:32]
		}
	}
	return id
}

// SameNetwork reports whether two network ids name the same network once
// normalised (see NormalizeNetwork).
func SameNetwork(a, b string) bool { return NormalizeNetwork(a) == NormalizeNetwork(b) }

// GenesisHashOf returns the genesis hash a full-hash Algorand CAIP-2 id
// carries. The truncated form does not hold the whole hash, so it is found
// only for the built-in networks.
func GenesisHashOf(id string) ([32]byte, bool) {
	for _, n := range [...]Network{AlgorandMainnet, AlgorandTestnet} {
		if n.Matches(id) {
			return n.GenesisHash, true
		}
	}
	var h [32]byte
	ref, ok := strings.CutPrefix(id, AlgorandNamespace+":")
	if !ok || len(ref) != 44 {
		return h, false
	}
	raw, err := base64.StdEncoding.DecodeString(ref)
	if err != nil || len(raw) != 32 {
		return h, false
	}
	copy(h[:], raw)
	return h, true
}

// Networks is a set of known Algorand networks: the built-in mainnet and
// testnet plus any registered ones (a devnet). It is safe for concurrent use.
// A nil *Networks knows only the built-in networks.
type Networks struct {
	mu   sync.RWMutex
	list []Network
}

// NewNetworks returns a set holding mainnet and testnet.
func NewNetworks() *Networks {
	return &Networks{list: []Network{AlgorandMainnet, AlgorandTestnet}}
}

// Register adds a network, or replaces the one with the same genesis hash.
// Its v1 name, if set, must not be used by another network.
func (ns *Networks) Register(n Network) error {
	if n.GenesisHash == ([32]byte{}) {
		return fmt.Errorf("x402: register network %q: zero genesis hash", n.Name)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for i, old := range ns.list {
		if old.GenesisHash == n.GenesisHash {
			ns.list[i] = n
			return nil
		}
		if n.Name != "" && old.Name == n.Name {
			return fmt.Errorf("x402: register network: name %q already names %s", n.Name, old.CAIP2Short())
		}
	}
	ns.list = append(ns.list, n)
	return nil
}

// Lookup finds a network by v1 name or either CAIP-2 form.
func (ns *Networks) Lookup(id string) (Network, bool) {
	if ns == nil {
		return NewNetworks().Lookup(id)
	}
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	for _, n := range ns.list {
		if n.Matches(id) {
			return n, true
		}
	}
	return Network{}, false
}

// ByGenesisHash finds a network by its genesis hash.
func (ns *Networks) ByGenesisHash(h [32]byte) (Network, bool) {
	if ns == nil {
		return NewNetworks().ByGenesisHash(h)
	}
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	for _, n := range ns.list {
		if n.GenesisHash == h {
			return n, true
		}
	}
	return Network{}, false
}

// Normalize is NormalizeNetwork that also resolves registered v1 names.
func (ns *Networks) Normalize(id string) string {
	if n, ok := ns.Lookup(id); ok {
		return n.CAIP2Short()
	}
	return NormalizeNetwork(id)
}

// Same reports whether two network ids name the same network.
func (ns *Networks) Same(a, b string) bool { return ns.Normalize(a) == ns.Normalize(b) }

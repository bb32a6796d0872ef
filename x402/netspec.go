package x402

import (
	"fmt"
	"strings"
)

// DevnetName is the v1 network name of a local devnet, whose genesis only
// its algod knows.
const DevnetName = "algorand-devnet"

// NetworkSpec is a network as configured, before algod is asked: a
// built-in network (mainnet, testnet), an Algorand CAIP-2 id, or a devnet.
type NetworkSpec struct {
	// ID is the configured id, normalised to a CAIP-2 id when known.
	ID string
	// Network is the network when the id names its genesis; nil otherwise.
	Network *Network
	// Devnet asks for whatever network algod runs.
	Devnet bool
}

// ParseNetworkSpec reads a network option: mainnet, testnet, devnet, a v1
// name or an Algorand CAIP-2 id in either genesis-hash form. Empty means
// testnet.
func ParseNetworkSpec(s string) (NetworkSpec, error) {
	switch s {
	case "", "testnet":
		n := AlgorandTestnet
		return NetworkSpec{ID: n.CAIP2(), Network: &n}, nil
	case "mainnet":
		n := AlgorandMainnet
		return NetworkSpec{ID: n.CAIP2(), Network: &n}, nil
	case "devnet", DevnetName:
		return NetworkSpec{ID: DevnetName, Devnet: true}, nil
	}
	for _, n := range []Network{AlgorandTestnet, AlgorandMainnet} {
		if n.Matches(s) {
			return NetworkSpec{ID: n.CAIP2(), Network: &n}, nil
		}
	}
	ref, ok := strings.CutPrefix(s, AlgorandNamespace+":")
	if !ok || ref == "" {
		return NetworkSpec{}, fmt.Errorf("network %q: want mainnet, testnet, devnet or an algorand: CAIP-2 id", s)
	}
	if h, ok := GenesisHashOf(s); ok {
		n := Network{GenesisHash: h}
		return NetworkSpec{ID: n.CAIP2(), Network: &n}, nil
	}
	if len(ref) != 32 || strings.Trim(ref, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return NetworkSpec{}, fmt.Errorf("network %q: not an Algorand CAIP-2 id (algorand:<genesis hash> or its 32-character form)", s)
	}
	return NetworkSpec{ID: s}, nil
}

// NeedsAlgod reports whether the network is known only once algod says
// which genesis it runs.
func (ns NetworkSpec) NeedsAlgod() bool { return ns.Network == nil }

// Known returns the network when the configuration names it fully (its
// USDC or its name is known), so that algod need not be asked.
func (ns NetworkSpec) Known() (Network, bool) {
	if ns.Network != nil && (ns.Network.USDC != 0 || ns.Network.Name != "") {
		return *ns.Network, true
	}
	return Network{}, false
}

// Resolve returns the network that an algod running genesisHash and
// genesisID is, checking it against the configuration: a devnet takes
// whatever algod runs (a devnet that impersonates testnet or mainnet is
// that network), any other spec must match. The USDC id of an unknown
// network is left for the caller to find.
func (ns NetworkSpec) Resolve(genesisHash [32]byte, genesisID string) (Network, error) {
	if known, ok := NewNetworks().ByGenesisHash(genesisHash); ok {
		if !ns.Devnet && !known.Matches(ns.ID) {
			return Network{}, fmt.Errorf("algod runs %s, not %s", known.CAIP2(), ns.ID)
		}
		return known, nil
	}
	n := Network{GenesisHash: genesisHash, GenesisID: genesisID}
	if ns.Devnet {
		n.Name = DevnetName
	} else if !n.Matches(ns.ID) {
		return Network{}, fmt.Errorf("algod runs %s, not %s", n.CAIP2(), ns.ID)
	}
	return n, nil
}

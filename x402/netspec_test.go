package x402

import "testing"

func TestParseNetworkSpec(t *testing.T) {
	testnet := AlgorandTestnet
	for in, want := range map[string]string{
		"":                      testnet.CAIP2(),
		"testnet":               testnet.CAIP2(),
		"algorand-testnet":      testnet.CAIP2(),
		testnet.CAIP2Short():    testnet.CAIP2(),
		"mainnet":               AlgorandMainnet.CAIP2(),
		AlgorandMainnet.CAIP2(): AlgorandMainnet.CAIP2(),
		"devnet":                DevnetName,
		"algorand:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=": "algorand:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"algorand:abcdefghijklmnopqrstuvwxyz012345":             "algorand:abcdefghijklmnopqrstuvwxyz012345",
	} {
		ns, err := ParseNetworkSpec(in)
		if err != nil || ns.ID != want {
			t.Errorf("ParseNetworkSpec(%q) = %+v, %v; want id %s", in, ns, err, want)
		}
	}
	if ns, _ := ParseNetworkSpec("devnet"); !ns.Devnet || !ns.NeedsAlgod() {
		t.Error("devnet must be resolved from algod")
	}
	if ns, _ := ParseNetworkSpec("testnet"); ns.NeedsAlgod() || ns.Network.USDC != 10458941 {
		t.Errorf("testnet: %+v", ns)
	}
	for _, in := range []string{"moon", "algorand:", "eip155:8453", "algorand:short", "algorand:abcdefghijklmnopqrstuvwxyz01234/"} {
		if _, err := ParseNetworkSpec(in); err == nil {
			t.Errorf("ParseNetworkSpec(%q) should fail", in)
		}
	}
}

func TestResolveNetworkSpec(t *testing.T) {
	devnet, _ := ParseNetworkSpec("devnet")
	other := [32]byte{1, 2, 3}
	n, err := devnet.Resolve(other, "local-v1")
	if err != nil || n.Name != DevnetName || n.GenesisHash != other {
		t.Fatalf("a devnet takes what algod runs: %+v %v", n, err)
	}
	// A devnet that impersonates testnet is testnet, with its USDC.
	if n, err := devnet.Resolve(AlgorandTestnet.GenesisHash, "testnet-v1.0"); err != nil || n.USDC != AlgorandTestnet.USDC {
		t.Fatalf("an impersonated testnet: %+v %v", n, err)
	}
	testnet, _ := ParseNetworkSpec("testnet")
	if _, err := testnet.Resolve(other, "local-v1"); err == nil {
		t.Fatal("testnet must refuse an algod that runs another network")
	}
	if n, ok := testnet.Known(); !ok || n.USDC == 0 {
		t.Fatalf("testnet is known without algod: %+v", n)
	}
	byHash, _ := ParseNetworkSpec(Network{GenesisHash: other}.CAIP2())
	if _, ok := byHash.Known(); ok {
		t.Fatal("a network named only by its genesis needs algod for its USDC")
	}
	if n, err := byHash.Resolve(other, "local-v1"); err != nil || n.GenesisHash != other {
		t.Fatalf("by genesis hash: %+v %v", n, err)
	}
}

func TestParsePriceForms(t *testing.T) {
	for _, in := range []string{".5", "0.50", "$0.5", " $.5 ", "0.500000"} {
		if got, err := ParsePrice(in, 6); err != nil || got != 500000 {
			t.Errorf("ParsePrice(%q) = %d, %v; want 500000", in, got, err)
		}
	}
	for _, in := range []string{"", ".", "$", "free", "-1", "+1", "1e3", "0.0000001", "1.", "$.", "..5"} {
		if _, err := ParsePrice(in, 6); err == nil {
			t.Errorf("ParsePrice(%q) should fail", in)
		}
	}
}

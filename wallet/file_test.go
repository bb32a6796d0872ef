package wallet

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cfg", "lualambda") // missing: Save creates it
	path := filepath.Join(dir, "wallet.json")
	w := Generate(Devnet)
	if err := w.Save(path, false); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %04o, want 0600", st.Mode().Perm())
	}
	dst, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if dst.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %04o, want 0700", dst.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left temporary files behind: %v", entries)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Address() != w.Address() || got.Network != Devnet || got.Path != path || !got.Account.PrivateKey.Equal(w.Account.PrivateKey) {
		t.Fatalf("loaded %s on %q, saved %s on devnet", got.Address(), got.Network, w.Address())
	}
	b, _ := os.ReadFile(path)
	words, _ := w.Mnemonic()
	for _, want := range []string{`"version": 1`, `"network": "devnet"`, `"address": "` + w.Address() + `"`, words} {
		if !strings.Contains(string(b), want) {
			t.Errorf("file lacks %s:\n%s", want, b)
		}
	}
}

func TestSaveNeverOverwritesWithoutForce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wallet.json")
	first := Generate(Testnet)
	if err := first.Save(path, false); err != nil {
		t.Fatal(err)
	}
	second := Generate(Testnet)
	err := second.Save(path, false)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second save without force: %v", err)
	}
	if got, err := Load(path); err != nil || got.Address() != first.Address() {
		t.Fatalf("the first wallet was replaced: %v %v", got, err)
	}
	if err := second.Save(path, true); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(path); err != nil || got.Address() != second.Address() {
		t.Fatalf("with force: %v %v", got, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("left temporary files behind: %v", entries)
	}
}

func TestLoadRefusesOpenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wallet.json")
	if err := Generate(Devnet).Save(path, false); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		var pe *PermissionError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Fatalf("mode %04o: %v", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "none.json")); !errors.Is(err, ErrNoWallet) || !strings.Contains(err.Error(), "lualambda wallet create") {
		t.Fatalf("missing file: %v", err)
	}
	other := Generate(Devnet)
	words, _ := Generate(Devnet).Mnemonic()
	cases := map[string]string{
		"not json":         "mnemonic words here",
		"version 2":        `{"version":2,"mnemonic":"` + words + `"}`,
		"no key":           `{"version":1,"address":"` + other.Address() + `"}`,
		"address mismatch": `{"version":1,"address":"` + other.Address() + `","mnemonic":"` + words + `"}`,
		"short key":        `{"version":1,"key":"AAAA"}`,
	}
	for name, content := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if w, err := Load(p); err == nil {
			t.Errorf("%s: loaded %s", name, w.Address())
		}
	}
}

func TestLoadRawKey(t *testing.T) {
	w := Generate(Testnet)
	p := filepath.Join(t.TempDir(), "k.json")
	content := `{"version":1,"network":"testnet","key":"` + encodeKey(w) + `"}`
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Load(p)
	if err != nil || got.Address() != w.Address() {
		t.Fatalf("raw key: %v %v", got, err)
	}
}

func TestFromMnemonic(t *testing.T) {
	w := Generate(Devnet)
	words, err := w.Mnemonic()
	if err != nil {
		t.Fatal(err)
	}
	// Extra white space and capitals are fine.
	got, err := FromMnemonic("  "+strings.ToUpper(strings.ReplaceAll(words, " ", "\n  "))+"\n", Devnet)
	if err != nil || got.Address() != w.Address() {
		t.Fatalf("valid mnemonic: %v %v", got, err)
	}
	fields := strings.Fields(words)
	// Replace the checksum word by another valid word: the checksum fails.
	swapped := append([]string(nil), fields...)
	swapped[24] = otherWord(fields[24])
	if _, err := FromMnemonic(strings.Join(swapped, " "), Devnet); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("bad checksum: %v", err)
	}
	if _, err := FromMnemonic(strings.Join(fields[:24], " "), Devnet); err == nil || !strings.Contains(err.Error(), "25 words, got 24") {
		t.Fatalf("24 words: %v", err)
	}
	bad := append([]string(nil), fields...)
	bad[3] = "notaword"
	if _, err := FromMnemonic(strings.Join(bad, " "), Devnet); err == nil || !strings.Contains(err.Error(), "word 4 is not in") {
		t.Fatalf("a word outside the list: %v", err)
	}
	// Errors never repeat the words: they are a secret.
	bad[3] = fields[3] + "x"
	if _, err := FromMnemonic(strings.Join(bad, " "), Devnet); err == nil || strings.Contains(err.Error(), bad[3]) {
		t.Fatalf("a misspelled word: %v", err)
	}
	if _, err := FromMnemonic(strings.Join(swapped, " "), Devnet); err == nil || strings.Contains(err.Error(), swapped[24]) {
		t.Fatalf("bad checksum: %v", err)
	}
	// Commas, as some wallets print them, are separators too.
	if got, err := FromMnemonic(strings.Join(fields, ", "), Devnet); err != nil || got.Address() != w.Address() {
		t.Fatalf("comma-separated: %v %v", got, err)
	}
}

func TestLoadRefusesHugeFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(p, make([]byte, maxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "not a wallet file") {
		t.Fatalf("huge file: %v", err)
	}
}

// otherWord returns a word of the mnemonic list other than w: as the
// checksum word depends only on the other 24, any other word breaks it.
func otherWord(w string) string {
	if w == "abandon" {
		return "ability"
	}
	return "abandon"
}

// encodeKey returns the standard base64 of the wallet's private key.
func encodeKey(w *Wallet) string { return base64.StdEncoding.EncodeToString(w.Account.PrivateKey) }

func TestHumanize(t *testing.T) {
	cases := map[uint64]string{0: "0", 1: "0.000001", 1_000_000: "1", 1_234_567_890: "1,234.56789", 100_000: "0.1"}
	for units, want := range cases {
		if got := Humanize(units, 6); got != want {
			t.Errorf("Humanize(%d) = %q, want %q", units, got, want)
		}
	}
}

func TestBalanceHints(t *testing.T) {
	addr := Generate(Devnet).Address()
	cases := []struct {
		b    Balances
		want []string
	}{
		{Balances{Address: addr}, []string{"no ALGO", "lualambda wallet fund", "not opted in to USDC: run lualambda wallet opt-in"}},
		{Balances{Address: addr, MicroAlgos: 150_000}, []string{"needs at least 0.201 ALGO", "not opted in"}},
		{Balances{Address: addr, MicroAlgos: 10_000_000, OptedIn: true}, []string{"no USDC yet"}},
		{Balances{Address: addr, MicroAlgos: 10_000_000, OptedIn: true, USDC: 5}, nil},
	}
	for i, c := range cases {
		hints := strings.Join(c.b.Hints(Devnet), "\n")
		for _, w := range c.want {
			if !strings.Contains(hints, w) {
				t.Errorf("case %d: hints %q lack %q", i, hints, w)
			}
		}
		if c.want == nil && hints != "" {
			t.Errorf("case %d: a funded account got hints %q", i, hints)
		}
	}
	if h := strings.Join((Balances{Address: addr}).Hints(Testnet), " "); !strings.Contains(h, "bank.testnet.algorand.network") {
		t.Errorf("testnet hints: %s", h)
	}
}

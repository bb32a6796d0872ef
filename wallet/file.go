// Package wallet is the CLI's Algorand wallet: one account kept in a key
// file, the networks it can use (mainnet, testnet, a local devnet), and what
// a payer needs on chain: balances, the USDC opt-in and, on a devnet,
// funding from the faucet.
//
// The key file is JSON, {version, network, address, mnemonic} (or key, the
// standard base64 of the 64-byte ed25519 private key, instead of the
// mnemonic). It is written atomically with mode 0600 in a directory created
// with mode 0700, and refused when other users can read it.
package wallet

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"

	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// FileVersion is the version of the key file format this package writes.
const FileVersion = 1

// EnvPath names the environment variable that overrides the key file's path.
const EnvPath = "LUALAMBDA_WALLET"

// EnvMnemonic names the environment variable that holds a mnemonic for
// import (and, for commands that only sign, instead of the key file).
const EnvMnemonic = "LUALAMBDA_MNEMONIC"

// ErrNoWallet reports that there is no key file.
var ErrNoWallet = errors.New("no wallet")

// ErrExists reports that a key file is already there and would be replaced.
var ErrExists = errors.New("wallet file exists")

// PermissionError reports a key file that other users may read or change.
type PermissionError struct {
	Path string
	Mode fs.FileMode
}

// Error tells the user how to fix the file's mode.
func (e *PermissionError) Error() string {
	return fmt.Sprintf("wallet file %s has mode %04o: other users can read it; fix it with: chmod 600 %s",
		e.Path, e.Mode.Perm(), e.Path)
}

// file is the JSON layout of the key file.
type file struct {
	Version  int    `json:"version"`
	Network  string `json:"network,omitempty"`
	Address  string `json:"address"`
	Mnemonic string `json:"mnemonic,omitempty"`
	Key      string `json:"key,omitempty"`
}

// Wallet is one Algorand account and the network it was made for.
type Wallet struct {
	// Path is the key file it was loaded from or saved to; empty for a
	// wallet that came from the environment.
	Path string
	// Network is the network name the wallet was created for (mainnet,
	// testnet, devnet or a CAIP-2 id); empty when unknown.
	Network string
	// Account is the key pair and address.
	Account crypto.Account
}

// DefaultPath returns $LUALAMBDA_WALLET, else wallet.json in the user's
// configuration directory (~/.config/lualambda/wallet.json on Linux).
func DefaultPath() (string, error) {
	if p := os.Getenv(EnvPath); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("wallet: find the configuration directory (set %s): %w", EnvPath, err)
	}
	return filepath.Join(dir, "lualambda", "wallet.json"), nil
}

// Generate makes a wallet with a new random key.
func Generate(network string) *Wallet {
	return &Wallet{Network: network, Account: crypto.GenerateAccount()}
}

// FromMnemonic makes the wallet of a 25-word Algorand mnemonic. Words may be
// separated by any white space or commas and are case-insensitive; the
// checksum word is verified. Errors name a wrong word by its position,
// never by the word itself: they must not leak part of a secret.
func FromMnemonic(words, network string) (*Wallet, error) {
	fields := strings.FieldsFunc(strings.ToLower(words), func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(fields) != 25 {
		return nil, fmt.Errorf("wallet: a mnemonic has 25 words, got %d", len(fields))
	}
	sk, err := mnemonic.ToPrivateKey(strings.Join(fields, " "))
	if err != nil {
		for i, f := range fields {
			if !isMnemonicWord(f) {
				return nil, fmt.Errorf("wallet: invalid mnemonic: word %d is not in the Algorand (BIP-39 English) word list", i+1)
			}
		}
		return nil, errors.New("wallet: invalid mnemonic: the checksum (25th) word does not match the other 24 (a word is wrong or the order is)")
	}
	a, err := crypto.AccountFromPrivateKey(sk)
	if err != nil {
		return nil, fmt.Errorf("wallet: mnemonic: %w", err)
	}
	return &Wallet{Network: network, Account: a}, nil
}

// isMnemonicWord reports whether w is in the mnemonic word list. The SDK
// does not export its list, so w is tried as every word of a mnemonic: a
// word outside the list fails before the checksum is computed.
func isMnemonicWord(w string) bool {
	_, err := mnemonic.ToKey(strings.TrimSpace(strings.Repeat(w+" ", 25)))
	return err == nil || !strings.HasSuffix(err.Error(), "is not in the words list")
}

// maxFileSize bounds the key file read: a real one is under 1 KiB.
const maxFileSize = 64 << 10

// Address returns the account's address.
func (w *Wallet) Address() string { return w.Account.Address.String() }

// Mnemonic returns the 25-word mnemonic of the key.
func (w *Wallet) Mnemonic() (string, error) {
	m, err := mnemonic.FromPrivateKey(w.Account.PrivateKey)
	if err != nil {
		return "", fmt.Errorf("wallet: mnemonic: %w", err)
	}
	return m, nil
}

// Signer returns the x402 signer of the account.
func (w *Wallet) Signer() avm.KeySigner { return avm.AccountSigner(w.Account) }

// Load reads a key file. A missing file is ErrNoWallet; a file other users
// can read is a *PermissionError; the address in the file must be the key's.
func Load(path string) (*Wallet, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s: create one with 'lualambda wallet create' or 'lualambda wallet import'", ErrNoWallet, path)
	}
	if err != nil {
		return nil, fmt.Errorf("wallet: %w", err)
	}
	defer f.Close()
	// The checks are on the open file, so the file read is the file checked.
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("wallet: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("wallet: %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, &PermissionError{Path: path, Mode: st.Mode()}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("wallet: read %s: %w", path, err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("wallet: %s is over %d KiB: not a wallet file", path, maxFileSize>>10)
	}
	w, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("wallet: %s: %w", path, err)
	}
	w.Path = path
	return w, nil
}

// decode parses the key file's JSON.
func decode(b []byte) (*Wallet, error) {
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("not a wallet file: %w", err)
	}
	if f.Version != FileVersion {
		return nil, fmt.Errorf("unsupported wallet file version %d (this lualambda reads version %d)", f.Version, FileVersion)
	}
	var w *Wallet
	switch {
	case f.Mnemonic != "":
		var err error
		if w, err = FromMnemonic(f.Mnemonic, f.Network); err != nil {
			return nil, err
		}
	case f.Key != "":
		sk, err := base64.StdEncoding.DecodeString(f.Key)
		if err != nil || len(sk) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("key: want the standard base64 of a %d-byte ed25519 private key", ed25519.PrivateKeySize)
		}
		a, err := crypto.AccountFromPrivateKey(ed25519.PrivateKey(sk))
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		w = &Wallet{Network: f.Network, Account: a}
	default:
		return nil, errors.New("neither mnemonic nor key is set")
	}
	if f.Address != "" && f.Address != w.Address() {
		return nil, fmt.Errorf("address %s is not the key's (%s): the file was edited or damaged", f.Address, w.Address())
	}
	return w, nil
}

// Save writes the wallet to path atomically: a temporary file in the same
// directory, written with mode 0600 and synced, then moved into place.
// Without force an existing file is never replaced (ErrExists). Missing
// parent directories are created with mode 0700.
func (w *Wallet) Save(path string, force bool) error {
	words, err := w.Mnemonic()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(file{Version: FileVersion, Network: w.Network, Address: w.Address(), Mnemonic: words}, "", "  ")
	if err != nil {
		return fmt.Errorf("wallet: encode: %w", err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("wallet: %w", err)
	}
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%w: %s (pass --force to replace it; its funds are lost unless you saved its mnemonic)", ErrExists, path)
		}
	}
	tmp, err := os.CreateTemp(dir, ".wallet-*.tmp")
	if err != nil {
		return fmt.Errorf("wallet: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op once renamed or linked and removed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("wallet: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("wallet: write %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("wallet: sync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("wallet: %w", err)
	}
	if force {
		err = os.Rename(tmpName, path)
	} else {
		// A hard link fails when path exists, so a file created since the
		// check above is not replaced either.
		err = os.Link(tmpName, path)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s (pass --force to replace it)", ErrExists, path)
		}
	}
	if err != nil {
		return fmt.Errorf("wallet: install %s: %w", path, err)
	}
	syncDir(dir)
	w.Path = path
	return nil
}

// syncDir makes a rename in dir durable; errors are ignored because some
// file systems cannot sync directories.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lualambda/caddy-lualambda/wallet"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/payer"
)

// walletFlags choose the key file and the network, for every command that
// uses the wallet.
type walletFlags struct {
	path     string
	settings wallet.Settings
	usdc     uint64
}

func (f *walletFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.path, "wallet", "", "the key file (default $"+wallet.EnvMnemonic+" when set, else $"+wallet.EnvPath+", else ~/.config/lualambda/wallet.json)")
	fs.StringVar(&f.settings.Network, "network", "", "mainnet, testnet, devnet or a CAIP-2 id (default $"+wallet.EnvNetwork+", else the wallet's, else "+wallet.DefaultNetwork+")")
	fs.StringVar(&f.settings.Algod, "algod", "", "the network's algod URL (default $"+wallet.EnvAlgod+", else the network's)")
	fs.StringVar(&f.settings.AlgodToken, "algod-token", "", "the algod API token (default $"+wallet.EnvAlgodToken+")")
	fs.Uint64Var(&f.usdc, "usdc", 0, "the USDC asset id (default: the network's)")
}

// keyPath resolves --wallet, then $LUALAMBDA_WALLET, then the default.
func (f *walletFlags) keyPath() (string, error) {
	if f.path != "" {
		return f.path, nil
	}
	return wallet.DefaultPath()
}

// load returns the wallet: the key file of --wallet when given, else
// $LUALAMBDA_MNEMONIC when set, else the key file of $LUALAMBDA_WALLET or
// the default path.
func (f *walletFlags) load() (*wallet.Wallet, error) {
	if words := os.Getenv(wallet.EnvMnemonic); words != "" && f.path == "" {
		w, err := wallet.FromMnemonic(words, "")
		if err != nil {
			return nil, &exitError{code: 1, msg: fmt.Sprintf("$%s: %v", wallet.EnvMnemonic, err)}
		}
		return w, nil
	}
	path, err := f.keyPath()
	if err != nil {
		return nil, err
	}
	w, err := wallet.Load(path)
	if err != nil {
		return nil, &exitError{code: 1, msg: err.Error()}
	}
	return w, nil
}

// network resolves the network: the flag, the environment, the wallet's.
func (f *walletFlags) network(w *wallet.Wallet) wallet.Settings {
	s := f.settings.WithEnv()
	if s.Network == "" && w != nil {
		s.Network = w.Network
	}
	if s.Network == "" {
		s.Network = wallet.DefaultNetwork
	}
	s.USDC = f.usdc
	return s
}

// connect reaches the wallet's network.
func (f *walletFlags) connect(ctx context.Context, w *wallet.Wallet) (*wallet.Conn, error) {
	c, err := wallet.Connect(ctx, f.network(w))
	if err != nil {
		return nil, &exitError{code: 1, msg: err.Error()}
	}
	return c, nil
}

// account returns what pays a 402: the wallet's signer on its network.
func (f *walletFlags) account(ctx context.Context) (*payer.Account, error) {
	w, err := f.load()
	if err != nil {
		return nil, fmt.Errorf("the server asks for payment (x402): %w", err)
	}
	c, err := f.connect(ctx, w)
	if err != nil {
		return nil, fmt.Errorf("the server asks for payment (x402): %w", err)
	}
	return &payer.Account{Signer: w.Signer(), Chains: []payer.Chain{{Network: c.Chain, Algod: c.Ledger}}}, nil
}

func newWalletCommand() *cobra.Command {
	var f walletFlags
	cmd := &cobra.Command{
		Use:   "wallet",
		Short: "Manage the Algorand wallet that pays for runs (default: status)",
		Long: `Manage the Algorand wallet that pays servers asking for x402 payment in USDC.

The key file is ~/.config/lualambda/wallet.json (or $LUALAMBDA_WALLET), mode
0600. The wallet used is the key file of --wallet when given, else the
25-word mnemonic in $LUALAMBDA_MNEMONIC when set, else the key file.
Networks: mainnet, testnet (the default) and devnet (a local devnet, see
lualambda devnet); --algod, --algod-token and --usdc override their defaults.

Start on the devnet:
  lualambda wallet create --network devnet
  lualambda wallet fund
  lualambda wallet status`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return walletStatus(cmd, &f) },
	}
	f.register(cmd.PersistentFlags())
	cmd.AddCommand(
		newWalletCreateCommand(&f), newWalletImportCommand(&f), newWalletExportCommand(&f),
		newWalletAddressCommand(&f), newWalletQRCommand(&f), newWalletStatusCommand(&f),
		newWalletOptInCommand(&f), newWalletFundCommand(&f),
	)
	return cmd
}

func newWalletCreateCommand(f *walletFlags) *cobra.Command {
	var force, doFund bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a wallet with a new key",
		Long: `Create a wallet with a new random key and print its address, a QR code of
it for mobile wallets, and how to fund it on its network. An existing wallet
is never replaced without --force. On a devnet, --fund also gets 10 ALGO and
100 USDC from its faucet (as lualambda wallet fund does).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := f.network(nil)
			if err := checkNetworkName(s.Network); err != nil {
				return err
			}
			if doFund && !strings.EqualFold(s.Network, wallet.Devnet) {
				return usageErrorf("--fund works on a devnet only (--network devnet)")
			}
			w := wallet.Generate(s.Network)
			if err := saveWallet(cmd, f, w, force, "created", doFund); err != nil {
				return err
			}
			if !doFund {
				return nil
			}
			c, err := f.connect(cmd.Context(), w)
			if err != nil {
				return err
			}
			return fund(cmd.Context(), c, w, 10_000_000, 100_000_000, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing wallet (its funds are lost without its mnemonic)")
	cmd.Flags().BoolVar(&doFund, "fund", false, "on a devnet, fund the new wallet from the faucet")
	return cmd
}

func newWalletImportCommand(f *walletFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "import [WORD...]",
		Short: "Import a wallet from its 25-word mnemonic",
		Long: `Import a wallet from its 25-word Algorand mnemonic: the words given as
arguments, else $LUALAMBDA_MNEMONIC, else read from standard input (safer:
arguments stay in the shell's history and are visible to other users in the
process list). From a terminal one line is read; from a pipe or file, all
of it. Words may be separated by spaces, new lines or commas, in any case.
The checksum word is verified. It is saved to --wallet, else
$LUALAMBDA_WALLET, else ~/.config/lualambda/wallet.json.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			words := strings.Join(args, " ")
			if words == "" {
				words = os.Getenv(wallet.EnvMnemonic)
			}
			if words == "" {
				in := io.LimitReader(cmd.InOrStdin(), 4096)
				var err error
				if isTerminal(cmd.InOrStdin()) {
					fmt.Fprint(cmd.ErrOrStderr(), "mnemonic (25 words): ")
					words, err = bufio.NewReader(in).ReadString('\n')
					if errors.Is(err, io.EOF) {
						err = nil
					}
				} else {
					var b []byte
					b, err = io.ReadAll(in)
					words = string(b)
				}
				if err != nil {
					return usageErrorf("read the mnemonic: %v", err)
				}
			}
			s := f.network(nil)
			if err := checkNetworkName(s.Network); err != nil {
				return err
			}
			w, err := wallet.FromMnemonic(words, s.Network)
			if err != nil {
				return usageErrorf("%v", err)
			}
			return saveWallet(cmd, f, w, force, "imported", false)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing wallet")
	return cmd
}

// checkNetworkName refuses a network name that no command could use.
func checkNetworkName(name string) error {
	switch strings.ToLower(name) {
	case wallet.Mainnet, wallet.Testnet, wallet.Devnet:
		return nil
	}
	if strings.HasPrefix(name, x402.AlgorandNamespace+":") {
		return nil
	}
	return usageErrorf("--network %q: want mainnet, testnet, devnet or an algorand: CAIP-2 id", name)
}

// saveWallet writes a new wallet and prints its address, QR code and
// funding hints.
func saveWallet(cmd *cobra.Command, f *walletFlags, w *wallet.Wallet, force bool, verb string, funding bool) error {
	// Preset names are case-insensitive; a CAIP-2 id is not (its genesis
	// hash is base64).
	if !strings.HasPrefix(w.Network, x402.AlgorandNamespace+":") {
		w.Network = strings.ToLower(w.Network)
	}
	path, err := f.keyPath()
	if err != nil {
		return err
	}
	if err := w.Save(path, force); err != nil {
		if errors.Is(err, wallet.ErrExists) {
			return &exitError{code: 1, msg: err.Error()}
		}
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "%s wallet %s for %s\naddress: %s\n\n", verb, path, w.Network, w.Address())
	printQR(out, w.Address())
	if funding {
		fmt.Fprintln(out)
		return nil
	}
	fmt.Fprintln(out, "\nnext steps:")
	switch w.Network {
	case wallet.Devnet:
		fmt.Fprintln(out, "  lualambda wallet fund      # ALGO and USDC from the devnet's faucet (opts in to USDC)")
		fmt.Fprintln(out, "  lualambda wallet status")
	case wallet.Testnet:
		fmt.Fprintln(out, "  1. get testnet ALGO:  https://bank.testnet.algorand.network/ (or https://lora.algokit.io/testnet/fund)")
		fmt.Fprintln(out, "  2. lualambda wallet opt-in   # lets the account hold USDC (ASA 10458941)")
		fmt.Fprintln(out, "  3. get testnet USDC:  https://faucet.circle.com/ (network: Algorand Testnet)")
		fmt.Fprintln(out, "  4. lualambda wallet status")
	case wallet.Mainnet:
		fmt.Fprintln(out, "  1. buy ALGO (at least 0.3) and withdraw it to the address above")
		fmt.Fprintln(out, "  2. lualambda wallet opt-in   # lets the account hold USDC (ASA 31566704)")
		fmt.Fprintln(out, "  3. buy USDC and withdraw it to the address on the Algorand network")
		fmt.Fprintln(out, "  4. lualambda wallet status")
	default:
		fmt.Fprintln(out, "  send ALGO to the address, then: lualambda wallet opt-in; then send USDC")
	}
	fmt.Fprintln(out, "back up the key: lualambda wallet export (anyone with the mnemonic controls the funds)")
	return nil
}

// printQR prints a terminal QR code of algorand://ADDRESS, the URI mobile
// wallets (Pera, Defly) scan.
func printQR(w io.Writer, addr string) {
	qrterminal.GenerateWithConfig("algorand://"+addr, qrterminal.Config{
		Level: qrterminal.M, Writer: w, HalfBlocks: true, QuietZone: 2,
		BlackChar: qrterminal.BLACK_BLACK, WhiteBlackChar: qrterminal.WHITE_BLACK,
		WhiteChar: qrterminal.WHITE_WHITE, BlackWhiteChar: qrterminal.BLACK_WHITE,
	})
}

// walletCommand is a wallet subcommand that takes no arguments and runs
// with the loaded wallet.
func walletCommand(f *walletFlags, use, short string, run func(cmd *cobra.Command, w *wallet.Wallet) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w, err := f.load()
			if err != nil {
				return err
			}
			return run(cmd, w)
		},
	}
}

func newWalletExportCommand(f *walletFlags) *cobra.Command {
	return walletCommand(f, "export", "Print the wallet's mnemonic (a secret: anyone with it controls the funds)",
		func(cmd *cobra.Command, w *wallet.Wallet) error {
			words, err := w.Mnemonic()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: this mnemonic controls the funds of %s; keep it secret and offline\n", w.Address())
			fmt.Fprintln(cmd.OutOrStdout(), words)
			return nil
		})
}

func newWalletAddressCommand(f *walletFlags) *cobra.Command {
	return walletCommand(f, "address", "Print the wallet's address", func(cmd *cobra.Command, w *wallet.Wallet) error {
		fmt.Fprintln(cmd.OutOrStdout(), w.Address())
		return nil
	})
}

func newWalletQRCommand(f *walletFlags) *cobra.Command {
	return walletCommand(f, "qr", "Print a QR code of the wallet's address (algorand://ADDRESS)", func(cmd *cobra.Command, w *wallet.Wallet) error {
		printQR(cmd.OutOrStdout(), w.Address())
		fmt.Fprintln(cmd.OutOrStdout(), w.Address())
		return nil
	})
}

func newWalletStatusCommand(f *walletFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the wallet's ALGO and USDC balances and what it still needs",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return walletStatus(cmd, f) },
	}
}

func walletStatus(cmd *cobra.Command, f *walletFlags) error {
	w, err := f.load()
	if err != nil {
		return err
	}
	c, err := f.connect(cmd.Context(), w)
	if err != nil {
		return err
	}
	b, err := c.Balances(cmd.Context(), w.Address())
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "address:  %s\n", w.Address())
	if w.Path != "" {
		fmt.Fprintf(out, "key:      %s\n", w.Path)
	} else {
		fmt.Fprintf(out, "key:      $%s\n", wallet.EnvMnemonic)
	}
	fmt.Fprintf(out, "network:  %s (%s) via %s\n", c.Name, c.Chain.CAIP2(), c.AlgodURL)
	fmt.Fprintf(out, "ALGO:     %s (minimum balance %s)\n", wallet.ALGO(b.MicroAlgos), wallet.ALGO(b.MinBalance))
	switch {
	case b.OptedIn:
		fmt.Fprintf(out, "USDC:     %s (ASA %d)\n", wallet.USDC(b.USDC), b.USDCAsset)
	default:
		fmt.Fprintf(out, "USDC:     not opted in (ASA %d)\n", b.USDCAsset)
	}
	for _, h := range b.Hints(c.Name) {
		fmt.Fprintln(out, "hint:", h)
	}
	return nil
}

func newWalletOptInCommand(f *walletFlags) *cobra.Command {
	return walletCommand(f, "opt-in", "Opt the account in to USDC (a 0-amount transfer to itself), so it can hold it",
		func(cmd *cobra.Command, w *wallet.Wallet) error {
			c, err := f.connect(cmd.Context(), w)
			if err != nil {
				return err
			}
			return optIn(cmd.Context(), c, w, cmd.OutOrStdout())
		})
}

// optIn opts the wallet in to USDC and says what happened.
func optIn(ctx context.Context, c *wallet.Conn, w *wallet.Wallet, out io.Writer) error {
	txid, already, err := c.OptIn(ctx, w)
	switch {
	case err != nil:
		return &exitError{code: 1, msg: err.Error()}
	case already:
		fmt.Fprintf(out, "already opted in to USDC (ASA %d)\n", c.Chain.USDC)
	default:
		fmt.Fprintf(out, "opted in to USDC (ASA %d): transaction %s confirmed\n", c.Chain.USDC, txid)
		if u := c.Chain.ExplorerURL(txid); u != "" {
			fmt.Fprintln(out, u)
		}
	}
	return nil
}

func newWalletFundCommand(f *walletFlags) *cobra.Command {
	var algo, usdc string
	cmd := &cobra.Command{
		Use:   "fund",
		Short: "Get ALGO and USDC from a devnet's faucet (devnet only)",
		Long: `Get ALGO and USDC from the faucet of a devnet (lualambda devnet). The ALGO
comes first; when USDC is asked for and the account is not opted in to it
yet, fund opts in (a 0-amount transfer to itself, signed by this wallet)
before the USDC is sent. On testnet use the dispenser
(https://bank.testnet.algorand.network/) and Circle's faucet
(https://faucet.circle.com/) instead.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			micro, err := x402.ParsePrice(algo, 6)
			if err != nil {
				return usageErrorf("--algo %q: %v", algo, err)
			}
			units, err := x402.ParsePrice(usdc, x402.USDCDecimals)
			if err != nil {
				return usageErrorf("--usdc-amount %q: %v", usdc, err)
			}
			if micro == 0 && units == 0 {
				return usageErrorf("nothing to fund: --algo and --usdc-amount are both 0")
			}
			w, err := f.load()
			if err != nil {
				return err
			}
			if s := f.network(w); !strings.EqualFold(s.Network, wallet.Devnet) {
				return &exitError{code: 1, msg: fmt.Sprintf("fund works on a devnet only (this wallet is on %s): %s; %s",
					s.Network, wallet.FundingHint(s.Network, w.Address()), wallet.USDCHint(s.Network))}
			}
			ctx := cmd.Context()
			c, err := f.connect(ctx, w)
			if err != nil {
				return err
			}
			return fund(ctx, c, w, micro, units, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&algo, "algo", "10", "ALGO to get")
	cmd.Flags().StringVar(&usdc, "usdc-amount", "100", "USDC to get")
	return cmd
}

// fund asks the devnet's faucet for ALGO, opts in when USDC is wanted, then
// asks for the USDC.
func fund(ctx context.Context, c *wallet.Conn, w *wallet.Wallet, micro, units uint64, out io.Writer) error {
	addr := w.Address()
	if micro > 0 {
		if _, err := c.Fund(ctx, addr, micro, 0); err != nil {
			return &exitError{code: 1, msg: err.Error()}
		}
		fmt.Fprintf(out, "funded %s with %s\n", addr, wallet.ALGO(micro))
	}
	if units > 0 {
		if err := optIn(ctx, c, w, out); err != nil {
			return err
		}
		if _, err := c.Fund(ctx, addr, 0, units); err != nil {
			return &exitError{code: 1, msg: err.Error()}
		}
		fmt.Fprintf(out, "funded %s with %s\n", addr, wallet.USDC(units))
	}
	return nil
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

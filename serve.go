package caddylualambda

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/types"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lualambda/caddy-lualambda/x402"
	// The x402pay directive, which the paid config uses.
	_ "github.com/lualambda/caddy-lualambda/x402pay"
)

// ServeCommandName is the Caddy command that serves the invocation API
// with no Caddyfile: `caddy lualambda-server`. `lualambda serve` runs the
// same config in its own process.
const ServeCommandName = "lualambda-server"

// DefaultServeListen is where the quick server listens without --listen
// and --domain: port 8402, as the LuaLambda orchestrator did.
const DefaultServeListen = ":8402"

// Defaults of the paid mode. The devnet's are those of `lualambda devnet`
// (package wallet's DevnetAlgod and DevnetToken, which this package does
// not import so that Caddy does not link the devnet).
const (
	serveDevnetAlgod      = "http://127.0.0.1:4001"
	serveDevnetAlgodToken = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	serveTestnetAlgod     = "https://testnet-api.algonode.cloud"
	serveMainnetAlgod     = "https://mainnet-api.algonode.cloud"
)

// ServeOptions are the settings of the quick server, as the flags of
// `caddy lualambda-server` and `lualambda serve` give them.
type ServeOptions struct {
	// Listen is the address to listen on; empty means DefaultServeListen,
	// or ":443" with Domain.
	Listen string
	// Domain, when set, serves HTTPS on this name with Caddy's automatic
	// HTTPS (a certificate from a public CA, or Caddy's local CA for names
	// such as localhost).
	Domain string
	// PayTo, when set, makes every run paid: the Algorand address that
	// receives the payments. Empty serves for free.
	PayTo string
	// Network is devnet, testnet, mainnet or an Algorand CAIP-2 id; empty
	// means devnet.
	Network string
	// Facilitator is "builtin" (or empty) for the built-in facilitator, or
	// the URL of a remote one.
	Facilitator string
	// Algod is the built-in facilitator's algod URL; empty means
	// $LUALAMBDA_ALGOD, else the network's public or local default.
	Algod string
	// AlgodToken is its API token; empty means $LUALAMBDA_ALGOD_TOKEN, else
	// the devnet's default token on a devnet.
	AlgodToken string
	// FeePayer is the built-in facilitator's fee payer: a placeholder
	// ({env.NAME} or {file./path}) holding its mnemonic, "faucet" (devnet
	// only) or "none". Empty means faucet on a devnet and none elsewhere.
	FeePayer string
	// Prices are PROFILE=USD settings, e.g. nano=0.002.
	Prices []string
	// Profiles are the reference profiles served (nano, small, med); empty
	// serves all three.
	Profiles []string
	// Warm, when set, is how many ready VMs each profile keeps; nil keeps
	// the reference profiles' own (nano 2, small 1, med 1).
	Warm *int
	// Accel is auto, kvm or tcg; empty means auto.
	Accel string
	// Image is the guest image directory; empty means the installed one.
	Image string
	// RuntimeDir is the VMs' runtime directory; empty means the default.
	RuntimeDir string
}

// ServePlan is a checked ServeOptions: the Caddyfile it serves and what to
// tell the user.
type ServePlan struct {
	// Caddyfile is the config, in Caddyfile form.
	Caddyfile string
	// URL is the invocation API's base URL, ending in /invoke/.
	URL string
	// Paid tells whether runs are paid.
	Paid bool
	// MCP tells whether the runs are also served as MCP tools at /mcp
	// (when the binary has the lualambda_mcp module).
	MCP bool
	// Network, PayTo, Facilitator and FeePayer describe the paid mode.
	Network, PayTo, Facilitator, FeePayer string
	// Profiles are the profiles served, with their prices and warm counts.
	Profiles []Profile

	// algod and algodToken are the builtin facilitator's node, for
	// Preflight; the token is never shown.
	algod, algodToken string
}

// plainToken matches a value that can stand in a Caddyfile unquoted: no
// white space, quotes, backslashes or {$ (a Caddyfile environment
// variable, expanded when the file is read).
var plainToken = regexp.MustCompile(`^[^\s"'\x60\\]+$`)

// placeholderSecret matches {env.NAME} and {file./path}.
var placeholderSecret = regexp.MustCompile(`^\{(env\.[A-Za-z_][A-Za-z0-9_]*|file\.[^\s{}"'\x60\\]+)\}$`)

// domainName matches a DNS name (letters, digits, dots and hyphens).
var domainName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)

// checkToken refuses a value that cannot stand in the Caddyfile as one
// plain token.
func checkToken(flag, v string) error {
	if !plainToken.MatchString(v) || strings.Contains(v, "{$") {
		return fmt.Errorf("--%s: %q must be one word with no quotes, backslashes or {$", flag, v)
	}
	return nil
}

// checkURL refuses anything but an http or https URL.
func checkURL(flag, v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--%s: %q is not an http(s) URL", flag, v)
	}
	return checkToken(flag, v)
}

// PlanServe checks the options and builds the quick server's Caddyfile.
// Bad input gets an error that names the flag.
func PlanServe(o ServeOptions) (*ServePlan, error) {
	p := &ServePlan{}
	site, bind, err := serveSite(o.Listen, o.Domain)
	if err != nil {
		return nil, err
	}
	if p.URL, err = serveURL(o.Listen, o.Domain); err != nil {
		return nil, err
	}
	if p.Profiles, err = serveProfiles(o); err != nil {
		return nil, err
	}
	var global strings.Builder
	global.WriteString("{\n\tadmin off\n\tpersist_config off\n\tlualambda {\n")
	accel := o.Accel
	if accel == "" {
		accel = "auto"
	}
	if accel != "auto" && accel != "kvm" && accel != "tcg" {
		return nil, fmt.Errorf("--accel: %q: want auto, kvm or tcg", accel)
	}
	fmt.Fprintf(&global, "\t\taccel %s\n", accel)
	for _, kv := range [][2]string{{"image", o.Image}, {"runtime_dir", o.RuntimeDir}} {
		if kv[1] == "" {
			continue
		}
		if err := checkToken(strings.ReplaceAll(kv[0], "_", "-"), kv[1]); err != nil {
			return nil, err
		}
		fmt.Fprintf(&global, "\t\t%s %s\n", kv[0], kv[1])
	}
	global.WriteString("\t}\n}\n\n")

	var gate string
	if o.PayTo != "" {
		if gate, err = p.planPayment(o); err != nil {
			return nil, err
		}
	} else {
		for flag, v := range map[string]string{"network": o.Network, "facilitator": o.Facilitator, "algod": o.Algod, "algod-token": o.AlgodToken, "fee-payer": o.FeePayer} {
			if v != "" {
				return nil, fmt.Errorf("--%s needs --pay-to: without it runs are free", flag)
			}
		}
		if len(o.Prices) > 0 {
			return nil, errors.New("--price needs --pay-to: without it runs are free")
		}
	}

	var b strings.Builder
	b.WriteString(global.String())
	// The profiles, written once for both endpoints (one pool each).
	b.WriteString("(profiles) {\n")
	for _, pr := range p.Profiles {
		fmt.Fprintf(&b, "\tprofile %s {\n", pr.Name)
		if p.Paid {
			fmt.Fprintf(&b, "\t\tprice %s\n", pr.Price)
		}
		fmt.Fprintf(&b, "\t\twarm %d\n\t}\n", pr.Warm)
	}
	b.WriteString("}\n\n")
	fmt.Fprintf(&b, "%s {\n", site)
	if bind != "" {
		fmt.Fprintf(&b, "\tbind %s\n", bind)
	}
	// The MCP endpoint is served when the binary has lualambda_mcp (both
	// of this project's binaries do).
	_, err = caddy.GetModule("http.handlers." + mcpDirective)
	p.MCP = err == nil
	b.WriteString("\thandle_path /invoke/* {\n")
	b.WriteString(gate)
	b.WriteString("\t\tlualambda {\n\t\t\timport profiles\n")
	if p.MCP {
		b.WriteString("\t\t\tmcp /mcp\n")
	}
	b.WriteString("\t\t}\n\t}\n")
	if p.MCP {
		b.WriteString("\troute /mcp* {\n")
		b.WriteString(gate)
		fmt.Fprintf(&b, "\t\t%s {\n\t\t\timport profiles\n\t\t}\n\t}\n", mcpDirective)
	}
	b.WriteString("\tredir /invoke /invoke/ 308\n")
	b.WriteString("\trespond / \"caddy-lualambda: see /invoke/\" 200\n}\n")
	p.Caddyfile = b.String()
	return p, nil
}

// serveSite returns the Caddyfile site address and bind host for --listen
// and --domain.
func serveSite(listen, domain string) (site, bind string, err error) {
	host, port := "", ""
	if listen != "" {
		if host, port, err = net.SplitHostPort(listen); err != nil {
			return "", "", fmt.Errorf("--listen: %q: want [host]:port: %w", listen, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("--listen: %q: the port must be 1-65535", listen)
		}
		if host != "" && net.ParseIP(host) == nil && !domainName.MatchString(host) {
			return "", "", fmt.Errorf("--listen: %q: bad host", listen)
		}
	}
	if domain != "" {
		if !domainName.MatchString(domain) || !strings.ContainsAny(domain, ".") && domain != "localhost" {
			return "", "", fmt.Errorf("--domain: %q is not a domain name", domain)
		}
		site = domain
		if port != "" {
			site = domain + ":" + port
		}
		return site, host, nil
	}
	if port == "" {
		_, port, _ = net.SplitHostPort(DefaultServeListen)
	}
	return "http://:" + port, host, nil
}

// serveURL is the API's base URL as a user on this machine reaches it.
func serveURL(listen, domain string) (string, error) {
	host, port := "localhost", ""
	if listen != "" {
		h, p, err := net.SplitHostPort(listen)
		if err != nil {
			return "", fmt.Errorf("--listen: %w", err)
		}
		port = p
		if h != "" && h != "0.0.0.0" && h != "::" {
			host = h
		}
	}
	if domain != "" {
		if port == "" || port == "443" {
			return "https://" + domain + "/invoke/", nil
		}
		return "https://" + net.JoinHostPort(domain, port) + "/invoke/", nil
	}
	if port == "" {
		_, port, _ = net.SplitHostPort(DefaultServeListen)
	}
	return "http://" + net.JoinHostPort(host, port) + "/invoke/", nil
}

// serveProfiles picks the reference profiles and applies --price and
// --warm.
func serveProfiles(o ServeOptions) ([]Profile, error) {
	ref := DefaultProfiles()
	var out []Profile
	if len(o.Profiles) == 0 {
		out = ref
	}
	for _, name := range o.Profiles {
		i := slices.IndexFunc(ref, func(p Profile) bool { return p.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("--profile: %q is not a reference profile (nano, small, med)", name)
		}
		if slices.ContainsFunc(out, func(p Profile) bool { return p.Name == name }) {
			return nil, fmt.Errorf("--profile: %s given twice", name)
		}
		out = append(out, ref[i])
	}
	if o.Warm != nil {
		if *o.Warm < 0 || *o.Warm > 64 {
			return nil, fmt.Errorf("--warm: %d: want 0-64", *o.Warm)
		}
		for i := range out {
			out[i].Warm = *o.Warm
		}
	}
	for _, kv := range o.Prices {
		name, price, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--price: %q: want PROFILE=USD, e.g. nano=0.002", kv)
		}
		i := slices.IndexFunc(out, func(p Profile) bool { return p.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("--price: %q: profile %q is not served", kv, name)
		}
		if _, err := x402.ParsePrice(price, x402.USDCDecimals); err != nil {
			return nil, fmt.Errorf("--price: %w", err)
		}
		out[i].Price = strings.TrimPrefix(price, "$")
	}
	return out, nil
}

// planPayment checks the paid mode's options and returns the x402pay block.
func (p *ServePlan) planPayment(o ServeOptions) (string, error) {
	p.Paid = true
	if _, err := types.DecodeAddress(o.PayTo); err != nil {
		return "", fmt.Errorf("--pay-to: %q is not an Algorand address: %w", o.PayTo, err)
	}
	p.PayTo = o.PayTo
	network := o.Network
	if network == "" {
		network = "devnet"
	}
	spec, err := x402.ParseNetworkSpec(network)
	if err != nil {
		return "", fmt.Errorf("--network: %w", err)
	}
	if err := checkToken("network", network); err != nil {
		return "", err
	}
	p.Network = network
	var b strings.Builder
	fmt.Fprintf(&b, "\t\tx402pay {\n\t\t\tpay_to %s\n\t\t\tnetwork %s\n\t\t\tdescription \"a Lua run in a fresh microVM\"\n", o.PayTo, network)
	if o.Facilitator != "" && o.Facilitator != "builtin" {
		if err := checkURL("facilitator", o.Facilitator); err != nil {
			return "", err
		}
		if spec.Devnet {
			return "", errors.New("--facilitator: network devnet needs the builtin facilitator")
		}
		for flag, v := range map[string]string{"algod": o.Algod, "algod-token": o.AlgodToken, "fee-payer": o.FeePayer} {
			if v != "" {
				return "", fmt.Errorf("--%s is for the builtin facilitator, not for --facilitator %s", flag, o.Facilitator)
			}
		}
		p.Facilitator = o.Facilitator
		fmt.Fprintf(&b, "\t\t\tfacilitator %s\n\t\t}\n", o.Facilitator)
		return b.String(), nil
	}
	algod, token := o.Algod, o.AlgodToken
	if algod == "" {
		algod = os.Getenv("LUALAMBDA_ALGOD")
	}
	if token == "" {
		token = os.Getenv("LUALAMBDA_ALGOD_TOKEN")
	}
	switch {
	case algod != "":
	case spec.Devnet:
		algod = serveDevnetAlgod
	case network == "testnet" || spec.Network != nil && spec.Network.Matches(x402.AlgorandTestnet.CAIP2()):
		algod = serveTestnetAlgod
	case network == "mainnet" || spec.Network != nil && spec.Network.Matches(x402.AlgorandMainnet.CAIP2()):
		algod = serveMainnetAlgod
	default:
		return "", fmt.Errorf("--algod: network %s has no default algod: give its URL", network)
	}
	if token == "" && spec.Devnet {
		token = serveDevnetAlgodToken
	}
	if err := checkURL("algod", algod); err != nil {
		return "", err
	}
	feePayer := o.FeePayer
	switch {
	case feePayer == "" && spec.Devnet:
		feePayer = "faucet"
	case feePayer == "" || feePayer == "none":
		feePayer = ""
	case feePayer == "faucet":
		if !spec.Devnet {
			return "", fmt.Errorf("--fee-payer faucet works only on a devnet, not on %s: give {env.NAME} or {file./path} holding the fee payer's mnemonic", network)
		}
	case !placeholderSecret.MatchString(feePayer):
		return "", errors.New("--fee-payer: want {env.NAME} or {file./path} holding the fee payer's mnemonic (never the words themselves), faucet (devnet) or none")
	}
	p.Facilitator, p.FeePayer = "builtin, algod "+algod, feePayer
	p.algod, p.algodToken = algod, token
	fmt.Fprintf(&b, "\t\t\tfacilitator builtin {\n\t\t\t\talgod %s\n", algod)
	if token != "" {
		if err := checkToken("algod-token", token); err != nil {
			// The token may be a secret: do not echo it.
			return "", errors.New("--algod-token: must be one word with no quotes, backslashes or {$")
		}
		fmt.Fprintf(&b, "\t\t\t\talgod_token %s\n", token)
	}
	if feePayer != "" {
		fmt.Fprintf(&b, "\t\t\t\tfee_payer %s\n", feePayer)
	}
	b.WriteString("\t\t\t}\n\t\t}\n")
	return b.String(), nil
}

// Config adapts the plan's Caddyfile to Caddy's JSON config.
func (p *ServePlan) Config() ([]byte, error) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return nil, errors.New("the caddyfile adapter is not built in")
	}
	cfg, warnings, err := adapter.Adapt([]byte(p.Caddyfile), map[string]any{"filename": ServeCommandName})
	if err != nil {
		return nil, fmt.Errorf("adapt the %s config: %w", ServeCommandName, err)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "not formatted") {
			return nil, fmt.Errorf("adapt the %s config: %s", ServeCommandName, w.String())
		}
	}
	return cfg, nil
}

// Preflight checks that the builtin facilitator's algod answers (GET
// /health), so that a devnet that is not running is reported at start
// rather than on the first payment. The server runs either way: payments
// work once algod answers.
func (p *ServePlan) Preflight(ctx context.Context) error {
	if p.algod == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(p.algod, "/")+"/health", nil)
	if err != nil {
		return fmt.Errorf("algod %s: %w", p.algod, err)
	}
	if p.algodToken != "" && !strings.Contains(p.algodToken, "{") {
		req.Header.Set("X-Algo-API-Token", p.algodToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		err = errors.New(resp.Status)
	}
	hint := ""
	if p.Network == "devnet" {
		hint = ` (start it with "lualambda devnet", or give --algod)`
	}
	return fmt.Errorf("algod %s does not answer: %v; payments fail until it does%s", p.algod, err, hint)
}

// Describe writes what the server serves and the first commands to try.
func (p *ServePlan) Describe(w io.Writer) {
	fmt.Fprintf(w, "caddy-lualambda serving %s\n", p.URL)
	if p.Paid {
		fmt.Fprintf(w, "  mode:        paid, in USDC on %s\n", p.Network)
		fmt.Fprintf(w, "  receiver:    %s\n", p.PayTo)
		fmt.Fprintf(w, "  facilitator: %s\n", p.Facilitator)
		switch p.FeePayer {
		case "":
			if strings.HasPrefix(p.Facilitator, "builtin") {
				fmt.Fprintln(w, "  fees:        paid by each payer (no fee payer)")
			}
		case "faucet":
			fmt.Fprintln(w, "  fees:        sponsored by a fee payer funded from the devnet's faucet: payers need only USDC")
		default:
			fmt.Fprintf(w, "  fees:        sponsored by the fee payer in %s\n", p.FeePayer)
		}
	} else {
		fmt.Fprintln(w, "  mode:        free (give --pay-to ADDRESS to charge for runs)")
	}
	fmt.Fprintln(w, "  profiles:")
	for _, pr := range p.Profiles {
		price := "free"
		if p.Paid {
			price = pr.Price + " USDC"
		}
		fmt.Fprintf(w, "    %-6s %-12s %d MiB, %s limit, output kept %s, %d warm\n",
			pr.Name, price, pr.MemoryMiB, time.Duration(pr.Timeout), time.Duration(pr.Retention), pr.Warm)
	}
	api := strings.TrimSuffix(p.URL, "/")
	if p.MCP {
		fmt.Fprintf(w, "  mcp:         %s (tools run_lua, list_profiles, get_output; %s)\n", p.MCPURL(), mcpPayNote(p.Paid))
	}
	fmt.Fprintln(w, "try:")
	fmt.Fprintf(w, "  curl -s %s\n", p.URL)
	fmt.Fprintf(w, "  lualambda invoke --server %s --profile %s -e 'return 6 * 7'\n", api, p.Profiles[0].Name)
}

// mcpDirective is the MCP handler's directive and module name.
const mcpDirective = "lualambda_mcp"

// MCPURL is the address of the MCP endpoint the plan serves.
func (p *ServePlan) MCPURL() string {
	return strings.TrimSuffix(strings.TrimSuffix(p.URL, "/"), "/invoke") + "/mcp"
}

// mcpPayNote says how MCP clients pay, if they do.
func mcpPayNote(paid bool) string {
	if paid {
		return "paid per call: lualambda mcp --server URL pays with your wallet"
	}
	return "free"
}

// ServeFlags registers the quick server's flags on fs (the same for
// `caddy lualambda-server` and `lualambda serve`) and returns a function
// that reads them once parsed.
func ServeFlags(fs *pflag.FlagSet) func() ServeOptions {
	o := &ServeOptions{}
	var warm int
	fs.StringVar(&o.Listen, "listen", "", `address to listen on (default "`+DefaultServeListen+`", or ":443" with --domain)`)
	fs.StringVar(&o.Domain, "domain", "", "serve HTTPS on this name, with Caddy's automatic HTTPS")
	fs.StringVar(&o.PayTo, "pay-to", "", "charge for runs: the Algorand address that receives the USDC (default: free)")
	fs.StringVar(&o.Network, "network", "", "devnet, testnet, mainnet or an algorand: CAIP-2 id (default devnet; needs --pay-to)")
	fs.StringVar(&o.Facilitator, "facilitator", "", `"builtin" (default) or the URL of a remote x402 facilitator`)
	fs.StringVar(&o.Algod, "algod", "", "the builtin facilitator's algod URL (default $LUALAMBDA_ALGOD, else "+serveDevnetAlgod+" on devnet, algonode.cloud on testnet and mainnet)")
	fs.StringVar(&o.AlgodToken, "algod-token", "", "algod's API token; {env.NAME} keeps it out of ps (default $LUALAMBDA_ALGOD_TOKEN, else the devnet's default on devnet)")
	fs.StringVar(&o.FeePayer, "fee-payer", "", "who pays the transaction fees: {env.NAME} or {file./path} holding a mnemonic, faucet (devnet only) or none (default faucet on devnet, none elsewhere)")
	fs.StringArrayVar(&o.Prices, "price", nil, "PROFILE=USD, a profile's price per run, e.g. nano=0.002 (repeatable; default the reference prices)")
	fs.StringArrayVar(&o.Profiles, "profile", nil, "a reference profile to serve: nano, small or med (repeatable; default all three)")
	fs.IntVar(&warm, "warm", 0, "ready VMs kept per profile (default the profile's own: nano 2, small 1, med 1)")
	fs.StringVar(&o.Accel, "accel", "auto", "auto, kvm or tcg (auto tries KVM and falls back to TCG)")
	fs.StringVar(&o.Image, "image", "", "the guest image directory (default the installed image)")
	fs.StringVar(&o.RuntimeDir, "runtime-dir", "", "the VMs' runtime directory (default lualambda's)")
	return func() ServeOptions {
		out := *o
		if fs.Changed("warm") {
			out.Warm = &warm
		}
		return out
	}
}

// ServeLong is the quick server's help text, shared by both commands.
const ServeLong = `Serve the invocation API with no Caddyfile: GET /invoke/ (discovery),
POST /invoke/{id}/{profile}, GET /invoke/{id}, GET /invoke/{id}/output;
and the same runs as MCP tools (run_lua, list_profiles, get_output) at /mcp.

Runs are free unless --pay-to is given; then each run costs its profile's
price in USDC, paid with x402 on --network (default devnet, the local
network of "lualambda devnet"). On a devnet the builtin facilitator creates
a fee payer funded from the devnet's faucet, so payers need only USDC; on
testnet or mainnet give --fee-payer {env.NAME} with the mnemonic of an
account holding ALGO, or payers pay their own fees.

It listens on :8402 (the LuaLambda orchestrator's port) unless --listen
says otherwise. With --domain it serves HTTPS on that name as Caddy does
(ports 80 and 443; the name must resolve to this machine). The admin API is
off. It prints what it serves and the first commands to try.`

// registerServeCommand registers `caddy lualambda-server`.
func registerServeCommand() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  ServeCommandName,
		Usage: "[--listen <addr>] [--domain <name>] [--pay-to <address> [--network devnet|testnet|mainnet] [--price <profile>=<usd>]...] [--profile <name>]...",
		Short: "Serves the lualambda invocation API, free or paid with x402",
		Long:  ServeLong,
		CobraFunc: func(cmd *cobra.Command) {
			opts := ServeFlags(cmd.Flags())
			cmd.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return fmt.Errorf("unexpected argument %q", args[0])
				}
				plan, err := PlanServe(opts())
				if err != nil {
					return err
				}
				cfg, err := plan.Config()
				if err != nil {
					return err
				}
				if err := plan.Preflight(cmd.Context()); err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning:", err)
				}
				caddy.TrapSignals()
				if err := caddy.Load(cfg, true); err != nil {
					return fmt.Errorf("start the server: %w", err)
				}
				plan.Describe(cmd.OutOrStdout())
				select {}
			}
		},
	})
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/payer"
)

// defaultMaxPrice caps what one request may cost without --max-price.
const defaultMaxPrice = "0.05"

// payFlags are the payment flags of invoke and pay.
type payFlags struct {
	wallet           walletFlags
	maxPrice         string
	allowCrossOrigin bool
}

func (p *payFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&p.maxPrice, "max-price", defaultMaxPrice, "the most to pay for the request, in USD (USDC); offers above it are refused before anything is signed")
	fs.BoolVar(&p.allowCrossOrigin, "allow-cross-origin", false, "follow a redirect to another origin (scheme, host, port) and pay there if asked (default: refuse it; nothing is sent there or signed)")
	p.wallet.register(fs)
}

// client returns the paying HTTP client of the flags; the wallet is read
// only if a server asks for payment.
func (p *payFlags) client() (*payer.Client, error) {
	max, err := x402.ParsePrice(p.maxPrice, x402.USDCDecimals)
	if err != nil {
		return nil, usageErrorf("--max-price %q: %v", p.maxPrice, err)
	}
	return &payer.Client{
		HTTP:             &http.Client{Timeout: 10 * time.Minute},
		MaxAmount:        max,
		Account:          p.wallet.account,
		AllowCrossOrigin: p.allowCrossOrigin,
	}, nil
}

// paymentError turns the payer's refusals into messages for the user.
func paymentError(err error) error {
	var refused *payer.RefusedError
	var rejected *payer.RejectedError
	var crossOrigin *payer.CrossOriginError
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return &exitError{code: ee.code, msg: err.Error()}
	case errors.As(err, &crossOrigin):
		return &exitError{code: 1, msg: crossOrigin.Error() + "\nto follow it, and pay that origin if it asks, pass --allow-cross-origin"}
	case errors.As(err, &refused):
		msg := "the server asks for payment: " + refused.Error()
		if o, ok := refused.Cheapest(); ok {
			msg += fmt.Sprintf("\nto pay it, raise the cap: --max-price %s", x402.FormatAmount(o.Parsed.Amount, x402.USDCDecimals))
		}
		return &exitError{code: 1, msg: msg}
	case errors.As(err, &rejected):
		msg := rejected.Error()
		if rejected.PaymentTxID != "" {
			msg += fmt.Sprintf(" (payment %s was not settled)", rejected.PaymentTxID)
		}
		return &exitError{code: 1, msg: msg}
	}
	return err
}

// printPayment prints what was paid, the receipt and the timings.
func printPayment(w io.Writer, res *payer.Result) {
	if res == nil || !res.Paid {
		return
	}
	o := res.Offer
	fmt.Fprintf(w, "paid: %s to %s on %s (x402 v%d)\n", o.Price(), o.Terms.PayTo, o.Terms.Network, o.Terms.Version)
	switch r := res.Receipt; {
	case r != nil && r.Success:
		fmt.Fprintf(w, "settled: %s\nnetwork: %s\n", r.Transaction, r.Network)
		if r.ExplorerURL != "" {
			fmt.Fprintf(w, "explorer: %s\n", r.ExplorerURL)
		}
	case r != nil:
		fmt.Fprintf(w, "not settled: %s %s (payment %s)\n", r.ErrorReason, r.ErrorMessage, res.PaymentTxID)
	default:
		fmt.Fprintf(w, "not settled: the answer carries no receipt (payment %s)\n", res.PaymentTxID)
	}
	fmt.Fprintf(w, "timings: challenge %s, sign %s, paid round trip %s\n",
		res.Timings.Challenge.Round(time.Millisecond), res.Timings.Sign.Round(time.Millisecond), res.Timings.Paid.Round(time.Millisecond))
}

// maxPayBody bounds a request body read from standard input.
const maxPayBody = 64 << 20

// payOptions are the flags of lualambda pay.
type payOptions struct {
	pay     payFlags
	method  string
	data    string
	headers []string
	output  string
	verbose bool
}

func newPayCommand() *cobra.Command {
	var o payOptions
	cmd := &cobra.Command{
		Use:   "pay URL",
		Short: "Fetch a URL, paying with x402 when the server asks (like curl)",
		Long: `Fetch a URL like curl and, when the server answers 402 Payment Required,
pay the cheapest acceptable offer at or under --max-price with the wallet
(USDC on Algorand), then fetch it again with the payment. The body goes to
standard output, or to a file with -o. A refusal, a refused payment or an
answer other than 2xx exits 1 (the body of an error answer goes to standard
error).

Only the origin (scheme, host, port) of URL is paid: redirects within it are
followed, and a redirect to another origin is refused, exit 1, with nothing
sent there and nothing signed, unless --allow-cross-origin. The paid request
itself follows no redirect.

Examples:
  lualambda pay http://localhost:8080/paid/report.pdf -o report.pdf
  lualambda pay -X POST -d '{"q": 1}' -H 'Content-Type: application/json' http://localhost:8080/api
  lualambda pay -d @body.json --max-price 0.01 -v http://localhost:8080/api`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPay(cmd.Context(), o, args[0], cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.method, "request", "X", "", "the HTTP method (default GET, or POST with --data)")
	f.StringVarP(&o.data, "data", "d", "", "the request body; @FILE reads a file, @- standard input")
	f.StringArrayVarP(&o.headers, "header", "H", nil, "a request header, 'Name: value' (repeatable)")
	f.StringVarP(&o.output, "output", "o", "", "write the body to this file instead of standard output")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "print the status, payment, receipt and timings on standard error")
	o.pay.register(f)
	return cmd
}

func runPay(ctx context.Context, o payOptions, rawURL string, stdin io.Reader, stdout, stderr io.Writer) error {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErrorf("%q: want an http:// or https:// URL", rawURL)
	}
	var body []byte
	hasBody := o.data != ""
	switch {
	case o.data == "@-":
		if body, err = io.ReadAll(io.LimitReader(stdin, maxPayBody+1)); err != nil {
			return usageErrorf("read standard input: %v", err)
		}
		if len(body) > maxPayBody {
			return usageErrorf("--data @-: standard input is over %d MiB", maxPayBody>>20)
		}
	case strings.HasPrefix(o.data, "@"):
		if body, err = os.ReadFile(o.data[1:]); err != nil {
			return usageErrorf("--data %s: %v", o.data, err)
		}
	default:
		body = []byte(o.data)
	}
	method := strings.ToUpper(o.method)
	if method == "" {
		method = http.MethodGet
		if hasBody {
			method = http.MethodPost
		}
	}
	var rd io.Reader
	if hasBody {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequest(method, u.String(), rd)
	if err != nil {
		return usageErrorf("%v", err)
	}
	for _, h := range o.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return usageErrorf("-H %q: want 'Name: value'", h)
		}
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	if hasBody && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	client, err := o.pay.client()
	if err != nil {
		return err
	}
	res, err := client.Do(ctx, req)
	if err != nil {
		return paymentError(err)
	}
	resp := res.Response
	defer resp.Body.Close()
	if o.verbose {
		fmt.Fprintf(stderr, "%s %s\n", resp.Proto, resp.Status)
		printPayment(stderr, res)
	}
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if len(b) > 0 {
			fmt.Fprintln(stderr, strings.TrimRight(string(b), "\n"))
		}
		msg := "server answered " + resp.Status
		if res.Paid && (res.Receipt == nil || !res.Receipt.Success) {
			msg += fmt.Sprintf("; the payment %s was not settled", res.PaymentTxID)
		}
		return &exitError{code: 1, msg: msg}
	}
	if o.output == "" || o.output == "-" {
		if _, err := io.Copy(stdout, resp.Body); err != nil {
			return fmt.Errorf("read the answer: %w", err)
		}
		return nil
	}
	return saveBody(o.output, resp.Body)
}

// saveBody writes r to path through a temporary file in the same directory,
// so that a failed download leaves no partial file.
func saveBody(path string, r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.part")
	if err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("-o %s: %v", path, err)}
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("read the answer: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("-o %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("-o %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("-o %s: %w", path, err)
	}
	return nil
}

// exactArgs is cobra.ExactArgs with a usage error (exit 2).
func exactArgs(n int) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("want %d argument(s), got %d", n, len(args))
		}
		return nil
	}
}

// maxArgs is cobra.MaximumNArgs with a usage error (exit 2).
func maxArgs(n int) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > n {
			return usageErrorf("want at most %d argument(s), got %d", n, len(args))
		}
		return nil
	}
}

// noArgs is cobra.NoArgs with a usage error (exit 2).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments (got %q); see --help", cmd.CommandPath(), args[0])
	}
	return nil
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/jobspec"
	"github.com/lualambda/caddy-lualambda/x402/payer"
)

// defaultServer is where the CLI looks for the API without --server.
const defaultServer = "http://localhost:8080/invoke"

// serverURL resolves --server, then $LUALAMBDA_SERVER, then the default.
// A bare origin (http://localhost:8402, the old system's form) means its
// API at /invoke, where `lualambda serve` and the examples mount it.
func serverURL(flag string) string {
	s := flag
	if s == "" {
		s = os.Getenv("LUALAMBDA_SERVER")
	}
	if s == "" {
		s = defaultServer
	}
	s = strings.TrimSuffix(s, "/")
	if u, err := url.Parse(s); err == nil && u.Host != "" && u.Path == "" {
		s += "/invoke"
	}
	return s
}

// apiError is a non-2xx answer from the server.
type apiError struct {
	status int
	msg    string
	body   []byte
}

func (e *apiError) Error() string {
	return fmt.Sprintf("server answered %d: %s", e.status, payer.Printable(e.msg, 2000))
}

// idArg takes exactly one argument, an invocation id (exit 2 otherwise):
// the id becomes part of a URL path.
func idArg(cmd *cobra.Command, args []string) error {
	if err := exactArgs(1)(cmd, args); err != nil {
		return err
	}
	if !jobspec.ValidID(args[0]) {
		return usageErrorf("invocation id %q: want 1-64 of A-Z a-z 0-9 _ -", args[0])
	}
	return nil
}

// call sends a request and decodes a JSON answer into out; non-2xx answers
// become an *apiError carrying the server's {error} message.
func call(ctx context.Context, req *http.Request, out any) (*http.Response, error) {
	client := &http.Client{Timeout: 10 * time.Minute}
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("reach %s: %w", req.URL.Host, err)
	}
	return resp, decodeAnswer(resp, out)
}

// callPaid is call through a paying client: a 402 is paid (see
// x402/payer) and the request sent again. The payer's result, when there
// is one, says what was paid and settled.
func callPaid(ctx context.Context, pc *payer.Client, req *http.Request, out any) (*http.Response, *payer.Result, error) {
	res, err := pc.Do(ctx, req)
	if err != nil {
		var rejected *payer.RejectedError
		if errors.As(err, &rejected) && res != nil {
			return res.Response, res, paymentError(err)
		}
		return nil, nil, paymentError(err)
	}
	return res.Response, res, decodeAnswer(res.Response, out)
}

// decodeAnswer reads and closes an answer, decoding JSON into out; non-2xx
// answers become an *apiError carrying the server's {error} message.
func decodeAnswer(resp *http.Response, out any) error {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e invokeapi.Error
		_ = json.Unmarshal(body, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return &apiError{status: resp.StatusCode, msg: e.Error, body: body}
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// runRequestBody builds the multipart body of a run.
func runRequestBody(job *loadedJob) (string, []byte, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range job.pkgs {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="package"; filename="%s.zip"`, p.Name))
		h.Set("Content-Type", "application/zip")
		w, err := mw.CreatePart(h)
		if err != nil {
			return "", nil, err
		}
		if _, err := w.Write(p.Data); err != nil {
			return "", nil, err
		}
	}
	args := job.args
	if args == nil {
		args = []json.RawMessage{}
	}
	spec, err := json.Marshal(map[string]any{"require": job.require, "source": job.source, "args": args})
	if err != nil {
		return "", nil, err
	}
	if err := mw.WriteField("spec", string(spec)); err != nil {
		return "", nil, err
	}
	if err := mw.Close(); err != nil {
		return "", nil, err
	}
	return mw.FormDataContentType(), buf.Bytes(), nil
}

// runRemote runs a job on a server and prints it like a local run, paying
// when the server asks for it.
func runRemote(ctx context.Context, o invokeOptions, id string, job *loadedJob, stdout, stderr io.Writer) error {
	base := serverURL(o.server)
	ct, body, err := runRequestBody(job)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	url := invokeapi.RunPath(base, id, o.profile)
	pc, err := o.pay.client()
	if err != nil {
		return err
	}
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return usageErrorf("bad server URL %q: %v", base, err)
	}
	req.Header.Set("Content-Type", ct)
	if o.stream {
		req.Header.Set("Accept", invokeapi.EventStreamType)
	}
	var out invokeapi.RunResponse
	var streamed bool
	var paid *payer.Result
	if o.stream {
		paid, streamed, err = callStreamed(ctx, pc, req, id, &out, stdout, stderr)
		if err != nil && streamed && out.Token != "" {
			// The stream broke after it started: the run goes on, and its
			// token reads it later.
			if serr := saveToken(ctx, base, id, out.Token); serr != nil {
				fmt.Fprintln(stderr, "lualambda: warning: could not save the output token:", serr)
			}
		}
	} else {
		_, paid, err = callPaid(ctx, pc, req, &out)
	}
	if o.verbose && paid != nil {
		printPayment(stderr, paid)
	}
	var ae *apiError
	switch {
	case errors.As(err, &ae) && ae.status == http.StatusConflict && paid != nil && paid.Paid:
		return &exitError{code: 1, msg: fmt.Sprintf("invocation %s was already run and paid for (one paid run per id); your payment was not settled. "+
			"Read its output with 'lualambda output %s', or run again with another --id (or none, for a new random one)", id, id)}
	case errors.As(err, &ae) && ae.status == http.StatusConflict:
		return &exitError{code: 1, msg: fmt.Sprintf("invocation %s was already run (one run per id): read it with 'lualambda output %s', or run again with another --id (or none, for a new random one)", id, id)}
	case err != nil && paid != nil && paid.Paid && (paid.Receipt == nil || !paid.Receipt.Success):
		return fmt.Errorf("%w (your payment %s was not settled)", err, paid.PaymentTxID)
	case err != nil:
		return err
	}
	if err := saveToken(ctx, base, id, out.Token); err != nil {
		fmt.Fprintln(stderr, "lualambda: warning: could not save the output token:", err)
	}
	if !streamed {
		_, _ = io.WriteString(stderr, out.Stdout)
		_, _ = io.WriteString(stderr, out.Stderr)
	}
	if o.verbose {
		if (paid == nil || paid.Receipt == nil) && out.Receipt != nil {
			fmt.Fprintf(stderr, "settled: %s\nnetwork: %s\n", out.Receipt.TxID, out.Receipt.Network)
			if out.Receipt.ExplorerURL != "" {
				fmt.Fprintf(stderr, "explorer: %s\n", out.Receipt.ExplorerURL)
			}
		}
		fmt.Fprintf(stderr, "id: %s\nserver: %s\nprofile: %s\nround trip: %s (queue %.1f ms, vm %.1f ms, lua %.1f ms)\nreason: %s\n",
			id, base, out.Profile, time.Since(start).Round(time.Millisecond), out.Timings.QueueMillis, out.Timings.VMMillis, out.Timings.LuaMillis, out.Reason)
	}
	return printOutcome(out, stdout)
}

// callStreamed sends a run that asks to stream (Accept:
// text/event-stream) through the paying client: what the code prints goes
// to stdout and stderr as it arrives, and the result event is decoded into
// out. streamed is false when the server answered with plain JSON instead
// (then out is that answer, and nothing was printed yet).
func callStreamed(ctx context.Context, pc *payer.Client, req *http.Request, id string, out *invokeapi.RunResponse, stdout, stderr io.Writer) (paid *payer.Result, streamed bool, err error) {
	res, err := pc.Do(ctx, req)
	if err != nil {
		var rejected *payer.RejectedError
		if errors.As(err, &rejected) && res != nil {
			return res, false, paymentError(err)
		}
		return nil, false, paymentError(err)
	}
	resp := res.Response
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode/100 != 2 || mt != invokeapi.EventStreamType {
		return res, false, decodeAnswer(resp, out)
	}
	defer resp.Body.Close()
	gotResult := false
	err = invokeapi.ReadEvents(resp.Body, func(ev invokeapi.Event) error {
		switch ev.Name {
		case invokeapi.EventStdout, invokeapi.EventStderr:
			text, err := ev.Text()
			if err != nil {
				return err
			}
			w := stdout
			if ev.Name == invokeapi.EventStderr {
				w = stderr
			}
			_, _ = io.WriteString(w, text)
		case invokeapi.EventResult:
			r, err := ev.Result()
			if err != nil {
				return err
			}
			*out, gotResult = r, true
		}
		return nil
	})
	if !gotResult {
		out.Token = resp.Header.Get(invokeapi.TokenHeader)
	}
	if err != nil {
		return res, true, fmt.Errorf("read the stream of %s (read it later with 'lualambda output %s'): %w", id, id, err)
	}
	if !gotResult {
		return res, true, fmt.Errorf("the stream ended before the run's result; read it with 'lualambda output %s' once it has finished", id)
	}
	return res, true, nil
}

// printOutcome prints the result, or turns a failed run into exit code 1.
func printOutcome(out invokeapi.RunResponse, stdout io.Writer) error {
	if out.Reason == string(protocol.ReasonOK) {
		value := out.Result
		if len(value) == 0 {
			value = json.RawMessage("null")
		}
		fmt.Fprintln(stdout, string(value))
		return nil
	}
	msg := fmt.Sprintf("%s: %s", out.Reason, out.Error)
	if out.Traceback != "" {
		msg += "\n" + out.Traceback
	}
	return &exitError{code: 1, msg: msg}
}

// tokenFile is where the CLI keeps the tokens of its runs, so that
// `lualambda output ID` works later. Mode 0600.
func tokenFile() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "lualambda", "tokens.json"), nil
}

func loadTokens() (map[string]string, string, error) {
	path, err := tokenFile()
	if err != nil {
		return nil, "", err
	}
	tokens := map[string]string{}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, path, err
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &tokens); err != nil {
			return nil, path, fmt.Errorf("%s: %w", path, err)
		}
	}
	return tokens, path, nil
}

// tokenFor returns the token given on the command line, else the one the
// CLI saved for the invocation.
func tokenFor(server, id, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	tokens, _, err := loadTokens()
	if err != nil {
		return "", err
	}
	if t := tokens[server+"/"+id]; t != "" {
		return t, nil
	}
	return "", usageErrorf("no token for %s: pass --token (the response that started it carries it)", id)
}

// saveToken records the token of a run in the token file. The file is
// read, changed and written under an advisory lock (tokens.json.lock), so
// that runs ending at once do not lose each other's tokens, and replaced
// atomically, so that readers never see half of it.
func saveToken(ctx context.Context, server, id, token string) error {
	if token == "" {
		return nil
	}
	path, err := tokenFile()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, path+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	tokens, _, err := loadTokens()
	if err != nil {
		return err
	}
	tokens[server+"/"+id] = token
	b, err := json.MarshalIndent(tokens, "", "  ")
	if err != nil {
		return fmt.Errorf("encode tokens: %w", err)
	}
	// A temporary file of its own (mode 0600 from CreateTemp), so that the
	// tokens are never readable by others, even for a moment.
	tmp, err := os.CreateTemp(dir, ".tokens-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

func newStatusCommand() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show an invocation's status (public: no args, no results)",
		Args:  idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := http.NewRequest(http.MethodGet, invokeapi.StatusPath(serverURL(server), args[0]), nil)
			if err != nil {
				return usageErrorf("%v", err)
			}
			var doc json.RawMessage
			if _, err := call(cmd.Context(), req, &doc); err != nil {
				return err
			}
			return printIndented(cmd.OutOrStdout(), doc)
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "the API's URL (default $LUALAMBDA_SERVER, else "+defaultServer+")")
	return cmd
}

func newOutputCommand() *cobra.Command {
	var server, token string
	var raw bool
	cmd := &cobra.Command{
		Use:   "output ID",
		Short: "Read an invocation's retained output (needs the token of its run)",
		Long: `Read an invocation's retained output. The token comes from --token, or
from the CLI's record of its own runs (~/.config/lualambda/tokens.json).
By default only the result is printed, and the run's printed output goes to
standard error; --json prints the whole output document.`,
		Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			base := serverURL(server)
			token, err := tokenFor(base, args[0], token)
			if err != nil {
				return err
			}
			req, err := http.NewRequest(http.MethodGet, invokeapi.OutputPath(base, args[0]), nil)
			if err != nil {
				return usageErrorf("%v", err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			var doc json.RawMessage
			if _, err := call(cmd.Context(), req, &doc); err != nil {
				return err
			}
			if raw {
				return printIndented(cmd.OutOrStdout(), doc)
			}
			var out invokeapi.RunResponse
			if err := json.Unmarshal(doc, &out); err != nil {
				return fmt.Errorf("decode output: %w", err)
			}
			_, _ = io.WriteString(cmd.ErrOrStderr(), out.Stdout+out.Stderr)
			return printOutcome(out, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "the API's URL (default $LUALAMBDA_SERVER, else "+defaultServer+")")
	cmd.Flags().StringVar(&token, "token", "", "the run's token")
	cmd.Flags().BoolVar(&raw, "json", false, "print the whole output document")
	return cmd
}

func newProfilesCommand() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "profiles",
		Short: "List the server's profiles and prices",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := http.NewRequest(http.MethodGet, serverURL(server)+"/", nil)
			if err != nil {
				return usageErrorf("%v", err)
			}
			var doc invokeapi.Discovery
			if _, err := call(cmd.Context(), req, &doc); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROFILE\tPRICE (USD)\tMEMORY\tVCPUS\tTIMEOUT\tRETENTION\tOUTPUT CAP")
			for _, p := range doc.Profiles {
				price := p.Price
				if price == "" {
					price = "free"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d MiB\t%d\t%s\t%s\t%d KiB\n", p.Name, price, p.MemoryMiB, p.VCPUs,
					time.Duration(p.TimeoutMS)*time.Millisecond, time.Duration(p.RetainS)*time.Second, p.OutputBytes>>10)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "the API's URL (default $LUALAMBDA_SERVER, else "+defaultServer+")")
	return cmd
}

func printIndented(w io.Writer, doc json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, doc, "", "  "); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	fmt.Fprintln(w, buf.String())
	return nil
}

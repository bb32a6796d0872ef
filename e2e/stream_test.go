package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// streamLua prints a line, computes for a second of the guest's CPU time
// (the sandbox has no sleep) and prints another.
const streamLua = `print("first")
local t0 = os.clock() while os.clock() - t0 < 1 do end
io.stderr:write("second\n")
return "done"`

// minGap is how much earlier than the second line the first must arrive.
const minGap = 800 * time.Millisecond

// streamSite is a lualambda route under /invoke/ with a gate (first %s,
// may be empty), compression in front, and one profile "t" whose price is
// the second %s.
const streamSite = `
	handle_path /invoke/* {
		encode gzip zstd
		%s
		lualambda {
			acquire_timeout 60s
			mcp /mcp
			profile t {
				memory 64MiB
				timeout 30s
				retention 60s
				output_cap 4KiB
				%s
				warm 1
			}
		}
	}`

// timedEvent is an event of a streamed run and when it arrived.
type timedEvent struct {
	invokeapi.Event
	at time.Time
}

// streamRun POSTs src to run id on t, asking for a stream, with extra
// headers (name, value pairs). It returns the answer, when its headers
// arrived, and the events as they arrived (none when the answer is not a
// stream, whose body is then in the response).
func streamRun(t *testing.T, s *server, id, src string, header ...string) (response, time.Time, []timedEvent) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+"/invoke/"+id+"/t", strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/x-lua")
	req.Header.Set("Accept", invokeapi.EventStreamType)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	headersAt := time.Now()
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, header: resp.Header}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), invokeapi.EventStreamType) {
		r.body, _ = io.ReadAll(resp.Body)
		_ = json.Unmarshal(r.body, &r.json)
		return r, headersAt, nil
	}
	var events []timedEvent
	if err := invokeapi.ReadEvents(resp.Body, func(ev invokeapi.Event) error {
		events = append(events, timedEvent{ev, time.Now()})
		return nil
	}); err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	return r, headersAt, events
}

// checkStream checks a streamed run of streamLua: 200, the stream's
// headers, "first" at least minGap before "second", then one result equal
// to the retained output. It returns the result and when "first" arrived.
func checkStream(t *testing.T, s *server, r response, events []timedEvent) (invokeapi.RunResponse, time.Time) {
	t.Helper()
	if r.status != http.StatusOK || r.header.Get("Cache-Control") != "no-cache" || r.header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("streamed run: %d %v %s", r.status, r.header, r.body)
	}
	var names []string
	for _, ev := range events {
		names = append(names, ev.Name+"="+string(ev.Data))
	}
	if len(events) != 3 || events[0].Name != "stdout" || string(events[0].Data) != `"first\n"` ||
		events[1].Name != "stderr" || string(events[1].Data) != `"second\n"` || events[2].Name != "result" {
		t.Fatalf("events: %q", names)
	}
	if gap := events[1].at.Sub(events[0].at); gap < minGap {
		t.Fatalf("the first line arrived only %s before the second: not streamed", gap)
	}
	res, err := events[2].Result()
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != "ok" || string(res.Result) != `"done"` || res.Stdout != "first\n" || res.Stderr != "second\n" ||
		res.Token == "" || r.header.Get(invokeapi.TokenHeader) != res.Token || res.State != "done" {
		t.Fatalf("result event: %s", events[2].Data)
	}
	out := do(t, http.MethodGet, s.URL+res.OutputPath, "", nil, "Authorization", "Bearer "+res.Token)
	if out.status != 200 || out.str("stdout") != "first\n" || out.str("stderr") != "second\n" || out.str("reason") != "ok" {
		t.Fatalf("output after a streamed run: %d %s", out.status, out.body)
	}
	return res, events[0].at
}

// TestStreamedRun: a free run asked with Accept: text/event-stream streams
// what the guest prints as it prints it, through Caddy's compression, then
// the run's answer; discovery says so and links the MCP endpoint.
func TestStreamedRun(t *testing.T) {
	s := startCaddy(t, serverConfig{site: fmt.Sprintf(streamSite, "", "")})

	disc := do(t, http.MethodGet, s.URL+"/invoke/", "", nil)
	var d invokeapi.Discovery
	if err := json.Unmarshal(disc.body, &d); err != nil || d.MCP != "/mcp" || d.Run.Streaming != invokeapi.EventStreamType {
		t.Fatalf("discovery: %v %s", err, disc.body)
	}

	r, _, events := streamRun(t, s, "stream-1", streamLua)
	checkStream(t, s, r, events)

	// A run that prints nothing streams its result alone.
	r, _, events = streamRun(t, s, "stream-quiet", "return 7")
	if r.status != 200 || len(events) != 1 || events[0].Name != "result" {
		t.Fatalf("quiet streamed run: %d %v", r.status, events)
	}
	// Errors before the run are today's JSON answers.
	if r, _, events := streamRun(t, s, "stream-1", "return 1"); r.status != http.StatusConflict || events != nil || r.json["error"] == nil {
		t.Fatalf("a used id, streamed: %d %s", r.status, r.body)
	}

	// A client that leaves mid-stream does not stop the run: it ends and
	// its output is kept for the token the stream's headers carried.
	token := leaveAfterFirstEvent(t, s, "stream-left", streamLua)
	deadline := time.Now().Add(time.Minute)
	for do(t, http.MethodGet, s.URL+"/invoke/stream-left", "", nil).str("state") != "done" {
		if time.Now().After(deadline) {
			t.Fatal("the run a client left never finished")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := do(t, http.MethodGet, s.URL+"/invoke/stream-left/output", "", nil, "Authorization", "Bearer "+token); out.status != 200 || out.str("stdout") != "first\n" || out.str("stderr") != "second\n" {
		t.Fatalf("output of a run the client left: %d %s", out.status, out.body)
	}

	t.Run("cli", func(t *testing.T) {
		env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "LUALAMBDA_SERVER=" + s.URL + "/invoke"}
		lines, errOut, code := cliLines(t, env, "invoke", "--stream", "--profile", "t", "--id", "cli-stream", "-e", streamLua)
		if code != 0 || len(lines) != 2 || lines[0].text != "first" || lines[1].text != `"done"` || !strings.Contains(errOut, "second") {
			t.Fatalf("invoke --stream: exit %d %v %q", code, lines, errOut)
		}
		// The second line went to stderr; the result follows it, so it
		// arrives at least as late.
		if gap := lines[1].at.Sub(lines[0].at); gap < minGap {
			t.Fatalf("invoke --stream: the first line came only %s before the result: not streamed", gap)
		}
		if out, _, code := cli(t, "", env, "output", "cli-stream"); code != 0 || strings.TrimSpace(out) != `"done"` {
			t.Fatalf("output after invoke --stream: %d %q", code, out)
		}
		// Not a terminal, or --stream=false: the whole answer, printed
		// output on stderr.
		for _, args := range [][]string{nil, {"--stream=false"}} {
			out, errOut, code := cli(t, "", env, append([]string{"invoke", "--profile", "t", "-e", `print("x") return 1`}, args...)...)
			if code != 0 || strings.TrimSpace(out) != "1" || errOut != "x\n" {
				t.Fatalf("invoke %v: exit %d %q %q", args, code, out, errOut)
			}
		}
	})
}

// TestPaidStreamedRun: a paid run streams too, settled before its first
// byte: the payment's response header comes with the stream's headers, well
// before the second line, and the price moves once.
func TestPaidStreamedRun(t *testing.T) {
	c := newChain(t, 1_000_000)
	s := startCaddy(t, serverConfig{site: fmt.Sprintf(streamSite, c.lualambdaGate(t), "price 0.0015")})
	payTo0, payer0 := c.USDC(c.PayTo.Address), c.USDC(c.Payer.Address)

	// Unpaid, the stream is not started: today's 402.
	unpaid, _, events := streamRun(t, s, "paid-stream", streamLua)
	pr, _ := required(t, unpaid)
	if events != nil || len(pr.Accepts) == 0 || pr.Accepts[0].Amount != "1500" {
		t.Fatalf("unpaid streamed run: %d %s", unpaid.status, unpaid.body)
	}
	req := x402.Requirement{V2: &pr.Accepts[0]}
	p := c.build(avm.AccountSigner(c.Payer), req, nil)
	txid, _ := p.PaymentTxID()
	name, value := paymentHeader(t, req, &pr.Resource, p)
	r, headersAt, events := streamRun(t, s, "paid-stream", streamLua, name, value)
	_, firstAt := checkStream(t, s, r, events)
	if sr := settleResponse(t, r, x402.HeaderPaymentResponse); !sr.Success || sr.Transaction != txid {
		t.Fatalf("PAYMENT-RESPONSE %+v, want the settlement of %s", sr, txid)
	}
	if late := events[1].at.Sub(headersAt); late < minGap || headersAt.After(firstAt) {
		t.Fatalf("the settlement came %s before the second line: not before the stream", late)
	}
	if got, paid := c.USDC(c.PayTo.Address)-payTo0, payer0-c.USDC(c.Payer.Address); got != 1500 || paid != 1500 {
		t.Fatalf("merchant got %d, payer paid %d; want 1500 once", got, paid)
	}
	res, _ := events[2].Result()
	if res.Receipt == nil || res.Receipt.TxID != txid {
		t.Fatalf("the result event's receipt: %s", events[2].Data)
	}
	if st := do(t, http.MethodGet, s.URL+"/invoke/paid-stream", "", nil); st.json["paid"] != true {
		t.Fatalf("status after a paid streamed run: %s", st.body)
	}

	// The same payment again buys nothing, and nothing is streamed.
	again, _, events := streamRun(t, s, "paid-stream-2", streamLua, name, value)
	if again.status != http.StatusPaymentRequired || events != nil {
		t.Fatalf("a replayed payment: %d %s", again.status, again.body)
	}
	if c.USDC(c.PayTo.Address)-payTo0 != 1500 {
		t.Fatal("a replayed payment moved money")
	}

	t.Run("cli", func(t *testing.T) {
		env := []string{
			"XDG_CONFIG_HOME=" + t.TempDir(), "LUALAMBDA_SERVER=" + s.URL + "/invoke",
			"LUALAMBDA_NETWORK=devnet", "LUALAMBDA_ALGOD=" + c.Dev.URL(), "LUALAMBDA_ALGOD_TOKEN=" + c.Dev.Token(),
			"LUALAMBDA_WALLET=", "LUALAMBDA_MNEMONIC=" + devnettest.Mnemonic(t, c.Payer),
		}
		before := c.USDC(c.PayTo.Address)
		lines, errOut, code := cliLines(t, env, "invoke", "--stream", "-v", "--profile", "t", "--id", "cli-paid", "-e", streamLua)
		if code != 0 || len(lines) != 2 || lines[0].text != "first" || lines[1].text != `"done"` ||
			!strings.Contains(errOut, "second") || !strings.Contains(errOut, "settled: ") {
			t.Fatalf("paid invoke --stream: exit %d %v %q", code, lines, errOut)
		}
		if gap := lines[1].at.Sub(lines[0].at); gap < minGap {
			t.Fatalf("paid invoke --stream: the first line came only %s before the result", gap)
		}
		if got := c.USDC(c.PayTo.Address) - before; got != 1500 {
			t.Fatalf("the CLI's streamed run moved %d, want 1500", got)
		}
	})
}

// leaveAfterFirstEvent starts a streamed run, reads its first event and
// hangs up; it returns the run's token.
func leaveAfterFirstEvent(t *testing.T, s *server, id, src string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/invoke/"+id+"/t", strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/x-lua")
	req.Header.Set("Accept", invokeapi.EventStreamType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	stop := errors.New("leaving")
	if err := invokeapi.ReadEvents(resp.Body, func(invokeapi.Event) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("no first event: %v", err)
	}
	token := resp.Header.Get(invokeapi.TokenHeader)
	if token == "" {
		t.Fatal("the stream carries no token")
	}
	return token
}

// timedLine is a line the CLI wrote to stdout and when it came.
type timedLine struct {
	text string
	at   time.Time
}

// cliLines runs the lualambda binary and records when each line of its
// stdout arrives.
func cliLines(t *testing.T, env []string, args ...string) ([]timedLine, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "lualambda"), args...)
	cmd.Dir = testenv.Root()
	cmd.Env = append(os.Environ(), env...)
	var errb strings.Builder
	cmd.Stderr = &errb
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []timedLine
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		lines = append(lines, timedLine{sc.Text(), time.Now()})
	}
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return lines, errb.String(), code
}

// String shows a line for failure messages.
func (l timedLine) String() string { return strconv.Quote(l.text) + "@" + l.at.Format("15:04:05.000") }

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/jobspec"
	"github.com/lualambda/caddy-lualambda/wallet"
	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/facilitator"
)

// idRule is the server's rule for invocation ids.
var idRule = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// runRecorder is an HTTP server in front of which the CLI runs: it records
// the id of every run and answers each with a result and a token.
type runRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *runRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	parts := strings.Split(strings.TrimPrefix(req.URL.Path, "/invoke/"), "/")
	if req.Method != http.MethodPost || len(parts) != 2 {
		http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
		return
	}
	r.mu.Lock()
	r.ids = append(r.ids, parts[0])
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"id": parts[0], "profile": parts[1], "reason": "ok", "result": 4, "token": "tok-" + parts[0]})
}

// Two invokes of the same code get different ids, both within the id rule:
// the id says nothing about the code, and nobody can claim it in advance.
func TestDefaultIDsAreRandom(t *testing.T) {
	isolate(t)
	rec := &runRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	for range 2 {
		out, stderr, code := run(t, "", "invoke", "--server", srv.URL+"/invoke", "--profile", "nano", "-v", "-e", "return 2 + 2", "--arg", "secret")
		if code != 0 || strings.TrimSpace(out) != "4" {
			t.Fatalf("invoke: exit %d, stdout %q, stderr %q", code, out, stderr)
		}
		rec.mu.Lock()
		id := rec.ids[len(rec.ids)-1]
		rec.mu.Unlock()
		if !strings.Contains(stderr, "id: "+id+"\n") {
			t.Errorf("-v does not print the id the server got, %s: %q", id, stderr)
		}
	}
	if len(rec.ids) != 2 {
		t.Fatalf("the server got %d runs, want 2", len(rec.ids))
	}
	for _, id := range rec.ids {
		if !idRule.MatchString(id) || !jobspec.ValidID(id) {
			t.Errorf("default id %q is not within [A-Za-z0-9_-]{1,64}", id)
		}
		if len(id) < 20 {
			t.Errorf("default id %q is too short to be unguessable", id)
		}
	}
	if rec.ids[0] == rec.ids[1] {
		t.Fatalf("the same code got the same default id twice: %s", rec.ids[0])
	}
	// The output of each run is still found by its id.
	for _, id := range rec.ids {
		if tok, err := tokenFor(srv.URL+"/invoke", id, ""); err != nil || tok != "tok-"+id {
			t.Errorf("saved token for %s: %q, %v", id, tok, err)
		}
	}
}

// Runs that end at once all keep their tokens: the token file is read,
// changed and written under a lock.
func TestConcurrentTokenSaves(t *testing.T) {
	isolate(t)
	const writers, each = 16, 16
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("run-%d-%d", w, i)
				if err := saveToken(context.Background(), "http://server/invoke", id, "tok-"+id); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("save: %v", err)
	}
	tokens, _, err := loadTokens()
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for w := range writers {
		for i := range each {
			id := fmt.Sprintf("run-%d-%d", w, i)
			if tokens["http://server/invoke/"+id] != "tok-"+id {
				lost++
			}
		}
	}
	if lost > 0 || len(tokens) != writers*each {
		t.Fatalf("%d of %d tokens lost (%d stored)", lost, writers*each, len(tokens))
	}
}

// tokenSaverEnv makes the test binary a process that saves tokens (see
// TestTokenSaverProcess).
const tokenSaverEnv = "LUALAMBDA_TEST_TOKEN_SAVER"

// TestTokenSaverProcess is not a test by itself: run with $tokenSaverEnv
// set to a name, it saves 16 tokens named after it, as 16 invokes of one
// process would.
func TestTokenSaverProcess(t *testing.T) {
	name := os.Getenv(tokenSaverEnv)
	if name == "" {
		t.Skip("a helper process of TestConcurrentTokenSavesAcrossProcesses")
	}
	for i := range 16 {
		id := fmt.Sprintf("%s-%d", name, i)
		if err := saveToken(context.Background(), "http://server/invoke", id, "tok-"+id); err != nil {
			t.Fatalf("save: %v", err)
		}
	}
}

// Separate CLI processes saving tokens at once keep them all.
func TestConcurrentTokenSavesAcrossProcesses(t *testing.T) {
	dir := isolate(t)
	const procs = 8
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmds := make([]*exec.Cmd, procs)
	outs := make([]*bytes.Buffer, procs)
	for i := range procs {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestTokenSaverProcess$", "-test.count=1")
		outs[i] = &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = outs[i], outs[i]
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "HOME="+dir, fmt.Sprintf("%s=p%d", tokenSaverEnv, i))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("process %d: %v\n%s", i, err, outs[i])
		}
	}
	tokens, _, err := loadTokens()
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for p := range procs {
		for i := range 16 {
			id := fmt.Sprintf("p%d-%d", p, i)
			if tokens["http://server/invoke/"+id] != "tok-"+id {
				lost++
			}
		}
	}
	if lost > 0 || len(tokens) != procs*16 {
		t.Fatalf("%d of %d tokens lost (%d stored)", lost, procs*16, len(tokens))
	}
	if fi, err := os.Stat(filepath.Join(dir, "lualambda", "tokens.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v; want mode 0600", fi, err)
	}
}

// Waiting for the token file's lock ends with the context, and a waiter
// that gave up does not keep the lock.
func TestTokenLockWaitEndsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json.lock")
	unlock, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lockFile(ctx, path); !errors.Is(err, context.Canceled) {
		t.Fatalf("lock held elsewhere, context cancelled: %v, want context.Canceled", err)
	}
	unlock()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	unlock, err = lockFile(ctx, path)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock()
	if err := os.Symlink(path, path+".link"); err != nil {
		t.Fatal(err)
	}
	if _, err := lockFile(ctx, path+".link"); err == nil {
		t.Fatal("locked through a symbolic link")
	}
}

// gate is a paywalled origin on the devnet: it answers 402 with a real x402
// challenge, and verifies and settles a payment through the built-in
// facilitator before answering.
type gate struct {
	dev      *devnettest.Parties
	fac      *facilitator.Builtin
	offer    x402.PaymentRequirements
	requests atomic.Int32
	paid     atomic.Int32
}

func newGate(t *testing.T, p *devnettest.Parties, amount uint64) *gate {
	t.Helper()
	fac, err := facilitator.NewBuiltin(facilitator.BuiltinConfig{
		AlgodURL: p.Dev.URL(), AlgodToken: p.Dev.Token(), Network: p.Dev.NetworkInfo(), FeePayerMnemonic: devnettest.Mnemonic(t, p.FeePayer),
	})
	if err != nil {
		t.Fatal(err)
	}
	extra, _ := json.Marshal(map[string]string{"feePayer": fac.FeePayerAddress()})
	return &gate{dev: p, fac: fac, offer: x402.PaymentRequirements{
		Scheme: x402.SchemeExact, Network: p.Dev.Network(), Asset: strconv.FormatUint(p.Dev.USDC(), 10),
		Amount: strconv.FormatUint(amount, 10), PayTo: p.PayTo.Address.String(), MaxTimeoutSeconds: 60, Extra: extra,
	}}
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.requests.Add(1)
	refuse := func(reason string) {
		v, _ := x402.EncodeHeader(x402.PaymentRequired{X402Version: 2, Error: reason, Resource: x402.ResourceInfo{URL: r.URL.Path}, Accepts: []x402.PaymentRequirements{g.offer}})
		w.Header().Set(x402.HeaderPaymentRequired, v)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusPaymentRequired)
		_, _ = io.WriteString(w, `{"error":"`+reason+`"}`)
	}
	value := r.Header.Get(x402.HeaderPaymentSignature)
	if value == "" {
		refuse("payment required")
		return
	}
	g.paid.Add(1)
	p, err := x402.DecodePaymentHeader(value)
	if err != nil {
		refuse("bad payment")
		return
	}
	ns := x402.NewNetworks()
	_ = ns.Register(g.dev.Dev.NetworkInfo())
	req, err := x402.MatchRequirement(p, []x402.Requirement{{V2: &g.offer}}, ns)
	if err != nil {
		refuse("no matching offer")
		return
	}
	if vr, err := g.fac.Verify(r.Context(), p, req); err != nil || !vr.IsValid {
		refuse("invalid payment")
		return
	}
	sr, err := g.fac.Settle(r.Context(), p, req)
	if err != nil || !sr.Success {
		refuse("settlement failed")
		return
	}
	v, _ := x402.EncodeHeader(sr)
	w.Header().Set(x402.HeaderPaymentResponse, v)
	_, _ = io.WriteString(w, "paid content\n")
}

// The unpaid request's redirect to another origin is not followed, and
// nothing is signed for that origin, unless --allow-cross-origin says so.
func TestCrossOriginRedirectIsNotPaid(t *testing.T) {
	isolate(t)
	p := devnettest.New(t, devnettest.Options{PayerUSDC: 1_000_000})
	g := newGate(t, p, 1000)
	foreign := httptest.NewServer(g)
	defer foreign.Close()
	var named atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		named.Add(1)
		http.Redirect(w, r, foreign.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer front.Close()
	t.Setenv(wallet.EnvMnemonic, devnettest.Mnemonic(t, p.Payer))
	walletArgs := []string{"--network", "devnet", "--algod", p.Dev.URL(), "--algod-token", p.Dev.Token()}

	round, payer, merchant := p.Dev.Round(), p.USDC(p.Payer.Address), p.USDC(p.PayTo.Address)
	for _, args := range [][]string{
		{"pay", front.URL + "/report"},
		{"pay", "-X", "POST", "-d", "x", front.URL + "/report"},
		{"invoke", "--server", front.URL + "/invoke", "--profile", "nano", "-e", "return 1"},
	} {
		out, stderr, code := run(t, "", append(args, walletArgs...)...)
		if code != 1 || out != "" {
			t.Fatalf("%q: exit %d, stdout %q; want exit 1 and nothing on stdout", args, code, out)
		}
		if !strings.Contains(stderr, foreign.URL) || !strings.Contains(stderr, "--allow-cross-origin") || !strings.Contains(stderr, "nothing was signed") {
			t.Errorf("%q: the message does not name the other origin, say nothing was signed and name the flag: %q", args, stderr)
		}
	}
	if named.Load() != 3 || g.requests.Load() != 0 || g.paid.Load() != 0 {
		t.Fatalf("requests: %d to the named origin, %d to the other one (%d paid); want 3, 0, 0", named.Load(), g.requests.Load(), g.paid.Load())
	}
	if p.Dev.Round() != round || p.USDC(p.Payer.Address) != payer || p.USDC(p.PayTo.Address) != merchant {
		t.Fatalf("money moved: round %d -> %d, payer %d -> %d, merchant %d -> %d",
			round, p.Dev.Round(), payer, p.USDC(p.Payer.Address), merchant, p.USDC(p.PayTo.Address))
	}

	// Asked for, it follows the redirect and pays the other origin.
	out, stderr, code := run(t, "", append([]string{"pay", "--allow-cross-origin", front.URL + "/report"}, walletArgs...)...)
	if code != 0 || out != "paid content\n" {
		t.Fatalf("--allow-cross-origin: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if g.paid.Load() != 1 || p.USDC(p.PayTo.Address) != merchant+1000 || p.USDC(p.Payer.Address) != payer-1000 {
		t.Fatalf("--allow-cross-origin: %d paid requests, merchant %d -> %d", g.paid.Load(), merchant, p.USDC(p.PayTo.Address))
	}
}

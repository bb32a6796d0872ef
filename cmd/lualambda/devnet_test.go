package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/wallet"
	"github.com/lualambda/caddy-lualambda/x402"
)

// The devnet command serves until its context ends, prints what a client
// needs, and funds accounts through /devnet/fund with the printed token.
func TestDevnetCommandServes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	root := newRootCommand()
	root.SetArgs([]string{"devnet", "--listen", "127.0.0.1:0", "--as-testnet"})
	root.SetOut(pw)
	root.SetErr(io.Discard)
	done := make(chan error, 1)
	go func() {
		done <- root.ExecuteContext(ctx)
		pw.Close()
	}()

	fields := map[string]string{}
	var url string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "lualambda devnet: algod API on "); ok {
			url = u
		}
		if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(line, "  ") {
			fields[strings.Join(f[:len(f)-1], " ")] = f[len(f)-1]
		}
		if strings.HasPrefix(line, "press Ctrl-C") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if url == "" || fields["token"] != wallet.DevnetToken {
		t.Fatalf("output: url %q, fields %v", url, fields)
	}
	if fields["network"] != x402.AlgorandTestnet.CAIP2() || fields["network short"] != x402.AlgorandTestnet.CAIP2Short() || fields["USDC asset"] != "10458941" {
		t.Fatalf("testnet impersonation not reported: %v", fields)
	}

	c := &devnet.Client{URL: url, Token: fields["token"]}
	info, err := c.Info(ctx)
	if err != nil || info.Faucet != fields["faucet"] || info.USDC != x402.AlgorandTestnet.USDC {
		t.Fatalf("info %+v, %v", info, err)
	}
	if _, err := c.Fund(ctx, crypto.GenerateAccount().Address, 1_000_000, 0); err != nil {
		t.Fatalf("fund: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("devnet command ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("devnet command did not stop when its context ended")
	}
}

func TestDevnetCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{"devnet", "--listen", "0.0.0.0:4001"},
		{"devnet", "--listen", "nonsense"},
		{"devnet", "--token", ""},
		{"devnet", "--block-interval", "-1s"},
		{"devnet", "extra"},
	} {
		root := newRootCommand()
		root.SetArgs(args)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.ExecuteContext(context.Background())
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%v: got %v, want a usage error (exit 2)", args, err)
		}
	}
}

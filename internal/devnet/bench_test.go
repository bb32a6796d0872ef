package devnet_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// BenchmarkPaymentCalls is the devnet's share of a paid request: the
// simulate, submit and pending lookup of a fresh two-member payment group
// (the fee payer's transaction and the USDC transfer), in msgpack as the
// facilitator sends them, served by the handler without a network between.
// Groups are built and signed outside the timer.
//
//	go test -run '^$' -bench PaymentCalls -benchmem ./internal/devnet/
func BenchmarkPaymentCalls(b *testing.B) {
	p := devnettest.New(b, devnettest.Options{PayerUSDC: 1_000_000_000, FeePayerMicroAlgos: 1_000_000_000})
	h := p.Dev.Handler()
	req := avm.Requirement{Network: p.Dev.Network(), Asset: p.Dev.USDC(), Amount: 1000, PayTo: p.PayTo.Address,
		FeePayer: p.FeePayer.Address, MaxTimeoutSeconds: 3600}
	call := func(method, path string, body []byte) {
		r := httptest.NewRequest(method, path, bytes.NewReader(body))
		r.Header.Set(devnet.TokenHeader, p.Dev.Token())
		r.Header.Set("Content-Type", "application/msgpack")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("%s %s: %d %s", method, path, w.Code, w.Body)
		}
	}
	type group struct {
		simulate, submit []byte
		txid             string
	}
	var groups []group
	for b.Loop() {
		if len(groups) == 0 {
			b.StopTimer()
			params := p.Params()
			for range 500 {
				payload, err := avm.BuildPayment(b.Context(), params, avm.AccountSigner(p.Payer), req)
				if err != nil {
					b.Fatal(err)
				}
				members, err := avm.DecodeGroup(payload)
				if err != nil {
					b.Fatal(err)
				}
				stxs := []types.SignedTxn{members[0].Txn, members[1].Txn}
				_, fee, err := crypto.SignTransaction(p.FeePayer.PrivateKey, stxs[0].Txn)
				if err != nil {
					b.Fatal(err)
				}
				if err := msgpack.Decode(fee, &stxs[0]); err != nil {
					b.Fatal(err)
				}
				sim := msgpack.Encode(map[string]any{"txn-groups": []map[string]any{{"txns": stxs}}})
				sub := append(msgpack.Encode(stxs[0]), msgpack.Encode(stxs[1])...)
				groups = append(groups, group{sim, sub, crypto.GetTxID(stxs[1].Txn)})
			}
			b.StartTimer()
		}
		g := groups[0]
		groups = groups[1:]
		call(http.MethodPost, "/v2/transactions/simulate?format=msgpack", g.simulate)
		call(http.MethodPost, "/v2/transactions", g.submit)
		call(http.MethodGet, "/v2/transactions/pending/"+g.txid+"?format=msgpack", nil)
	}
}

// BenchmarkRoundTrip is the cost of one algod call over loopback HTTP with
// keep-alive connections, the client and the devnet in this process: GET
// /health from 8 goroutines. It reports the CPU of both ends per call.
//
//	go test -run '^$' -bench RoundTrip ./internal/devnet/
func BenchmarkRoundTrip(b *testing.B) {
	p := devnettest.Start(b, devnet.Config{})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 8
	hc := &http.Client{Transport: tr}
	url := p.Dev.URL() + "/health"
	b.SetParallelism(4) // 8 goroutines on 2 cores
	cpu0 := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := hc.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime returns the CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

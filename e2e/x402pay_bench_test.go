package e2e

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/encoding/msgpack"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// BenchmarkX402PayRespond measures a respond route behind x402pay (builtin
// facilitator with a fee payer, the devnet in this process, a fresh
// pre-signed payment per request) against the same route without it, and
// prints both throughputs and their ratio. Payments are built outside the
// timed part, in batches that stay valid while the devnet makes one round
// per payment.
//
// Besides req/s it reports, per paid request, the algod calls caddy made
// (counted by a wrapper around the devnet's handler, by endpoint with -v),
// and the CPU time spent by the caddy process and by this process (the
// devnet and the HTTP clients). Then it times the cryptographic floor of a
// paid request on this machine (three ed25519 verifies, a transaction
// signature and a group decode, on GOMAXPROCS goroutines) and prints the
// paid rate as a fraction of it. X402_BENCH_ADMIN=<port> turns on caddy's
// admin endpoint, to profile caddy with
// http://127.0.0.1:<port>/debug/pprof/profile while the benchmark runs.
//
//	go test -p 1 -run '^$' -bench BenchmarkX402PayRespond ./e2e/
func BenchmarkX402PayRespond(b *testing.B) {
	const workers = 8
	c := newChain(b, 1_000_000_000) // 1 million payments of 0.001 USDC
	// The fee payer pays 2000 µAlgo a payment: enough for long runs.
	if err := c.Dev.Fund(c.ctx, c.FeePayer.Address, 1_000_000*1_000_000, 0); err != nil {
		b.Fatal(err)
	}
	b.Setenv("X402_TEST_ALGOD_TOKEN", c.Dev.Token())
	calls := &callCounter{next: c.Dev.Handler()}
	algod := httptest.NewServer(calls)
	b.Cleanup(algod.Close)
	site := fmt.Sprintf(`
	handle /plain {
		respond "ok" 200
	}
	handle /paid {
		x402pay {
			pay_to %s
			network devnet
			price 0.001
			max_timeout 1h
			facilitator builtin {
				algod %s
				algod_token {env.X402_TEST_ALGOD_TOKEN}
				fee_payer {file.%s}
			}
		}
		respond "ok" 200
	}`, c.PayTo.Address, algod.URL, c.feePayerFile)
	sc := serverConfig{site: site}
	if p := os.Getenv("X402_BENCH_ADMIN"); p != "" {
		port, err := strconv.Atoi(p)
		if err != nil {
			b.Fatalf("X402_BENCH_ADMIN=%q: %v", p, err)
		}
		sc.admin = port
	}
	s := startCaddy(b, sc)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	pr, _ := required(b, do(b, http.MethodGet, s.URL+"/paid", "", nil))
	req := x402.Requirement{V2: &pr.Accepts[0]}
	payer := avm.AccountSigner(c.Payer)

	// run sends n requests from the workers; header(i) is the i-th
	// request's payment header value, or "".
	run := func(b *testing.B, path string, n int, header func(i int) string) {
		var next, failed atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					r, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
					if header != nil {
						r.Header.Set(x402.HeaderPaymentSignature, header(i))
					}
					resp, err := client.Do(r)
					if err != nil {
						failed.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if f := failed.Load(); f > 0 {
			b.Fatalf("%d of %d requests to %s failed", f, n, path)
		}
	}

	// Rates, and CPU time per request (caddy, then this process).
	var plainRate, paidRate, floorRate float64
	var plainCPU, paidCPU [2]time.Duration
	b.Run("plain", func(b *testing.B) {
		cpu0, self0 := processCPU(b, s.cmd.Process.Pid), selfCPU0(b)
		start := time.Now()
		run(b, "/plain", b.N, nil)
		plainRate = float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(plainRate, "req/s")
		plainCPU = [2]time.Duration{(processCPU(b, s.cmd.Process.Pid) - cpu0) / time.Duration(b.N), (selfCPU0(b) - self0) / time.Duration(b.N)}
		b.ReportMetric(float64(plainCPU[0].Nanoseconds())/1e3, "caddy-cpu-µs/op")
		b.ReportMetric(float64(plainCPU[1].Nanoseconds())/1e3, "devnet+client-cpu-µs/op")
	})
	b.Run("paid", func(b *testing.B) {
		const batch = 500 // well inside the 1000-round validity window
		var elapsed, caddyCPU, selfCPU time.Duration
		calls.clear()
		for done := 0; done < b.N; {
			n := min(batch, b.N-done)
			b.StopTimer()
			params := c.Params()
			areq, err := avm.ParseRequirement(req.Terms())
			if err != nil {
				b.Fatal(err)
			}
			headers := make([]string, n)
			for i := range headers {
				p, err := avm.BuildPayment(c.ctx, params, payer, areq)
				if err != nil {
					b.Fatal(err)
				}
				_, headers[i] = paymentHeader(b, req, &pr.Resource, p)
			}
			// The garbage of building the payments is not the paid
			// requests' to collect.
			runtime.GC()
			calls.reset()
			cpu0, self0 := processCPU(b, s.cmd.Process.Pid), selfCPU0(b)
			b.StartTimer()
			start := time.Now()
			run(b, "/paid", n, func(i int) string { return headers[i] })
			elapsed += time.Since(start)
			b.StopTimer()
			caddyCPU += processCPU(b, s.cmd.Process.Pid) - cpu0
			selfCPU += selfCPU0(b) - self0
			calls.add()
			b.StartTimer()
			done += n
		}
		paidRate = float64(b.N) / elapsed.Seconds()
		b.ReportMetric(paidRate, "req/s")
		b.ReportMetric(float64(calls.total.Load())/float64(b.N), "algod-calls/op")
		paidCPU = [2]time.Duration{caddyCPU / time.Duration(b.N), selfCPU / time.Duration(b.N)}
		b.ReportMetric(float64(paidCPU[0].Nanoseconds())/1e3, "caddy-cpu-µs/op")
		b.ReportMetric(float64(paidCPU[1].Nanoseconds())/1e3, "devnet+client-cpu-µs/op")
		b.Logf("algod calls per paid request by endpoint: %s", calls.perOp(b.N))
	})
	b.Run("floor", func(b *testing.B) {
		if floorRate == 0 { // timed once, whatever b.N
			floorRate = cryptoFloor(b, c, payer, req)
		}
		b.ReportMetric(floorRate, "req/s")
	})
	if floorRate > 0 && paidRate > 0 {
		fmt.Printf("x402pay paid route: %.0f req/s, the cryptographic floor %.0f req/s: %.1f%% of it (goal >= 60%%)\n", paidRate, floorRate, 100*paidRate/floorRate)
	}
	if plainRate > 0 && paidRate > 0 {
		fmt.Printf("x402pay respond route: plain %.0f req/s, paid %.0f req/s, ratio %.1f%% (goal >= 50%%)\n", plainRate, paidRate, 100*paidRate/plainRate)
		plain, paid := plainCPU[0]+plainCPU[1], paidCPU[0]+paidCPU[1]
		if plain > 0 && paid > 0 {
			fmt.Printf("CPU per request (caddy + devnet and clients): plain %d µs, paid %d µs (caddy %d µs), ratio %.1f%%\n",
				plain.Microseconds(), paid.Microseconds(), paidCPU[0].Microseconds(), 100*float64(plain)/float64(paid))
		}
	}
}

// Per paid request, the work no implementation can avoid (as lualambda
// bench counts it): the payer's signature checked by the facilitator and
// by the ledger, the fee payer's checked by the ledger, the fee payer's
// transaction signed, and the group decoded once.
const (
	floorVerifies = 3
	floorSigns    = 1
	floorDecodes  = 1
)

// cryptoFloor returns the paid requests per second that the cryptography
// of a paid request allows on this machine: each operation of the floor
// timed for a second on GOMAXPROCS goroutines at once, on a payment group
// like the benchmark's.
func cryptoFloor(b *testing.B, c *chain, payer avm.Signer, r x402.Requirement) float64 {
	b.Helper()
	req, err := avm.ParseRequirement(r.Terms())
	if err != nil {
		b.Fatal(err)
	}
	payload, err := avm.BuildPayment(c.ctx, c.Params(), payer, req)
	if err != nil {
		b.Fatal(err)
	}
	members, err := avm.DecodeGroup(payload)
	if err != nil || len(members) != 2 || payload.PaymentIndex != 1 {
		b.Fatalf("the payment group: %d members, paid at %d, %v", len(members), payload.PaymentIndex, err)
	}
	feeTxn, pay := members[0].Txn.Txn, members[1].Txn
	payMsg := append([]byte("TX"), msgpack.Encode(pay.Txn)...)
	_, feeSigned, err := crypto.SignTransaction(c.FeePayer.PrivateKey, feeTxn)
	if err != nil {
		b.Fatal(err)
	}
	wire := append(feeSigned, msgpack.Encode(pay)...)
	ops := []func() bool{
		func() bool { return ed25519.Verify(c.Payer.PublicKey, payMsg, pay.Sig[:]) },
		func() bool { _, _, err := crypto.SignTransaction(c.FeePayer.PrivateKey, feeTxn); return err == nil },
		func() bool {
			// The group is two signed transactions, one after the other.
			dec := msgpack.NewDecoder(bytes.NewReader(wire))
			var group [2]types.SignedTxn
			return dec.Decode(&group[0]) == nil && dec.Decode(&group[1]) == nil
		},
	}
	var rates [3]float64
	for i, op := range ops {
		var calls atomic.Int64
		var failed atomic.Bool
		end := time.Now().Add(time.Second)
		start := time.Now()
		var wg sync.WaitGroup
		for range runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					if !op() {
						failed.Store(true)
						return
					}
					calls.Add(1)
				}
			}()
		}
		wg.Wait()
		if failed.Load() {
			b.Fatalf("floor operation %d failed", i)
		}
		rates[i] = float64(calls.Load()) / time.Since(start).Seconds()
	}
	b.Logf("floor: %.0f ed25519 verifies/s, %.0f transaction signatures/s, %.0f group decodes/s on %d goroutines", rates[0], rates[1], rates[2], runtime.GOMAXPROCS(0))
	return 1 / (floorVerifies/rates[0] + floorSigns/rates[1] + floorDecodes/rates[2])
}

// callCounter counts the requests an http.Handler serves, by method and
// endpoint (numbers, addresses and txids folded into placeholders).
type callCounter struct {
	next  http.Handler
	total atomic.Int64

	mu      sync.Mutex
	batch   map[string]int // since reset
	overall map[string]int // added batches
}

func (c *callCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	if c.batch == nil {
		c.batch = map[string]int{}
	}
	c.batch[r.Method+" "+endpoint(r.URL.Path)]++
	c.mu.Unlock()
	c.next.ServeHTTP(w, r)
}

// reset forgets the calls since the last add.
func (c *callCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batch = map[string]int{}
}

// clear forgets every call.
func (c *callCounter) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batch, c.overall = map[string]int{}, map[string]int{}
	c.total.Store(0)
}

// add moves the calls since reset into the overall count.
func (c *callCounter) add() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.overall == nil {
		c.overall = map[string]int{}
	}
	for k, n := range c.batch {
		c.overall[k] += n
		c.total.Add(int64(n))
	}
	c.batch = map[string]int{}
}

// perOp lists the overall calls per operation, by endpoint.
func (c *callCounter) perOp(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.overall))
	for k := range c.overall {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, float64(c.overall[k])/float64(n)))
	}
	return strings.Join(parts, ", ")
}

// endpoint folds the variable parts of an algod path.
func endpoint(path string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		if i >= 3 && p != "" && p != "assets" && p != "simulate" && p != "params" && p != "pending" && p != "wait-for-block-after" {
			parts[i] = "*"
		}
	}
	return strings.Join(parts, "/")
}

// processCPU returns the user+system CPU time a process has used, from
// /proc/<pid>/stat (in clock ticks of 10 ms).
func processCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name may hold spaces: the fields start after its ')'.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parsing /proc/%d/stat: %v %v", pid, err1, err2)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// selfCPU0 returns the CPU time this process has used.
func selfCPU0(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

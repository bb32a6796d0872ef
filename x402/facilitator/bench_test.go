package facilitator

import (
	"syscall"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/x402"
	"github.com/lualambda/caddy-lualambda/x402/avm"
)

// BenchmarkBuiltinVerifySettle verifies and settles one fresh payment per
// iteration, as the x402pay middleware does, against the devnet in this
// process (so the figures include the node's work and the HTTP between
// them). Payments are built outside the timer, in batches that stay valid.
//
//	go test -p 1 -run '^$' -bench BuiltinVerifySettle -benchmem ./x402/facilitator/
func BenchmarkBuiltinVerifySettle(b *testing.B) {
	c := newChain(b)
	c.Fund(c.Payer.Address, 0, 1_000_000_000)
	c.Fund(c.FeePayer.Address, 1_000_000_000, 0)
	r := c.requirementV2(c.network.CAIP2(), price, true)
	r.V2.MaxTimeoutSeconds = 3600 // the longest window: 1000 rounds
	req, err := avm.ParseRequirement(r.Terms())
	if err != nil {
		b.Fatal(err)
	}
	payer := avm.AccountSigner(c.Payer)
	var payments []x402.Payment
	var cpu time.Duration
	defer func() { b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op") }()
	b.ResetTimer()
	cpu -= cpuTime(b)
	defer func() { cpu += cpuTime(b) }()
	for i := 0; b.Loop(); i++ {
		if len(payments) == 0 {
			b.StopTimer()
			cpu -= cpuTime(b)
			params := c.Params()
			for range 500 {
				payload, err := avm.BuildPayment(c.ctx, params, payer, req)
				if err != nil {
					b.Fatal(err)
				}
				p, err := avm.NewPayment(r, &x402.ResourceInfo{URL: "http://127.0.0.1/x"}, payload)
				if err != nil {
					b.Fatal(err)
				}
				payments = append(payments, p)
			}
			cpu += cpuTime(b)
			b.StartTimer()
		}
		p := payments[0]
		payments = payments[1:]
		v, err := c.builtin.Verify(c.ctx, p, r)
		if err != nil || !v.IsValid {
			b.Fatalf("verify %d = %+v, %v", i, v, err)
		}
		s, err := c.builtin.Settle(c.ctx, p, r)
		if err != nil || !s.Success {
			b.Fatalf("settle %d = %+v, %v", i, s, err)
		}
	}
}

// cpuTime returns the CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

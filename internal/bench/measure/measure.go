// Package measure holds the measuring primitives shared by `lualambda bench`
// and the vmpool Go benchmarks: percentiles, the memory and CPU of QEMU
// processes, VM creation (cold boot vs snapshot clone) and the Lua CPU
// workloads run in the guest and with the host's luajit.
//
// It depends only on the standard library and vmpool, so that vmpool's own
// benchmarks can use it.
package measure

import (
	"math"
	"sort"
	"time"
)

// Percentile returns the p-th quantile (0 ≤ p ≤ 1) of ds by the nearest
// lower rank: the element at index floor(p·(n-1)) of the sorted samples.
// It returns 0 for no samples. ds is not modified.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	p = math.Min(math.Max(p, 0), 1)
	return s[int(p*float64(len(s)-1))]
}

// Millis converts a duration to milliseconds with microsecond precision.
func Millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Latency is the distribution of a set of samples, in milliseconds.
type Latency struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	// N is the number of samples.
	N int `json:"n"`
}

// Summarize computes the p50, p90 and p99 of samples.
func Summarize(samples []time.Duration) Latency {
	return Latency{
		P50: Millis(Percentile(samples, 0.5)),
		P90: Millis(Percentile(samples, 0.9)),
		P99: Millis(Percentile(samples, 0.99)),
		N:   len(samples),
	}
}

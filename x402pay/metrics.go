package x402pay

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a request through x402pay, the values of the outcome label.
const (
	outcomeFree        = "free"         // no price: passed through
	outcomeRequired    = "required"     // no payment: 402 with the offers
	outcomeBadHeader   = "bad_header"   // an undecodable payment header: 400
	outcomeNoMatch     = "no_match"     // a payment for none of the offers
	outcomeDuplicate   = "duplicate"    // a payment in flight or settled already
	outcomeInvalid     = "invalid"      // the facilitator refused the payment
	outcomeError       = "error"        // pricing, the facilitator or the buffer failed
	outcomeNotCharged  = "not_charged"  // the handler failed or said not to charge
	outcomeSettled     = "settled"      // paid and served
	outcomeSettleError = "settle_error" // settlement failed: 402, content withheld
)

// payMetrics are x402pay's Prometheus metrics, shared by every x402pay
// handler of a config (they are registered once in its registry). Labels
// are bounded: outcomes are the constants above, networks and assets come
// from the configuration.
type payMetrics struct {
	requests *prometheus.CounterVec
	amount   *prometheus.CounterVec
	verify   prometheus.Histogram
	settle   prometheus.Histogram
}

// newPayMetrics creates the metrics and registers them in reg, or reuses
// the ones another x402pay handler of the same config registered. A nil
// reg gives unregistered metrics.
func newPayMetrics(reg prometheus.Registerer) (*payMetrics, error) {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &payMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy", Subsystem: "x402pay", Name: "requests_total",
			Help: "Requests through x402pay, by outcome.",
		}, []string{"outcome"}),
		amount: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy", Subsystem: "x402pay", Name: "settled_base_units_total",
			Help: "Amount settled, in the asset's base units (USDC: millionths), by network and asset.",
		}, []string{"network", "asset"}),
		verify: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "caddy", Subsystem: "x402pay", Name: "verify_seconds",
			Help: "Time to verify a payment with the facilitator.", Buckets: buckets,
		}),
		settle: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "caddy", Subsystem: "x402pay", Name: "settle_seconds",
			Help: "Time to settle a payment with the facilitator (submission and confirmation).", Buckets: buckets,
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.amount, err = register(reg, m.amount); err != nil {
		return nil, err
	}
	if m.verify, err = register(reg, m.verify); err != nil {
		return nil, err
	}
	if m.settle, err = register(reg, m.settle); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c in reg, or returns the collector of the same
// description registered before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// count adds one request with the outcome.
func (m *payMetrics) count(outcome string) {
	if m != nil {
		m.requests.WithLabelValues(outcome).Inc()
	}
}

// verifyHist and settleHist return the histograms, nil without metrics.
func (m *payMetrics) verifyHist() prometheus.Histogram {
	if m == nil {
		return nil
	}
	return m.verify
}

func (m *payMetrics) settleHist() prometheus.Histogram {
	if m == nil {
		return nil
	}
	return m.settle
}

// observe records the time since start in h.
func (m *payMetrics) observe(h prometheus.Histogram, start time.Time) {
	if m != nil && h != nil {
		h.Observe(time.Since(start).Seconds())
	}
}

// settledAmount adds a settled payment's amount.
func (m *payMetrics) settledAmount(network string, asset, amount uint64) {
	if m != nil {
		m.amount.WithLabelValues(network, strconv.FormatUint(asset, 10)).Add(float64(amount))
	}
}

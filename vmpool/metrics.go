package vmpool

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a pool's Prometheus collectors. They belong to the pool, not
// to any registry, so a pool that outlives a config reload can be
// registered again in the next config's registry.
type Metrics struct {
	name             string
	created          *prometheus.CounterVec
	createSeconds    *prometheus.HistogramVec
	acquireWait      prometheus.Histogram
	jobSeconds       *prometheus.HistogramVec
	failures         *prometheus.CounterVec
	templateSeconds  prometheus.Gauge
	snapshotFallback prometheus.Gauge
	pool             *Pool
}

const namespace = "lualambda"

func newMetrics(name string) *Metrics {
	labels := prometheus.Labels{"pool": name}
	return &Metrics{
		name: name,
		created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "vms_created_total", ConstLabels: labels,
			Help: "VMs created, by kind: boot (cold) or restore (snapshot clone).",
		}, []string{"kind"}),
		createSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "vm_create_seconds", ConstLabels: labels,
			Help:    "Time to create a ready VM (boot or restore, handshake and warm-up).",
			Buckets: []float64{.05, .1, .2, .4, .8, 1.5, 3, 6, 12, 30},
		}, []string{"kind"}),
		acquireWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "vm_acquire_wait_seconds", ConstLabels: labels,
			Help:    "Time a request waited for a ready VM.",
			Buckets: []float64{.0001, .001, .005, .02, .1, .5, 2, 10, 30},
		}),
		jobSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "job_seconds", ConstLabels: labels,
			Help:    "Duration of jobs on VMs, by reason they ended.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 120},
		}, []string{"reason"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "vm_failures_total", ConstLabels: labels,
			Help: "Failures by kind: boot, restore, boot_timeout, restore_timeout, warm, pause, resume, snapshot, busy.",
		}, []string{"kind"}),
		templateSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "vm_template_seconds", ConstLabels: labels,
			Help: "Time it took to boot and save the snapshot template.",
		}),
		snapshotFallback: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "vm_snapshot_fallback", ConstLabels: labels,
			Help: "1 when snapshots failed and the pool boots every VM cold.",
		}),
	}
}

// readyDesc and liveDesc describe gauges read from the pool at scrape time.
var (
	readyDesc = prometheus.NewDesc(namespace+"_vms_ready", "Warm VMs ready to be handed out.", []string{"pool"}, nil)
	liveDesc  = prometheus.NewDesc(namespace+"_vms_live", "Live VMs of the pool: ready, running or being created.", []string{"pool"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
	ch <- readyDesc
	ch <- liveDesc
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
	if m.pool != nil {
		st := m.pool.Stats()
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, float64(st.Ready), m.name)
		ch <- prometheus.MustNewConstMetric(liveDesc, prometheus.GaugeValue, float64(st.Live), m.name)
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.created, m.createSeconds, m.acquireWait, m.jobSeconds, m.failures, m.templateSeconds, m.snapshotFallback}
}

var _ prometheus.Collector = (*Metrics)(nil)

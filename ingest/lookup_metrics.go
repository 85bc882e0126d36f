package ingest

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// lookupMetrics are the metrics of GETs for orders the orders view does
// not show (see resolveUnseen), prefixed orderpipe_ingest_.
type lookupMetrics struct {
	lookups  *prometheus.CounterVec
	duration prometheus.Histogram
	probes   prometheus.Counter
	scanned  prometheus.Counter
}

// newLookupMetrics registers the lookup metrics in reg.
func newLookupMetrics(reg prometheus.Registerer) (*lookupMetrics, error) {
	const ns, sub = "orderpipe", "ingest"
	m := &lookupMetrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "lookups_total",
			Help: "GETs of orders the orders view did not show, by result: own (this edge's order in flight), found (200 from the broker's records or the caught-up view), absent (404), truncated (503: the processor is more than LookupMaxScan records behind), timeout (503: LookupTimeout ran out), error (503: broker error), not_ready (503: the view is reconnecting).",
		}, []string{"result"}),
		// From 0.25ms to ~8s: a lookup costs a few broker round trips.
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "lookup_duration_seconds",
			Help:    "Time to decide a GET of an order the orders view did not show (results other than own).",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
		}),
		probes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "lookup_probes_total",
			Help: "Probes of the broker for lookups (one serves every lookup that arrived while the previous one ran).",
		}),
		scanned: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "lookup_scanned_records_total",
			Help: "Records of orders.submitted that lookups read because the orders processor had not committed them yet.",
		}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.lookups, m.duration, m.probes, m.scanned} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register lookup metrics: %w", err)
	}
	return m, nil
}

// observe counts one lookup that ended with result after took.
func (m *lookupMetrics) observe(result string, took time.Duration) {
	m.lookups.WithLabelValues(result).Inc()
	if result != lookupOwn {
		m.duration.Observe(took.Seconds())
	}
}

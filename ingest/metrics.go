package ingest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/orderpipe/orderpipe/processors"
	"github.com/prometheus/client_golang/prometheus"
	gometrics "github.com/rcrowley/go-metrics"
)

// metrics are the edge's Prometheus metrics, all prefixed orderpipe_ingest_.
// Labels are bounded: route is a route name (never a raw path), code an
// HTTP status.
type metrics struct {
	requests          *prometheus.CounterVec
	latency           *prometheus.HistogramVec
	produce           *prometheus.HistogramVec
	admissionRejected prometheus.Counter
	rateLimited       prometheus.Counter
	panics            prometheus.Counter
}

// newMetrics registers the metrics in reg; inFlight and waiting are read at
// scrape time.
func newMetrics(reg prometheus.Registerer, inFlight, waiting func() float64) (*metrics, error) {
	const ns, sub = "orderpipe", "ingest"
	// From 0.5ms to ~16s: the edge answers in milliseconds, ?wait= and the
	// produce timeout in seconds.
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 16)
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
			Help: "Time from a request's arrival in the handler to its answer, by route and status code (a 503's is how fast load is shed).", Buckets: buckets,
		}, []string{"route", "code"}),
		produce: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "produce_duration_seconds",
			Help: "Time from TryProduce to the broker's verdict, by topic and result (ok, error).", Buckets: buckets,
		}, []string{"topic", "result"}),
		admissionRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "admission_rejected_total",
			Help: "Orders refused with 503 because MaxInFlight orders were not final yet.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rate_limited_total",
			Help: "Requests refused with 429 because their client was over its rate.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "handler_panics_total",
			Help: "Handler panics recovered and answered with 500.",
		}),
	}
	collectors := []prometheus.Collector{
		m.requests, m.latency, m.produce, m.admissionRejected, m.rateLimited, m.panics,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "orders_in_flight",
			Help: "Orders this edge admitted that are not final yet in the orders view (capped by MaxInFlight).",
		}, inFlight),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "order_waits",
			Help: "Orders that GET ?wait= requests are waiting on.",
		}, waiting),
	}
	var errs []error
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}

// observeRequest counts one answered request.
func (m *metrics) observeRequest(route string, code int, took time.Duration) {
	c := strconv.Itoa(code)
	m.requests.WithLabelValues(route, c).Inc()
	m.latency.WithLabelValues(route, c).Observe(took.Seconds())
}

// observeProduce records the broker's verdict on one record.
func (m *metrics) observeProduce(topic string, err error, took time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.produce.WithLabelValues(topic, result).Observe(took.Seconds())
}

// instrumentViews makes the views built from vc report their Sarama
// metrics (orderpipe_sarama_*{client="views"}) and Goka stats
// (orderpipe_goka_view_*) to reg.
func instrumentViews(reg prometheus.Registerer, vc *processors.Config, views ...*tableView) error {
	vc.MetricRegistry = gometrics.NewRegistry()
	cs := []prometheus.Collector{processors.SaramaCollector("views", vc.MetricRegistry)}
	for _, v := range views {
		cs = append(cs, processors.ViewCollector(strings.TrimSuffix(v.name, " view"), v.cur.Load))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register view metrics: %w", err)
		}
	}
	return nil
}

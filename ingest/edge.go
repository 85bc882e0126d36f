// Package ingest is orderpipe's HTTP edge, the API gateway of SPEC section
// 3: it authenticates, rate-limits, validates and admits orders, writes them
// to the orders.submitted topic, and answers reads from the Goka views of
// the order and stock tables. It never writes state around a topic.
//
// The edge answers 202 only after the broker acked the order's record, and
// answers every request within a bounded time: a full producer buffer, a
// broker error or a missing ack within ProduceTimeout give 503 with
// Retry-After, never a hang and never a 202. Bad input is refused before it
// reaches a topic, by a strict JSON decoder (see scanner).
//
// An Edge is built by New and run by Run; Edge.OrderUpdated must be wired as
// the update callback of the orders view (processors.UpdateFunc), which is
// how the edge learns that orders turned final.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// View is a read-only table view. *goka.View satisfies it; it answers Get
// before it has recovered, which is why the edge also asks Recovered.
type View interface {
	Get(key string) (any, error)
	Recovered() bool
}

// Check is a readiness check that /readyz runs on every request.
type Check struct {
	// Name identifies the check in /readyz.
	Name string
	// Critical checks make /readyz answer 503 while they fail; the others
	// leave it at 200 with status "degraded".
	Critical bool
	// Fn returns nil when healthy. It must be fast and safe for concurrent use.
	Fn func() error
}

// Deps are what the edge uses but does not own: the caller creates, runs
// and closes them.
type Deps struct {
	// Producer writes orders and stock commands. Required. It must be
	// created with kgo.RecordPartitioner(topology.Partitioner()) and keep
	// franz-go's defaults of an idempotent producer with acks=all. Flushing
	// it on shutdown is the caller's job, after Run returned.
	//
	// While no broker can be reached, franz-go holds a record whose produce
	// timed out without failing it (it only checks the record's context
	// around requests), and the order keeps its admission slot until the
	// verdict comes, since the record might still land: a long outage fills
	// MaxInFlight, the edge then answers 503 at once, and the slots come
	// back with the brokers.
	Producer *kgo.Client
	// Orders is the view of the orders table (values *saga.OrderState).
	// Required; its update callback must call Edge.OrderUpdated.
	Orders View
	// Stock is the view of the inventory table (values *saga.StockState).
	// Required.
	Stock View
	// Registry receives the edge's metrics and is what /metrics serves.
	// Default: a new registry holding the edge's metrics only.
	Registry *prometheus.Registry
	// Checks are readiness checks of other roles in the same process.
	Checks []Check
}

// Edge is the HTTP edge. Its methods are safe for concurrent use.
type Edge struct {
	cfg      Config
	log      *slog.Logger
	producer *kgo.Client
	orders   View
	stock    View
	checks   []Check
	limits   limits

	keys    *keyring     // nil: authentication is off
	anon    *client      // the caller when authentication is off
	limiter *rateLimiter // nil: no rate limit
	adm     *admission
	idem    *idempotency
	waiters *waiters
	metrics *metrics

	routes      routes
	promHandler fasthttp.RequestHandler
	handler     fasthttp.RequestHandler
	server      *fasthttp.Server

	started   atomic.Bool
	listening chan struct{} // closed once addr is set
	addr      string
	// stopping is closed when Run's context ends: /readyz turns 503 and
	// ?wait= requests answer at once instead of holding the shutdown up.
	stopping     chan struct{}
	stoppingOnce sync.Once
}

// New checks cfg and deps and builds an edge; it does not listen yet.
func New(cfg Config, deps Deps) (*Edge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	switch {
	case deps.Producer == nil:
		return nil, errors.New("ingest: no producer")
	case deps.Orders == nil:
		return nil, errors.New("ingest: no orders view")
	case deps.Stock == nil:
		return nil, errors.New("ingest: no stock view")
	}
	names := map[string]bool{"orders_view": true, "inventory_view": true, "edge": true}
	for _, c := range deps.Checks {
		if c.Name == "" || c.Fn == nil || names[c.Name] {
			return nil, fmt.Errorf("ingest: check %q: want a unique name and a func", c.Name)
		}
		names[c.Name] = true
	}
	e := &Edge{
		cfg:       cfg,
		log:       cfg.Logger.With("role", "ingest"),
		producer:  deps.Producer,
		orders:    deps.Orders,
		stock:     deps.Stock,
		checks:    deps.Checks,
		limits:    cfg.limits(),
		anon:      &client{anyScope: true},
		adm:       newAdmission(cfg.MaxInFlight, cfg.MaxInFlightPerSKU),
		idem:      newIdempotency(cfg.MaxInFlight),
		waiters:   newWaiters(),
		listening: make(chan struct{}),
		stopping:  make(chan struct{}),
	}
	if cfg.APIKeysFile != "" {
		kr, err := loadKeyring(cfg.APIKeysFile)
		if err != nil {
			return nil, fmt.Errorf("ingest: %w", err)
		}
		e.keys = kr
	}
	if cfg.RateLimit > 0 {
		e.limiter = newRateLimiter(cfg.RateLimit, cfg.RateBurst)
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg,
		func() float64 { return float64(e.adm.inFlight()) },
		func() float64 { return float64(e.waiters.waiting()) })
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	e.metrics = m
	e.promHandler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	}))
	e.routes = e.newRoutes()
	e.handler = e.serve
	e.server = e.newServer()
	return e, nil
}

// newServer sets every limit fasthttp leaves open by default: timeouts
// (unlimited), connections (256K, none per IP) and body size.
func (e *Edge) newServer() *fasthttp.Server {
	perIP := e.cfg.MaxConnsPerIP
	if perIP < 0 {
		perIP = 0 // fasthttp's "unlimited"
	}
	return &fasthttp.Server{
		Handler:      e.handler,
		ErrorHandler: e.serveError,
		// Read the big batch limit only for batch requests, so that a single
		// order cannot make the edge buffer megabytes. The handlers check the
		// exact limit of their route again.
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			if isBatchURI(h.RequestURI()) {
				return fasthttp.RequestConfig{MaxRequestBodySize: e.cfg.MaxBatchBodyBytes}
			}
			return fasthttp.RequestConfig{MaxRequestBodySize: e.cfg.MaxBodyBytes}
		},
		MaxRequestBodySize:            max(e.cfg.MaxBodyBytes, e.cfg.MaxBatchBodyBytes),
		ReadTimeout:                   e.cfg.ReadTimeout,
		WriteTimeout:                  e.cfg.WriteTimeout,
		IdleTimeout:                   e.cfg.IdleTimeout,
		Concurrency:                   e.cfg.MaxConns,
		MaxConnsPerIP:                 perIP,
		DisableHeaderNamesNormalizing: false,
		NoDefaultServerHeader:         true,
		CloseOnShutdown:               true,
		Logger:                        fasthttpLogger{e.log},
	}
}

// Run listens on Config.Listen and serves until ctx ends, then shuts down
// gracefully: it turns /readyz to 503, stops accepting connections, wakes
// ?wait= requests and lets running requests finish within
// ShutdownTimeout. It returns nil after a clean shutdown. Run may be called
// once. Flushing the producer is the caller's job, after Run returned.
func (e *Edge) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("ingest: Run called twice")
	}
	ln, err := net.Listen("tcp", e.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ingest: listen: %w", err)
	}
	e.addr = ln.Addr().String()
	close(e.listening)
	if e.keys == nil {
		e.log.Warn("authentication is OFF: every caller has every scope (allowed on loopback only)", "addr", e.addr)
	}
	e.log.Info("edge listening", "addr", e.addr)

	served := make(chan error, 1)
	go func() { served <- e.server.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("ingest: serve: %w", err)
	case <-ctx.Done():
	}

	e.stoppingOnce.Do(func() { close(e.stopping) })
	sctx, cancel := context.WithTimeout(context.Background(), e.cfg.ShutdownTimeout)
	defer cancel()
	if err := e.server.ShutdownWithContext(sctx); err != nil {
		return fmt.Errorf("ingest: shutdown: %w", err)
	}
	if err := <-served; err != nil {
		return fmt.Errorf("ingest: serve: %w", err)
	}
	e.log.Info("edge stopped")
	return nil
}

// Listening returns a channel closed once Run listens: Addr is set then.
func (e *Edge) Listening() <-chan struct{} { return e.listening }

// Addr is the address Run listens on, "" before it listens.
func (e *Edge) Addr() string {
	select {
	case <-e.listening:
		return e.addr
	default:
		return ""
	}
}

// Handler is the edge's request handler with all of its middleware, for
// serving it on a listener of one's own (e.g. fasthttputil's in-memory one).
// Such a server should set the limits Run sets.
func (e *Edge) Handler() fasthttp.RequestHandler { return e.handler }

// OrderUpdated must be called with every record the orders view applies
// (wire it as the view's processors.UpdateFunc); value is only read during
// the call. It frees the admission slot of an order that turned final and
// wakes the ?wait= requests waiting on it. It never blocks.
func (e *Edge) OrderUpdated(key string, value []byte) {
	e.idem.visible(key)
	if value != nil {
		st, err := saga.DecodeOrderState(value)
		if err != nil {
			// The order's slot stays taken: better a smaller edge than holds
			// without a bound. The dead-letter path deals with such records.
			e.log.Warn("undecodable order state in the orders view", "order_id", key, "err", err)
			return
		}
		if !st.Status.Final() {
			return
		}
	}
	// Final, or deleted: it holds no stock any more.
	e.adm.final(key)
	e.waiters.wake(key)
}

// fasthttpLogger sends fasthttp's messages, mostly about clients that
// misbehave, to the debug level.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(fmt.Sprintf(format, args...), "source", "fasthttp")
}

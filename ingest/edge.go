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
// An Edge is built by New, with its own producer and views, and run by Run,
// which owns them: it runs and rebuilds the views, and flushes and closes
// the producer on the way out.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderpipe/orderpipe/internal/health"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/internal/supervise"
	"github.com/orderpipe/orderpipe/processors"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"golang.org/x/sync/errgroup"
)

// View is a read-only table view. *goka.View satisfies it; it answers Get
// before it has recovered, which is why the edge also asks Recovered.
type View interface {
	Get(key string) (any, error)
	Recovered() bool
}

// Check is a readiness check that /readyz runs on every request: a
// critical one failing makes it answer 503, any other leaves it at 200
// with status "degraded".
type Check = health.Check

// Deps are what the edge uses but does not own.
type Deps struct {
	// Logger receives the edge's logs. Default slog.Default().
	Logger *slog.Logger
	// Registry receives the edge's metrics and is what /metrics serves.
	// Default: a new registry holding the edge's metrics only.
	Registry *prometheus.Registry
	// Checks are readiness checks of other roles in the same process.
	Checks []Check
}

// wiring is what the edge reads and writes through. New builds it, so the
// producer always has the shared partitioner and the orders view always
// tells the edge about updates; the package's tests build their own.
type wiring struct {
	producer *kgo.Client
	orders   View
	stock    View
	// views are the views Run runs and rebuilds; nil when the caller runs
	// them. closeProducer: Run flushes and closes the producer.
	views         []*tableView
	closeProducer bool
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
	own      wiring

	keys    atomic.Pointer[keyring] // nil: authentication is off
	anon    *client                 // the caller when authentication is off
	limiter *rateLimiter            // nil: no rate limit
	cert    *certificate            // nil: plain HTTP
	// pingFailing is set while the edge's pings of the brokers fail.
	pingFailing atomic.Pointer[pingFailure]
	// accessSeq counts the requests the access log samples from.
	accessSeq atomic.Uint64
	adm       *admission
	idem      *idempotency
	doubt     *doubt
	waiters   *waiters
	metrics   *metrics
	// progress is how far the orders view has applied the table, and
	// probes asks the broker about orders the view does not show: both
	// for read-your-writes on any edge (see resolveUnseen).
	progress *viewProgress
	probes   *prober
	lookups  *lookupMetrics

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

// New checks cfg and deps and builds an edge with its own producer and its
// views of the order and stock tables, which Run runs and closes. It
// connects to nothing yet.
func New(cfg Config, deps Deps) (*Edge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("ingest: no brokers")
	case cfg.DataDir == "":
		return nil, errors.New("ingest: no data dir for the views")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	vc := cfg.viewsConfig(log)
	var e *Edge // set below, before any view runs
	orders := &tableView{name: "orders view", log: log, open: func() (*goka.View, func() error, error) {
		return vc.OpenOrdersView(e.viewUpdated)
	}, onRunning: func(v *goka.View) {
		// Partitions that were up to date on disk apply nothing, and so
		// tell orderUpdated nothing.
		e.progress.floor(processors.RecoveredOffsets(v))
	}}
	stock := &tableView{name: "inventory view", log: log, open: func() (*goka.View, func() error, error) {
		return vc.OpenInventoryView(nil)
	}}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	if err := instrumentViews(deps.Registry, &vc, orders, stock); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	producer, err := newProducer(cfg, deps.Registry, log)
	if err != nil {
		return nil, err
	}
	e, err = build(cfg, deps, wiring{producer: producer, orders: orders, stock: stock, views: []*tableView{orders, stock}, closeProducer: true})
	if err != nil {
		producer.Close()
		return nil, err
	}
	return e, nil
}

// build builds an edge on w.
func build(cfg Config, deps Deps, w wiring) (*Edge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	switch {
	case w.producer == nil:
		return nil, errors.New("ingest: no producer")
	case w.orders == nil:
		return nil, errors.New("ingest: no orders view")
	case w.stock == nil:
		return nil, errors.New("ingest: no stock view")
	}
	names := map[string]bool{"orders_view": true, "inventory_view": true, "orders_view_live": true, "inventory_view_live": true, "edge": true, "broker": true}
	for _, c := range deps.Checks {
		if c.Name == "" || c.Fn == nil || names[c.Name] {
			return nil, fmt.Errorf("ingest: check %q: want a unique name and a func", c.Name)
		}
		names[c.Name] = true
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	e := &Edge{
		cfg:       cfg,
		log:       log.With("role", "ingest"),
		producer:  w.producer,
		orders:    w.orders,
		stock:     w.stock,
		own:       w,
		checks:    deps.Checks,
		limits:    cfg.limits(),
		anon:      &client{anyScope: true},
		adm:       newAdmission(cfg.MaxInFlight, cfg.MaxInFlightPerSKU),
		idem:      newIdempotency(cfg.MaxInFlight),
		doubt:     newDoubt(),
		waiters:   newWaiters(),
		progress:  newViewProgress(cfg.Topology.Partitions),
		listening: make(chan struct{}),
		stopping:  make(chan struct{}),
	}
	if cfg.APIKeysFile != "" {
		kr, err := loadKeyring(cfg.APIKeysFile)
		if err != nil {
			return nil, fmt.Errorf("ingest: %w", err)
		}
		e.keys.Store(kr)
	}
	if cfg.TLSCertFile != "" {
		c, err := loadCertificate(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("ingest: %w", err)
		}
		e.cert = c
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
	if e.lookups, err = newLookupMetrics(reg); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	e.probes = newProber(w.producer, cfg, e.lookups)
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

// Run runs the views, listens on Config.Listen and serves until ctx ends,
// then shuts down in order, each step under its own deadline: it turns
// /readyz to 503, stops accepting connections, wakes ?wait= requests and
// lets running requests finish (ShutdownTimeout); then it flushes and
// closes the producer (ShutdownTimeout); then it stops the views. It
// returns nil after a clean shutdown; a failure to listen is
// supervise.Permanent. Run may be called once.
func (e *Edge) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("ingest: Run called twice")
	}
	if e.own.closeProducer {
		defer e.producer.Close()
	}
	ln, err := net.Listen("tcp", e.cfg.Listen)
	if err != nil {
		return supervise.Permanent(fmt.Errorf("ingest: listen: %w", err))
	}
	// The views outlive the server, so that requests finishing during the
	// shutdown can still read.
	viewsCtx, stopViews := context.WithCancel(context.WithoutCancel(ctx))
	defer stopViews()
	var views errgroup.Group
	for _, v := range e.own.views {
		views.Go(func() error { return v.Run(viewsCtx) })
	}
	views.Go(func() error { return e.pingWhileFailed(viewsCtx, 250*time.Millisecond) })

	e.addr = ln.Addr().String()
	scheme := "http"
	if e.cert != nil {
		ln = e.cert.listener(ln)
		scheme = "https"
	} else if e.keys.Load() != nil && !isLoopback(e.addr) {
		e.log.Warn("API keys travel in clear text: serving plain HTTP on a non-loopback address (set --tls-cert and --tls-key, or terminate TLS in front)", "addr", e.addr)
	}
	// Said before Listening closes, so that it precedes any answer.
	if kr := e.keys.Load(); kr == nil {
		e.log.Warn("authentication is OFF: every caller has every scope (allowed on loopback only)", "addr", e.addr)
	} else {
		e.log.Info("authentication is on: API keys loaded", "file", e.cfg.APIKeysFile, "clients", kr.clients(), "keys", len(kr.keys))
	}
	close(e.listening)
	e.log.Info("edge listening", "addr", e.addr, "scheme", scheme)

	served := make(chan error, 1)
	go func() { served <- e.server.Serve(ln) }()
	var runErr error
	select {
	case err := <-served:
		served <- nil // for the wait below
		runErr = fmt.Errorf("ingest: serve: %w", err)
	case <-ctx.Done():
	}

	e.stoppingOnce.Do(func() { close(e.stopping) })
	errs := []error{runErr, e.shutdownServer(served), e.flushProducer()}
	stopViews()
	if err := supervise.WaitWithin(&views, e.cfg.ShutdownTimeout); err != nil {
		errs = append(errs, fmt.Errorf("ingest: stop views: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	e.log.Info("edge stopped")
	return nil
}

// shutdownServer stops accepting and lets running requests finish within
// ShutdownTimeout, then waits for Serve (whose result served carries).
func (e *Edge) shutdownServer(served <-chan error) error {
	sctx, cancel := context.WithTimeout(context.Background(), e.cfg.ShutdownTimeout)
	defer cancel()
	if err := e.server.ShutdownWithContext(sctx); err != nil {
		return fmt.Errorf("ingest: shutdown: %w", err)
	}
	if err := <-served; err != nil {
		return fmt.Errorf("ingest: serve: %w", err)
	}
	return nil
}

// flushProducer waits, within ShutdownTimeout, until every record produced
// has its verdict: every request has been answered by now, but a record in
// doubt may still land, and it holds an admission slot until it does.
func (e *Edge) flushProducer() error {
	if !e.own.closeProducer {
		return nil
	}
	fctx, cancel := context.WithTimeout(context.Background(), e.cfg.ShutdownTimeout)
	defer cancel()
	if err := e.producer.Flush(fctx); err != nil {
		return fmt.Errorf("ingest: flush the producer (%d records in doubt): %w", e.doubt.total(), err)
	}
	return nil
}

// ReloadKeys reads the API keys file and the TLS certificate again and
// serves with each that is valid from now on; one that is not keeps what
// was loaded before, and the error says why. Without a keys file or TLS
// there is nothing to reload.
func (e *Edge) ReloadKeys() error {
	if !e.HasKeysFile() {
		return errors.New("ingest: no API keys file or TLS certificate to reload")
	}
	var certErr error
	if e.cert != nil {
		if certErr = e.cert.reload(); certErr != nil {
			certErr = fmt.Errorf("ingest: reload: %w (the certificate loaded before stays in use)", certErr)
		} else {
			e.log.Info("TLS certificate reloaded", "cert", e.cfg.TLSCertFile, "expires", e.cert.expires())
		}
	}
	if e.cfg.APIKeysFile == "" {
		return certErr
	}
	kr, err := loadKeyring(e.cfg.APIKeysFile)
	if err != nil {
		return errors.Join(certErr, fmt.Errorf("ingest: reload: %w (the keys loaded before stay in use)", err))
	}
	e.keys.Store(kr)
	e.log.Info("API keys reloaded", "file", e.cfg.APIKeysFile, "clients", kr.clients(), "keys", len(kr.keys))
	return certErr
}

// HasKeysFile reports whether the edge has files that ReloadKeys reads:
// an API keys file or a TLS certificate.
func (e *Edge) HasKeysFile() bool { return e.cfg.APIKeysFile != "" || e.cert != nil }

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

// viewUpdated is called with every record the orders view applies, at
// offset of partition (New wires it as the view's processors.UpdateFunc);
// value is only read during the call. It records the view's progress for
// lookups, then tells orderUpdated. It never blocks.
func (e *Edge) viewUpdated(partition int32, offset int64, key string, value []byte) {
	e.progress.applied(partition, offset)
	e.orderUpdated(key, value)
}

// orderUpdated is told about every order state the orders view applies;
// value is only read during the call. It frees the admission slot of an
// order that turned final and wakes the ?wait= requests waiting on it. It
// never blocks.
func (e *Edge) orderUpdated(key string, value []byte) {
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

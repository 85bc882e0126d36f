// Package app composes orderpipe's roles (edge, processors, sink) into one
// process, with the embedded broker and database when none is configured,
// and shuts them down in order: stop accepting, flush the producer, let the
// processors commit, close the sink and the pools.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/membroker"
	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/orderpipe/orderpipe/processors"
	"github.com/orderpipe/orderpipe/sinks/pgsink"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

// Roles says which components run in this process.
type Roles struct {
	Ingest, Process, Sink bool
	// EnsureTopics creates missing topics before starting; otherwise the
	// topics are only checked and a mismatch stops the start.
	EnsureTopics bool
}

// Config configures a process. Zero values mean the documented defaults.
type Config struct {
	// Brokers are the seed brokers. Empty: an in-process, in-memory broker is
	// started (not durable; loudly logged).
	Brokers []string
	// PostgresURL is the sink's database. Empty: a throwaway local PostgreSQL
	// is started from the installed server binaries and removed on exit.
	PostgresURL string
	// DataDir is where Goka keeps table state. Empty: a temporary dir removed
	// on exit (tables are then recovered from their changelogs at each start).
	DataDir  string
	Topology topology.Config
	Ingest   ingest.Config
	Sink     pgsink.Config
	// ClientID names this process to the brokers. Default "orderpipe".
	ClientID string
	// FetchWait is processors.Config.FetchWait, for processors and views.
	FetchWait time.Duration
	Logger    *slog.Logger
	// OnReady, if set, is called once every component of the process is
	// ready, with the edge's address ("" without an edge).
	OnReady func(edgeAddr string)
}

// Run runs the roles until ctx ends or one of them fails.
func Run(ctx context.Context, cfg Config, roles Roles) (err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "orderpipe"
	}
	if err := cfg.Topology.Validate(); err != nil {
		return err
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	brokers := cfg.Brokers
	if len(brokers) == 0 {
		c, err := membroker.Start()
		if err != nil {
			return err
		}
		cleanups = append(cleanups, c.Close)
		brokers = c.Brokers()
		roles.EnsureTopics = true
		log.Warn("no --brokers: started an IN-MEMORY Kafka broker; nothing survives this process, do not use it for real orders", "brokers", brokers)
	}

	dataDir := cfg.DataDir
	if dataDir == "" {
		dir, err := os.MkdirTemp("", "orderpipe-data-")
		if err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		cleanups = append(cleanups, func() { _ = os.RemoveAll(dir) })
		dataDir = dir
		log.Info("no --data-dir: table state goes to a temporary dir and is recovered from the changelogs at each start", "dir", dir)
	}

	rf, err := prepareTopics(ctx, brokers, cfg.Topology, roles.EnsureTopics, log)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pcfg := processors.Config{
		Brokers: brokers, DataDir: dataDir, ClientID: cfg.ClientID, Topology: cfg.Topology,
		Replication: rf, FetchWait: cfg.FetchWait, Logger: log.With("component", "goka"),
	}

	core, coreCtx := errgroup.WithContext(context.WithoutCancel(ctx))
	coreCtx, stopCore := context.WithCancel(coreCtx)
	defer stopCore()
	var checks []ingest.Check
	var readiness []func() error

	if roles.Process {
		runner, err := processors.NewRunner(pcfg, reg)
		if err != nil {
			return err
		}
		core.Go(func() error { return runner.Run(coreCtx) })
		checks = append(checks, ingest.Check{Name: "processors", Critical: true, Fn: runner.Ready})
		readiness = append(readiness, runner.Ready)
	}

	if roles.Sink {
		url := cfg.PostgresURL
		if url == "" {
			srv, err := pglocal.Start(ctx, pglocal.Config{Logger: log.With("component", "pglocal")})
			if err != nil {
				return fmt.Errorf("start throwaway postgres (pass --postgres-url to use yours): %w", err)
			}
			cleanups = append(cleanups, func() {
				cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := srv.Close(cctx); err != nil {
					log.Error("stop throwaway postgres", "err", err)
				}
			})
			url = srv.URL()
			log.Warn("no --postgres-url: started a THROWAWAY PostgreSQL, removed on exit", "url", url)
		}
		if err := pgsink.MigrateURL(ctx, url); err != nil {
			return err
		}
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return fmt.Errorf("postgres pool: %w", err)
		}
		cleanups = append(cleanups, pool.Close)
		scfg := cfg.Sink
		scfg.Brokers = brokers
		scfg.Logger = log.With("component", "sink")
		scfg.Registerer = reg
		sink, err := pgsink.New(scfg, pool)
		if err != nil {
			return err
		}
		core.Go(func() error { return sink.Run(coreCtx) })
		// Postgres down degrades the process but does not take it out of a
		// load balancer: orders are still accepted and served from the cache.
		checks = append(checks, ingest.Check{Name: "postgres-sink", Critical: false, Fn: sink.Health})
	}

	edgeAddr := make(chan string, 1)
	if roles.Ingest {
		edge, producer, views, err := buildEdge(cfg, pcfg, reg, checks, log)
		if err != nil {
			return err
		}
		cleanups = append(cleanups, producer.Close)
		for _, v := range views {
			core.Go(func() error { return v.Run(coreCtx) })
		}
		for _, v := range views {
			readiness = append(readiness, func() error {
				if !v.Recovered() {
					return errors.New("view recovering")
				}
				return nil
			})
		}
		// The edge stops first and the rest only after it: no order may be
		// accepted by a process whose processors are already gone. It also
		// stops when another component fails.
		edgeCtx, stopEdge := context.WithCancel(ctx)
		defer stopEdge()
		go func() {
			<-coreCtx.Done()
			stopEdge()
		}()
		core.Go(func() error {
			defer stopCore()
			return flushAfter(producer, edge.Run(edgeCtx), log)
		})
		go func() {
			select {
			case <-edge.Listening():
				edgeAddr <- edge.Addr()
			case <-coreCtx.Done():
			}
		}()
	} else {
		close(edgeAddr)
		go func() {
			<-ctx.Done()
			stopCore()
		}()
	}

	go announceReady(coreCtx, cfg.OnReady, edgeAddr, readiness, log)
	err = core.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err == nil {
		// Said for every role, so that an operator sees a clean stop
		// (offsets committed, producers flushed) apart from a crash.
		log.Info("orderpipe stopped")
	}
	return err
}

// flushAfter flushes what the edge produced (bounded), keeping err.
func flushAfter(producer *kgo.Client, err error, log *slog.Logger) error {
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ferr := producer.Flush(fctx); ferr != nil {
		log.Error("flush producer at shutdown", "err", ferr)
	}
	return err
}

// announceReady waits until every readiness function passes, then calls
// onReady once.
func announceReady(ctx context.Context, onReady func(string), edgeAddr <-chan string, readiness []func() error, log *slog.Logger) {
	var addr string
	select {
	case a, ok := <-edgeAddr:
		if ok {
			addr = a
		}
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ready := true
		for _, f := range readiness {
			if f() != nil {
				ready = false
				break
			}
		}
		if ready {
			log.Info("orderpipe is ready", "listen", addr)
			if onReady != nil {
				onReady(addr)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// prepareTopics creates (ensure) or checks the topics and returns the
// replication factor the tables must have.
func prepareTopics(ctx context.Context, brokers []string, tc topology.Config, ensure bool, log *slog.Logger) (int16, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return 0, fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if ensure {
		if err := tc.Ensure(ctx, adm, log); err != nil {
			return 0, err
		}
	} else if err := tc.Check(ctx, adm); err != nil {
		return 0, err
	}
	return tc.ResolveReplication(ctx, adm)
}

// buildEdge builds the producer, the two views and the edge. The orders view
// tells the edge about every order update (waiters, admission control).
func buildEdge(cfg Config, pcfg processors.Config, reg *prometheus.Registry, checks []ingest.Check, log *slog.Logger) (*ingest.Edge, *kgo.Client, []*goka.View, error) {
	producer, err := kgo.NewClient(
		kgo.SeedBrokers(pcfg.Brokers...),
		kgo.ClientID(cfg.ClientID+"-edge"),
		kgo.RecordPartitioner(topology.Partitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.MaxBufferedRecords(100_000),
		kgo.RecordDeliveryTimeout(30*time.Second),
	)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("producer: %w", err)
	}
	var edgeRef atomic.Pointer[ingest.Edge]
	ordersView, err := pcfg.NewOrdersView(func(key string, value []byte) {
		if e := edgeRef.Load(); e != nil {
			e.OrderUpdated(key, value)
		}
	})
	if err != nil {
		producer.Close()
		return nil, nil, nil, err
	}
	stockView, err := pcfg.NewInventoryView(nil)
	if err != nil {
		producer.Close()
		return nil, nil, nil, err
	}
	icfg := cfg.Ingest
	icfg.Logger = log.With("component", "edge")
	edge, err := ingest.New(icfg, ingest.Deps{
		Producer: producer, Orders: ordersView, Stock: stockView, Registry: reg, Checks: checks,
	})
	if err != nil {
		producer.Close()
		return nil, nil, nil, err
	}
	edgeRef.Store(edge)
	return edge, producer, []*goka.View{ordersView, stockView}, nil
}

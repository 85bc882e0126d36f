// Package app composes orderpipe's roles (edge, processors, sink) into one
// process. Each role is a value built from its own Config that owns its
// clients and blocks in Run; app prepares what they share (the embedded
// broker and database when none is configured, the topics, the metrics
// registry) and supervises them: the processors and the sink start first
// and are restarted in-process when they fail for a reason that may pass
// (a broker restart); the edge starts last and stops first; only a
// permanent error ends the process.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/health"
	"github.com/orderpipe/orderpipe/internal/opsserver"
	"github.com/orderpipe/orderpipe/internal/supervise"
	"github.com/orderpipe/orderpipe/sinks/pgsink"
	"github.com/orderpipe/orderpipe/topology"
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
	// Brokers are the seed brokers. Empty: an in-process broker is started
	// (not durable; loudly logged), in memory, or keeping its log in
	// DataDir when that is set, so that a restart on DataDir keeps it.
	Brokers []string
	// PostgresURL is the sink's database. Empty: a throwaway local PostgreSQL
	// is started from the installed server binaries and removed on exit. The
	// edge reads it too, for the stored step of ?trace=1: without the sink
	// in the process, that is all it is for (empty: no database, no
	// throwaway one).
	PostgresURL string
	// DataDir is where Goka keeps table state, locked for this process
	// (package datadir); state that came from another cluster or other
	// table topics is removed at start and rebuilt from the changelogs.
	// Empty: a temporary dir removed on exit (tables are then recovered
	// from their changelogs at each start).
	DataDir  string
	Topology topology.Config
	Ingest   ingest.Config
	Sink     pgsink.Config
	// ClientID names this process to the brokers. Default "orderpipe".
	ClientID string
	// FetchWait is processors.Config.FetchWait, for processors and views.
	FetchWait time.Duration
	// BrokerRetry is processors.Config.BrokerRetry. Default 60s.
	BrokerRetry time.Duration
	// Restart spaces the restarts of a failed processor or sink.
	Restart supervise.Policy
	// StopTimeout bounds the stop of the processors and the sink, after the
	// edge stopped. Default 30s.
	StopTimeout time.Duration
	Logger      *slog.Logger
	// OnReady, if set, is called once every component of the process is
	// ready, with the edge's address ("" without an edge).
	OnReady func(edgeAddr string)
	// OpsListen, for a process without the edge, is the address of its
	// /healthz, /readyz and /metrics. Empty: none. The edge serves its own.
	OpsListen string
	// Reload, if set, delivers reload requests (SIGHUP): an edge with an
	// API keys file reloads it; a process with nothing to reload stops
	// cleanly, as on SIGTERM.
	Reload <-chan os.Signal
	// LagInterval spaces the readings of consumer and view lag
	// (orderpipe_consumer_lag_records, orderpipe_view_lag_records). Default
	// lag.DefaultInterval (2s).
	LagInterval time.Duration
	// MaxViewLag is how many records a view of the edge may be behind its
	// table on a partition before /readyz says the edge is degraded (check
	// "view_lag", not critical). Default DefaultMaxViewLag.
	MaxViewLag int64
	// ShutdownDrain is how long /readyz answers 503 ("shutdown") before the
	// edge or ops listener stops accepting, so that a load balancer takes
	// the process out first: above its check interval times its fall count
	// (2s for deploy/haproxy.cfg). Requests are served as usual meanwhile.
	// Default 0: no wait.
	ShutdownDrain time.Duration
}

// DefaultMaxViewLag is Config.MaxViewLag's default: about a second of the
// edge's orders at the rates measured here, far above what a live view
// lags by.
const DefaultMaxViewLag = 10_000

// Run runs the roles until ctx ends or one of them fails for good. The
// processors and the sink run first, each restarted after a failure that
// is not permanent; the edge runs next and stops first (it flushes its
// producer as it stops), then the rest stop within StopTimeout.
func Run(ctx context.Context, cfg Config, roles Roles) error {
	cfg, log := cfg.withDefaults()
	env, err := prepare(ctx, &cfg, roles, log)
	if err != nil {
		return err
	}
	defer env.close()
	var draining atomic.Bool
	shutdown := health.Check{Name: "shutdown", Critical: true, Fn: func() error {
		if draining.Load() {
			return errors.New("shutting down: draining before the listener closes")
		}
		return nil
	}}
	back, edge, lagc, err := build(cfg, roles, env, shutdown, log)
	if err != nil {
		return err
	}

	backCtx, stopBack := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBack()
	backs, backCtx := errgroup.WithContext(backCtx)
	for _, r := range back {
		backs.Go(func() error { return supervise.Restart(backCtx, r.name, cfg.Restart, r.status, log, r.run) })
	}
	// The front (the edge) ends with ctx, or when a back role failed for good.
	frontCtx, stopFront := context.WithCancel(ctx)
	defer stopFront()
	defer context.AfterFunc(backCtx, stopFront)()
	front, frontCtx := errgroup.WithContext(frontCtx)
	// The listeners (edge, ops) stop ShutdownDrain after frontCtx ends,
	// while /readyz says "shutdown".
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(frontCtx))
	defer stopServing()
	front.Go(func() error { drain(frontCtx, cfg.ShutdownDrain, &draining, stopServing, log); return nil })
	front.Go(func() error { return lagc.Run(frontCtx) })
	if edge != nil {
		front.Go(func() error { return edge.Run(serveCtx) })
	}
	var ops *opsserver.Server
	if edge == nil && cfg.OpsListen != "" {
		ops = opsserver.New(cfg.OpsListen, append(checksOf(back), shutdown), env.registry, log.With("component", "ops"))
		front.Go(func() error { return ops.Run(serveCtx) })
	}
	front.Go(func() error { announceReady(frontCtx, cfg.OnReady, edge, ops, back, log); return nil })
	front.Go(func() error { onReload(frontCtx, cfg.Reload, edge, stopFront, log); return nil })

	frontErr := front.Wait()
	stopBack()
	err = errors.Join(frontErr, stopErr(supervise.WaitWithin(backs, cfg.StopTimeout)))
	if err == nil {
		// Said for every role, so that an operator sees a clean stop
		// (offsets committed, producers flushed) apart from a crash.
		log.Info("orderpipe stopped")
	}
	return err
}

// drain waits for ctx to end, turns draining on, waits d, and calls stop.
func drain(ctx context.Context, d time.Duration, draining *atomic.Bool, stop func(), log *slog.Logger) {
	<-ctx.Done()
	draining.Store(true)
	if d > 0 {
		log.Info("shutting down: /readyz answers 503 while the listener drains", "drain", d)
		t := time.NewTimer(d)
		<-t.C
	}
	stop()
}

// onReload serves reload requests until ctx ends: the edge reloads its API
// keys; without keys to reload, the process stops as on SIGTERM.
func onReload(ctx context.Context, reload <-chan os.Signal, edge *ingest.Edge, stop func(), log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
		}
		if edge == nil || !edge.HasKeysFile() {
			log.Info("SIGHUP: nothing to reload, stopping as on SIGTERM")
			stop()
			return
		}
		if err := edge.ReloadKeys(); err != nil {
			log.Error("SIGHUP: API keys not reloaded", "err", err)
		}
	}
}

func stopErr(err error) error {
	if err != nil {
		return fmt.Errorf("processors and sink: %w", err)
	}
	return nil
}

// announceReady waits until the edge listens and every role is ready, then
// logs it and calls onReady once.
func announceReady(ctx context.Context, onReady func(string), edge *ingest.Edge, ops *opsserver.Server, back []role, log *slog.Logger) {
	var addr string
	if edge != nil {
		select {
		case <-edge.Listening():
			addr = edge.Addr()
		case <-ctx.Done():
			return
		}
	}
	var attrs []any
	if ops != nil {
		select {
		case <-ops.Listening():
			attrs = append(attrs, "ops", ops.Addr())
		case <-ctx.Done():
			return
		}
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !allReady(back) || (edge != nil && edge.Ready() != nil) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	log.Info("orderpipe is ready", append([]any{"listen", addr}, attrs...)...)
	if onReady != nil {
		onReady(addr)
	}
}

func allReady(roles []role) bool {
	for _, r := range roles {
		if r.check() != nil {
			return false
		}
	}
	return true
}

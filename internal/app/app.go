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
	"time"

	"github.com/orderpipe/orderpipe/ingest"
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
}

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
	back, edge, err := build(cfg, roles, env, log)
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
	front.Go(func() error { <-frontCtx.Done(); return nil })
	if edge != nil {
		front.Go(func() error { return edge.Run(frontCtx) })
	}
	var ops *opsserver.Server
	if edge == nil && cfg.OpsListen != "" {
		ops = opsserver.New(cfg.OpsListen, checksOf(back), env.registry, log.With("component", "ops"))
		front.Go(func() error { return ops.Run(frontCtx) })
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

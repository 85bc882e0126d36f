// Package apptest is how tests and benchmarks run orderpipe in their own
// process: Start runs app.Run, waits until the process is ready, and stops
// it within a deadline. It imports testing: nothing in the binary may
// import it.
package apptest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/orderpipe/orderpipe/internal/testlog"
)

// Timeouts of Start and Stop.
const (
	ReadyTimeout = 3 * time.Minute
	StopTimeout  = 90 * time.Second
)

// Process is app.Run running on a goroutine of its own.
type Process struct {
	// Addr is the edge's address, "" without an edge.
	Addr string
	stop func() error
}

// Start runs app.Run(cfg, roles) until Stop and waits until it is ready
// (within ReadyTimeout). cfg.OnReady is Start's. Without a listen address
// the edge listens on an ephemeral loopback port; without a logger, Logger.
func Start(cfg app.Config, roles app.Roles) (*Process, error) {
	ready := make(chan string, 1)
	cfg.OnReady = func(addr string) { ready <- addr }
	if cfg.Ingest.Listen == "" {
		cfg.Ingest.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testlog.New()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, roles) }()
	p := &Process{stop: sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(StopTimeout):
			return fmt.Errorf("roles %+v did not stop within %s", roles, StopTimeout)
		}
	})}
	select {
	case p.Addr = <-ready:
		return p, nil
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("roles %+v stopped before ready: %v", roles, err)
	case <-time.After(ReadyTimeout):
		return nil, fmt.Errorf("roles %+v not ready within %s (stop: %v)", roles, ReadyTimeout, p.Stop())
	}
}

// Stop ends the process and returns app.Run's result (within StopTimeout).
// It may be called more than once.
func (p *Process) Stop() error { return p.stop() }

// StartFor is Start for tb: it fails tb if the process does not get ready,
// and stops it when tb ends, failing tb unless it stopped cleanly.
func StartFor(tb testing.TB, cfg app.Config, roles app.Roles) *Process {
	tb.Helper()
	p, err := Start(cfg, roles)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Stop(); err != nil {
			tb.Errorf("roles %+v: %v", roles, err)
		}
	})
	return p
}

// PostgresFor starts a throwaway PostgreSQL for tb and removes it when tb
// ends.
func PostgresFor(tb testing.TB) *pglocal.Server {
	tb.Helper()
	pg, err := pglocal.Start(tb.Context(), pglocal.Config{Logger: testlog.New()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pg.Close(ctx)
	})
	return pg
}

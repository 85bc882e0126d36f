// Package opsserver serves what an operator or an orchestrator asks of a
// process without an HTTP edge (`orderpipe process`, `orderpipe sink`):
// /healthz, /readyz and /metrics, on an address of their own.
package opsserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/orderpipe/orderpipe/internal/health"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the ops listener. Build it with New, then Run it.
type Server struct {
	addr   string
	checks []health.Check
	reg    *prometheus.Registry
	log    *slog.Logger
	ln     net.Listener
	ready  chan struct{}
}

// New makes a server for addr ("127.0.0.1:0" picks a port) that reports
// checks on /readyz and reg on /metrics.
func New(addr string, checks []health.Check, reg *prometheus.Registry, log *slog.Logger) *Server {
	return &Server{addr: addr, checks: checks, reg: reg, log: log, ready: make(chan struct{})}
}

// Listening is closed once the server listens (or Run failed to).
func (s *Server) Listening() <-chan struct{} { return s.ready }

// Addr is the address it listens on, once Listening is closed.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Run serves until ctx ends, then stops within 5s.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		close(s.ready)
		return fmt.Errorf("ops listener on %s: %w", s.addr, err)
	}
	s.ln = ln
	close(s.ready)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("ops listener: /healthz /readyz /metrics", "listen", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("ops listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("ops listener: stop: %w", err)
	}
	return nil
}

// readyz answers like the edge's /readyz: 200 ready or degraded, 503 not ready.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	r := health.Evaluate(s.checks)
	code := http.StatusOK
	if r.Status == health.NotReady {
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, code, r)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/valyala/fasthttp"
)

// System is `orderpipe run` in this process: every role on a throwaway
// PostgreSQL, with the embedded broker or the given one. Close stops it.
type System struct {
	Addr        string
	PostgresURL string
	pg          *pglocal.Server
	proc        *apptest.Process
}

// Options shape a System; the zero value runs on the embedded broker with
// the edge's defaults and no log.
type Options struct {
	Log *slog.Logger
	// Brokers are the seed brokers of a running cluster; empty starts the
	// in-process one.
	Brokers []string
	// Edge, if set, adjusts the edge's configuration.
	Edge func(*ingest.Config)
	// FetchWait is app.Config.FetchWait.
	FetchWait time.Duration
}

// StartSystem starts a system and waits until it is ready.
func StartSystem(ctx context.Context, o Options) (*System, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pg, err := pglocal.Start(ctx, pglocal.Config{Logger: log})
	if err != nil {
		return nil, err
	}
	cfg := app.Config{Brokers: o.Brokers, PostgresURL: pg.URL(), Topology: topology.DefaultConfig(), Logger: log, FetchWait: o.FetchWait}
	if o.Edge != nil {
		o.Edge(&cfg.Ingest)
	}
	proc, err := apptest.Start(cfg, app.Roles{Ingest: true, Process: true, Sink: true, EnsureTopics: true})
	if err != nil {
		_ = pg.Close(context.Background())
		return nil, err
	}
	return &System{Addr: proc.Addr, PostgresURL: pg.URL(), pg: pg, proc: proc}, nil
}

// Close stops the system and removes its database.
func (s *System) Close() error {
	err := s.proc.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cerr := s.pg.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

// Metric sums every series of a counter or gauge on the edge's /metrics.
func (s *System) Metric(name string) (float64, error) { return ScrapeMetric(s.Addr, name) }

// ScrapeMetric sums every series of the counter or gauge name on the
// /metrics of the server at addr.
func ScrapeMetric(addr, name string) (float64, error) {
	code, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/metrics", 10*time.Second)
	if err != nil {
		return 0, fmt.Errorf("%s/metrics: %w", addr, err)
	}
	if code != 200 {
		return 0, fmt.Errorf("%s/metrics: status %d", addr, code)
	}
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name); !ok || (!strings.HasPrefix(rest, "{") && !strings.HasPrefix(rest, " ")) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// WaitMetric waits until Metric(name) >= want or d passes, and returns
// when it got there.
func (s *System) WaitMetric(ctx context.Context, name string, want float64, d time.Duration) (time.Time, error) {
	return WaitScrape(ctx, s.Addr, name, want, d)
}

// WaitScrape waits until ScrapeMetric(addr, name) >= want or d passes, and
// returns when it got there.
func WaitScrape(ctx context.Context, addr, name string, want float64, d time.Duration) (time.Time, error) {
	deadline := time.Now().Add(d)
	for {
		v, err := ScrapeMetric(addr, name)
		if err == nil && v >= want {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s on %s = %v after %s, want %v (%v)", name, addr, v, d, want, err)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

package pgsink

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/prometheus/client_golang/prometheus"
)

// readyWithin is the acceptance bound of issue 12: the sink's readiness
// follows Postgres within 5s each way.
const readyWithin = 5 * time.Second

// TestHealthFollowsPostgresWithoutWrites: with nothing to write, the
// sink's pings alone turn Health to "postgres unreachable" within 5s of
// Postgres stopping, and back to nil within 5s of its return (default
// PingInterval).
func TestHealthFollowsPostgresWithoutWrites(t *testing.T) {
	pool, k := newDB(t), newKafka(t)
	reg := prometheus.NewPedanticRegistry()
	k.orders(t, order(1, 1, saga.StatusPending))
	s := startSink(t, k, pool, Config{}, reg)
	// Committed: the sink has its partitions and read its positions, so
	// that from now on only a ping talks to Postgres.
	await.Until(t, "first record committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	await.Until(t, "healthy sink", readyWithin, s.Health)
	reachable := func(want float64) func() error {
		return func() error {
			got, err := gauge(reg, "orderpipe_sink_postgres_reachable")
			if err != nil || got != want {
				return fmt.Errorf("orderpipe_sink_postgres_reachable: got %v (%v), want %v", got, err, want)
			}
			return nil
		}
	}
	if err := reachable(1)(); err != nil {
		t.Fatal(err)
	}

	resume := haltPostgres(t)
	stopped := time.Now()
	await.Until(t, "Health to say postgres is unreachable", readyWithin, func() error {
		err := s.Health()
		if err == nil || !strings.Contains(err.Error(), "postgres unreachable: ") {
			return fmt.Errorf("Health: got %v, want \"postgres unreachable: ...\"", err)
		}
		return nil
	})
	t.Logf("degraded %s after postgres stopped: %v", time.Since(stopped).Round(time.Millisecond), s.Health())
	if err := reachable(0)(); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().DBErrors; n != 0 {
		t.Fatalf("failed writes: got %d, want 0 (nothing to write: the ping must have noticed)", n)
	}

	resume()
	back := time.Now()
	await.Until(t, "Health to be nil after postgres returned", readyWithin, s.Health)
	t.Logf("ready %s after postgres returned", time.Since(back).Round(time.Millisecond))
	if err := reachable(1)(); err != nil {
		t.Fatal(err)
	}
}

// TestHealthReturnsWhileABatchBacksOff: a batch whose write fails backs
// off for a minute; Postgres's return still makes the sink healthy within
// 5s, because the ping that sees it back wakes the write.
func TestHealthReturnsWhileABatchBacksOff(t *testing.T) {
	pool, k := newDB(t), newKafka(t)
	k.orders(t, order(1, 1, saga.StatusPending))
	s := startSink(t, k, pool, Config{MinBackoff: time.Minute, MaxBackoff: time.Minute, WriteTimeout: 2 * time.Second})
	await.Until(t, "first record committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	await.Until(t, "healthy sink", readyWithin, s.Health)

	resume := haltPostgres(t)
	o := order(1, 2, saga.StatusConfirmed)
	k.orders(t, o)
	await.Until(t, "a failed write", waitTimeout, func() error {
		if s.Stats().DBErrors == 0 {
			return errors.New("no failed write yet")
		}
		return nil
	})
	err := s.Health()
	if err == nil || !strings.Contains(err.Error(), "postgres unavailable since") {
		t.Fatalf("Health while a write backs off: got %v, want it to say since when writes fail", err)
	}

	resume()
	back := time.Now()
	await.Until(t, "Health to be nil after postgres returned", readyWithin, s.Health)
	t.Logf("ready %s after postgres returned, with a 1m backoff pending", time.Since(back).Round(time.Millisecond))
	await.Until(t, "the batch committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	checkOrder(t, pool, o)
}

// gauge is the value of reg's gauge name (without labels).
func gauge(reg prometheus.Gatherer, name string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("no gauge %s", name)
}

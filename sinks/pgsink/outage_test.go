package pgsink

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/saga"
)

// The tests in this file halt the package's PostgreSQL server, so they are
// not parallel: Go runs them before any parallel test starts.

// haltPostgres stops the shared server and returns a function that starts
// it again; the test's cleanup calls it too, in case the test fails first.
func haltPostgres(t *testing.T) (resume func()) {
	t.Helper()
	if err := pg.Halt(t.Context()); err != nil {
		t.Fatalf("halt postgres: %v", err)
	}
	resume = sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pg.Resume(ctx); err != nil {
			t.Errorf("resume postgres: %v", err)
		}
	})
	t.Cleanup(resume)
	return resume
}

// TestSinkSurvivesPostgresOutage: while Postgres is down the sink reports
// it, retries the same batch and never commits offsets past it; when
// Postgres is back, every row converges and the sink is healthy again.
func TestSinkSurvivesPostgresOutage(t *testing.T) {
	pool, k := newDB(t), newKafka(t)
	var final []*saga.OrderState
	for n := range 10 {
		k.orders(t, order(n, 1, saga.StatusPending))
	}
	k.stock(t, "sku-a", stock(1, 100, 0, 0))
	s := startSink(t, k, pool, Config{WriteTimeout: 2 * time.Second})
	await.Until(t, "first records committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	k.checkCommittedInDB(t, pool, DefaultGroup)
	before := k.committed(t, DefaultGroup)

	resume := haltPostgres(t)
	for n := range 30 {
		o := order(n, 2, saga.StatusConfirmed)
		final = append(final, o)
		k.orders(t, o)
	}
	k.stock(t, "sku-a", stock(2, 90, 10, 0), stock(3, 90, 0, 10))

	stillBefore := func() {
		t.Helper()
		if got := k.committed(t, DefaultGroup); !reflect.DeepEqual(got, before) {
			t.Fatalf("committed offsets while postgres is down: got %v, want them unchanged at %v", got, before)
		}
	}
	await.Until(t, "sink backing off after several failed attempts", waitTimeout, func() error {
		stillBefore()
		if err := s.Health(); err == nil {
			return errors.New("Health is nil")
		}
		if n := s.Stats().DBErrors; n < 3 {
			return fmt.Errorf("%d failed attempts so far", n)
		}
		return nil
	})
	err := s.Health()
	if err == nil || !strings.Contains(err.Error(), "postgres unavailable since") || !strings.Contains(err.Error(), "retrying") {
		t.Fatalf("Health while down: got %v, want \"postgres unavailable since ..., retrying\"", err)
	}
	stillBefore()

	resume()
	await.Until(t, "every record committed after the outage", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	k.checkCommittedInDB(t, pool, DefaultGroup)
	for _, o := range final {
		checkOrder(t, pool, o)
	}
	checkStock(t, pool, "sku-a", stock(3, 90, 0, 10))
	if err := s.Health(); err != nil {
		t.Fatalf("Health after the outage: got %v, want nil", err)
	}
	if st := s.Stats(); st.DeadLetters != 0 || st.RefusedBatches != 0 {
		t.Fatalf("stats: got %+v, want an outage to dead-letter nothing", st)
	}
}

// TestSinkShutdownAbandonsUnwrittenBatch: a context that ends while the
// sink waits for Postgres interrupts the wait, commits nothing for the
// batch, and the next sink of the group writes it.
func TestSinkShutdownAbandonsUnwrittenBatch(t *testing.T) {
	pool, k := newDB(t), newKafka(t)
	first, second := order(1, 1, saga.StatusPending), order(2, 1, saga.StatusPending)
	k.orders(t, first)
	// A backoff far longer than the test: only the context can end the wait.
	s := startSink(t, k, pool, Config{MinBackoff: time.Hour, MaxBackoff: time.Hour, WriteTimeout: 2 * time.Second})
	await.Until(t, "first order committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	before := k.committed(t, DefaultGroup)

	resume := haltPostgres(t)
	k.orders(t, second)
	await.Until(t, "a failed attempt", waitTimeout, func() error {
		if n := s.Stats().DBErrors; n == 0 {
			return errors.New("no failed attempt yet")
		}
		return nil
	})
	start := time.Now()
	if err := s.stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Run returned %s after its context ended, want the backoff wait interrupted", took)
	}
	if got := k.committed(t, DefaultGroup); !reflect.DeepEqual(got, before) {
		t.Fatalf("committed offsets after an abandoned batch: got %v, want %v", got, before)
	}

	resume()
	startSink(t, k, pool, Config{})
	await.Until(t, "the abandoned batch committed by the next sink", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	checkOrder(t, pool, first)
	checkOrder(t, pool, second)
}

package pgsink

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestStoredAt: both write paths set stored_at, by Postgres's clock, when
// they write an order's final version, never for a pending one, and a
// replay of the final version leaves it as it was; StoredAtReader reads it.
func TestStoredAt(t *testing.T) {
	t.Parallel()
	paths := map[string]func(*testing.T, *pgxpool.Pool, *batch){
		"batch": func(t *testing.T, pool *pgxpool.Pool, b *batch) {
			if _, err := writeBatch(t.Context(), pool, b, nil); err != nil {
				t.Fatalf("writeBatch: %v", err)
			}
		},
		"rows": func(t *testing.T, pool *pgxpool.Pool, b *batch) {
			if _, dead, err := writeRows(t.Context(), pool, b, nil); err != nil || len(dead) != 0 {
				t.Fatalf("writeRows: %v, %d dead letters", err, len(dead))
			}
		},
	}
	for name, write := range paths {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool := newDB(t)
			r, err := NewStoredAtReader(pool.Config().ConnString())
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			pending, final := order(1, 1, saga.StatusPending), order(1, 2, saga.StatusConfirmed)
			stored := func() (time.Time, bool) {
				t.Helper()
				at, ok, err := r.StoredAt(t.Context(), final.OrderID)
				if err != nil {
					t.Fatalf("StoredAt: %v", err)
				}
				return at, ok
			}
			if _, ok := stored(); ok {
				t.Fatalf("stored_at of an order not in Postgres: got one, want none")
			}
			write(t, pool, batchOf(pending))
			if at, ok := stored(); ok {
				t.Fatalf("stored_at of a pending order: got %s, want none", at)
			}
			var before time.Time
			if err := pool.QueryRow(t.Context(), "SELECT now()").Scan(&before); err != nil {
				t.Fatal(err)
			}
			write(t, pool, batchOf(final))
			at, ok := stored()
			var after time.Time
			if err := pool.QueryRow(t.Context(), "SELECT now()").Scan(&after); err != nil {
				t.Fatal(err)
			}
			if !ok || at.Before(before) || at.After(after) {
				t.Fatalf("stored_at of the final version: got %s, %v; want one in [%s, %s]", at, ok, before, after)
			}
			write(t, pool, batchOf(final, pending))
			if again, ok := stored(); !ok || !again.Equal(at) {
				t.Fatalf("stored_at after a replay: got %s, %v; want %s unchanged", again, ok, at)
			}
		})
	}
}

// batchOf is a batch of the orders' changelog records, in this order.
func batchOf(states ...*saga.OrderState) *batch {
	recs := make([]*kgo.Record, len(states))
	for i, o := range states {
		recs[i] = &kgo.Record{Topic: string(topology.OrdersTable()), Key: []byte(o.OrderID.String()), Value: o.Encode(), Offset: int64(i)}
	}
	return newBatch(recs)
}

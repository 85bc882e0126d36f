package pgsink

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// benchBatch is the number of order states written per operation: one full
// batch at the default MaxBatch.
const benchBatch = 5000

// BenchmarkSinkBatch measures the write path of one batch of 5000 order
// states (with 1-3 lines each) against the real Postgres of TestMain, for
// the sink's unnest upsert path and for the row-at-a-time alternatives, so
// the ratio is visible. "new" writes orders never seen (inserts); "update"
// writes a newer version of the same orders (updates, lines unchanged).
func BenchmarkSinkBatch(b *testing.B) {
	paths := []struct {
		name  string
		write func(context.Context, *pgxpool.Pool, *batch) error
	}{
		{"unnest-upsert", func(ctx context.Context, pool *pgxpool.Pool, bt *batch) error {
			_, err := writeBatch(ctx, pool, bt, nil)
			return err
		}},
		{"per-row-upsert", writeNaive},
		{"per-row-savepoint", func(ctx context.Context, pool *pgxpool.Pool, bt *batch) error {
			_, _, err := writeRows(ctx, pool, bt, nil)
			return err
		}},
	}
	workloads := []struct {
		name  string
		batch func(i int) *batch
	}{
		{"new", func(i int) *batch { return benchOrders(i*benchBatch, 1) }},
		{"update", func(i int) *batch { return benchOrders(0, uint64(i+1)) }},
	}
	for _, p := range paths {
		for _, w := range workloads {
			b.Run(p.name+"/"+w.name, func(b *testing.B) {
				pool := newDB(b)
				ctx := b.Context()
				for i := range b.N {
					b.StopTimer()
					bt := w.batch(i)
					b.StartTimer()
					if err := p.write(ctx, pool, bt); err != nil {
						b.Fatalf("write batch %d: %v", i, err)
					}
				}
				b.ReportMetric(float64(benchBatch*b.N)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}

// benchOrders is a batch of benchBatch orders numbered from first, at version.
func benchOrders(first int, version uint64) *batch {
	recs := make([]*kgo.Record, benchBatch)
	for i := range recs {
		o := order(first+i, version, saga.StatusConfirmed)
		recs[i] = &kgo.Record{Topic: string(topology.OrdersTable()), Key: []byte(o.OrderID.String()), Value: o.Encode()}
	}
	return newBatch(recs)
}

// writeNaive is what a sink without batching does: one INSERT ... ON
// CONFLICT per row, in one transaction.
func writeNaive(ctx context.Context, pool *pgxpool.Pool, b *batch) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, r := range b.orders {
			if _, err := upsertOrder(ctx, tx, r.state); err != nil {
				return err
			}
		}
		for _, r := range b.stock {
			if _, err := upsertStock(ctx, tx, r); err != nil {
				return err
			}
		}
		return nil
	})
}

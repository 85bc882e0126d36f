package pgsink

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// BenchmarkNewBatch measures building one batch of benchBatch polled
// records, without Postgres: newBatch (decode, keep the newest version of
// each key, sort) and the columns writeBatch sends for it. "orders-new" is
// the input of BenchmarkSinkBatch's "new" workload, every record a new
// order; "changelog" is what the tables' changelogs carry, every order at
// each of its versions and the stock of its SKUs after every reserve and
// commit, so most records are replaced by a newer one of the same batch.
func BenchmarkNewBatch(b *testing.B) {
	for _, w := range []struct {
		name string
		recs []*kgo.Record
	}{
		{"orders-new", benchNewOrderRecords()},
		{"changelog", benchChangelogRecords()},
	} {
		b.Run(w.name, func(b *testing.B) {
			want := newBatch(w.recs)
			if len(want.dead) > 0 {
				b.Fatalf("%s: %d dead letters, want none (first: %v)", w.name, len(want.dead), want.dead[0].reason)
			}
			b.Logf("%s: %d records -> %d orders, %d lines, %d stock rows", w.name, len(w.recs), len(want.orders), want.itemCount(), len(want.stock))
			b.ReportAllocs()
			for b.Loop() {
				columnsOf(newBatch(w.recs))
			}
			b.ReportMetric(float64(len(w.recs)*b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// benchRecords assigns partitions and offsets to records as the brokers
// would: partitions by the shared partitioner, offsets growing per partition.
type benchRecords struct {
	recs []*kgo.Record
	next map[string]map[int32]int64
}

func (r *benchRecords) add(topic string, key, value []byte) {
	p := topology.PartitionFor(key, topology.DefaultConfig().Partitions)
	if r.next == nil {
		r.next = make(map[string]map[int32]int64)
	}
	if r.next[topic] == nil {
		r.next[topic] = make(map[int32]int64)
	}
	off := r.next[topic][p]
	r.next[topic][p]++
	r.recs = append(r.recs, &kgo.Record{Topic: topic, Partition: p, Offset: off, Key: key, Value: value})
}

// benchNewOrderRecords are benchBatch orders-table records of distinct
// orders, as benchOrders makes them.
func benchNewOrderRecords() []*kgo.Record {
	var r benchRecords
	for n := range benchBatch {
		o := order(n, 1, saga.StatusConfirmed)
		r.add(string(topology.OrdersTable()), []byte(o.OrderID.String()), o.Encode())
	}
	return r.recs
}

// benchChangelogRecords are benchBatch records of the two changelogs as the
// saga writes them: per order, its pending state (version 1), one version
// per line result, then the confirmed state; per line, the stock of the
// line's SKU after the reserve and after the commit, with the holds of the
// orders in flight on it.
func benchChangelogRecords() []*kgo.Record {
	var (
		r        benchRecords
		stockVer = map[string]uint64{}
		ordersT  = string(topology.OrdersTable())
		stockT   = string(topology.InventoryTable())
	)
	putStock := func(sku string, inFlight int) {
		stockVer[sku]++
		v := stockVer[sku]
		st := stock(v, 100_000-int64(v), int64(2*inFlight), int64(v))
		for h := range inFlight {
			st.PutHold(saga.Hold{OrderID: saga.OrderIDForKey("pgsink-bench", fmt.Sprintf("%s-%d-%d", sku, v, h)),
				Quantity: 2, Outcome: saga.HoldReserved, Offset: int64(v) + int64(h)})
		}
		r.add(stockT, []byte(sku), st.Encode())
	}
	for n := 0; len(r.recs) < benchBatch; n++ {
		versions := uint64(len(order(n, 1, saga.StatusPending).Lines)) + 2
		final := order(n, versions, saga.StatusConfirmed)
		for v := uint64(1); v < versions; v++ {
			o := order(n, v, saga.StatusPending)
			r.add(ordersT, []byte(o.OrderID.String()), o.Encode())
			if line := int(v) - 1; line < len(o.Lines) {
				putStock(o.Lines[line].SKU, 4) // reserved
			}
		}
		for _, l := range final.Lines {
			putStock(l.SKU, 3) // committed
		}
		r.add(ordersT, []byte(final.OrderID.String()), final.Encode())
	}
	return r.recs[:benchBatch]
}

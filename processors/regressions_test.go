package processors_test

import (
	"testing"
	"time"

	"github.com/lovoo/goka"
	"github.com/lovoo/goka/storage"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/processors"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus"
)

type updateCtx struct{ off int64 }

func (updateCtx) Topic() goka.Stream    { return "t" }
func (updateCtx) Partition() int32      { return 0 }
func (u updateCtx) Offset() int64       { return u.off }
func (updateCtx) Headers() goka.Headers { return nil }
func (updateCtx) Timestamp() time.Time  { return time.Time{} }

// TestRegressionsKeepTheNewerState: a table record older than the stored
// state (orders: Version; stock: LastOffset) is counted and not applied;
// equal or newer ones are applied; two detectors of one registry share
// the counter.
func TestRegressionsKeepTheNewerState(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := processors.NewRegressions(reg, testlog.New())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := processors.NewRegressions(reg, testlog.New()); err != nil {
		t.Fatalf("second detector on the same registry: %v", err)
	}
	order := func(v uint64) []byte { return (&saga.OrderState{Version: v, Status: saga.StatusPending}).Encode() }
	stock := func(last int64) []byte {
		return (&saga.StockState{Version: 1, Available: 1, LastOffset: last}).Encode()
	}
	for _, tc := range []struct {
		table      goka.Table
		values     [][]byte
		wantStored []byte
		wantCount  float64
	}{
		{topology.OrdersTable(), [][]byte{order(1), order(3), order(2)}, order(3), 1},
		{topology.OrdersTable(), [][]byte{order(1), order(2), order(2)}, order(2), 0},
		{topology.InventoryTable(), [][]byte{stock(10), stock(4)}, stock(10), 1},
		{topology.InventoryTable(), [][]byte{stock(4), stock(10), nil}, nil, 0},
	} {
		s := storage.NewMemory()
		var applied [][]byte
		cb := r.Update(tc.table, func(_ goka.UpdateContext, _ string, v []byte) { applied = append(applied, v) })
		before := regressions(t, reg, string(tc.table))
		for i, v := range tc.values {
			if err := cb(updateCtx{int64(i)}, s, "k", v); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Get("k")
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(tc.wantStored) {
			t.Errorf("%s %d values: stored %x, want %x", tc.table, len(tc.values), got, tc.wantStored)
		}
		if n := regressions(t, reg, string(tc.table)) - before; n != tc.wantCount {
			t.Errorf("%s %d values: regressions counted %v, want %v", tc.table, len(tc.values), n, tc.wantCount)
		}
		if len(applied) != len(tc.values) {
			t.Errorf("%s: applied told %d times, want %d", tc.table, len(applied), len(tc.values))
		}
	}
}

func regressions(t *testing.T, reg *prometheus.Registry, table string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "orderpipe_table_regressions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "table" && l.GetValue() == table {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

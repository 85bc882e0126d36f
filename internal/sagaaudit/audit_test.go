package sagaaudit_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/kafkatest"
	"github.com/orderpipe/orderpipe/internal/membroker"
	"github.com/orderpipe/orderpipe/internal/sagaaudit"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// logs is a fresh in-process cluster with the topology's topics, on which a
// case writes its records by hand.
type logs struct {
	t      *testing.T
	topo   topology.Config
	cl     *kgo.Client // partitions like every producer of orderpipe
	manual *kgo.Client // writes where it is told
	adm    *kadm.Client
}

func newLogs(t *testing.T) *logs {
	t.Helper()
	c, err := membroker.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	l := &logs{t: t, topo: topology.DefaultConfig()}
	l.topo.Partitions = 3
	if err := kafkatest.EnsureTopics(t.Context(), c.Brokers(), l.topo, testlog.New()); err != nil {
		t.Fatal(err)
	}
	if l.cl, err = kgo.NewClient(kgo.SeedBrokers(c.Brokers()...), kgo.RecordPartitioner(topology.Partitioner())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.cl.Close)
	if l.manual, err = kgo.NewClient(kgo.SeedBrokers(c.Brokers()...), kgo.RecordPartitioner(kgo.ManualPartitioner())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.manual.Close)
	l.adm = kadm.NewClient(l.cl)
	return l
}

// put writes one record and returns its offset.
func (l *logs) put(cl *kgo.Client, topic, key string, partition int32, value []byte) int64 {
	l.t.Helper()
	rec := &kgo.Record{Topic: topic, Key: []byte(key), Value: value, Partition: partition}
	if err := cl.ProduceSync(l.t.Context(), rec).FirstErr(); err != nil {
		l.t.Fatalf("produce to %s: %v", topic, err)
	}
	return rec.Offset
}

func (l *logs) stock(sku string, st *saga.StockState) int64 {
	return l.put(l.cl, string(topology.InventoryTable()), sku, 0, st.Encode())
}

func (l *logs) order(st *saga.OrderState) int64 {
	return l.put(l.cl, string(topology.OrdersTable()), st.OrderID.String(), 0, st.Encode())
}

func (l *logs) command(sku string, c saga.InventoryCommand) int64 {
	return l.put(l.cl, string(topology.InventoryCommands), sku, 0, c.Encode())
}

// commit commits offset for the inventory group on sku's partition of
// inventory.commands, as the group does once it processed what is below.
func (l *logs) commit(sku string, offset int64) {
	l.t.Helper()
	var os kadm.Offsets
	os.AddOffset(string(topology.InventoryCommands), topology.PartitionFor([]byte(sku), l.topo.Partitions), offset, -1)
	if err := l.adm.CommitAllOffsets(l.t.Context(), string(topology.InventoryGroup), os); err != nil {
		l.t.Fatalf("commit: %v", err)
	}
}

var (
	orderX = saga.OrderIDForKey("", "x")
	orderY = saga.OrderIDForKey("", "y")
	t0     = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

// stockAt is a stock state; holds are given as order and offset, 2 units
// each.
func stockAt(version uint64, available, reserved, sold, lastOffset int64, updated time.Time, holds ...saga.Hold) *saga.StockState {
	st := saga.NewStockState()
	st.Version, st.Available, st.Reserved, st.Sold, st.LastOffset, st.UpdatedAt = version, available, reserved, sold, lastOffset, updated
	for _, h := range holds {
		st.PutHold(h)
	}
	return st
}

func hold(id saga.OrderID, offset int64) saga.Hold {
	return saga.Hold{OrderID: id, Quantity: 2, Outcome: saga.HoldReserved, Offset: offset}
}

func orderAt(id saga.OrderID, version uint64, status saga.Status, result saga.LineResult, updated time.Time) *saga.OrderState {
	return &saga.OrderState{
		Version: version, OrderID: id, CustomerID: "c", Currency: "EUR", Status: status,
		CreatedAt: t0, UpdatedAt: updated,
		Lines: []saga.Line{{Item: saga.Item{SKU: "A", Quantity: 2, UnitPriceCents: 100}, Result: result, HoldOffset: 1,
			RequestedAt: t0, AnsweredAt: updated}},
	}
}

func TestAudit(t *testing.T) {
	for _, c := range []struct {
		name  string
		write func(l *logs)
		want  map[sagaaudit.Rule]int
		// tablesOnly: the case writes no commands, so only the
		// changelog audits (Tables) apply to it.
		tablesOnly bool
	}{
		{
			// The saga as it should be: a SKU set, reserved, and sold, with
			// no-op commands and replays that rewrite a state with a new
			// timestamp only.
			name: "sound",
			write: func(l *logs) {
				l.command("A", saga.InventoryCommand{Kind: saga.CmdSetStock, Available: 10})                 // 0
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderX, Quantity: 2})   // 1
				l.command("A", saga.InventoryCommand{Kind: saga.CmdCommit, OrderID: orderY, HoldOffset: 1})  // 2: no hold of Y
				l.command("A", saga.InventoryCommand{Kind: saga.CmdCommit, OrderID: orderX, HoldOffset: 1})  // 3
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderY, Quantity: 100}) // 4: refused
				l.command("A", saga.InventoryCommand{Kind: saga.CmdRelease, OrderID: orderX, HoldOffset: 1}) // 5: settled already
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderY, Quantity: 2})   // 6: not committed
				l.stock("A", stockAt(1, 10, 0, 0, 0, t0))
				l.stock("A", stockAt(2, 8, 2, 0, 1, t0.Add(time.Second), hold(orderX, 1)))
				l.stock("A", stockAt(2, 8, 2, 0, 1, t0.Add(2*time.Second), hold(orderX, 1))) // a replay's rewrite
				l.stock("A", stockAt(3, 8, 0, 2, 3, t0.Add(3*time.Second)))
				l.commit("A", 6)
				l.order(orderAt(orderX, 1, saga.StatusPending, saga.LineAwaiting, t0))
				l.order(orderAt(orderX, 2, saga.StatusConfirmed, saga.LineReserved, t0.Add(time.Second)))
				l.order(orderAt(orderX, 2, saga.StatusConfirmed, saga.LineReserved, t0.Add(5*time.Second)))
			},
		},
		{
			name: "stock version and last offset go back",
			write: func(l *logs) {
				l.stock("A", stockAt(1, 10, 0, 0, 0, t0))
				l.stock("A", stockAt(3, 6, 4, 0, 5, t0, hold(orderX, 1), hold(orderY, 5)))
				l.stock("A", stockAt(2, 8, 2, 0, 1, t0, hold(orderX, 1)))
			},
			want:       map[sagaaudit.Rule]int{sagaaudit.VersionBack: 1, sagaaudit.LastOffsetBack: 1},
			tablesOnly: true,
		},
		{
			// franz-go after OUT_OF_ORDER_SEQUENCE_NUMBER: a batch already
			// written is written again, under a new epoch.
			name: "batch re-sent after newer records",
			write: func(l *logs) {
				l.command("A", saga.InventoryCommand{Kind: saga.CmdSetStock, Available: 10})               // 0
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderX, Quantity: 2}) // 1
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderY, Quantity: 2}) // 2
				l.stock("A", stockAt(1, 10, 0, 0, 0, t0))
				l.stock("A", stockAt(2, 8, 2, 0, 1, t0, hold(orderX, 1)))
				l.stock("A", stockAt(3, 6, 4, 0, 2, t0, hold(orderX, 1), hold(orderY, 2)))
				l.stock("A", stockAt(2, 8, 2, 0, 1, t0, hold(orderX, 1)))
				l.stock("A", stockAt(3, 6, 4, 0, 2, t0, hold(orderX, 1), hold(orderY, 2)))
				l.commit("A", 3)
			},
			want: map[sagaaudit.Rule]int{sagaaudit.Resent: 1},
		},
		{
			name: "stock last offset goes back under a higher version",
			write: func(l *logs) {
				l.stock("A", stockAt(1, 10, 0, 0, 5, t0))
				l.stock("A", stockAt(2, 9, 0, 0, 3, t0))
			},
			want:       map[sagaaudit.Rule]int{sagaaudit.LastOffsetBack: 1},
			tablesOnly: true,
		},
		{
			name: "stock version written twice with other states",
			write: func(l *logs) {
				l.stock("A", stockAt(2, 8, 2, 0, 1, t0, hold(orderX, 1)))
				l.stock("A", stockAt(2, 8, 2, 0, 1, t0, hold(orderY, 1)))
			},
			want:       map[sagaaudit.Rule]int{sagaaudit.VersionForked: 1},
			tablesOnly: true,
		},
		{
			name: "stock version forked behind a higher one",
			write: func(l *logs) {
				l.stock("A", stockAt(2, 8, 2, 0, 1, t0, hold(orderX, 1)))
				l.stock("A", stockAt(1, 10, 0, 0, 0, t0))
				l.stock("A", stockAt(2, 9, 1, 0, 1, t0, hold(orderY, 1)))
			},
			want:       map[sagaaudit.Rule]int{sagaaudit.VersionBack: 1, sagaaudit.LastOffsetBack: 1, sagaaudit.VersionForked: 1},
			tablesOnly: true,
		},
		{
			name: "order version goes back",
			write: func(l *logs) {
				l.order(orderAt(orderX, 2, saga.StatusPending, saga.LineAwaiting, t0))
				l.order(orderAt(orderX, 1, saga.StatusPending, saga.LineAwaiting, t0))
			},
			want: map[sagaaudit.Rule]int{sagaaudit.VersionBack: 1},
		},
		{
			name: "order version written twice with other states",
			write: func(l *logs) {
				l.order(orderAt(orderX, 2, saga.StatusConfirmed, saga.LineReserved, t0))
				l.order(orderAt(orderX, 2, saga.StatusRejected, saga.LineInsufficient, t0))
			},
			want: map[sagaaudit.Rule]int{sagaaudit.VersionForked: 1},
		},
		{
			name: "undecodable table record",
			write: func(l *logs) {
				l.put(l.cl, string(topology.InventoryTable()), "A", 0, []byte("{\"json\":true}"))
			},
			want: map[sagaaudit.Rule]int{sagaaudit.Undecodable: 1},
		},
		{
			name: "table record in the wrong partition",
			write: func(l *logs) {
				other := (topology.PartitionFor([]byte("A"), l.topo.Partitions) + 1) % l.topo.Partitions
				l.put(l.manual, string(topology.InventoryTable()), "A", other, stockAt(1, 10, 0, 0, 0, t0).Encode())
			},
			want:       map[sagaaudit.Rule]int{sagaaudit.WrongPartition: 1},
			tablesOnly: true,
		},
		{
			// The lost sale of broker-kill-run: the changelog's last record
			// predates a Reserve whose offset was committed.
			name: "reserve lost",
			write: func(l *logs) {
				l.command("A", saga.InventoryCommand{Kind: saga.CmdSetStock, Available: 10})               // 0
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderX, Quantity: 2}) // 1
				l.stock("A", stockAt(1, 10, 0, 0, 0, t0))
				l.commit("A", 2)
			},
			want: map[sagaaudit.Rule]int{sagaaudit.LostCommand: 1},
		},
		{
			name: "commit lost",
			write: func(l *logs) {
				l.command("A", saga.InventoryCommand{Kind: saga.CmdSetStock, Available: 10})                // 0
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderX, Quantity: 2})  // 1
				l.command("A", saga.InventoryCommand{Kind: saga.CmdCommit, OrderID: orderX, HoldOffset: 1}) // 2
				l.stock("A", stockAt(1, 10, 0, 0, 0, t0))
				l.stock("A", stockAt(2, 8, 2, 0, 1, t0, hold(orderX, 1)))
				l.commit("A", 3)
			},
			want: map[sagaaudit.Rule]int{sagaaudit.LostCommand: 1},
		},
		{
			name: "set-stock of a SKU the changelog never saw lost",
			write: func(l *logs) {
				l.command("B", saga.InventoryCommand{Kind: saga.CmdSetStock, Available: 5})
				l.commit("B", 1)
			},
			want: map[sagaaudit.Rule]int{sagaaudit.LostCommand: 1},
		},
		{
			// The lost sale again, found after the fact: the write of the
			// hold of X was lost, the inventory was rebuilt from the record
			// before it and went on. The Commit of X finds no hold, so no
			// command is lost now; the lineage is not the commands' fold.
			name: "hold lost under later writes",
			write: func(l *logs) {
				l.command("A", saga.InventoryCommand{Kind: saga.CmdSetStock, Available: 10})                // 0
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderX, Quantity: 2})  // 1
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderY, Quantity: 2})  // 2
				l.command("A", saga.InventoryCommand{Kind: saga.CmdCommit, OrderID: orderX, HoldOffset: 1}) // 3
				l.stock("A", stockAt(1, 10, 0, 0, 0, t0))
				l.stock("A", stockAt(2, 8, 2, 0, 2, t0, hold(orderY, 2)))
				l.commit("A", 4)
			},
			want: map[sagaaudit.Rule]int{sagaaudit.Diverged: 1},
		},
		{
			// None of these changes the state it meets: a commit of another
			// hold, a reserve refused, a reserve answered from its hold, a
			// release of nothing; and the commit above the committed
			// offset is still to be applied.
			name: "no-op commands are not lost",
			write: func(l *logs) {
				l.command("A", saga.InventoryCommand{Kind: saga.CmdSetStock, Available: 2})                  // 0
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderX, Quantity: 2})   // 1
				l.command("A", saga.InventoryCommand{Kind: saga.CmdCommit, OrderID: orderX, HoldOffset: 7})  // 2
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderY, Quantity: 1})   // 3
				l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderX, Quantity: 2})   // 4
				l.command("A", saga.InventoryCommand{Kind: saga.CmdRelease, OrderID: orderY, HoldOffset: 3}) // 5
				l.put(l.cl, string(topology.InventoryCommands), "A", 0, []byte("garbage"))                   // 6: dead-lettered
				l.command("A", saga.InventoryCommand{Kind: saga.CmdCommit, OrderID: orderX, HoldOffset: 1})  // 7
				l.stock("A", stockAt(1, 2, 0, 0, 0, t0))
				l.stock("A", stockAt(2, 0, 2, 0, 1, t0, hold(orderX, 1)))
				l.commit("A", 7)
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLogs(t)
			c.write(l)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			audit := sagaaudit.Audit
			if c.tablesOnly {
				audit = sagaaudit.Tables
			}
			r, err := audit(ctx, l.cl, l.topo)
			if err != nil {
				t.Fatal(err)
			}
			got := map[sagaaudit.Rule]int{}
			for _, f := range r.Findings {
				got[f.Rule]++
			}
			if !equalCounts(got, c.want) {
				t.Errorf("findings by rule: got %v, want %v\n%v", got, c.want, r.Err())
			}
			if (r.Err() == nil) != (len(c.want) == 0) {
				t.Errorf("Err() = %v with %d findings", r.Err(), len(r.Findings))
			}
			for rule := range c.want {
				if err := r.Err(); err == nil || !strings.Contains(err.Error(), string(rule)) {
					t.Errorf("Err() = %v, want it to name %s", err, rule)
				}
			}
		})
	}
}

func equalCounts(a, b map[sagaaudit.Rule]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// TestAuditRecoveredState checks what the report says a rebuild recovers:
// the newest state of each key, in the partition it hashes to.
func TestAuditRecoveredState(t *testing.T) {
	l := newLogs(t)
	l.stock("A", stockAt(1, 10, 0, 0, 0, t0))
	l.stock("A", stockAt(2, 8, 2, 0, 1, t0, hold(orderX, 1)))
	l.stock("A", stockAt(1, 10, 0, 0, 0, t0.Add(time.Second))) // older: a rebuild keeps version 2
	l.order(orderAt(orderX, 1, saga.StatusPending, saga.LineAwaiting, t0))
	l.order(orderAt(orderX, 2, saga.StatusConfirmed, saga.LineReserved, t0))
	l.order(orderAt(orderX, 1, saga.StatusPending, saga.LineAwaiting, t0.Add(time.Second)))
	other := (topology.PartitionFor([]byte("B"), l.topo.Partitions) + 1) % l.topo.Partitions
	l.put(l.manual, string(topology.InventoryTable()), "B", other, stockAt(1, 10, 0, 0, 0, t0).Encode())
	r, err := sagaaudit.Tables(t.Context(), l.cl, l.topo)
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Stock["A"]; st == nil || st.Version != 2 || st.Reserved != 2 || st.HoldCount() != 1 {
		t.Errorf("stock A: got %+v, want version 2 with 2 reserved in one hold", st)
	}
	if st := r.Orders[orderX.String()]; st == nil || st.Version != 2 || st.Status != saga.StatusConfirmed {
		t.Errorf("order X: got %+v, want version 2, confirmed", st)
	}
	if st, ok := r.Stock["B"]; ok {
		t.Errorf("stock B: got %+v from a partition its key does not hash to, want none", st)
	}
	if got, want := r.Records[string(topology.InventoryTable())], 4; got != want {
		t.Errorf("inventory table records read: got %d, want %d", got, want)
	}
	if r.Committed != nil {
		t.Errorf("Tables read committed offsets %v; only Audit does", r.Committed)
	}
}

// TestDump checks that a dump decodes every record, partition by
// partition, and shows what it cannot decode.
func TestDump(t *testing.T) {
	l := newLogs(t)
	l.stock("A", stockAt(1, 10, 0, 0, 0, t0))
	l.stock("A", stockAt(2, 8, 2, 0, 1, t0, hold(orderX, 1)))
	l.put(l.cl, string(topology.InventoryTable()), "A", 0, []byte("junk"))
	l.command("A", saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: orderX, Quantity: 2})
	var b strings.Builder
	if err := sagaaudit.Dump(t.Context(), l.cl, &b, string(topology.InventoryTable()), string(topology.InventoryCommands)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	p := topology.PartitionFor([]byte("A"), l.topo.Partitions)
	for _, want := range []string{
		"# inventory-table partition " + strconv.Itoa(int(p)) + ": 3 records",
		`offset=0 `, `key="A" version=1 available=10`,
		`offset=1 `, "version=2 available=8 reserved=2 sold=0 last_offset=1", orderX.String() + "×2@1/1",
		`offset=2 `, "undecodable",
		"# inventory.commands partition " + strconv.Itoa(int(p)) + ": 1 records",
		"reserve of 2 for order " + orderX.String(),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dump lacks %q:\n%s", want, out)
		}
	}
}

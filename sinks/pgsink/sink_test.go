package pgsink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/saga"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/orderpipe/orderpipe/topology"
)

// TestSinkWritesRows: orders, order_items and inventory land with the right
// columns, and the counters and metrics say so.
func TestSinkWritesRows(t *testing.T) {
	t.Parallel()
	pool, k := newDB(t), newKafka(t)
	orders := []*saga.OrderState{
		order(1, 1, saga.StatusPending),
		order(2, 4, saga.StatusConfirmed),
		order(3, 5, saga.StatusRejected),
	}
	k.orders(t, orders...)
	k.stock(t, "sku-a", stock(2, 10, 2, 3))
	k.stock(t, "sku-b", stock(7, 0, 0, 12))

	reg := prometheus.NewPedanticRegistry()
	s := startSink(t, k, pool, Config{}, reg)
	await.Until(t, "all offsets committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })

	for _, o := range orders {
		checkOrder(t, pool, o)
		checkItems(t, pool, o)
	}
	checkStock(t, pool, "sku-a", stock(2, 10, 2, 3))
	checkStock(t, pool, "sku-b", stock(7, 0, 0, 12))
	if err := s.Health(); err != nil {
		t.Fatalf("Health: got %v, want nil", err)
	}
	st := s.Stats()
	items := uint64(1 + 2 + 3) // order(n) has 1+n%3 lines
	if st.Records != 5 || st.OrderRows != 3 || st.ItemRows != items || st.InventoryRows != 2 || st.DeadLetters != 0 || st.DBErrors != 0 {
		t.Fatalf("stats: got %+v, want 5 records, 3 order rows, %d item rows, 2 inventory rows, no errors", st, items)
	}
	if st.LastCommit.IsZero() || st.Commits == 0 {
		t.Fatalf("stats: got no commit (%+v), want at least one", st)
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"orderpipe_sink_rows_total{orders}":      3,
		"orderpipe_sink_rows_total{order_items}": float64(items),
		"orderpipe_sink_rows_total{inventory}":   2,
		"orderpipe_sink_records_total":           5,
		"orderpipe_sink_backing_off":             0,
	} {
		if got[name] != want {
			t.Errorf("metric %s: got %v, want %v", name, got[name], want)
		}
	}
	if _, ok := got["orderpipe_sink_last_commit_age_seconds"]; !ok {
		t.Errorf("metric orderpipe_sink_last_commit_age_seconds: missing")
	}
}

// TestSinkNeverMovesARowBackwards: a lower version arriving after a higher
// one, and an equal version with other content, leave the row alone.
func TestSinkNeverMovesARowBackwards(t *testing.T) {
	t.Parallel()
	pool, k := newDB(t), newKafka(t)
	v5 := order(1, 5, saga.StatusConfirmed)
	k.orders(t, v5)
	k.stock(t, "sku-a", stock(5, 50, 0, 5))
	s := startSink(t, k, pool, Config{})
	await.Until(t, "version 5 committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	before := s.Stats()

	v3 := order(1, 3, saga.StatusPending)
	sameVersion := order(1, 5, saga.StatusRejected)
	k.orders(t, v3)
	k.orders(t, sameVersion)
	k.stock(t, "sku-a", stock(3, 99, 1, 0))
	await.Until(t, "stale versions committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })

	checkOrder(t, pool, v5)
	checkStock(t, pool, "sku-a", stock(5, 50, 0, 5))
	after := s.Stats()
	if after.OrderRows != before.OrderRows || after.InventoryRows != before.InventoryRows {
		t.Fatalf("rows changed by stale versions: got %+v after, want the row counts of %+v", after, before)
	}
}

// TestSinkReplayLeavesTablesUnchanged: a second group replaying both
// changelogs from the start leaves every table identical.
func TestSinkReplayLeavesTablesUnchanged(t *testing.T) {
	t.Parallel()
	pool, k := newDB(t), newKafka(t)
	for n := range 60 {
		k.orders(t, order(n, 1, saga.StatusPending), order(n, 2, []saga.Status{saga.StatusConfirmed, saga.StatusRejected}[n%2]))
	}
	for i := range 5 {
		sku := fmt.Sprintf("sku-%d", i)
		k.stock(t, sku, stock(1, 100, 0, 0), stock(2, 90, 10, 0), stock(3, 90, 0, 10))
	}
	first := startSink(t, k, pool, Config{})
	await.Until(t, "first group committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	if err := first.stop(); err != nil {
		t.Fatalf("first sink Run: got %v, want nil", err)
	}
	want := dump(t, pool)

	replay := startSink(t, k, pool, Config{Group: "replay"})
	await.Until(t, "replay group committed", waitTimeout, func() error { return k.allCommitted(t, "replay") })
	if got := dump(t, pool); got != want {
		t.Fatalf("tables after replay:\ngot  %s\nwant %s", got, want)
	}
	st := replay.Stats()
	if st.Records != 60*2+5*3 || st.OrderRows+st.ItemRows+st.InventoryRows != 0 {
		t.Fatalf("replay stats: got %+v, want 135 records and no row changed", st)
	}
}

// TestSinkKeepsNewestOfManyVersions: hundreds of versions of one key in one
// poll, out of order, end as the highest version (and do not trip
// Postgres's "ON CONFLICT cannot affect row a second time").
func TestSinkKeepsNewestOfManyVersions(t *testing.T) {
	t.Parallel()
	pool, k := newDB(t), newKafka(t)
	const versions = 300
	var states []*saga.OrderState
	var stocks []*saga.StockState
	for v := range versions {
		states = append(states, order(42, uint64(v+1), []saga.Status{saga.StatusPending, saga.StatusConfirmed}[v%2]))
		stocks = append(stocks, stock(uint64(v+1), int64(1000-v), int64(v), 0))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(states), func(i, j int) { states[i], states[j] = states[j], states[i] })
	rng.Shuffle(len(stocks), func(i, j int) { stocks[i], stocks[j] = stocks[j], stocks[i] })
	k.orders(t, states...)
	k.stock(t, "sku-hot", stocks...)

	s := startSink(t, k, pool, Config{})
	await.Until(t, "all offsets committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	checkOrder(t, pool, order(42, versions, saga.StatusConfirmed))
	checkItems(t, pool, order(42, versions, saga.StatusConfirmed))
	checkStock(t, pool, "sku-hot", stock(versions, 1000-(versions-1), versions-1, 0))
	st := s.Stats()
	t.Logf("stats after %d versions of one order and one SKU: %+v", versions, st)
	if st.DBErrors != 0 || st.RefusedBatches != 0 || st.DeadLetters != 0 {
		t.Fatalf("stats: got %+v, want no db error, refused batch or dead letter", st)
	}
	if st.OrderRows > st.Batches || st.InventoryRows > st.Batches {
		t.Fatalf("stats: got %+v, want at most one change per key and batch", st)
	}
}

// dlqRecords reads the dead-letter topic from the start until it holds n
// records.
func dlqRecords(t *testing.T, k *kafka, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.ConsumeTopics(string(topology.DeadLetter)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("dlq consumer: %v", err)
	}
	defer cl.Close()
	var got []*kgo.Record
	await.Until(t, fmt.Sprintf("%d dead letters", n), waitTimeout, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		got = append(got, cl.PollFetches(ctx).Records()...)
		if len(got) < n {
			return fmt.Errorf("got %d dead letters, want %d", len(got), n)
		}
		return nil
	})
	if len(got) != n {
		t.Fatalf("dead letters: got %d, want %d", len(got), n)
	}
	return got
}

func headers(r *kgo.Record) map[string]string {
	h := map[string]string{}
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value)
	}
	return h
}

// TestSinkDeadLettersMalformedRecords: records that cannot be decoded reach
// orders.dlq with their origin and reason, tombstones are ignored, and the
// sink goes on with later records.
func TestSinkDeadLettersMalformedRecords(t *testing.T) {
	t.Parallel()
	pool, k := newDB(t), newKafka(t)
	first, later := order(1, 1, saga.StatusPending), order(2, 1, saga.StatusPending)
	k.orders(t, first)
	bad := []*kgo.Record{
		{Topic: string(topology.OrdersTable()), Key: []byte("not-an-order"), Value: []byte{1, 99, 0}},
		{Topic: string(topology.InventoryTable()), Key: []byte("sku-a"), Value: []byte("{\"json\":true}")},
		// A valid state under another order's key.
		{Topic: string(topology.OrdersTable()), Key: []byte(later.OrderID.String()), Value: first.Encode()},
	}
	k.produce(t, bad...)
	k.produce(t, &kgo.Record{Topic: string(topology.OrdersTable()), Key: []byte(first.OrderID.String())}) // tombstone
	k.orders(t, later)

	s := startSink(t, k, pool, Config{})
	await.Until(t, "all offsets committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	checkOrder(t, pool, first)
	checkOrder(t, pool, later)

	byOrigin := map[string]*kgo.Record{}
	for _, r := range bad {
		byOrigin[fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)] = r
	}
	for _, d := range dlqRecords(t, k, len(bad)) {
		h := headers(d)
		origin := fmt.Sprintf("%s/%s/%s", h[topology.HeaderDLQTopic], h[topology.HeaderDLQPartition], h[topology.HeaderDLQOffset])
		src, ok := byOrigin[origin]
		if !ok {
			t.Fatalf("dead letter from %s: not one of the malformed records %v", origin, byOrigin)
		}
		if string(d.Key) != string(src.Key) || string(d.Value) != string(src.Value) {
			t.Errorf("dead letter from %s: got key %q value %x, want key %q value %x", origin, d.Key, d.Value, src.Key, src.Value)
		}
		if !strings.Contains(h[topology.HeaderDLQReason], saga.ErrMalformed.Error()) {
			t.Errorf("dead letter from %s: got reason %q, want it to say %q", origin, h[topology.HeaderDLQReason], saga.ErrMalformed)
		}
		delete(byOrigin, origin)
	}
	if st := s.Stats(); st.DeadLetters != uint64(len(bad)) || st.DBErrors != 0 {
		t.Fatalf("stats: got %+v, want %d dead letters and no db error", st, len(bad))
	}
	if err := s.Health(); err != nil {
		t.Fatalf("Health: got %v, want nil", err)
	}
}

// TestSinkDeadLettersRowsPostgresRefuses: a batch with rows Postgres
// refuses (data errors) is written row by row: the good rows land, the
// refused ones go to orders.dlq with the SQLSTATE, and nothing loops.
func TestSinkDeadLettersRowsPostgresRefuses(t *testing.T) {
	t.Parallel()
	pool, k := newDB(t), newKafka(t)
	good := order(1, 1, saga.StatusConfirmed)
	nul := order(2, 1, saga.StatusPending)
	nul.CustomerID = "nul\x00byte" // valid UTF-8, but text cannot hold it
	huge := order(3, 1, saga.StatusPending)
	huge.Lines[0].Quantity = 3_000_000_000 // above int4
	k.orders(t, good, nul, huge)
	k.stock(t, "sku-ok", stock(1, 5, 0, 0))
	k.stock(t, "sku-\x00", stock(1, 5, 0, 0))

	s := startSink(t, k, pool, Config{})
	await.Until(t, "all offsets committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	checkOrder(t, pool, good)
	checkItems(t, pool, good)
	checkStock(t, pool, "sku-ok", stock(1, 5, 0, 0))
	if n := count(t, pool, "orders"); n != 1 {
		t.Fatalf("orders: got %d rows, want 1 (the refused ones rolled back whole)", n)
	}
	if n := count(t, pool, "order_items"); n != len(good.Lines) {
		t.Fatalf("order_items: got %d rows, want %d", n, len(good.Lines))
	}

	want := map[string]string{ // key -> SQLSTATE in the reason
		nul.OrderID.String():  "22021",
		huge.OrderID.String(): "22003",
		"sku-\x00":            "22021",
	}
	for _, d := range dlqRecords(t, k, len(want)) {
		code, ok := want[string(d.Key)]
		if !ok {
			t.Fatalf("dead letter with key %q: not a refused row", d.Key)
		}
		if reason := headers(d)[topology.HeaderDLQReason]; !strings.Contains(reason, code) {
			t.Errorf("dead letter %q: got reason %q, want SQLSTATE %s", d.Key, reason, code)
		}
		delete(want, string(d.Key))
	}
	st := s.Stats()
	if st.RefusedBatches == 0 || st.DBErrors != 0 || st.DeadLetters != 3 {
		t.Fatalf("stats: got %+v, want a refused batch, no retried db error, 3 dead letters", st)
	}
	if err := s.Health(); err != nil {
		t.Fatalf("Health: got %v, want nil (refused rows are not an outage)", err)
	}
}

// loseLastRows makes pool what a standby promoted without the last
// transactions would be: in every partition of the orders table, the last
// record's row gone and the offsets set back before it. It returns how
// many rows it removed.
func loseLastRows(t *testing.T, pool *pgxpool.Pool, k *kafka) int {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT partition, next_offset FROM sink_offsets WHERE sink_group = $1 AND topic = $2", DefaultGroup, string(topology.OrdersTable()))
	if err != nil {
		t.Fatal(err)
	}
	back := map[int32]int64{}
	for rows.Next() {
		var p int32
		var n int64
		if err := rows.Scan(&p, &n); err != nil {
			t.Fatal(err)
		}
		back[p] = n - 1
	}
	rows.Close()
	if len(back) == 0 {
		t.Fatal("no offsets in sink_offsets")
	}
	lost := 0
	k.mu.Lock()
	for _, pr := range k.produced {
		if pr.topic == string(topology.OrdersTable()) && pr.offset == back[pr.partition] {
			if _, err := pool.Exec(t.Context(), "DELETE FROM orders WHERE order_id = $1", pr.key); err != nil {
				t.Fatal(err)
			}
			lost++
		}
	}
	k.mu.Unlock()
	for p, n := range back {
		if _, err := pool.Exec(t.Context(), "UPDATE sink_offsets SET next_offset = $1 WHERE sink_group = $2 AND topic = $3 AND partition = $4", n, DefaultGroup, string(topology.OrdersTable()), p); err != nil {
			t.Fatal(err)
		}
	}
	return lost
}

// TestSinkResumesFromPostgresOffsets: Postgres, not Kafka, says where the
// sink is. After a failover to a standby that missed the last transactions
// (loseLastRows), the group's commits in Kafka are ahead of Postgres, and
// a sink that starts reads those records again and writes the missing rows.
func TestSinkResumesFromPostgresOffsets(t *testing.T) {
	t.Parallel()
	pool, k := newDB(t), newKafka(t)
	for n := range 40 {
		k.orders(t, order(n, 1, saga.StatusConfirmed))
	}
	first := startSink(t, k, pool, Config{})
	await.Until(t, "first run committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	want := dump(t, pool)
	lost := loseLastRows(t, pool, k)
	if lost == 0 || dump(t, pool) == want {
		t.Fatalf("the simulated failover lost %d rows; want some", lost)
	}
	if err := k.allCommitted(t, DefaultGroup); err != nil {
		t.Fatalf("Kafka's commits must still be at the end: %v", err)
	}
	again := startSink(t, k, pool, Config{})
	await.Until(t, "the lost rows written again", waitTimeout, func() error {
		if dump(t, pool) != want {
			return fmt.Errorf("tables differ from before the failover")
		}
		return nil
	})
	if st := again.Stats(); st.OrderRows != uint64(lost) {
		t.Errorf("second run wrote %d order rows, want the %d lost ones", st.OrderRows, lost)
	}
}

// TestSinkRewindsWhenPostgresLostRows: the same failover under a running
// sink, which keeps its partitions (no rebalance tells it anything): its
// next transaction finds Postgres behind what it wrote, and it rewinds to
// Postgres's offsets and writes the lost rows again.
func TestSinkRewindsWhenPostgresLostRows(t *testing.T) {
	t.Parallel()
	pool, k := newDB(t), newKafka(t)
	for n := range 40 {
		k.orders(t, order(n, 1, saga.StatusConfirmed))
	}
	s := startSink(t, k, pool, Config{})
	await.Until(t, "first records committed", waitTimeout, func() error { return k.allCommitted(t, DefaultGroup) })
	lost := loseLastRows(t, pool, k)
	for n := 40; n < 80; n++ {
		k.orders(t, order(n, 1, saga.StatusConfirmed))
	}
	await.Until(t, "every order in postgres", waitTimeout, func() error {
		var got int
		if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM orders").Scan(&got); err != nil {
			return err
		}
		if got != 80 {
			return fmt.Errorf("%d of 80 orders", got)
		}
		return k.allCommitted(t, DefaultGroup)
	})
	if st := s.Stats(); st.Rewinds == 0 {
		t.Errorf("no rewind counted, though %d rows were lost", lost)
	}
}

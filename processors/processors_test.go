package processors_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/membroker"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/saga"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/internal/kafkatest"
	"github.com/orderpipe/orderpipe/processors"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// harness is a cluster with the topology's topics, a producer that
// partitions like the edge, and views of both tables.
type harness struct {
	t        *testing.T
	brokers  []string
	cl       *kgo.Client
	adm      *kadm.Client
	orders   *goka.View
	stock    *goka.View
	topology topology.Config
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	c, err := membroker.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	h := &harness{t: t, brokers: c.Brokers(), topology: topology.DefaultConfig()}
	h.topology.Partitions = 6
	if err := kafkatest.EnsureTopics(t.Context(), h.brokers, h.topology, testlog.New()); err != nil {
		t.Fatal(err)
	}
	h.cl, err = kgo.NewClient(kgo.SeedBrokers(h.brokers...), kgo.RecordPartitioner(topology.Partitioner()), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.cl.Close)
	h.adm = kadm.NewClient(h.cl)
	vcfg := h.config(t.TempDir())
	var closeOrders, closeStock func() error
	if h.orders, closeOrders, err = vcfg.OpenOrdersView(nil); err != nil {
		t.Fatal(err)
	}
	if h.stock, closeStock, err = vcfg.OpenInventoryView(nil); err != nil {
		t.Fatal(err)
	}
	// Registered before the views run, so it runs after they stopped.
	t.Cleanup(func() {
		if err := errors.Join(closeOrders(), closeStock()); err != nil {
			t.Logf("close the views' clients: %v", err)
		}
	})
	h.runInBackground(h.orders.Run)
	h.runInBackground(h.stock.Run)
	await.Until(h.t, "views recovered", 30*time.Second, func() error {
		if !h.orders.Recovered() || !h.stock.Recovered() {
			return errors.New("not recovered")
		}
		return nil
	})
	return h
}

func (h *harness) config(dataDir string) processors.Config {
	return processors.Config{Brokers: h.brokers, DataDir: dataDir, Topology: h.topology, Logger: testlog.New()}
}

// runInBackground runs fn until the test ends and checks it returned cleanly.
func (h *harness) runInBackground(fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				h.t.Errorf("background run: %v", err)
			}
		case <-time.After(60 * time.Second):
			h.t.Errorf("background run did not stop within 60s")
		}
	})
}

// startRunner starts both processor groups and returns a function that
// stops them and waits until they returned.
func (h *harness) startRunner(dataDir string, reg prometheus.Registerer) (*processors.Processors, func()) {
	h.t.Helper()
	p, err := processors.New(h.config(dataDir), processors.Deps{Registerer: reg})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for _, g := range p.Groups() {
		go func() { done <- g.Run(ctx) }()
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			for range p.Groups() {
				select {
				case err := <-done:
					if err != nil {
						h.t.Errorf("processor: %v", err)
					}
				case <-time.After(60 * time.Second):
					h.t.Errorf("processors did not stop within 60s")
					return
				}
			}
			p.Close()
		})
	}
	h.t.Cleanup(stop)
	await.Until(h.t, "processors ready", 60*time.Second, func() error {
		if err := p.Orders.Ready(); err != nil {
			return err
		}
		return p.Inventory.Ready()
	})
	return p, stop
}

func (h *harness) produce(topic goka.Stream, key string, value []byte) {
	h.t.Helper()
	if err := h.cl.ProduceSync(h.t.Context(), &kgo.Record{Topic: string(topic), Key: []byte(key), Value: value}).FirstErr(); err != nil {
		h.t.Fatalf("produce to %s: %v", topic, err)
	}
}

func (h *harness) setStock(sku string, n int64) {
	h.produce(topology.InventoryCommands, sku, (&saga.InventoryCommand{Kind: saga.CmdSetStock, Available: n}).Encode())
}

func (h *harness) submit(items ...saga.Item) saga.OrderID {
	h.t.Helper()
	id, err := saga.NewOrderID()
	if err != nil {
		h.t.Fatal(err)
	}
	h.produce(topology.OrdersSubmitted, id.String(), (&saga.OrderSubmitted{
		OrderID: id, CustomerID: "c1", Currency: "EUR", Items: items, SubmittedAt: time.Now(),
	}).Encode())
	return id
}

func (h *harness) order(id saga.OrderID) *saga.OrderState {
	v, err := h.orders.Get(id.String())
	if err != nil {
		h.t.Fatalf("get order %s: %v", id, err)
	}
	if v == nil {
		return nil
	}
	return v.(*saga.OrderState)
}

func (h *harness) stockOf(sku string) *saga.StockState {
	v, err := h.stock.Get(sku)
	if err != nil {
		h.t.Fatalf("get stock %s: %v", sku, err)
	}
	if v == nil {
		return saga.NewStockState()
	}
	return v.(*saga.StockState)
}

func (h *harness) waitFinal(ids ...saga.OrderID) {
	h.t.Helper()
	await.Until(h.t, fmt.Sprintf("%d orders final", len(ids)), 60*time.Second, func() error {
		for _, id := range ids {
			if o := h.order(id); o == nil || !o.Status.Final() {
				return fmt.Errorf("order %s not final", id)
			}
		}
		return nil
	})
}

// waitQuiet waits until no SKU holds anything: every final order has
// committed or released its holds.
func (h *harness) waitQuiet(skus ...string) {
	h.t.Helper()
	await.Until(h.t, "inventory quiet", 60*time.Second, func() error {
		for _, sku := range skus {
			if s := h.stockOf(sku); s.Reserved != 0 || s.HoldCount() != 0 {
				return fmt.Errorf("sku %s: reserved %d, %d holds", sku, s.Reserved, s.HoldCount())
			}
		}
		return nil
	})
}

func item(sku string, q uint32) saga.Item {
	return saga.Item{SKU: sku, Quantity: q, UnitPriceCents: 100}
}

func TestSagaConfirmRejectCompensate(t *testing.T) {
	h := newHarness(t)
	h.startRunner(t.TempDir(), nil)
	h.setStock("A", 5)
	h.setStock("B", 1)
	await.Until(h.t, "stock set", 30*time.Second, func() error {
		if h.stockOf("A").Available != 5 || h.stockOf("B").Available != 1 {
			return errors.New("stock not visible yet")
		}
		return nil
	})

	first := h.submit(item("A", 2), item("B", 1))
	h.waitFinal(first)
	second := h.submit(item("A", 2), item("B", 1)) // B is gone: A must be released
	h.waitFinal(second)
	third := h.submit(item("A", 3))
	unknown := h.submit(item("NOSUCH", 1))
	h.waitFinal(third, unknown)
	h.waitQuiet("A", "B", "NOSUCH")

	for _, c := range []struct {
		id   saga.OrderID
		want saga.Status
	}{{first, saga.StatusConfirmed}, {second, saga.StatusRejected}, {third, saga.StatusConfirmed}, {unknown, saga.StatusRejected}} {
		if got := h.order(c.id).Status; got != c.want {
			t.Errorf("order %s: status %s, want %s (reason %q)", c.id, got, c.want, h.order(c.id).Reason)
		}
	}
	if r := h.order(second).Reason; r == "" {
		t.Errorf("rejected order has no reason")
	}
	for _, c := range []struct {
		sku                   string
		available, sold, held int64
	}{{"A", 0, 5, 0}, {"B", 0, 1, 0}} {
		s := h.stockOf(c.sku)
		if s.Available != c.available || s.Sold != c.sold || s.Reserved != c.held {
			t.Errorf("sku %s: available %d sold %d reserved %d; want %d %d %d", c.sku, s.Available, s.Sold, s.Reserved, c.available, c.sold, c.held)
		}
	}
}

// TestConcurrentOrdersConserveStock runs many orders over few SKUs with
// scarce stock and checks conservation per SKU.
func TestConcurrentOrdersConserveStock(t *testing.T) {
	h := newHarness(t)
	h.startRunner(t.TempDir(), nil)
	skus, initial := 10, int64(40)
	for i := range skus {
		h.setStock(fmt.Sprintf("S%d", i), initial)
	}
	ids := h.submitRandom(600, skus, rand.New(rand.NewPCG(7, 8)))
	h.waitFinal(ids...)
	h.checkConservation(ids, skus, initial)
}

// submitRandom produces n orders of 1-3 distinct SKUs asynchronously.
func (h *harness) submitRandom(n, skus int, rng *rand.Rand) []saga.OrderID {
	h.t.Helper()
	ids := make([]saga.OrderID, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range ids {
		id, err := saga.NewOrderID()
		if err != nil {
			h.t.Fatal(err)
		}
		ids[i] = id
		perm := rng.Perm(skus)[:1+rng.IntN(3)]
		items := make([]saga.Item, len(perm))
		for j, s := range perm {
			items[j] = item(fmt.Sprintf("S%d", s), 1+rng.Uint32N(3))
		}
		rec := &kgo.Record{Topic: string(topology.OrdersSubmitted), Key: []byte(id.String()), Value: (&saga.OrderSubmitted{
			OrderID: id, CustomerID: "c", Currency: "EUR", Items: items, SubmittedAt: time.Now(),
		}).Encode()}
		wg.Add(1)
		h.cl.Produce(h.t.Context(), rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		h.t.Fatalf("produce: %v", err)
	}
	return ids
}

// checkConservation checks, per SKU, initial = available + sold with
// nothing reserved, and sold = the confirmed orders' quantities.
func (h *harness) checkConservation(ids []saga.OrderID, skus int, initial int64) {
	h.t.Helper()
	names := make([]string, skus)
	for i := range names {
		names[i] = fmt.Sprintf("S%d", i)
	}
	h.waitQuiet(names...)
	confirmed := map[string]int64{}
	var nConfirmed int
	for _, id := range ids {
		o := h.order(id)
		if o.Status == saga.StatusConfirmed {
			nConfirmed++
			for _, l := range o.Lines {
				confirmed[l.SKU] += int64(l.Quantity)
			}
		}
	}
	if nConfirmed == 0 || nConfirmed == len(ids) {
		h.t.Errorf("%d of %d orders confirmed; the scenario should confirm some and reject some", nConfirmed, len(ids))
	}
	for _, sku := range names {
		s := h.stockOf(sku)
		if s.Available < 0 || s.Available+s.Sold != initial || s.Sold != confirmed[sku] {
			h.t.Errorf("sku %s: available %d + sold %d != %d, or sold != confirmed %d", sku, s.Available, s.Sold, initial, confirmed[sku])
		}
	}
}

// rewind moves the committed offsets of both groups back to the start of
// their inputs, as after a crash that lost every commit: the processors will
// replay input whose effects are all in their tables.
func (h *harness) rewind() {
	h.t.Helper()
	for group, topics := range topology.GroupInputs() {
		start, err := h.adm.ListStartOffsets(h.t.Context(), topics...)
		if err != nil {
			h.t.Fatal(err)
		}
		if err := h.adm.CommitAllOffsets(h.t.Context(), string(group), start.Offsets()); err != nil {
			h.t.Fatalf("rewind %s: %v", group, err)
		}
	}
}

// lag is the total lag of both groups on their inputs.
func (h *harness) lag() (int64, error) {
	var total int64
	for group, topics := range topology.GroupInputs() {
		end, err := h.adm.ListEndOffsets(h.t.Context(), topics...)
		if err != nil {
			return 0, err
		}
		committed, err := h.adm.FetchOffsets(h.t.Context(), string(group))
		if err != nil {
			return 0, err
		}
		end.Each(func(o kadm.ListedOffset) {
			c, ok := committed.Lookup(o.Topic, o.Partition)
			at := int64(0)
			if ok {
				at = c.At
			}
			total += o.Offset - at
		})
	}
	return total, nil
}

type snapshot struct {
	orders map[saga.OrderID]saga.Status
	stock  map[string][3]int64
}

func (h *harness) snapshot(ids []saga.OrderID, skus int) snapshot {
	s := snapshot{orders: map[saga.OrderID]saga.Status{}, stock: map[string][3]int64{}}
	for _, id := range ids {
		s.orders[id] = h.order(id).Status
	}
	for i := range skus {
		st := h.stockOf(fmt.Sprintf("S%d", i))
		s.stock[fmt.Sprintf("S%d", i)] = [3]int64{st.Available, st.Reserved, st.Sold}
	}
	return s
}

// TestReplayDoesNotDoubleApply replays every input of both processors after
// all of it was applied — once with the tables kept on disk, once with the
// tables recovered from their changelogs — and checks that nothing changes.
func TestReplayDoesNotDoubleApply(t *testing.T) {
	for _, keepTables := range []bool{true, false} {
		t.Run(fmt.Sprintf("keepTables=%v", keepTables), func(t *testing.T) {
			h := newHarness(t)
			dir := t.TempDir()
			_, stop := h.startRunner(dir, nil)
			skus, initial := 8, int64(30)
			for i := range skus {
				h.setStock(fmt.Sprintf("S%d", i), initial)
			}
			ids := h.submitRandom(300, skus, rand.New(rand.NewPCG(9, 10)))
			h.waitFinal(ids...)
			h.checkConservation(ids, skus, initial)
			before := h.snapshot(ids, skus)
			await.Until(h.t, "inputs committed", 30*time.Second, func() error {
				if l, err := h.lag(); err != nil || l != 0 {
					return fmt.Errorf("lag %d, %v", l, err)
				}
				return nil
			})
			stop()

			h.rewind()
			if l, err := h.lag(); err != nil || l == 0 {
				t.Fatalf("after rewind: lag %d, %v; want a replay to do", l, err)
			}
			if !keepTables {
				dir = t.TempDir()
			}
			reg := prometheus.NewRegistry()
			h.startRunner(dir, reg)
			await.Until(h.t, "replay consumed", 60*time.Second, func() error {
				if l, err := h.lag(); err != nil || l != 0 {
					return fmt.Errorf("lag %d, %v", l, err)
				}
				return nil
			})
			h.checkConservation(ids, skus, initial)
			after := h.snapshot(ids, skus)
			for id, st := range before.orders {
				if after.orders[id] != st {
					t.Errorf("order %s: %s before the replay, %s after", id, st, after.orders[id])
				}
			}
			for sku, st := range before.stock {
				if after.stock[sku] != st {
					t.Errorf("sku %s: (available, reserved, sold) %v before the replay, %v after", sku, st, after.stock[sku])
				}
			}
			// Evidence that the replay happened and was recognised.
			replays := counterSum(t, reg, "orderpipe_orders_replays_total")
			if replays < float64(len(ids)) {
				t.Errorf("orders replays counted: %v, want >= %d", replays, len(ids))
			}
		})
	}
}

// counterSum adds up every series of the counter called name.
func counterSum(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestUndecodableInputGoesToDeadLetter(t *testing.T) {
	h := newHarness(t)
	h.startRunner(t.TempDir(), nil)
	h.produce(topology.OrdersSubmitted, "not-an-order", []byte("{\"json\":true}"))
	h.produce(topology.InventoryCommands, "SKU", []byte{1, 2, 99})
	h.setStock("A", 1)
	ok := h.submit(item("A", 1))
	h.waitFinal(ok)

	consumer, err := kgo.NewClient(kgo.SeedBrokers(h.brokers...), kgo.ConsumeTopics(string(topology.DeadLetter)), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	got := map[string]map[string]string{}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for len(got) < 2 && ctx.Err() == nil {
		consumer.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			hd := map[string]string{}
			for _, x := range r.Headers {
				hd[x.Key] = string(x.Value)
			}
			got[string(r.Key)] = hd
		})
	}
	for key, topic := range map[string]string{"not-an-order": "orders.submitted", "SKU": "inventory.commands"} {
		hd, ok := got[key]
		if !ok {
			t.Errorf("no dead letter for key %q; got %v", key, got)
			continue
		}
		if hd[topology.HeaderDLQTopic] != topic || hd[topology.HeaderDLQReason] == "" || hd[topology.HeaderDLQOffset] == "" {
			t.Errorf("dead letter %q headers = %v, want topic %s, a reason and an offset", key, hd, topic)
		}
	}
}

// copyTopic re-produces every record of topic that keep accepts, as a
// broken producer or a zombie instance would: duplicates with new offsets.
func (h *harness) copyTopic(topic goka.Stream, keep func(value []byte) bool) int {
	h.t.Helper()
	end, err := h.adm.ListEndOffsets(h.t.Context(), string(topic))
	if err != nil {
		h.t.Fatal(err)
	}
	want := map[int32]int64{}
	end.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	consumer, err := kgo.NewClient(kgo.SeedBrokers(h.brokers...), kgo.ConsumeTopics(string(topic)), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		h.t.Fatal(err)
	}
	defer consumer.Close()
	ctx, cancel := context.WithTimeout(h.t.Context(), 30*time.Second)
	defer cancel()
	var recs []*kgo.Record
	done := func() bool {
		for _, off := range want {
			if off > 0 {
				return false
			}
		}
		return true
	}
	for !done() && ctx.Err() == nil {
		consumer.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if r.Offset+1 >= want[r.Partition] {
				want[r.Partition] = 0
			}
			if keep(r.Value) {
				recs = append(recs, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value})
			}
		})
	}
	if !done() {
		h.t.Fatalf("could not read %s to its end", topic)
	}
	if err := h.cl.ProduceSync(h.t.Context(), recs...).FirstErr(); err != nil {
		h.t.Fatalf("re-produce %s: %v", topic, err)
	}
	return len(recs)
}

// TestDuplicatesAndStaleCommands re-sends every submission, every
// reservation command and every result after all orders were settled, as a
// zombie processor or a duplicating producer would. Stale Reserves make
// stray holds that must be released; nothing may be sold twice.
func TestDuplicatesAndStaleCommands(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	h.startRunner(t.TempDir(), reg)
	skus, initial := 6, int64(25)
	for i := range skus {
		h.setStock(fmt.Sprintf("S%d", i), initial)
	}
	ids := h.submitRandom(200, skus, rand.New(rand.NewPCG(11, 12)))
	h.waitFinal(ids...)
	h.checkConservation(ids, skus, initial)
	before := h.snapshot(ids, skus)

	n := h.copyTopic(topology.OrdersSubmitted, func([]byte) bool { return true })
	n += h.copyTopic(topology.InventoryResults, func([]byte) bool { return true })
	n += h.copyTopic(topology.InventoryCommands, func(v []byte) bool {
		c, err := saga.DecodeInventoryCommand(v)
		return err == nil && c.Kind != saga.CmdSetStock // a re-sent SetStock is a new admin decision
	})
	if n < 3*len(ids) {
		t.Fatalf("re-sent %d records, want at least %d", n, 3*len(ids))
	}
	await.Until(h.t, "duplicates consumed", 60*time.Second, func() error {
		if l, err := h.lag(); err != nil || l != 0 {
			return fmt.Errorf("lag %d, %v", l, err)
		}
		return nil
	})
	h.checkConservation(ids, skus, initial)
	after := h.snapshot(ids, skus)
	for id, st := range before.orders {
		if after.orders[id] != st {
			t.Errorf("order %s: %s before the duplicates, %s after", id, st, after.orders[id])
		}
	}
	for sku, st := range before.stock {
		if after.stock[sku] != st {
			t.Errorf("sku %s: (available, reserved, sold) %v before the duplicates, %v after", sku, st, after.stock[sku])
		}
	}
}

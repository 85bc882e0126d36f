package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/valyala/fasthttp"
)

// The orders processor is simulated: its state writes by writeTable, its
// commits by commitSubmitted. Without it nothing is committed, so lookups
// scan orders.submitted from the start.

// commitSubmitted commits, for the orders group, the end of every partition
// of orders.submitted, as the processor does once it has processed and
// stored everything there.
func (h *harness) commitSubmitted() map[int32]int64 {
	h.t.Helper()
	ends := h.endOffsets(string(topology.OrdersSubmitted))
	offs := kadm.Offsets{}
	for p, at := range ends {
		offs.Add(kadm.Offset{Topic: string(topology.OrdersSubmitted), Partition: p, At: at, LeaderEpoch: -1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.adm.CommitAllOffsets(ctx, string(topology.OrdersGroup), offs); err != nil {
		h.t.Fatalf("commit %v for %s: %v", ends, topology.OrdersGroup, err)
	}
	return ends
}

// endOffsets returns the end offset of every partition of topic.
func (h *harness) endOffsets(topic string) map[int32]int64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := h.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		h.t.Fatalf("end offsets of %s: %v", topic, err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// idOn returns a new order id on partition p.
func idOn(t testing.TB, p int32) string {
	t.Helper()
	for range 10_000 {
		id, err := saga.NewOrderID()
		if err != nil {
			t.Fatal(err)
		}
		if topology.PartitionFor([]byte(id.String()), testPartitions) == p {
			return id.String()
		}
	}
	t.Fatalf("no id on partition %d", p)
	return ""
}

// randomID is an order id nobody used.
func randomID(t testing.TB) string {
	t.Helper()
	id, err := saga.NewOrderID()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// percentile returns the q-quantile of ds (sorted in place).
func percentile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

func lookups(h *harness, result string) float64 {
	return testutil.ToFloat64(h.edge.lookups.lookups.WithLabelValues(result))
}

func scanned(h *harness) float64 { return testutil.ToFloat64(h.edge.lookups.scanned) }

// orderOf reads a 200 answer.
func orderOf(t *testing.T, r response) orderJSON {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("got %s, want 200", r)
	}
	var o orderJSON
	if err := json.Unmarshal(r.body, &o); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	return o
}

// TestGetAcceptedOrderAtOnce: every order an edge accepted is readable on
// that edge at once, before its view shows it.
func TestGetAcceptedOrderAtOnce(t *testing.T) {
	h := newHarness(t, options{})
	var bad atomic.Int64
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				r, err := doOn(h.http, "POST", "/v1/orders", "application/json", orderBody(fmt.Sprintf("c-%d-%d", w, i), fmt.Sprintf("S%d-%d:1", w, i)))
				if err != nil || r.status != 202 {
					t.Errorf("POST: %v %v", err, r)
					return
				}
				g, err := doOn(h.http, "GET", r.header["Location"], "", "")
				if err != nil || g.status != 200 || field(t, g.body, "status") != "pending" {
					bad.Add(1)
					t.Errorf("GET %s right after its 202: %v %v, want 200 pending", r.header["Location"], err, g)
				}
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d of 500 GETs after a 202 were not 200 pending", n)
	}
	if got := lookups(h, lookupOwn); got != 500 {
		t.Errorf("lookups answered from the edge's own orders: got %v, want 500", got)
	}
}

// TestReadYourWritesOtherEdge: an order accepted by edge A is readable at
// once on edge B, which has neither seen it in its view nor accepted it:
// B finds its record on the broker.
func TestReadYourWritesOtherEdge(t *testing.T) {
	a := newHarness(t, options{})
	b := a.secondEdge(options{})
	r := a.postOrder(orderBody("cust-7", "A:2", "B:3"))
	if r.status != 202 {
		t.Fatalf("POST on A: %s", r)
	}
	id := field(t, r.body, "order_id")
	got := orderOf(t, b.do("GET", r.header["Location"], "", ""))
	m := a.submitted()[id]
	want := orderJSON{
		OrderID: id, Status: "pending", CustomerID: "cust-7", Currency: "EUR",
		Items:      []itemJSON{{"A", 2, 100}, {"B", 3, 100}},
		TotalCents: 500, CreatedAt: m.SubmittedAt, UpdatedAt: m.SubmittedAt, Version: 1,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GET on B right after A's 202: got %+v, want %+v", got, want)
	}
	if n := lookups(b, lookupFound); n != 1 || scanned(b) < 1 {
		t.Errorf("B's lookups: found %v, scanned %v records; want 1 found by a scan", n, scanned(b))
	}

	// Once the processor wrote its state, B's view answers.
	st := stateOf(m, saga.StatusConfirmed, 3)
	a.writeTable(topology.OrdersTable(), id, st.Encode())
	await.Until(t, "B's view shows the order", 10*time.Second, func() error {
		o := orderOf(t, b.do("GET", "/v1/orders/"+id, "", ""))
		if o.Status != "confirmed" || o.Version != 3 {
			return fmt.Errorf("got %+v", o)
		}
		return nil
	})
}

// TestUnknownOrder404Fast: an id nobody accepted gets 404, quickly, with the
// processor caught up (nothing to scan) and behind (records to scan).
func TestUnknownOrder404Fast(t *testing.T) {
	a := newHarness(t, options{})
	b := a.secondEdge(options{})
	subs := map[string]*saga.OrderSubmitted{}
	for i := range 30 {
		r := a.postOrder(orderBody(fmt.Sprintf("c%d", i), "A:1"))
		if r.status != 202 {
			t.Fatalf("POST: %s", r)
		}
	}
	for id, m := range a.submitted() {
		subs[id] = m
		a.writeTable(topology.OrdersTable(), id, stateOf(m, saga.StatusPending, 1).Encode())
	}
	a.commitSubmitted()

	unknown := func(what string, n int) []time.Duration {
		t.Helper()
		took := make([]time.Duration, 0, n)
		for range n {
			r := b.do("GET", "/v1/orders/"+randomID(t), "", "")
			if r.status != 404 {
				t.Fatalf("%s: GET an unknown id: got %s, want 404", what, r)
			}
			took = append(took, r.elapsed)
		}
		p50, p99 := percentile(took, 0.5), percentile(took, 0.99)
		t.Logf("%s: %d unknown ids, all 404: p50 %s, p99 %s", what, n, p50, p99)
		if p99 > 100*time.Millisecond { // 5-20ms expected; headroom for -race on a loaded 2-core CI machine
			t.Errorf("%s: p99 of a 404 %s, want under 100ms", what, p99)
		}
		return took
	}
	unknown("processor caught up", 300)
	if n := scanned(b); n != 0 {
		t.Errorf("caught up: %v records scanned, want 0 (C == E)", n)
	}
	// Known orders are there, from the view.
	for id := range subs {
		if o := orderOf(t, b.do("GET", "/v1/orders/"+id, "", "")); o.Status != "pending" {
			t.Fatalf("GET %s: got %+v", id, o)
		}
	}

	for i := range 30 {
		if r := a.postOrder(orderBody(fmt.Sprintf("d%d", i), "A:1")); r.status != 202 {
			t.Fatalf("POST: %s", r)
		}
	}
	unknown("30 records not committed", 300)
	if n := scanned(b); n == 0 {
		t.Errorf("behind: no record scanned, want the uncommitted ones")
	}
}

// TestCommittedButNotInViewNever404 is the race that matters: the processor
// stored the order's state and committed past its record, so the record is
// not scanned, but the edge's view may not have applied the state yet. The
// edge must wait for its view, not answer 404.
func TestCommittedButNotInViewNever404(t *testing.T) {
	a := newHarness(t, options{})
	b := a.secondEdge(options{})
	for i := range 200 {
		// A SKU each: the per-SKU cap of orders in flight is 128.
		r := a.postOrder(orderBody(fmt.Sprintf("c%d", i), fmt.Sprintf("S%d:1", i)))
		if r.status != 202 {
			t.Fatalf("POST: %s", r)
		}
		id := field(t, r.body, "order_id")
		sub := &saga.OrderSubmitted{CustomerID: fmt.Sprintf("c%d", i), Currency: "EUR", SubmittedAt: time.Now(), Items: []saga.Item{{SKU: "A", Quantity: 1, UnitPriceCents: 100}}}
		sub.OrderID, _ = saga.ParseOrderID(id)
		a.writeTable(topology.OrdersTable(), id, stateOf(sub, saga.StatusPending, 1).Encode())
		a.commitSubmitted()
		if g := b.do("GET", "/v1/orders/"+id, "", ""); g.status != 200 {
			t.Fatalf("order %d: GET on the other edge after its state was committed: got %s, want 200", i, g)
		}
	}
	if n := scanned(b); n != 0 {
		t.Errorf("%v records scanned, want 0: everything was committed", n)
	}
}

// TestLookupBudget: a view that does not catch up within LookupTimeout
// makes an unknown id 503, never 404.
func TestLookupBudget(t *testing.T) {
	var drop atomic.Bool
	h := newHarness(t, options{cfg: Config{LookupTimeout: 200 * time.Millisecond}, dropUpdates: &drop})
	drop.Store(true)
	p := int32(2)
	h.writeTable(topology.OrdersTable(), idOn(t, p), stateOf(&saga.OrderSubmitted{Currency: "EUR"}, saga.StatusPending, 1).Encode())
	r := h.do("GET", "/v1/orders/"+idOn(t, p), "", "")
	if r.status != 503 || problemOf(t, r).Type != problemTypeBase+"not-ready" || r.header["Retry-After"] != "1" {
		t.Fatalf("unknown id while the view stands still: got %s, want 503 not-ready with Retry-After 1", r)
	}
	if r.elapsed < 150*time.Millisecond || r.elapsed > 5*time.Second {
		t.Errorf("503 after %s, want after about the lookup timeout (200ms)", r.elapsed)
	}
	// Another partition is caught up: 404 there.
	if r := h.do("GET", "/v1/orders/"+idOn(t, p+1), "", ""); r.status != 404 {
		t.Errorf("unknown id on a caught-up partition: got %s, want 404", r)
	}
	drop.Store(false)
	h.writeTable(topology.OrdersTable(), idOn(t, p), stateOf(&saga.OrderSubmitted{Currency: "EUR"}, saga.StatusPending, 1).Encode())
	await.Until(t, "404 once the view moves again", 10*time.Second, func() error {
		if r := h.do("GET", "/v1/orders/"+idOn(t, p), "", ""); r.status != 404 {
			return fmt.Errorf("got %s", r)
		}
		return nil
	})
}

// TestLookupTruncated: with the processor more than LookupMaxScan records
// behind, an id that is not among the newest gets 503 at once; one that is
// gets 200.
func TestLookupTruncated(t *testing.T) {
	a := newHarness(t, options{})
	b := a.secondEdge(options{cfg: Config{LookupMaxScan: 5}})
	for i := range 60 {
		if r := a.postOrder(orderBody(fmt.Sprintf("c%d", i), "A:1")); r.status != 202 {
			t.Fatalf("POST: %s", r)
		}
	}
	byPart := map[int32][]*kgo.Record{}
	for _, r := range a.records(string(topology.OrdersSubmitted)) {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	var p int32 = -1
	for q, rs := range byPart {
		if len(rs) > 5 && (p < 0 || len(rs) > len(byPart[p])) {
			p = q
		}
	}
	if p < 0 {
		t.Fatalf("no partition with more than 5 records: %v", byPart)
	}
	rs := byPart[p]
	slices.SortFunc(rs, func(x, y *kgo.Record) int { return int(x.Offset - y.Offset) })
	for what, id := range map[string]string{"an unknown id": idOn(t, p), "the oldest order": string(rs[0].Key)} {
		r := b.do("GET", "/v1/orders/"+id, "", "")
		if r.status != 503 || problemOf(t, r).Type != problemTypeBase+"not-ready" || r.elapsed > 400*time.Millisecond {
			t.Errorf("%s on a partition %d records behind, 5 scanned: got %s after %s, want 503 not-ready at once", what, len(rs), r, r.elapsed)
		}
	}
	newest := string(rs[len(rs)-1].Key)
	if o := orderOf(t, b.do("GET", "/v1/orders/"+newest, "", "")); o.Status != "pending" {
		t.Errorf("the newest order: got %+v, want pending", o)
	}
	if got := lookups(b, lookupTruncated); got != 2 {
		t.Errorf("truncated lookups: got %v, want 2", got)
	}
}

// TestLookupBrokerError: a broker that cannot answer makes an unknown id
// 503 broker-unavailable, never 404.
func TestLookupBrokerError(t *testing.T) {
	h := newHarness(t, options{})
	var failing atomic.Bool
	failing.Store(true)
	h.cluster.ControlKey(int16(kmsg.OffsetFetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		h.cluster.KeepControl()
		if !failing.Load() {
			return nil, nil, false
		}
		req := kreq.(*kmsg.OffsetFetchRequest)
		resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		for _, g := range req.Groups {
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group, rg.ErrorCode = g.Group, kerr.GroupAuthorizationFailed.Code
			resp.Groups = append(resp.Groups, rg)
		}
		return resp, nil, true
	})
	id := randomID(t)
	r := h.do("GET", "/v1/orders/"+id, "", "")
	if r.status != 503 || problemOf(t, r).Type != problemTypeBase+"broker-unavailable" || r.header["Retry-After"] != "1" {
		t.Errorf("unknown id while OffsetFetch fails: got %s, want 503 broker-unavailable with Retry-After 1", r)
	}
	if got := lookups(h, lookupError); got != 1 {
		t.Errorf("lookups with a broker error: got %v, want 1", got)
	}
	failing.Store(false)
	if r := h.do("GET", "/v1/orders/"+id, "", ""); r.status != 404 {
		t.Errorf("unknown id once OffsetFetch works: got %s, want 404", r)
	}
}

// TestLookupOtherClient: with authentication on, the record another edge
// finds is shown only to the client that placed the order.
func TestLookupOtherClient(t *testing.T) {
	keys := map[string]string{}
	var lines []string
	for _, c := range []string{"shop-1", "shop-2"} {
		key, line, err := NewAPIKey(c, []string{ScopeOrdersWrite, ScopeOrdersRead})
		if err != nil {
			t.Fatal(err)
		}
		keys[c] = key
		lines = append(lines, line)
	}
	path := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newHarness(t, options{cfg: Config{APIKeysFile: path}})
	b := a.secondEdge(options{cfg: Config{APIKeysFile: path}})
	bearer := func(c string) []string { return []string{"Authorization", "Bearer " + keys[c]} }
	r := a.postOrder(orderBody("c1", "A:1"), bearer("shop-1")...)
	if r.status != 202 {
		t.Fatalf("POST: %s", r)
	}
	if g := b.do("GET", r.header["Location"], "", "", bearer("shop-2")...); g.status != 404 {
		t.Errorf("another client's order on the other edge: got %s, want 404", g)
	}
	if g := b.do("GET", r.header["Location"], "", "", bearer("shop-1")...); g.status != 200 {
		t.Errorf("the client's own order on the other edge: got %s, want 200", g)
	}
}

// runEdge runs an edge built by New until the test ends or stop.
func runEdge(t *testing.T, cfg Config) (e *Edge, hc *fasthttp.HostClient, stop func()) {
	t.Helper()
	e, err := New(cfg, Deps{Logger: testlog.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("edge: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("edge did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-e.Listening():
	case err := <-done:
		t.Fatalf("edge did not start: %v", err)
	}
	hc = &fasthttp.HostClient{Addr: e.Addr(), ReadTimeout: 10 * time.Second}
	await.Until(t, "edge ready", 30*time.Second, func() error {
		if r, err := doOn(hc, "GET", "/readyz", "", ""); err != nil || r.status != 200 {
			return fmt.Errorf("/readyz: %v %v", err, r)
		}
		return nil
	})
	return e, hc, stop
}

// TestFloorAfterRestart: an edge restarted on a data dir that holds the
// orders table up to date applies nothing while it recovers, so its view
// progress comes from the recovery's high watermarks: an unknown id gets
// 404 at once, not 503 after the lookup timeout.
func TestFloorAfterRestart(t *testing.T) {
	h := newHarness(t, options{})
	var ids []string
	for p := range int32(testPartitions) {
		id := idOn(t, p)
		ids = append(ids, id)
		m := &saga.OrderSubmitted{Currency: "EUR", SubmittedAt: time.Now(), Items: []saga.Item{{SKU: "A", Quantity: 1, UnitPriceCents: 100}}}
		m.OrderID, _ = saga.ParseOrderID(id)
		h.writeTable(topology.OrdersTable(), id, stateOf(m, saga.StatusConfirmed, 2).Encode())
	}
	cfg := Config{Brokers: h.brokers, Topology: h.topology, DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	_, hc, stop := runEdge(t, cfg)
	for _, id := range ids {
		if r, err := doOn(hc, "GET", "/v1/orders/"+id, "", ""); err != nil || r.status != 200 {
			t.Fatalf("first run: GET %s: %v %v", id, err, r)
		}
	}
	stop()

	e, hc, _ := runEdge(t, cfg)
	await.Until(t, "view progress from the recovered high watermarks", 5*time.Second, func() error {
		for p := range int32(testPartitions) {
			if n := e.progress.nextOf(p); n < 1 {
				return fmt.Errorf("partition %d: view progress %d after the restart, want at least 1", p, n)
			}
		}
		return nil
	})
	for p := range int32(testPartitions) {
		r, err := doOn(hc, "GET", "/v1/orders/"+idOn(t, p), "", "")
		if err != nil || r.status != 404 || r.elapsed > time.Second {
			t.Errorf("after the restart, an unknown id on partition %d: %v %v after %s, want 404 within 1s", p, err, r, r.elapsed)
		}
	}
	for _, id := range ids {
		if r, err := doOn(hc, "GET", "/v1/orders/"+id, "", ""); err != nil || r.status != 200 {
			t.Errorf("after the restart: GET %s: %v %v, want 200", id, err, r)
		}
	}
}

// TestLookupsCoalesce: a flood of unknown ids shares probes: far fewer
// OffsetFetch requests reach the broker than lookups are made.
func TestLookupsCoalesce(t *testing.T) {
	h := newHarness(t, options{})
	var fetches atomic.Int64
	h.cluster.ControlKey(int16(kmsg.OffsetFetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		h.cluster.KeepControl()
		fetches.Add(1)
		return nil, nil, false
	})
	const n = 1000
	var wg sync.WaitGroup
	var not404 atomic.Int64
	sem := make(chan struct{}, 200)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id, _ := saga.NewOrderID()
			r, err := doOn(h.http, "GET", "/v1/orders/"+id.String(), "", "")
			if err != nil || r.status != 404 {
				not404.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := not404.Load(); got != 0 {
		t.Errorf("%d of %d unknown ids were not 404", got, n)
	}
	probes := testutil.ToFloat64(h.edge.lookups.probes)
	t.Logf("%d concurrent lookups: %d OffsetFetch requests, %v probes", n, fetches.Load(), probes)
	if got := fetches.Load(); got > n/10 || got < 1 {
		t.Errorf("%d lookups sent %d OffsetFetch requests, want between 1 and %d", n, got, n/10)
	}
}

package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/saga"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/processors"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/valyala/fasthttp"
)

// The tests run the edge against a real (in-process) Kafka cluster, kfake,
// with real Goka views of the tables. The orders processor is simulated by
// writing *saga.OrderState records straight into the orders-table
// topic, which is what the view reads.

// testPartitions keeps view start-up quick; co-partitioning only needs one
// count for all topics.
const testPartitions = 6

// harness is a cluster with the topology's topics, the edge's producer,
// views of both tables and a running edge.
type harness struct {
	t        testing.TB
	cluster  *kfake.Cluster
	brokers  []string
	topology topology.Config
	producer *kgo.Client // the edge's
	writer   *kgo.Client // the tests' own, for table records
	adm      *kadm.Client
	orders   *goka.View
	stock    *goka.View
	reg      *prometheus.Registry
	opt      options
	edge     *Edge
	http     *fasthttp.HostClient
	// stopEdge ends Run and returns its error.
	stopEdge func() error
}

// options change what newHarness builds.
type options struct {
	cfg Config
	// deferViews leaves the views stopped; startViews runs them.
	deferViews bool
	// ordersView replaces the orders view the edge reads.
	ordersView func(View) View
	checks     []Check
	// log, if set, is the edge's logger.
	log *slog.Logger
	// dropUpdates, while true, keeps the orders view's updates from the
	// edge: its view progress stands still.
	dropUpdates *atomic.Bool
}

func newHarness(t testing.TB, opt options) *harness {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.MaxVersions(kversion.V4_0_0()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	h := &harness{t: t, cluster: cluster, brokers: cluster.ListenAddrs(), topology: topology.DefaultConfig()}
	h.topology.Partitions = testPartitions

	h.writer = h.newClient()
	h.adm = kadm.NewClient(h.writer)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.topology.Ensure(ctx, h.adm, testlog.New()); err != nil {
		t.Fatal(err)
	}

	h.opt = opt
	h.buildEdge()
	return h
}

// buildEdge builds views, a producer and an edge on h's cluster, and runs
// them as h.opt says. A harness that shares the cluster of another gets an
// edge of its own (see secondEdge).
func (h *harness) buildEdge() {
	t, opt := h.t, h.opt
	var err error
	vcfg := processors.Config{Brokers: h.brokers, DataDir: t.TempDir(), Topology: h.topology, Logger: testlog.New()}
	// The edge is built after the views but its orderUpdated is needed by
	// the orders view: route the callback through h.edge, set below before
	// any view runs.
	var closeOrders, closeStock func() error
	if h.orders, closeOrders, err = vcfg.OpenOrdersView(func(p int32, off int64, key string, value []byte) {
		if opt.dropUpdates != nil && opt.dropUpdates.Load() {
			return
		}
		h.edge.viewUpdated(p, off, key, value)
	}); err != nil {
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

	cfg := opt.cfg
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.Topology, cfg.Brokers = h.topology, h.brokers
	// The edge's own producer, with the timeouts New sets.
	if h.producer, err = newProducer(cfg.withDefaults(), nil, slog.Default()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.producer.Close)
	var orders View = h.orders
	if opt.ordersView != nil {
		orders = opt.ordersView(orders)
	}
	log := opt.log
	if log == nil {
		log = testlog.New()
	}
	h.reg = prometheus.NewRegistry()
	h.edge, err = build(cfg, Deps{Logger: log, Registry: h.reg, Checks: opt.checks}, wiring{producer: h.producer, orders: orders, stock: h.stock})
	if err != nil {
		t.Fatal(err)
	}
	if !opt.deferViews {
		h.startViews()
	}
	h.startEdge()
}

// secondEdge is another edge on h's cluster, with its own producer, views
// and data dir, built with opt (its cfg's cluster settings are h's).
func (h *harness) secondEdge(opt options) *harness {
	h.t.Helper()
	b := &harness{t: h.t, cluster: h.cluster, brokers: h.brokers, topology: h.topology, writer: h.writer, adm: h.adm, opt: opt}
	b.buildEdge()
	return b
}

func (h *harness) newClient(opts ...kgo.Opt) *kgo.Client {
	h.t.Helper()
	base := []kgo.Opt{kgo.SeedBrokers(h.brokers...), kgo.RecordPartitioner(topology.Partitioner()), kgo.ProducerLinger(time.Millisecond)}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(cl.Close)
	return cl
}

// startViews runs both views until the test ends and waits for them to
// recover.
func (h *harness) startViews() {
	h.t.Helper()
	h.runInBackground("orders view", h.orders.Run)
	h.runInBackground("inventory view", h.stock.Run)
	await.Until(h.t, "views recovered", 30*time.Second, func() error {
		if !h.orders.Recovered() || !h.stock.Recovered() {
			return errors.New("not recovered")
		}
		return nil
	})
	// What tableView's onRunning does for the views New builds.
	h.edge.progress.floor(processors.RecoveredOffsets(h.orders))
}

func (h *harness) startEdge() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.edge.Run(ctx) }()
	var result error
	stopped := false
	h.stopEdge = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(30 * time.Second):
				result = errors.New("Run did not return within 30s of its context ending")
			}
		}
		return result
	}
	h.t.Cleanup(func() {
		if err := h.stopEdge(); err != nil {
			h.t.Errorf("edge: %v", err)
		}
	})
	select {
	case <-h.edge.Listening():
	case err := <-done:
		h.t.Fatalf("edge did not start: %v", err)
	}
	h.http = &fasthttp.HostClient{Addr: h.edge.Addr(), MaxConns: 256, ReadTimeout: 60 * time.Second}
}

// runInBackground runs fn until the test ends and checks it returned cleanly.
func (h *harness) runInBackground(what string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				h.t.Logf("%s: %v", what, err)
			}
		case <-time.After(60 * time.Second):
			h.t.Errorf("%s did not stop within 60s", what)
		}
	})
}

// response is a copy of a fasthttp response, safe to keep.
type response struct {
	status  int
	header  map[string]string
	body    []byte
	elapsed time.Duration
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// do sends a request; headers are name, value pairs.
func (h *harness) do(method, path, contentType, body string, headers ...string) response {
	h.t.Helper()
	resp, err := doOn(h.http, method, path, contentType, body, headers...)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func doOn(c *fasthttp.HostClient, method, path, contentType, body string, headers ...string) (response, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://" + c.Addr + path)
	if contentType != "" {
		req.Header.SetContentType(contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if body != "" {
		req.SetBodyString(body)
	}
	start := time.Now()
	if err := c.Do(req, resp); err != nil {
		return response{}, err
	}
	out := response{status: resp.StatusCode(), header: map[string]string{}, body: append([]byte(nil), resp.Body()...), elapsed: time.Since(start)}
	for k, v := range resp.Header.All() {
		out.header[string(k)] = string(v)
	}
	return out, nil
}

// postOrder posts body as an order.
func (h *harness) postOrder(body string, headers ...string) response {
	h.t.Helper()
	return h.do("POST", "/v1/orders", "application/json", body, headers...)
}

// records reads every record of topic from the start to its current end.
func (h *harness) records(topic string) []*kgo.Record {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := h.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		h.t.Fatalf("end offsets of %s: %v", topic, err)
	}
	want := int64(0)
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			h.t.Fatalf("end offset of %s/%d: %v", topic, o.Partition, o.Err)
		}
		if o.Offset > 0 {
			want += o.Offset
			parts[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if want == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))
	if err != nil {
		h.t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for int64(len(out)) < want {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			h.t.Fatalf("read %s: got %d of %d records: %v", topic, len(out), want, err)
		}
		fs.EachError(func(_ string, _ int32, err error) { h.t.Fatalf("read %s: %v", topic, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

// requireNothingProduced checks that neither input topic of the pipeline
// holds a record.
func (h *harness) requireNothingProduced(what string) {
	h.t.Helper()
	for _, topic := range []string{string(topology.OrdersSubmitted), string(topology.InventoryCommands)} {
		if n := len(h.records(topic)); n != 0 {
			h.t.Fatalf("%s: %d records on %s, want none", what, n, topic)
		}
	}
}

// submitted reads orders.submitted and returns its orders by id.
func (h *harness) submitted() map[string]*saga.OrderSubmitted {
	h.t.Helper()
	out := map[string]*saga.OrderSubmitted{}
	for _, r := range h.records(string(topology.OrdersSubmitted)) {
		m, err := saga.DecodeOrderSubmitted(r.Value)
		if err != nil {
			h.t.Fatalf("decode record at %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		if string(r.Key) != m.OrderID.String() {
			h.t.Fatalf("record key %q, want the order id %s", r.Key, m.OrderID)
		}
		if _, dup := out[string(r.Key)]; dup {
			h.t.Fatalf("order %s produced twice", r.Key)
		}
		out[string(r.Key)] = m
	}
	return out
}

// writeTable writes value under key into a table topic, as the processors
// would, and waits for the ack.
func (h *harness) writeTable(table goka.Table, key string, value []byte) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.writer.ProduceSync(ctx, &kgo.Record{Topic: string(table), Key: []byte(key), Value: value}).FirstErr(); err != nil {
		h.t.Fatalf("write %s/%s: %v", table, key, err)
	}
}

// setOrder writes the state of the order submitted as m with status and
// waits until the orders view shows it.
func (h *harness) setOrder(m *saga.OrderSubmitted, status saga.Status, version uint64) *saga.OrderState {
	h.t.Helper()
	st := stateOf(m, status, version)
	h.writeTable(topology.OrdersTable(), m.OrderID.String(), st.Encode())
	await.Until(h.t, "order in the view", 10*time.Second, func() error {
		v, err := h.orders.Get(m.OrderID.String())
		if err != nil {
			return err
		}
		if got, ok := v.(*saga.OrderState); !ok || got.Version != version {
			return fmt.Errorf("view holds %v", v)
		}
		return nil
	})
	return st
}

// stateOf is the state the orders processor would write for m.
func stateOf(m *saga.OrderSubmitted, status saga.Status, version uint64) *saga.OrderState {
	st := &saga.OrderState{
		Version: version, OrderID: m.OrderID, CustomerID: m.CustomerID, Currency: m.Currency,
		Status: status, CreatedAt: m.SubmittedAt, UpdatedAt: m.SubmittedAt.Add(time.Duration(version) * time.Millisecond),
		ClientID: m.ClientID, IdempotencyKey: m.IdempotencyKey, RequestHash: m.RequestHash,
	}
	if status == saga.StatusRejected {
		st.Reason = "insufficient stock"
	}
	for _, it := range m.Items {
		st.Lines = append(st.Lines, saga.Line{Item: it, Result: saga.LineReserved})
	}
	return st
}

// orderBody returns a valid order for customer with the given lines
// ("SKU:qty" each, price 100).
func orderBody(customer string, lines ...string) string {
	var items []string
	for _, l := range lines {
		sku, qty, _ := strings.Cut(l, ":")
		items = append(items, fmt.Sprintf(`{"sku":%q,"quantity":%s,"unit_price_cents":100}`, sku, qty))
	}
	return fmt.Sprintf(`{"customer_id":%q,"items":[%s],"currency":"EUR"}`, customer, strings.Join(items, ","))
}

// field returns a top-level string field of a JSON body.
func field(t testing.TB, body []byte, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, body)
	}
	s, _ := m[name].(string)
	return s
}

// errNotYet is what waitFor conditions return while they wait.
var errNotYet = errors.New("not yet")

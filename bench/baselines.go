package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/sinks/pgsink"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// The baselines measure the parts of the pipeline alone, each doing the
// least the pipeline must do with it, on the same machine and in the same
// run as the pipeline's figures (see Baselines).
const (
	// baselineTimeout bounds each phase of a baseline (producing, consuming,
	// copying) when ctx has no earlier deadline.
	baselineTimeout = 3 * time.Minute
	// cleanupTimeout bounds what a baseline undoes after itself (deleting
	// its topic, truncating its tables, stopping its server), which runs
	// even when ctx has ended.
	cleanupTimeout = 30 * time.Second
	// sampleSKUs is the number of SKUs the sample orders draw from, as in
	// the end-to-end benchmark.
	sampleSKUs = 50
	// prawPartitions is the partition count of PRaw's topic, that of the
	// topology's topics.
	prawPartitions = 12
	// prawMaxBuffered bounds the records PRaw has in flight, as
	// kgo.MaxBufferedRecords bounds the edge's.
	prawMaxBuffered = 100_000
	// drawBatch is the orders DRaw writes per transaction: at most one
	// record per order, the sink writes up to pgsink.Config.MaxBatch
	// (default 5000) records per transaction.
	drawBatch = 5000
)

// ErrTablesNotEmpty is DRaw's error when orders or order_items holds rows:
// DRaw truncates them when done, which would destroy those rows.
var ErrTablesNotEmpty = errors.New("bench: d_raw: orders or order_items holds rows; d_raw needs them empty, as it truncates them")

// sampleOrder is the i-th order of a benchmark: 1-3 lines over skus SKUs,
// the same mix as the load the pipeline benchmarks send.
type sampleOrder struct {
	customer string
	items    []saga.Item
}

// customer prefixes the customer id, so that a benchmark can find the
// orders of one of its phases in Postgres.
func newSampleOrder(customer string, i, skus int) sampleOrder {
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	perm := rng.Perm(skus)[:1+rng.IntN(3)]
	o := sampleOrder{customer: fmt.Sprintf("%sc-%d", customer, i%100), items: make([]saga.Item, len(perm))}
	for j, p := range perm {
		o.items[j] = saga.Item{SKU: fmt.Sprintf("SKU-%d", p), Quantity: uint32(1 + rng.IntN(3)), UnitPriceCents: int64(100 + p)}
	}
	return o
}

// OrderJSON is the i-th sample order (1-3 lines over skus SKUs, customer
// id prefixed with customer) as a client posts it to /v1/orders.
func OrderJSON(customer string, i, skus int) []byte { return newSampleOrder(customer, i, skus).json() }

// json is the order as a client posts it to /v1/orders.
func (o sampleOrder) json() []byte {
	b := fmt.Appendf(nil, `{"customer_id":%q,"currency":"EUR","items":[`, o.customer)
	for j, it := range o.items {
		if j > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"sku":%q,"quantity":%d,"unit_price_cents":%d}`, it.SKU, it.Quantity, it.UnitPriceCents)
	}
	return append(b, "]}"...)
}

// NullEdge is a fasthttp server on loopback that answers POST /v1/orders as
// the edge does (202, a Location header and {"order_id":…,"status":"pending"})
// without producing anything: the ceiling of the HTTP layer. It owns the
// goroutine that serves, which Close stops. Safe for concurrent use.
type NullEdge struct {
	// Addr is host:port of the server.
	Addr   string
	srv    *fasthttp.Server
	served chan error
	seen   atomic.Int64
}

// StartNullEdge starts a NullEdge on an ephemeral port of 127.0.0.1.
func StartNullEdge() (*NullEdge, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: null edge: listen: %w", err)
	}
	n := &NullEdge{Addr: ln.Addr().String(), served: make(chan error, 1)}
	n.srv = &fasthttp.Server{Handler: n.handle, NoDefaultServerHeader: true, CloseOnShutdown: true}
	go func() { n.served <- n.srv.Serve(ln) }()
	return n, nil
}

func (n *NullEdge) handle(ctx *fasthttp.RequestCtx) {
	n.seen.Add(1)
	if !ctx.IsPost() || string(ctx.Path()) != "/v1/orders" {
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		return
	}
	if len(ctx.PostBody()) == 0 {
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		return
	}
	id, err := saga.NewOrderID()
	if err != nil {
		ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		return
	}
	sid := id.String()
	ctx.SetStatusCode(fasthttp.StatusAccepted)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set(fasthttp.HeaderLocation, "/v1/orders/"+sid)
	ctx.SetBodyString(`{"order_id":"` + sid + `","status":"pending"}`)
}

// Seen is the number of requests the handler has been called for.
func (n *NullEdge) Seen() int64 { return n.seen.Load() }

// Close stops the server, closing its connections, and waits (within
// cleanupTimeout) until its goroutine has returned.
func (n *NullEdge) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	err := n.srv.ShutdownWithContext(ctx)
	select {
	case serr := <-n.served:
		return errors.Join(err, serr)
	case <-ctx.Done():
		return fmt.Errorf("bench: null edge did not stop within %s: %w", cleanupTimeout, errors.Join(err, ctx.Err()))
	}
}

// HNull drives a NullEdge closed loop (Rate 0) with requests POST
// /v1/orders of realistic orders over concurrency connections (0: Run's
// default, 64) and returns the successful requests per second. A run in
// which a request failed or did not reach the server is an error: its
// rate would not be the ceiling.
func HNull(ctx context.Context, requests, concurrency int) (rps float64, err error) {
	n, err := StartNullEdge()
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := n.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	res, err := Run(ctx, Load{Addr: n.Addr, Requests: requests, Concurrency: concurrency, Body: func(i int) Request {
		return Request{Method: "POST", Path: "/v1/orders", Body: newSampleOrder("", i, sampleSKUs).json()}
	}})
	if err != nil {
		return 0, fmt.Errorf("bench: h_null: %w", err)
	}
	if res.OK != requests || n.Seen() != int64(requests) {
		return 0, fmt.Errorf("bench: h_null: the server saw %d requests, %d answered 2xx, want %d of each: %v", n.Seen(), res.OK, requests, res)
	}
	return res.Throughput(), nil
}

// PRawResult is what PRaw measured.
type PRawResult struct {
	// ProduceRPS is records acknowledged per second.
	ProduceRPS float64
	// ConsumeRPS is records read back per second by one consumer.
	ConsumeRPS float64
	// Consumed is the number of records read back: PRaw's records on
	// success.
	Consumed int
}

// PRaw produces records records shaped like the edge's orders.submitted
// records (key: an order id; value: an encoded saga.OrderSubmitted) to a
// fresh topic of prawPartitions partitions, with the edge's producer
// settings (acks=all and idempotent, franz-go's defaults; the topology's
// partitioner; 2ms linger; at most prawMaxBuffered records in flight) and
// lz4, then reads them back from the start with one consumer. It creates
// topic with replication 1, which must not exist, and deletes it before
// returning. Each phase gives up after baselineTimeout.
func PRaw(ctx context.Context, brokers []string, records int, topic string) (res PRawResult, err error) {
	if len(brokers) == 0 || records <= 0 || topic == "" {
		return PRawResult{}, fmt.Errorf("bench: p_raw: brokers, records > 0 and a topic are required, got %v, %d, %q", brokers, records, topic)
	}
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("orderpipe-bench-admin"))
	if err != nil {
		return PRawResult{}, fmt.Errorf("bench: p_raw: admin client: %w", err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	cctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	_, err = adm.CreateTopic(cctx, prawPartitions, 1, nil, topic)
	cancel()
	if err != nil {
		return PRawResult{}, fmt.Errorf("bench: p_raw: create topic %s: %w", topic, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if _, derr := adm.DeleteTopic(dctx, topic); derr != nil && err == nil {
			err = fmt.Errorf("bench: p_raw: delete topic %s: %w", topic, derr)
		}
	}()

	if res.ProduceRPS, err = prawProduce(ctx, brokers, records, topic); err != nil {
		return PRawResult{}, err
	}
	if res.ConsumeRPS, res.Consumed, err = prawConsume(ctx, brokers, records, topic); err != nil {
		return PRawResult{}, err
	}
	return res, nil
}

// prawProduce produces the records and waits for every ack.
func prawProduce(ctx context.Context, brokers []string, records int, topic string) (float64, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ClientID("orderpipe-bench-praw"),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(topology.Partitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.MaxBufferedRecords(prawMaxBuffered),
	)
	if err != nil {
		return 0, fmt.Errorf("bench: p_raw: producer: %w", err)
	}
	defer cl.Close()
	// The records are made before the clock starts: the edge makes its
	// own while decoding requests, which is not the broker's work.
	recs := make([]kgo.Record, records)
	submittedAt := time.Now()
	for i := range recs {
		id, err := saga.NewOrderID()
		if err != nil {
			return 0, err
		}
		o := newSampleOrder("", i, sampleSKUs)
		msg := saga.OrderSubmitted{OrderID: id, CustomerID: o.customer, Currency: "EUR", Items: o.items, SubmittedAt: submittedAt}
		recs[i] = kgo.Record{Key: []byte(id.String()), Value: msg.Encode()}
	}

	ctx, cancel := context.WithTimeout(ctx, baselineTimeout)
	defer cancel()
	var (
		failed   atomic.Int64
		mu       sync.Mutex
		firstErr error
	)
	done := func(_ *kgo.Record, err error) {
		if err != nil && failed.Add(1) == 1 {
			mu.Lock()
			firstErr = err
			mu.Unlock()
		}
	}
	start := time.Now()
	// Produce blocks while prawMaxBuffered records are unacknowledged.
	for i := range recs {
		if ctx.Err() != nil {
			break
		}
		cl.Produce(ctx, &recs[i], done)
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, fmt.Errorf("bench: p_raw: wait for the acks of %d records: %w", records, err)
	}
	elapsed := time.Since(start)
	if n := failed.Load(); n > 0 {
		mu.Lock()
		defer mu.Unlock()
		return 0, fmt.Errorf("bench: p_raw: %d of %d records failed, the first: %w", n, records, firstErr)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("bench: p_raw: produce %d records: %w", records, err)
	}
	return float64(records) / elapsed.Seconds(), nil
}

// prawConsume reads topic from the start until it has read records records.
func prawConsume(ctx context.Context, brokers []string, records int, topic string) (float64, int, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ClientID("orderpipe-bench-praw"),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: p_raw: consumer: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, baselineTimeout)
	defer cancel()
	start := time.Now()
	got := 0
	for got < records {
		fetches := cl.PollFetches(ctx)
		// A fetch error on a topic just filled is a fault of the run,
		// not something to measure past. ctx ending shows up here too.
		if errs := fetches.Errors(); len(errs) > 0 {
			e := errs[0]
			return 0, got, fmt.Errorf("bench: p_raw: consume %s[%d] after %d of %d records: %w", e.Topic, e.Partition, got, records, e.Err)
		}
		got += fetches.NumRecords()
	}
	elapsed := time.Since(start)
	if got != records {
		return 0, got, fmt.Errorf("bench: p_raw: read back %d records, want %d", got, records)
	}
	return float64(records) / elapsed.Seconds(), got, nil
}

// DRaw migrates the database at pgURL with the sink's migrations, then
// COPYs orders final orders and their lines (1-3 each, 2 on average) into
// orders and order_items, drawBatch orders per transaction as the sink
// writes them, and returns the rows (orders and lines) written per second
// of the transactions. The tables must be empty, and DRaw truncates them
// before returning, so the database is left as found. It gives up after
// baselineTimeout.
func DRaw(ctx context.Context, pgURL string, orders int) (rowsPerS float64, err error) {
	if orders <= 0 {
		return 0, fmt.Errorf("bench: d_raw: orders must be > 0, got %d", orders)
	}
	ctx, cancel := context.WithTimeout(ctx, baselineTimeout)
	defer cancel()
	if err := pgsink.MigrateURL(ctx, pgURL, nil); err != nil {
		return 0, fmt.Errorf("bench: d_raw: %w", err)
	}
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return 0, fmt.Errorf("bench: d_raw: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		conn.Close(cctx)
	}()
	var used bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM orders) OR EXISTS (SELECT 1 FROM order_items)").Scan(&used); err != nil {
		return 0, fmt.Errorf("bench: d_raw: check the tables are empty: %w", err)
	}
	if used {
		return 0, ErrTablesNotEmpty
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if _, terr := conn.Exec(tctx, "TRUNCATE order_items, orders"); terr != nil && err == nil {
			err = fmt.Errorf("bench: d_raw: truncate the tables: %w", terr)
		}
	}()

	base := time.Now().UTC().Truncate(time.Microsecond)
	var (
		rows    int
		elapsed time.Duration
	)
	for first := 0; first < orders; first += drawBatch {
		ords, items, err := drawRows(first, min(drawBatch, orders-first), base)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if err := copyAll(ctx, tx, "orders", []string{"order_id", "customer_id", "status", "reason", "total_cents", "currency", "created_at", "updated_at", "version"}, ords); err != nil {
				return err
			}
			// After orders: order_items references them.
			return copyAll(ctx, tx, "order_items", []string{"order_id", "line_no", "sku", "quantity", "unit_price_cents"}, items)
		})
		elapsed += time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("bench: d_raw: orders %d..%d: %w", first, first+len(ords)-1, err)
		}
		rows += len(ords) + len(items)
	}
	return float64(rows) / elapsed.Seconds(), nil
}

// copyAll COPYs rows into table and checks that all of them arrived.
func copyAll(ctx context.Context, tx pgx.Tx, table string, cols []string, rows [][]any) error {
	n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("copy %d rows into %s: %w", len(rows), table, err)
	}
	if n != int64(len(rows)) {
		return fmt.Errorf("copy into %s: %d rows copied, want %d", table, n, len(rows))
	}
	return nil
}

// drawRows are the orders and order_items rows of n final orders from the
// first: mostly confirmed, one in ten rejected with a reason, as the sink
// finds them in the orders table.
func drawRows(first, n int, base time.Time) (orders, items [][]any, err error) {
	orders = make([][]any, 0, n)
	items = make([][]any, 0, 2*n)
	for i := first; i < first+n; i++ {
		id, err := saga.NewOrderID()
		if err != nil {
			return nil, nil, err
		}
		o := newSampleOrder("", i, sampleSKUs)
		var total int64
		for j, it := range o.items {
			total += int64(it.Quantity) * it.UnitPriceCents
			items = append(items, []any{[16]byte(id), int32(j), it.SKU, int32(it.Quantity), it.UnitPriceCents})
		}
		status, reason := "confirmed", any(nil)
		if i%10 == 9 {
			status, reason = "rejected", "insufficient stock for "+o.items[0].SKU
		}
		created := base.Add(time.Duration(i) * time.Millisecond)
		orders = append(orders, []any{[16]byte(id), o.customer, status, reason, total, "EUR", created, created.Add(40 * time.Millisecond), int64(3)})
	}
	return orders, items, nil
}

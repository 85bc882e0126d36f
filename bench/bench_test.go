package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/bench"
	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/kafkatest"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/valyala/fasthttp"
)

// orderBody is a 1-3 line order over skus SKUs.
func orderBody(i, skus int) []byte { return bench.OrderJSON("", i, skus) }

func setStock(b *testing.B, s *bench.System, skus int, n int64) {
	b.Helper()
	res, err := bench.Run(b.Context(), bench.Load{Addr: s.Addr, Requests: skus, Concurrency: 8, Body: func(i int) bench.Request {
		return bench.Request{Method: "PUT", Path: fmt.Sprintf("/v1/inventory/SKU-%d", i), Body: fmt.Appendf(nil, `{"available":%d}`, n)}
	}})
	if err != nil || res.OK != skus {
		b.Fatalf("set stock: %v %v", res, err)
	}
}

func postOrders(n, skus int) func(int) bench.Request {
	return func(i int) bench.Request {
		return bench.Request{Method: "POST", Path: "/v1/orders", Body: orderBody(i, skus)}
	}
}

// brokerKind is a cluster a benchmark runs on, and how orderpipe is tuned
// for it; start returns its seed brokers (nil: the in-process one) and
// registers its cleanup with b.
type brokerKind struct {
	name      string
	start     func(b *testing.B) []string
	fetchWait time.Duration
}

// brokerKinds are the in-process broker and a real Apache Kafka, as is and
// with --fetch-wait=25ms: the one in ORDERPIPE_BENCH_BROKERS when set (e.g.
// after `make kafka-up`), else one started for each run from the cached
// jars, else none, saying why.
func brokerKinds(b *testing.B) []brokerKind {
	kinds := []brokerKind{{name: "in-process", start: func(*testing.B) []string { return nil }}}
	kafka := func(b *testing.B) []string { return kafkatest.KafkaFor(b) }
	if seeds := os.Getenv("ORDERPIPE_BENCH_BROKERS"); seeds != "" {
		kafka = func(*testing.B) []string { return strings.Split(seeds, ",") }
	} else if err := kafkatest.KafkaAvailable(); err != nil {
		b.Logf("no real-broker run: %v", err)
		return kinds
	}
	return append(kinds,
		brokerKind{name: "kafka", start: kafka},
		brokerKind{name: "kafka/fetch-wait=25ms", start: kafka, fetchWait: 25 * time.Millisecond})
}

// BenchmarkEndToEnd offers orders as fast as 64 connections can send them
// and reports three rates measured in the same run: accepted by the edge
// (202 after the broker's ack), final in the order table, and stored in
// Postgres; plus their ratios. It runs once per broker kind and compares
// the final rates. Run it with -benchtime=1x: each iteration is a whole
// scenario.
func BenchmarkEndToEnd(b *testing.B) {
	final := map[string]float64{}
	for _, k := range brokerKinds(b) {
		b.Run("broker="+k.name, func(b *testing.B) { final[k.name] = endToEnd(b, k) })
	}
	// A parent benchmark's log is not shown once it has sub-benchmarks.
	if in := final["in-process"]; in > 0 {
		for _, k := range []string{"kafka", "kafka/fetch-wait=25ms"} {
			if f := final[k]; f > 0 {
				fmt.Printf("BenchmarkEndToEnd: final orders/s: in-process %.0f, %s %.0f (%.2f of in-process)\n", in, k, f, f/in)
			}
		}
	}
}

func endToEnd(b *testing.B, k brokerKind) (finalRate float64) {
	const orders, skus, warmup = 20000, 50, 10000
	s, err := bench.StartSystem(b.Context(), bench.Options{Log: testlog.New(), Brokers: k.start(b), FetchWait: k.fetchWait,
		Edge: func(c *ingest.Config) { c.MaxInFlight = 20000 }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	setStock(b, s, skus, 1_000_000_000)
	// Warm up first: a fresh JVM broker spends its first seconds compiling
	// its hot paths, which is not what a running cluster costs.
	if res, err := bench.Run(b.Context(), bench.Load{Addr: s.Addr, Requests: warmup, Concurrency: 64, Body: postOrders(warmup, skus)}); err != nil || res.OK != warmup {
		b.Fatalf("warm-up: %v %v", res, err)
	}
	if _, err := s.WaitMetric(b.Context(), "orderpipe_orders_final_total", warmup, 3*time.Minute); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		before, err := s.Metric("orderpipe_orders_final_total")
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		res, err := bench.Run(b.Context(), bench.Load{Addr: s.Addr, Requests: orders, Concurrency: 64, Body: postOrders(orders, skus)})
		if err != nil {
			b.Fatal(err)
		}
		if res.OK != orders {
			b.Fatalf("not every order accepted: %v", res)
		}
		final, err := s.WaitMetric(b.Context(), "orderpipe_orders_final_total", before+orders, 3*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		stored := waitRows(b, s, warmup+orders)
		accept := res.Throughput()
		finalRate = orders / final.Sub(start).Seconds()
		pg := orders / stored.Sub(start).Seconds()
		b.ReportMetric(accept, "accepted/s")
		b.ReportMetric(finalRate, "final/s")
		b.ReportMetric(pg, "stored/s")
		b.ReportMetric(finalRate/accept, "final/accepted")
		b.ReportMetric(float64(res.Percentile(99).Microseconds())/1000, "accept-p99-ms")
		b.Logf("edge: %v", res)
		b.Logf("%d orders: accepted %.0f/s, final %.0f/s (%.2f of accepted), in Postgres %.0f/s", orders, accept, finalRate, finalRate/accept, pg)
	}
	return finalRate
}

// waitRows waits until Postgres holds at least n orders beyond those there
// before, and returns when.
func waitRows(b *testing.B, s *bench.System, n int) time.Time {
	b.Helper()
	conn, err := pgx.Connect(b.Context(), s.PostgresURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	await.Until(b, "final orders in postgres", 3*time.Minute, func() error {
		var got int
		if err := conn.QueryRow(b.Context(), "select count(*) from orders where status <> 'pending'").Scan(&got); err != nil {
			return err
		}
		if got < n {
			return fmt.Errorf("%d of %d", got, n)
		}
		return nil
	})
	return time.Now()
}

// BenchmarkOverload offers, open loop, about twice what the pipeline can
// finish, on few hot SKUs (the saga prototype collapsed here: each hot SKU's
// state grew with the orders in flight). It reports the finished rate under
// overload against the rate of a calm run on the same system, and how much
// the edge shed (503) instead of queueing.
func BenchmarkOverload(b *testing.B) {
	const skus = 5
	s, err := bench.StartSystem(b.Context(), bench.Options{Log: testlog.New()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	setStock(b, s, skus, 1_000_000_000)
	for b.Loop() {
		calmN := 5000
		before, _ := s.Metric("orderpipe_orders_final_total")
		start := time.Now()
		res, err := bench.Run(b.Context(), bench.Load{Addr: s.Addr, Requests: calmN, Concurrency: 32, Body: postOrders(calmN, skus)})
		if err != nil || res.OK != calmN {
			b.Fatalf("calm run: %v %v", res, err)
		}
		done, err := s.WaitMetric(b.Context(), "orderpipe_orders_final_total", before+float64(calmN), 3*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		calm := float64(calmN) / done.Sub(start).Seconds()

		rate := 2 * calm
		overN := int(rate * 10) // ten seconds of overload
		before, _ = s.Metric("orderpipe_orders_final_total")
		start = time.Now()
		res, err = bench.Run(b.Context(), bench.Load{Addr: s.Addr, Rate: rate, Requests: overN, Concurrency: 512, MaxDuration: time.Minute, Body: postOrders(overN, skus)})
		if err != nil {
			b.Fatal(err)
		}
		done, err = s.WaitMetric(b.Context(), "orderpipe_orders_final_total", before+float64(res.OK), 3*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		over := float64(res.OK) / done.Sub(start).Seconds()
		b.ReportMetric(calm, "calm-final/s")
		b.ReportMetric(over, "overload-final/s")
		b.ReportMetric(over/calm, "overload/calm")
		b.ReportMetric(float64(res.Codes[503]+res.Codes[429])/float64(res.Sent), "shed-fraction")
		b.Logf("calm: %.0f final/s; offered %.0f/s for 10s: %v; finished %.0f/s (%.2f of calm)", calm, rate, res, over, over/calm)
	}
}

// BenchmarkLatency measures one order at a time on an otherwise idle
// system, per broker kind: from the POST to the answer of a GET ?wait that
// says the order is final. It is the price of batching: the consumers wait
// for a batch to fill (or for their fetch wait to pass) at every hop.
func BenchmarkLatency(b *testing.B) {
	for _, k := range brokerKinds(b) {
		b.Run("broker="+k.name, func(b *testing.B) { latency(b, k) })
	}
}

func latency(b *testing.B, k brokerKind) {
	const orders, skus = 200, 10
	s, err := bench.StartSystem(b.Context(), bench.Options{Log: testlog.New(), Brokers: k.start(b), FetchWait: k.fetchWait})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	setStock(b, s, skus, 1_000_000_000)
	c := &fasthttp.Client{}
	final := func(i int) (time.Duration, error) {
		start := time.Now()
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + s.Addr + "/v1/orders")
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		req.SetBody(orderBody(i, skus))
		if err := c.DoTimeout(req, resp, 10*time.Second); err != nil || resp.StatusCode() != 202 {
			return 0, fmt.Errorf("POST: %v %d %s", err, resp.StatusCode(), resp.Body())
		}
		var accepted struct {
			ID string `json:"order_id"`
		}
		if err := json.Unmarshal(resp.Body(), &accepted); err != nil {
			return 0, err
		}
		for range 10 { // each GET holds up to 2s: bounded at 20s
			req.Reset()
			req.SetRequestURI("http://" + s.Addr + "/v1/orders/" + accepted.ID + "?wait=2s")
			if err := c.DoTimeout(req, resp, 10*time.Second); err != nil || resp.StatusCode() != 200 {
				return 0, fmt.Errorf("GET: %v %d %s", err, resp.StatusCode(), resp.Body())
			}
			if !bytes.Contains(resp.Body(), []byte(`"pending"`)) {
				return time.Since(start), nil
			}
		}
		return 0, fmt.Errorf("order %s not final within 20s", accepted.ID)
	}
	for i := range 20 { // warm-up
		if _, err := final(-1 - i); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		lat := make([]time.Duration, orders)
		for i := range lat {
			if lat[i], err = final(i); err != nil {
				b.Fatal(err)
			}
		}
		slices.Sort(lat)
		p50, p99 := lat[orders/2], lat[orders*99/100]
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		b.Logf("%d orders one at a time, POST to final: p50 %s, p99 %s, max %s", orders, p50, p99, lat[orders-1])
	}
}

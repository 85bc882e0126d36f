package bench_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/bench"
	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/internal/membroker"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/valyala/fasthttp"
)

// TestHNullServerAnswersLikeTheEdge: on the NullEdge behind HNull, a POST
// /v1/orders gets 202, a Location naming a fresh order id and the edge's
// body; anything else 404.
func TestHNullServerAnswersLikeTheEdge(t *testing.T) {
	n, err := bench.StartNullEdge()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	c := &fasthttp.Client{}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + n.Addr + "/v1/orders")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyString(`{"customer_id":"c-1","currency":"EUR","items":[{"sku":"SKU-1","quantity":1,"unit_price_cents":101}]}`)
	if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := resp.StatusCode(); got != fasthttp.StatusAccepted {
		t.Fatalf("POST /v1/orders: status got %d, want 202", got)
	}
	var body struct {
		OrderID string `json:"order_id"`
		Status  string `json:"status"`
	}
	if err := json.Unmarshal(resp.Body(), &body); err != nil {
		t.Fatalf("POST /v1/orders: body %q: %v", resp.Body(), err)
	}
	if _, err := saga.ParseOrderID(body.OrderID); err != nil || body.Status != "pending" {
		t.Errorf("POST /v1/orders: body got %q, want an order id and status pending (%v)", resp.Body(), err)
	}
	if got, want := string(resp.Header.Peek(fasthttp.HeaderLocation)), "/v1/orders/"+body.OrderID; got != want {
		t.Errorf("POST /v1/orders: Location got %q, want %q", got, want)
	}

	req.Reset()
	req.SetRequestURI("http://" + n.Addr + "/v1/inventory/SKU-1")
	if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := resp.StatusCode(); got != fasthttp.StatusNotFound {
		t.Errorf("GET /v1/inventory/SKU-1: status got %d, want 404", got)
	}
	if got := n.Seen(); got != 2 {
		t.Errorf("requests seen: got %d, want 2", got)
	}
}

// TestHNull: every request is answered 2xx and reaches the server (HNull
// fails otherwise), at a rate above zero.
func TestHNull(t *testing.T) {
	const requests, concurrency = 2000, 16
	rps, err := bench.HNull(t.Context(), requests, concurrency)
	if err != nil {
		t.Fatalf("HNull(%d, %d): %v", requests, concurrency, err)
	}
	if rps <= 0 {
		t.Fatalf("HNull(%d, %d): got %.0f req/s, want > 0", requests, concurrency, rps)
	}
	t.Logf("h_null: %d requests over %d connections: %.0f ok/s", requests, concurrency, rps)
}

// TestPRaw runs on the in-process broker: internal/kafkatest has no
// in-process one, and a real broker's start would take most of this
// test's budget.
func TestPRaw(t *testing.T) {
	c, err := membroker.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	const records, topic = 20000, "bench.p-raw-test"
	got, err := bench.PRaw(t.Context(), c.Brokers(), records, topic)
	if err != nil {
		t.Fatalf("PRaw(%d): %v", records, err)
	}
	if got.Consumed != records {
		t.Errorf("PRaw(%d): consumed got %d, want %d", records, got.Consumed, records)
	}
	if got.ProduceRPS <= 0 || got.ConsumeRPS <= 0 {
		t.Errorf("PRaw(%d): got produce %.0f/s, consume %.0f/s, want both > 0", records, got.ProduceRPS, got.ConsumeRPS)
	}
	// The topic is PRaw's to delete: a second run must be able to create it.
	if _, err := bench.PRaw(t.Context(), c.Brokers(), 10, topic); err != nil {
		t.Errorf("PRaw(10) on the same topic name again: %v", err)
	}
	t.Logf("p_raw (in-process broker): %d records: produce %.0f/s, consume %.0f/s", records, got.ProduceRPS, got.ConsumeRPS)
}

// TestDRaw: DRaw writes, reports a rate, and leaves the tables empty; it
// refuses tables that already hold rows, and leaves those alone.
func TestDRaw(t *testing.T) {
	pg := apptest.PostgresFor(t)
	url, err := pg.CreateDatabase(t.Context(), "d_raw")
	if err != nil {
		t.Fatal(err)
	}
	// Two full batches and a partial one.
	const orders = 12000
	rps, err := bench.DRaw(t.Context(), url, orders)
	if err != nil {
		t.Fatalf("DRaw(%d): %v", orders, err)
	}
	if rps <= 0 {
		t.Errorf("DRaw(%d): got %.0f rows/s, want > 0", orders, rps)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(t.Context()) })
	for _, table := range []string{"orders", "order_items"} {
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("after DRaw: %s has %d rows, want 0", table, n)
		}
	}
	t.Logf("d_raw: %d orders and their lines: %.0f rows/s", orders, rps)

	if _, err := conn.Exec(t.Context(), `INSERT INTO orders (order_id, customer_id, status, total_cents, currency, created_at, updated_at, version)
		VALUES (gen_random_uuid(), 'c-1', 'pending', 100, 'EUR', now(), now(), 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := bench.DRaw(t.Context(), url, 10); !errors.Is(err, bench.ErrTablesNotEmpty) {
		t.Errorf("DRaw on a table holding a row: got %v, want ErrTablesNotEmpty", err)
	}
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM orders").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("after a refused DRaw: orders has %d rows, want the 1 it held", n)
	}
}

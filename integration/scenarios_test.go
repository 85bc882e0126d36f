package integration_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func scenarios() []scenario {
	return []scenario{
		{name: "saga", run: testSaga},
		{name: "flow", run: testFlow},
		{name: "replay", run: testReplay},
		{name: "idempotency", run: testIdempotency},
		{name: "scale-out", run: testScaleOut},
		{name: "read-your-writes", run: testReadYourWrites},
		{name: "processes", run: testProcesses},
		{name: "broker-kill-run", run: testBrokerKillRun, restartsBroker: true},
	}
}

// testSaga: confirmation, rejection with compensation (the reserved line of
// a rejected order is released), and an unknown SKU.
func testSaga(e *env) {
	r := e.startAll()
	e.setStock(r.Addr, map[string]int{"A": 5, "B": 1})
	first := e.submit(r.Addr, []order{newOrder(line{"A", 2, 100}, line{"B", 1, 100})})
	e.final(r.Addr, first, time.Minute)
	second := e.submit(r.Addr, []order{newOrder(line{"A", 2, 100}, line{"B", 1, 100})})
	e.final(r.Addr, second, time.Minute)
	rest := e.submit(r.Addr, []order{newOrder(line{"A", 3, 100}), newOrder(line{"NOSUCH", 1, 100})})
	got := e.final(r.Addr, append(append(first, second...), rest...), time.Minute)
	want := map[string]string{first[0]: "confirmed", second[0]: "rejected", rest[0]: "confirmed", rest[1]: "rejected"}
	for id, st := range want {
		if got[id]["status"] != st {
			e.t.Errorf("order %s: %v, want %s", id, got[id], st)
		}
	}
	if got[second[0]]["reason"] == nil {
		e.t.Errorf("rejected order without a reason: %v", got[second[0]])
	}
	e.checkConservation(r.Addr, map[string]int{"A": 5, "B": 1}, got)
}

// randomOrders makes n orders of 1-3 distinct SKUs among skus.
func randomOrders(n, skus int, seed uint64) []order {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]order, n)
	for i := range out {
		o := order{CustomerID: fmt.Sprintf("c-%d", i%20), Currency: "EUR"}
		for _, p := range rng.Perm(skus)[:1+rng.IntN(3)] {
			o.Items = append(o.Items, line{fmt.Sprintf("S%d", p), 1 + rng.IntN(3), 100 + p})
		}
		out[i] = o
	}
	return out
}

func stockOf(skus, n int) map[string]int {
	m := map[string]int{}
	for i := range skus {
		m[fmt.Sprintf("S%d", i)] = n
	}
	return m
}

// testFlow: concurrent orders over scarce stock; all final, stock conserved,
// Postgres equal to the API.
func testFlow(e *env) {
	r := e.startAll()
	initial := stockOf(10, 40)
	e.setStock(r.Addr, initial)
	ids := e.submit(r.Addr, randomOrders(400, 10, 1))
	got := e.final(r.Addr, ids, 2*time.Minute)
	stock := e.checkConservation(r.Addr, initial, got)
	e.checkPostgres(got, stock)
}

// checkPostgres waits until Postgres holds every order with the status the
// API gives, and every SKU with the API's stock and nothing reserved.
func (e *env) checkPostgres(orders map[string]map[string]any, stock map[string]int) {
	e.t.Helper()
	conn, err := pgx.Connect(e.t.Context(), e.pgURL)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	await.Until(e.t, "postgres converged", 2*time.Minute, func() error {
		rows, err := conn.Query(e.t.Context(), "select order_id::text, status, total_cents from orders")
		if err != nil {
			return err
		}
		got := map[string]string{}
		totals := map[string]int64{}
		for rows.Next() {
			var id, st string
			var total int64
			if err := rows.Scan(&id, &st, &total); err != nil {
				return err
			}
			got[id], totals[id] = st, total
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(got) != len(orders) {
			return fmt.Errorf("postgres holds %d orders, the API %d", len(got), len(orders))
		}
		for id, o := range orders {
			if got[id] != o["status"] || totals[id] != int64(o["total_cents"].(float64)) {
				return fmt.Errorf("order %s: postgres %q/%d, api %v/%v", id, got[id], totals[id], o["status"], o["total_cents"])
			}
		}
		for sku, avail := range stock {
			var a, res int64
			if err := conn.QueryRow(e.t.Context(), "select available, reserved from inventory where sku = $1", sku).Scan(&a, &res); err != nil {
				return fmt.Errorf("%s: %w", sku, err)
			}
			if a != int64(avail) || res != 0 {
				return fmt.Errorf("%s: postgres available %d reserved %d, api %d", sku, a, res, avail)
			}
		}
		return nil
	})
}

// testReplay: the processors run as their own role; after the orders are
// settled they are stopped, both groups' offsets are moved back to the start
// of their inputs, and they restart with empty local state: every input is
// replayed over tables rebuilt from their changelogs. Nothing may change.
func testReplay(e *env) {
	edge := e.start(app.Roles{Ingest: true, Sink: true, EnsureTopics: true}, e.t.TempDir())
	proc := e.start(app.Roles{Process: true}, e.t.TempDir())
	initial := stockOf(8, 30)
	e.setStock(edge.Addr, initial)
	ids := e.submit(edge.Addr, randomOrders(300, 8, 2))
	before := e.final(edge.Addr, ids, 2*time.Minute)
	stock := e.checkConservation(edge.Addr, initial, before)
	e.waitLag(0)
	if err := proc.Stop(); err != nil {
		e.t.Fatalf("stop the processors: %v", err)
	}

	e.rewind()
	if l := e.lag(); l == 0 {
		e.t.Fatal("after the rewind there is nothing to replay")
	}
	e.start(app.Roles{Process: true}, e.t.TempDir())
	e.waitLag(0)
	after := e.final(edge.Addr, ids, time.Minute)
	for _, id := range ids {
		if before[id]["status"] != after[id]["status"] || before[id]["version"] != after[id]["version"] {
			e.t.Errorf("order %s changed in the replay: %v → %v", id, before[id], after[id])
		}
	}
	if again := e.checkConservation(edge.Addr, initial, after); fmt.Sprint(again) != fmt.Sprint(stock) {
		e.t.Errorf("stock changed in the replay: %v → %v", stock, again)
	}
	e.checkPostgres(after, stock)
}

func (e *env) admin() (*kadm.Client, func()) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		e.t.Fatal(err)
	}
	return kadm.NewClient(cl), cl.Close
}

// rewind commits the start offsets of both groups' inputs.
func (e *env) rewind() {
	e.t.Helper()
	adm, done := e.admin()
	defer done()
	for group, topics := range topology.GroupInputs() {
		start, err := adm.ListStartOffsets(e.t.Context(), topics...)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := adm.CommitAllOffsets(e.t.Context(), string(group), start.Offsets()); err != nil {
			e.t.Fatalf("rewind %s: %v", group, err)
		}
	}
}

// lag is the total lag of both groups (uncommitted input records).
func (e *env) lag() int64 {
	e.t.Helper()
	adm, done := e.admin()
	defer done()
	var total int64
	for group, topics := range topology.GroupInputs() {
		end, err := adm.ListEndOffsets(e.t.Context(), topics...)
		if err != nil {
			e.t.Fatal(err)
		}
		committed, err := adm.FetchOffsets(e.t.Context(), string(group))
		if err != nil {
			e.t.Fatal(err)
		}
		end.Each(func(o kadm.ListedOffset) {
			at := int64(0)
			if c, ok := committed.Lookup(o.Topic, o.Partition); ok {
				at = c.At
			}
			total += o.Offset - at
		})
	}
	return total
}

func (e *env) waitLag(want int64) {
	e.t.Helper()
	await.Until(e.t, fmt.Sprintf("group lag %d", want), 2*time.Minute, func() error {
		if l := e.lag(); l != want {
			return fmt.Errorf("lag %d", l)
		}
		return nil
	})
}

// testIdempotency: the same Idempotency-Key with the same body gives one
// order id and one order; with another body it is refused.
func testIdempotency(e *env) {
	r := e.startAll()
	e.setStock(r.Addr, map[string]int{"I": 10})
	o := newOrder(line{"I", 1, 5})
	hdr := map[string]string{"Idempotency-Key": "key-1"}
	code1, b1 := e.do(r.Addr, "POST", "/v1/orders", o, hdr)
	code2, b2 := e.do(r.Addr, "POST", "/v1/orders", o, hdr)
	if code1 != 202 || code2 != 202 || b1["order_id"] == nil || b1["order_id"] != b2["order_id"] {
		e.t.Fatalf("same key, same body: %d %v then %d %v; want one order id twice", code1, b1, code2, b2)
	}
	id := b1["order_id"].(string)
	e.final(r.Addr, []string{id}, time.Minute)
	code3, b3 := e.do(r.Addr, "POST", "/v1/orders", o, hdr)
	if code3 != 202 || b3["order_id"] != id {
		e.t.Errorf("replay after the order is final: %d %v, want 202 with %s", code3, b3, id)
	}
	o.Items[0].Quantity = 2
	if code, body := e.do(r.Addr, "POST", "/v1/orders", o, hdr); code != 422 {
		e.t.Errorf("same key, other body: %d %v; want 422", code, body)
	}
	// One order, one unit sold: the retries created nothing.
	await.Until(e.t, "one unit sold", time.Minute, func() error {
		_, st := e.do(r.Addr, "GET", "/v1/inventory/I", nil, nil)
		if st["sold"] != float64(1) || st["available"] != float64(9) || st["reserved"] != float64(0) {
			return fmt.Errorf("stock after retries: %v, want 1 sold, 9 available", st)
		}
		return nil
	})
}

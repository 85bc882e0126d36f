package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/saga"

	"github.com/orderpipe/orderpipe/topology"
)

func TestIdempotencyKey(t *testing.T) {
	h := newHarness(t, options{})
	body := orderBody("c1", "A:1", "B:2")
	// The same order, written differently: same key order-independent hash.
	sameOrder := `{ "currency":"EUR", "items":[{"sku":"B","quantity":2,"unit_price_cents":100},{"unit_price_cents":100,"quantity":1,"sku":"A"}], "customer_id":"c1" }`
	first := h.postOrder(body, "Idempotency-Key", "key-1")
	if first.status != 202 || first.header["Idempotent-Replayed"] != "" {
		t.Fatalf("first: got %s replayed %q, want 202 not replayed", first, first.header["Idempotent-Replayed"])
	}
	id := field(t, first.body, "order_id")
	if want := saga.OrderIDForKey("", "key-1").String(); id != want {
		t.Fatalf("order id: got %s, want OrderIDForKey = %s", id, want)
	}

	// Before the view shows the order, this process remembers the key.
	retry := h.postOrder(sameOrder, "Idempotency-Key", "key-1")
	if retry.status != 202 || string(retry.body) != string(first.body) || retry.header["Location"] != first.header["Location"] || retry.header["Idempotent-Replayed"] != "true" {
		t.Fatalf("retry: got %s Location %q replayed %q, want the first answer %s, replayed", retry, retry.header["Location"], retry.header["Idempotent-Replayed"], first)
	}
	if r := h.postOrder(orderBody("c1", "A:2", "B:2"), "Idempotency-Key", "key-1"); r.status != 422 || problemOf(t, r).Type != problemTypeBase+"idempotency-key-reuse" {
		t.Fatalf("other body, same key, before the view: got %s, want 422 idempotency-key-reuse", r)
	}

	// Once the view shows it, the view answers.
	subs := h.submitted()
	if len(subs) != 1 {
		t.Fatalf("records: got %d, want 1", len(subs))
	}
	h.setOrder(subs[id], saga.StatusPending, 1)
	await.Until(t, "idempotency entry gone", 5*time.Second, func() error {
		if n := h.edge.idem.size(); n != 0 {
			return fmt.Errorf("%d entries", n)
		}
		return nil
	})
	replay := h.postOrder(body, "Idempotency-Key", "key-1")
	if replay.status != 202 || string(replay.body) != string(first.body) || replay.header["Idempotent-Replayed"] != "true" {
		t.Fatalf("replay from the view: got %s replayed %q, want the first answer, replayed", replay, replay.header["Idempotent-Replayed"])
	}
	if r := h.postOrder(orderBody("c1", "A:1"), "Idempotency-Key", "key-1"); r.status != 422 || problemOf(t, r).Type != problemTypeBase+"idempotency-key-reuse" {
		t.Fatalf("other body, same key, from the view: got %s, want 422", r)
	}
	// A replay of a final order says so: the client learns what happened.
	h.setOrder(subs[id], saga.StatusConfirmed, 2)
	await.Until(t, "a replay says confirmed", 5*time.Second, func() error {
		r := h.postOrder(body, "Idempotency-Key", "key-1")
		if r.status != 202 || r.header["Idempotent-Replayed"] != "true" || field(t, r.body, "order_id") != id {
			t.Fatalf("replay of a confirmed order: got %s replayed %q", r, r.header["Idempotent-Replayed"])
		}
		if got := field(t, r.body, "status"); got != "confirmed" {
			return fmt.Errorf("status %q", got)
		}
		return nil
	})
	// A new key is a new order.
	other := h.postOrder(body, "Idempotency-Key", "key-2")
	if other.status != 202 || field(t, other.body, "order_id") == id {
		t.Fatalf("new key: got %s, want 202 with a new id", other)
	}
	if n := len(h.submitted()); n != 2 {
		t.Fatalf("records: got %d, want 2 (one per key)", n)
	}
}

func TestIdempotencyKeyConcurrent(t *testing.T) {
	h := newHarness(t, options{})
	const n = 32
	var wg sync.WaitGroup
	answers := make([]response, n)
	for i := range n {
		wg.Go(func() {
			body := orderBody("c1", "A:1")
			if i%4 == 3 {
				body = orderBody("c1", "A:9") // a different body with the same key
			}
			r, err := doOn(h.http, "POST", "/v1/orders", "application/json", body, "Idempotency-Key", "same")
			if err != nil {
				t.Error(err)
			}
			answers[i] = r
		})
	}
	wg.Wait()
	// Whichever body came first owns the key; the others are refused.
	ids := map[string]int{}
	for i, r := range answers {
		switch r.status {
		case 202:
			ids[field(t, r.body, "order_id")]++
		case 422:
		default:
			t.Errorf("request %d: got %s, want 202 or 422", i, r)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("order ids: got %v, want exactly one", ids)
	}
	if subs := h.submitted(); len(subs) != 1 {
		t.Fatalf("records: got %d, want 1 for %d concurrent requests with one key", len(subs), n)
	}
}

func TestGetOrder(t *testing.T) {
	h := newHarness(t, options{cfg: Config{MaxWait: time.Minute}})
	r := h.postOrder(orderBody("cust-9", "A:2", "B:3"))
	id := field(t, r.body, "order_id")
	m := h.submitted()[id]

	// Read-your-writes: the edge that accepted the order answers for it
	// before its view shows it, as the processor will first write it.
	early := getOrderJSON(t, h, "/v1/orders/"+id)
	if early.Status != "pending" || early.Version != 1 || early.CustomerID != "cust-9" || early.TotalCents != 500 || len(early.Items) != 2 || !early.CreatedAt.Equal(m.SubmittedAt) {
		t.Fatalf("GET before the view shows the order: got %+v, want it pending at version 1 as submitted", early)
	}
	if r := h.do("GET", "/v1/orders/0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e", "", ""); r.status != 404 {
		t.Fatalf("GET of an order nobody accepted: got %s, want 404", r)
	}
	for _, bad := range []string{"nope", "0190c1b27a3e7cc19d4e1f2a3b4c5d6e", "{0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e}"} {
		if r := h.do("GET", "/v1/orders/"+bad, "", ""); r.status != 400 {
			t.Errorf("GET /v1/orders/%s: got %s, want 400", bad, r)
		}
	}
	for _, bad := range []string{"abc", "-1s", "1"} {
		if r := h.do("GET", "/v1/orders/"+id+"?wait="+bad, "", ""); r.status != 400 {
			t.Errorf("?wait=%s: got %s, want 400", bad, r)
		}
	}

	st := h.setOrder(m, saga.StatusPending, 1)
	got := getOrderJSON(t, h, "/v1/orders/"+id)
	want := orderJSON{
		OrderID: id, Status: "pending", CustomerID: "cust-9", Currency: "EUR",
		Items:      []itemJSON{{"A", 2, 100}, {"B", 3, 100}},
		TotalCents: 500, CreatedAt: st.CreatedAt, UpdatedAt: st.UpdatedAt, Version: 1,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GET: got %+v, want %+v", got, want)
	}
	// Upper-case ids name the same order.
	if r := h.do("GET", "/v1/orders/"+upper(id), "", ""); r.status != 200 {
		t.Errorf("GET with an upper-case id: got %s, want 200", r)
	}

	// ?wait= on a pending order returns when the view reports it final.
	done := make(chan response, 1)
	go func() {
		r, err := doOn(h.http, "GET", "/v1/orders/"+id+"?wait=30s", "", "")
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	await.Until(t, "waiter registered", 5*time.Second, func() error {
		if h.edge.waiters.waiting() != 1 {
			return errors.New("no waiter yet")
		}
		return nil
	})
	start := time.Now()
	h.writeTable(topology.OrdersTable(), id, stateOf(m, saga.StatusRejected, 2).Encode())
	select {
	case r := <-done:
		var o orderJSON
		if err := json.Unmarshal(r.body, &o); err != nil || r.status != 200 || o.Status != "rejected" || o.Reason != "insufficient stock" || o.Version != 2 {
			t.Fatalf("woken GET: got %s, want 200 rejected with a reason, version 2", r)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("woken GET took %s after the update", took)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("?wait=30s GET not woken by the update within 20s")
	}
	if n := h.edge.waiters.waiting(); n != 0 {
		t.Errorf("waiters left: %d", n)
	}

	// A final order answers at once; an unknown one after the wait.
	if r := h.do("GET", "/v1/orders/"+id+"?wait=30s", "", ""); r.status != 200 || r.elapsed > 5*time.Second {
		t.Errorf("?wait on a final order: got %s after %s, want 200 at once", r, r.elapsed)
	}
	unknown, _ := saga.NewOrderID()
	if r := h.do("GET", "/v1/orders/"+unknown.String()+"?wait=200ms", "", ""); r.status != 404 || r.elapsed < 200*time.Millisecond {
		t.Errorf("?wait=200ms on an unknown order: got %s after %s, want 404 after the wait", r, r.elapsed)
	}
}

func TestGetOrderWaitIsCapped(t *testing.T) {
	h := newHarness(t, options{cfg: Config{MaxWait: 300 * time.Millisecond}})
	r := h.postOrder(orderBody("c2", "A:1"))
	id := field(t, r.body, "order_id")
	h.setOrder(h.submitted()[id], saga.StatusPending, 1)
	r = h.do("GET", "/v1/orders/"+id+"?wait=1h", "", "")
	if r.status != 200 || field(t, r.body, "status") != "pending" || r.elapsed < 300*time.Millisecond || r.elapsed > 10*time.Second {
		t.Errorf("?wait=1h with MaxWait 300ms: got %s after %s, want 200 pending after about 300ms", r, r.elapsed)
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func getOrderJSON(t *testing.T, h *harness, path string) orderJSON {
	t.Helper()
	r := h.do("GET", path, "", "")
	if r.status != 200 {
		t.Fatalf("GET %s: got %s, want 200", path, r)
	}
	var o orderJSON
	if err := json.Unmarshal(r.body, &o); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, r.body)
	}
	return o
}

func TestAdmissionControl(t *testing.T) {
	h := newHarness(t, options{cfg: Config{MaxInFlight: 2}})
	var ids []string
	for i := range 2 {
		r := h.postOrder(orderBody(fmt.Sprint("c", i), "A:1"))
		if r.status != 202 {
			t.Fatalf("order %d: got %s, want 202", i, r)
		}
		ids = append(ids, field(t, r.body, "order_id"))
	}
	r := h.postOrder(orderBody("c3", "A:1"))
	if r.status != 503 || r.header["Retry-After"] == "" || problemOf(t, r).Type != problemTypeBase+"overloaded" {
		t.Fatalf("third order: got %s Retry-After %q, want 503 overloaded with Retry-After", r, r.header["Retry-After"])
	}
	if n := len(h.submitted()); n != 2 {
		t.Fatalf("records: got %d, want 2 (the refused order must not be produced)", n)
	}
	// A pending state does not free a slot; a final one does.
	subs := h.submitted()
	h.setOrder(subs[ids[0]], saga.StatusPending, 1)
	if r := h.postOrder(orderBody("c4", "A:1")); r.status != 503 {
		t.Fatalf("after a pending update: got %s, want 503", r)
	}
	h.setOrder(subs[ids[0]], saga.StatusConfirmed, 2)
	await.Until(t, "slot freed", 5*time.Second, func() error {
		if n := h.edge.adm.inFlight(); n != 1 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	if r := h.postOrder(orderBody("c5", "A:1")); r.status != 202 {
		t.Fatalf("after the first order turned final: got %s, want 202", r)
	}
	m := h.do("GET", "/metrics", "", "")
	for _, want := range []string{"orderpipe_ingest_admission_rejected_total 2", "orderpipe_ingest_orders_in_flight 2"} {
		if !contains(m.body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestReadiness(t *testing.T) {
	var sinkDown atomic.Bool
	sinkDown.Store(true)
	h := newHarness(t, options{deferViews: true, checks: []Check{
		{Name: "sink", Critical: false, Fn: func() error {
			if sinkDown.Load() {
				return errors.New("postgres down")
			}
			return nil
		}},
	}})
	r := h.do("GET", "/readyz", "", "")
	var ready readyJSON
	if err := json.Unmarshal(r.body, &ready); err != nil || r.status != 503 || ready.Status != "not ready" ||
		ready.Checks["orders_view"] != "recovering" || ready.Checks["edge"] != "ok" || ready.Checks["sink"] != "postgres down" {
		t.Fatalf("/readyz before recovery: got %s, want 503 not ready, views recovering", r)
	}
	if r := h.do("GET", "/healthz", "", ""); r.status != 200 {
		t.Errorf("/healthz: got %s, want 200 whatever the views do", r)
	}
	id, _ := saga.NewOrderID()
	for _, path := range []string{"/v1/orders/" + id.String(), "/v1/inventory/A"} {
		if r := h.do("GET", path, "", ""); r.status != 503 || r.header["Retry-After"] == "" {
			t.Errorf("GET %s before recovery: got %s, want 503 + Retry-After", path, r)
		}
	}
	if r := h.postOrder(orderBody("c", "A:1"), "Idempotency-Key", "k"); r.status != 503 {
		t.Errorf("POST with a key before recovery: got %s, want 503 (the key cannot be checked)", r)
	}
	if r := h.postOrder(orderBody("c", "A:1")); r.status != 202 {
		t.Errorf("POST without a key before recovery: got %s, want 202", r)
	}

	h.startViews()
	r = h.do("GET", "/readyz", "", "")
	if err := json.Unmarshal(r.body, &ready); err != nil || r.status != 200 || ready.Status != "degraded" || ready.Checks["orders_view"] != "ok" {
		t.Fatalf("/readyz after recovery, sink failing: got %s, want 200 degraded", r)
	}
	sinkDown.Store(false)
	if r := h.do("GET", "/readyz", "", ""); r.status != 200 || !contains(r.body, `"status":"ready"`) {
		t.Fatalf("/readyz all well: got %s", r)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

package ingest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

func TestPostOrderAccepted(t *testing.T) {
	h := newHarness(t, options{})
	before := time.Now()
	body := orderBody("cust-1", "SKU-1:2", "SKU-2:1")
	resp := h.postOrder(body)
	if resp.status != 202 {
		t.Fatalf("POST /v1/orders: got %s, want 202", resp)
	}
	id := field(t, resp.body, "order_id")
	if got := field(t, resp.body, "status"); got != "pending" {
		t.Errorf("status: got %q, want pending", got)
	}
	if got, want := resp.header["Location"], "/v1/orders/"+id; got != want {
		t.Errorf("Location: got %q, want %q", got, want)
	}
	if got := resp.header["Content-Type"]; got != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", got)
	}
	recs := h.records(string(topology.OrdersSubmitted))
	if len(recs) != 1 {
		t.Fatalf("records on orders.submitted: got %d, want 1", len(recs))
	}
	r := recs[0]
	if string(r.Key) != id {
		t.Errorf("record key: got %q, want %q", r.Key, id)
	}
	if want := topology.PartitionFor(r.Key, testPartitions); r.Partition != want {
		t.Errorf("record partition: got %d, want %d (topology.PartitionFor)", r.Partition, want)
	}
	m, err := saga.DecodeOrderSubmitted(r.Value)
	if err != nil {
		t.Fatal(err)
	}
	in, p := decodeOrder([]byte(body), Config{}.withDefaults().limits())
	if p != nil {
		t.Fatal(p)
	}
	switch {
	case m.OrderID.String() != id:
		t.Errorf("order id: got %s, want %s", m.OrderID, id)
	case m.CustomerID != "cust-1" || m.Currency != "EUR" || len(m.Items) != 2:
		t.Errorf("order: got %+v", m)
	case m.Items[0] != (saga.Item{SKU: "SKU-1", Quantity: 2, UnitPriceCents: 100}):
		t.Errorf("line 0: got %+v", m.Items[0])
	case m.RequestHash != requestHash(in):
		t.Errorf("request hash: got %x, want %x", m.RequestHash, requestHash(in))
	case m.SubmittedAt.Before(before.Truncate(time.Microsecond)) || m.SubmittedAt.After(time.Now()):
		t.Errorf("submitted at %s, want between %s and now", m.SubmittedAt, before)
	case m.ClientID != "" || m.IdempotencyKey != "":
		t.Errorf("client %q key %q, want both empty", m.ClientID, m.IdempotencyKey)
	}
}

// problemOf decodes a problem answer and checks its media type.
func problemOf(t *testing.T, r response) problem {
	t.Helper()
	if ct := r.header["Content-Type"]; ct != "application/problem+json" {
		t.Fatalf("Content-Type: got %q, want application/problem+json (%s)", ct, r)
	}
	var p problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem is not JSON: %v: %s", err, r.body)
	}
	if p.Status != r.status || p.Title == "" || !strings.HasPrefix(p.Type, problemTypeBase) {
		t.Fatalf("problem %+v does not match status %d or lacks type/title", p, r.status)
	}
	return p
}

func TestPostOrderRefusesBadInput(t *testing.T) {
	h := newHarness(t, options{})
	for _, c := range badOrders() {
		t.Run(c.name, func(t *testing.T) {
			r := h.postOrder(c.body)
			p := problemOf(t, r)
			if err := checkProblem(c, &p); err != nil {
				t.Fatal(err)
			}
		})
	}
	valid := orderBody("c1", "A:1")
	for _, c := range []struct {
		name, contentType, body string
		headers                 []string
		status                  int
		typ                     string
	}{
		{"no content type", "", valid, nil, 415, "unsupported-media-type"},
		{"text/plain", "text/plain", valid, nil, 415, "unsupported-media-type"},
		{"form", "application/x-www-form-urlencoded", valid, nil, 415, "unsupported-media-type"},
		{"json in latin-1", "application/json; charset=latin1", valid, nil, 415, "unsupported-media-type"},
		{"body over 64 KiB", "application/json", valid[:len(valid)-1] + strings.Repeat(" ", DefaultMaxBodyBytes) + "}", nil, 413, "payload-too-large"},
		{"idempotency key too long", "application/json", valid, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "invalid-request"},
		{"idempotency key not ASCII", "application/json", valid, []string{"Idempotency-Key", "clé"}, 400, "invalid-request"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := h.do("POST", "/v1/orders", c.contentType, c.body, c.headers...)
			if r.status != c.status {
				t.Fatalf("got %s, want %d", r, c.status)
			}
			if p := problemOf(t, r); p.Type != problemTypeBase+c.typ {
				t.Fatalf("type: got %s, want %s", p.Type, c.typ)
			}
		})
	}
	h.requireNothingProduced("after every refused order")
	// The edge still works: it was not the producer that kept them out.
	if r := h.postOrder(valid, "Content-Type", "application/json; charset=UTF-8"); r.status != 202 {
		t.Fatalf("valid order after the refused ones: got %s, want 202", r)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	h := newHarness(t, options{})
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/nope", 404, ""},
		{"GET", "/ui/a/b", 404, ""},
		{"GET", "/ui/nope.js", 404, ""},
		{"POST", "/ui", 405, "GET, HEAD"},
		{"GET", "/v1/order", 404, ""},
		{"GET", "/v1/orders/a/b", 404, ""},
		{"GET", "/v1/orders/", 404, ""},
		{"GET", "/v1/inventory/", 404, ""},
		{"GET", "/v1/orders", 405, "POST"},
		{"DELETE", "/v1/orders/0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e", 405, "GET, HEAD"},
		{"POST", "/v1/inventory/A", 405, "GET, HEAD, PUT"},
		{"PUT", "/v1/orders:batch", 405, "POST"},
		{"POST", "/healthz", 405, "GET, HEAD"},
	} {
		r := h.do(c.method, c.path, "", "")
		if r.status != c.status || r.header["Allow"] != c.allow {
			t.Errorf("%s %s: got %s Allow %q, want %d Allow %q", c.method, c.path, r, r.header["Allow"], c.status, c.allow)
			continue
		}
		problemOf(t, r)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	h := newHarness(t, options{})
	if r := h.do("GET", "/healthz", "", ""); r.status != 200 {
		t.Errorf("/healthz: got %s, want 200", r)
	}
	if r := h.postOrder(orderBody("c", "A:1")); r.status != 202 {
		t.Fatalf("POST: got %s", r)
	}
	r := h.do("GET", "/metrics", "", "")
	if r.status != 200 {
		t.Fatalf("/metrics: got %s", r)
	}
	for _, want := range []string{
		`orderpipe_ingest_requests_total{code="202",route="post_order"} 1`,
		`orderpipe_ingest_request_duration_seconds_bucket{code="202",route="post_order"`,
		`orderpipe_ingest_produce_duration_seconds_count{result="ok",topic="orders.submitted"} 1`,
		`orderpipe_ingest_orders_in_flight 1`,
		`orderpipe_ingest_admission_rejected_total 0`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

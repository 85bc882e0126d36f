package app_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
)

// TestOrderTrace: in `orderpipe run`, ?trace=1 on a confirmed order lists
// every step with its time, in time order, down to its storing in
// Postgres; a rejected order's lists the refused line.
func TestOrderTrace(t *testing.T) {
	s := startSystem(t)
	for sku, n := range map[string]int{"TRACE-A": 10, "TRACE-B": 10, "TRACE-C": 0} {
		if code, body := s.do("PUT", "/v1/inventory/"+sku, map[string]any{"available": n}, nil); code != 202 {
			t.Fatalf("set stock of %s: got %d %v, want 202", sku, code, body)
		}
	}
	await.Until(t, "stock visible", 30*time.Second, func() error {
		for _, sku := range []string{"TRACE-A", "TRACE-B", "TRACE-C"} {
			if code, body := s.do("GET", "/v1/inventory/"+sku, nil, nil); code != 200 {
				return fmt.Errorf("%s: %d %v", sku, code, body)
			}
		}
		return nil
	})
	submit := func(items ...line) string {
		code, body := s.do("POST", "/v1/orders", order{CustomerID: "trace", Currency: "EUR", Items: items}, nil)
		if code != 202 {
			t.Fatalf("submit: got %d %v, want 202", code, body)
		}
		return body["order_id"].(string)
	}
	confirmed := submit(line{"TRACE-A", 1, 100}, line{"TRACE-B", 2, 50})
	rejected := submit(line{"TRACE-A", 1, 100}, line{"TRACE-C", 1, 10})

	// The steps each order must show, in order; answers in either order.
	cases := []struct {
		id, status string
		steps      []string
	}{
		{confirmed, "confirmed", []string{"accepted", "reservation_requested", "reservation_requested", "reservation_answered", "reservation_answered", "confirmed", "stored"}},
		{rejected, "rejected", []string{"accepted", "reservation_requested", "reservation_requested", "reservation_answered", "reservation_answered", "rejected", "stored"}},
	}
	for _, c := range cases {
		var trace []any
		await.Until(t, "order "+c.id+" "+c.status+" and stored", 60*time.Second, func() error {
			code, body := s.do("GET", "/v1/orders/"+c.id+"?trace=1", nil, nil)
			if code != 200 || body["status"] != c.status {
				return fmt.Errorf("got %d %v", code, body)
			}
			trace, _ = body["trace"].([]any)
			if n := len(trace); n == 0 || trace[n-1].(map[string]any)["at"] == nil {
				return fmt.Errorf("not stored yet: %v", trace)
			}
			return nil
		})
		t.Logf("%s order %s: trace %v", c.status, c.id, trace)
		if len(trace) != len(c.steps) {
			t.Fatalf("%s order: got %d steps %v, want %v", c.status, len(trace), trace, c.steps)
		}
		var prev time.Time
		results := map[string]string{}
		for i, raw := range trace {
			st := raw.(map[string]any)
			if st["step"] != c.steps[i] {
				t.Errorf("%s order: step %d is %v, want %s (trace %v)", c.status, i, st["step"], c.steps[i], trace)
			}
			at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(st["at"]))
			if err != nil {
				t.Errorf("%s order: step %d (%v) has no time: %v", c.status, i, st["step"], st)
				continue
			}
			if at.Before(prev) {
				t.Errorf("%s order: step %d (%v) at %s, before the step before it at %s", c.status, i, st["step"], at, prev)
			}
			prev = at
			if st["step"] == "reservation_answered" {
				results[fmt.Sprint(st["sku"])] = fmt.Sprint(st["result"])
			}
		}
		want := map[string]string{"TRACE-A": "reserved", "TRACE-B": "reserved"}
		if c.status == "rejected" {
			want = map[string]string{"TRACE-A": "reserved", "TRACE-C": "insufficient"}
		}
		if fmt.Sprint(results) != fmt.Sprint(want) {
			t.Errorf("%s order: answers %v, want %v", c.status, results, want)
		}
	}
}

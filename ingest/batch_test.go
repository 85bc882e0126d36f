package ingest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/saga"
)

func batchResults(t *testing.T, r response) []batchResult {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("batch: got %s, want 200", r)
	}
	var out []batchResult
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("batch answer: %v: %s", err, r.body)
	}
	return out
}

// checkBatch checks results against want: "ok" for an accepted order, or
// the problem type of a refused one.
func checkBatch(t *testing.T, h *harness, results []batchResult, want []string) {
	t.Helper()
	if len(results) != len(want) {
		t.Fatalf("results: got %d, want %d", len(results), len(want))
	}
	subs := h.submitted()
	for i, w := range want {
		res := results[i]
		switch {
		case w == "ok" && (res.Error != nil || res.Status != "pending" || subs[res.OrderID] == nil):
			t.Errorf("order %d: got %+v, want pending and produced", i, res)
		case w != "ok" && (res.Error == nil || res.Error.Type != problemTypeBase+w || res.OrderID != ""):
			t.Errorf("order %d: got %+v, want error %s", i, res, w)
		}
	}
}

func TestBatch(t *testing.T) {
	// A small body limit: a client that is cut off while still sending a
	// body over the limit sees a reset connection instead of the 413.
	h := newHarness(t, options{cfg: Config{MaxBatchOrders: 5, MaxBatchBodyBytes: 16 << 10}})
	ok := orderBody("c1", "A:1")
	r := h.do("POST", "/v1/orders:batch", "application/json",
		"["+ok+", "+orderBody("c2", "B:0")+", 7, "+orderBody("c3", "A:2", "B:1")+"]")
	checkBatch(t, h, batchResults(t, r), []string{"ok", "invalid-order", "invalid-order", "ok"})
	if n := len(h.submitted()); n != 2 {
		t.Fatalf("records after the JSON batch: got %d, want 2", n)
	}
	if m := h.submitted(); m[batchResults(t, r)[3].OrderID].CustomerID != "c3" {
		t.Errorf("order 3 of the batch: got %+v, want customer c3", m[batchResults(t, r)[3].OrderID])
	}

	r = h.do("POST", "/v1/orders:batch", "application/x-ndjson",
		ok+"\n{\"customer_id\":\n\n"+orderBody("c4", "C:1")+"\r\n"+ok+" {}\n")
	res := batchResults(t, r)
	checkBatch(t, h, res, []string{"ok", "malformed-json", "ok", "malformed-json"})
	if n := len(h.submitted()); n != 4 {
		t.Fatalf("records after the NDJSON batch: got %d, want 4", n)
	}

	for _, c := range []struct {
		name, contentType, body string
		status                  int
	}{
		{"six orders", "application/json", "[" + strings.Repeat(ok+",", 5) + ok + "]", 413},
		{"six NDJSON orders", "application/x-ndjson", strings.Repeat(ok+"\n", 6), 413},
		{"malformed array", "application/json", "[" + ok + ",", 400},
		{"empty array", "application/json", "[]", 400},
		{"not an array", "application/json", ok, 400},
		{"text", "text/plain", "[" + ok + "]", 415},
		{"over the body limit", "application/json", "[" + ok + strings.Repeat(" ", 16<<10) + "]", 413},
	} {
		r := h.do("POST", "/v1/orders:batch", c.contentType, c.body)
		if r.status != c.status {
			t.Errorf("%s: got %.200s, want %d", c.name, r, c.status)
			continue
		}
		problemOf(t, r)
	}
	if n := len(h.submitted()); n != 4 {
		t.Fatalf("records after refused batches: got %d, want still 4", n)
	}
	// fasthttp normalizes paths before routing.
	checkBatch(t, h, batchResults(t, h.do("POST", "/v1/./x/../orders:batch", "application/json", "["+ok+"]")), []string{"ok"})
}

func TestBatchIdempotencyKey(t *testing.T) {
	h := newHarness(t, options{})
	body := "[" + orderBody("c1", "A:1") + "," + orderBody("c2", "A:1") + "]"
	first := batchResults(t, h.do("POST", "/v1/orders:batch", "application/json", body, "Idempotency-Key", "batch-1"))
	again := batchResults(t, h.do("POST", "/v1/orders:batch", "application/json", body, "Idempotency-Key", "batch-1"))
	for i := range first {
		if want := saga.OrderIDForKey("", "batch-1#"+string(rune('0'+i))).String(); first[i].OrderID != want || again[i] != first[i] {
			t.Errorf("order %d: got %+v then %+v, want %s both times", i, first[i], again[i], want)
		}
	}
	if n := len(h.submitted()); n != 2 {
		t.Fatalf("records: got %d, want 2 for a batch sent twice with one key", n)
	}
	// Element i keeps key "batch-1#i": a changed element is refused alone.
	changed := "[" + orderBody("c1", "A:1") + "," + orderBody("c2", "A:2") + "]"
	res := batchResults(t, h.do("POST", "/v1/orders:batch", "application/json", changed, "Idempotency-Key", "batch-1"))
	if res[0] != first[0] || res[1].Error == nil || res[1].Error.Status != 422 {
		t.Errorf("changed batch: got %+v, want order 0 replayed and order 1 refused with 422", res)
	}
	// A replay says where each order is now, as a single POST does.
	subs := h.submitted()
	h.setOrder(subs[first[0].OrderID], saga.StatusConfirmed, 2)
	await.Until(t, "the batch replay says confirmed", 5*time.Second, func() error {
		res := batchResults(t, h.do("POST", "/v1/orders:batch", "application/json", body, "Idempotency-Key", "batch-1"))
		if res[0].OrderID != first[0].OrderID || res[1].OrderID != first[1].OrderID {
			t.Fatalf("replay: got %+v, want the same ids as %+v", res, first)
		}
		if res[0].Status != "confirmed" || res[1].Status != "pending" {
			return fmt.Errorf("statuses %s, %s", res[0].Status, res[1].Status)
		}
		return nil
	})
}

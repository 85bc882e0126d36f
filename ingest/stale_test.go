package ingest

import (
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/orderpipe/orderpipe/saga"
)

// reconnectingView is a view that caught up once and, once stale is set,
// reconnects (a broker restart): it still holds its local copy.
type reconnectingView struct {
	View
	stale atomic.Bool
}

func (v *reconnectingView) Recovered() bool { return !v.stale.Load() && v.View.Recovered() }
func (v *reconnectingView) readable() bool  { return v.View.Recovered() }
func (v *reconnectingView) live() error {
	if v.stale.Load() {
		return errStaleForTest
	}
	return nil
}

var errStaleForTest = errors.New("reconnecting")

// TestStaleViewServesReads: while the orders view reconnects, the edge
// stays ready (degraded, saying why), serves the orders its copy holds,
// answers 503 instead of 404 for the ones it does not (it cannot know they
// do not exist), and refuses keyed orders it cannot check, with 503.
func TestStaleViewServesReads(t *testing.T) {
	var rv *reconnectingView
	h := newHarness(t, options{ordersView: func(v View) View { rv = &reconnectingView{View: v}; return rv }})
	r := h.postOrder(orderBody("c1", "A:1"))
	if r.status != 202 {
		t.Fatalf("POST: %s", r)
	}
	var acc struct {
		OrderID string `json:"order_id"`
	}
	if err := json.Unmarshal(r.body, &acc); err != nil {
		t.Fatal(err)
	}
	subs := h.submitted()
	h.setOrder(subs[acc.OrderID], saga.StatusConfirmed, 2)

	rv.stale.Store(true)
	if r := h.do("GET", "/v1/orders/"+acc.OrderID, "", ""); r.status != 200 {
		t.Errorf("GET a known order from a reconnecting view: %s, want 200 from the local copy", r)
	}
	unknown, _ := saga.NewOrderID()
	if r := h.do("GET", "/v1/orders/"+unknown.String(), "", ""); r.status != 503 || problemOf(t, r).Type != problemTypeBase+"not-ready" || r.header["Retry-After"] == "" {
		t.Errorf("GET an unknown order from a reconnecting view: %s, want 503 not-ready with Retry-After, never 404", r)
	}
	r = h.do("GET", "/readyz", "", "")
	var ready readyJSON
	if err := json.Unmarshal(r.body, &ready); err != nil || r.status != 200 || ready.Status != "degraded" ||
		ready.Checks["orders_view"] != "ok" || ready.Checks["orders_view_live"] != "reconnecting" {
		t.Errorf("/readyz with the orders view reconnecting: %s, want 200 degraded naming orders_view_live", r)
	}
	if r := h.postOrder(orderBody("c1", "A:1"), "Idempotency-Key", "k-stale"); r.status != 503 || problemOf(t, r).Type != problemTypeBase+"not-ready" {
		t.Errorf("keyed POST while the view reconnects: %s, want 503 not-ready", r)
	}

	rv.stale.Store(false)
	if r := h.do("GET", "/v1/orders/"+unknown.String(), "", ""); r.status != 404 {
		t.Errorf("GET an unknown order once caught up: %s, want 404", r)
	}
}

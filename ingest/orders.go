package ingest

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/valyala/fasthttp"
)

// maxIdempotencyKeyLen caps the Idempotency-Key header.
const maxIdempotencyKeyLen = 255

// postOrder is POST /v1/orders.
func (e *Edge) postOrder(ctx *fasthttp.RequestCtx, c *client, _ string) {
	if !hasMediaType(ctx.Request.Header.ContentType(), "application/json") {
		writeProblem(ctx, unsupportedMediaType("application/json"))
		return
	}
	body := ctx.PostBody()
	if len(body) > e.cfg.MaxBodyBytes {
		writeProblem(ctx, tooLarge(fmt.Sprintf("an order is at most %d bytes", e.cfg.MaxBodyBytes)))
		return
	}
	key, p := idempotencyKey(ctx)
	if p != nil {
		writeProblem(ctx, p)
		return
	}
	in, p := decodeOrder(body, e.limits)
	if p == nil {
		p = e.checkKeyable(key)
	}
	if p != nil {
		writeProblem(ctx, p)
		return
	}
	sub, joined := e.submit(c, key, in, time.Now())
	o := sub.wait()
	if o.prob != nil {
		writeProblem(ctx, o.prob)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusAccepted)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set(fasthttp.HeaderLocation, "/v1/orders/"+sub.id)
	status := "pending"
	if o.replayed || joined {
		ctx.Response.Header.Set("Idempotent-Replayed", "true")
		status = e.currentStatus(sub.id, c)
	}
	ctx.SetBodyString(`{"order_id":"` + sub.id + `","status":"` + status + `"}`)
}

// currentStatus is what a replay of order id answers: where the order is
// now, so that a client that retries after a lost answer learns that it
// was confirmed; "pending" while the view does not show it yet.
func (e *Edge) currentStatus(id string, c *client) string {
	if st, err := e.visibleOrder(id, c); err == nil && st != nil {
		return st.Status.String()
	}
	return "pending"
}

// idempotencyKey returns the request's Idempotency-Key as a fresh string;
// "" if it has none or an empty one.
func idempotencyKey(ctx *fasthttp.RequestCtx) (string, *problem) {
	raw := ctx.Request.Header.Peek("Idempotency-Key")
	if len(raw) == 0 {
		return "", nil
	}
	if len(raw) > maxIdempotencyKeyLen {
		return "", invalidRequest(fmt.Sprintf("Idempotency-Key must be 1 to %d printable ASCII characters", maxIdempotencyKeyLen))
	}
	for _, b := range raw {
		if b < 0x20 || b > 0x7e {
			return "", invalidRequest(fmt.Sprintf("Idempotency-Key must be 1 to %d printable ASCII characters", maxIdempotencyKeyLen))
		}
	}
	return string(raw), nil
}

// checkKeyable refuses a request with an Idempotency-Key while the orders
// view recovers: until then it cannot tell whether the key was used.
func (e *Edge) checkKeyable(key string) *problem {
	if key != "" && !e.orders.Recovered() {
		return notReady("the orders view is still recovering: Idempotency-Keys cannot be checked yet")
	}
	return nil
}

// orderJSON is the answer of GET /v1/orders/{id}.
type orderJSON struct {
	OrderID    string     `json:"order_id"`
	Status     string     `json:"status"`
	Reason     string     `json:"reason,omitempty"`
	CustomerID string     `json:"customer_id"`
	Currency   string     `json:"currency"`
	Items      []itemJSON `json:"items"`
	TotalCents int64      `json:"total_cents"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	Version    uint64     `json:"version"`
	// Trace is the order's journey, with ?trace=1 (see trace.go).
	Trace []traceStep `json:"trace,omitempty"`
}

type itemJSON struct {
	SKU            string `json:"sku"`
	Quantity       uint32 `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// getOrder is GET /v1/orders/{id}[?wait=2s]. With wait, a request for an
// order that is not final (or not visible yet) sleeps until orderUpdated
// reports it final, the time is up or the edge shuts down, then answers
// with what the view shows.
func (e *Edge) getOrder(ctx *fasthttp.RequestCtx, c *client, param string) {
	oid, err := saga.ParseOrderID(param)
	if err != nil {
		writeProblem(ctx, invalidRequest("the order id must be a UUID such as 0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e"))
		return
	}
	wait, p := e.waitParam(ctx)
	if p != nil {
		writeProblem(ctx, p)
		return
	}
	if !readable(e.orders) {
		writeProblem(ctx, notReady("the orders view is still recovering"))
		return
	}
	id := oid.String() // the view's key is the canonical form
	var woken <-chan struct{}
	if wait > 0 {
		// Register before reading, so that an update in between still wakes us.
		ch, done := e.waiters.add(id)
		defer done()
		woken = ch
	}
	st, err := e.visibleOrder(id, c)
	stopped := false
	if err == nil && wait > 0 && (st == nil || !st.Status.Final()) {
		t := time.NewTimer(wait)
		select {
		case <-woken:
		case <-t.C:
		case <-e.stopping:
			// Said here, not left to fasthttp's CloseOnShutdown: this
			// answer can be written before the server marks itself as
			// shutting down.
			ctx.SetConnectionClose()
			stopped = true
		}
		t.Stop()
		st, err = e.visibleOrder(id, c)
	}
	if err == nil && st == nil {
		// Read-your-writes on the edge that took the order: its 202 was
		// sent, the view has not shown it yet.
		if st = e.acceptedHere(id, c); st != nil {
			e.lookups.observe(lookupOwn, 0)
		}
	}
	switch {
	case err != nil:
		e.log.Warn("orders view lookup failed", "order_id", id, "err", err)
		writeProblem(ctx, notReady("the orders view cannot be read"))
		return
	case st == nil && stopped:
		// The wait was cut short: the order may be one this view has not
		// seen yet, so "no such order" would be a guess. Another edge
		// (or this one, restarted) can answer.
		writeProblem(ctx, unavailable("shutting-down", "Shutting down", "this edge is stopping before it could see order "+id+"; retry"))
		return
	case st == nil:
		// Read-your-writes on any edge: another edge (or this one before a
		// restart) may have accepted it. The broker tells, or 503.
		if st, p = e.resolveUnseen(id, c); p != nil {
			writeProblem(ctx, p)
			return
		}
	}
	out := orderJSON{
		OrderID: id, Status: st.Status.String(), Reason: st.Reason,
		CustomerID: st.CustomerID, Currency: st.Currency,
		Items:      make([]itemJSON, len(st.Lines)),
		TotalCents: st.TotalCents(), CreatedAt: st.CreatedAt, UpdatedAt: st.UpdatedAt, Version: st.Version,
	}
	for i, l := range st.Lines {
		out.Items[i] = itemJSON{SKU: l.SKU, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents}
	}
	if wantsTrace(ctx) {
		out.Trace = e.trace(st)
	}
	e.writeJSON(ctx, fasthttp.StatusOK, out)
}

// waitParam parses ?wait= (a Go duration), capped by MaxWait; 0 without it.
func (e *Edge) waitParam(ctx *fasthttp.RequestCtx) (time.Duration, *problem) {
	args := ctx.QueryArgs()
	if !args.Has("wait") {
		return 0, nil
	}
	d, err := time.ParseDuration(string(args.Peek("wait")))
	if err != nil || d < 0 {
		return 0, invalidRequest("wait must be a duration such as 2s or 500ms")
	}
	return min(d, e.cfg.MaxWait), nil
}

// visibleOrder returns order id as client c may see it: nil if it does not
// exist or, with authentication on, belongs to another client, so that
// nobody learns which ids exist.
func (e *Edge) visibleOrder(id string, c *client) (*saga.OrderState, error) {
	st, err := e.orderState(id)
	if err != nil || st == nil {
		return nil, err
	}
	if !c.anyScope && st.ClientID != c.id {
		return nil, nil
	}
	return st, nil
}

// acceptedHere is order id as this edge produced it and the broker acked
// it, shown as the orders processor will first write it (pending, version
// 1), for c; nil if this edge has no such order in flight.
func (e *Edge) acceptedHere(id string, c *client) *saga.OrderState {
	sub := e.adm.accepted(id)
	if sub == nil || (!c.anyScope && sub.ClientID != c.id) {
		return nil
	}
	return pendingState(sub)
}

// pendingState is the order submitted as sub as the orders processor will
// first write it: pending, version 1, created and updated when submitted.
func pendingState(sub *saga.OrderSubmitted) *saga.OrderState {
	// The wire keeps microseconds: the time as the view will show it.
	at := sub.SubmittedAt.Truncate(time.Microsecond)
	st := &saga.OrderState{
		Version: 1, OrderID: sub.OrderID, CustomerID: sub.CustomerID, Currency: sub.Currency,
		Status: saga.StatusPending, CreatedAt: at, UpdatedAt: at,
		ClientID: sub.ClientID, Lines: make([]saga.Line, len(sub.Items)),
	}
	for i, it := range sub.Items {
		st.Lines[i] = saga.Line{Item: it}
	}
	return st
}

// orderState reads order id from the orders view; nil if absent.
func (e *Edge) orderState(id string) (*saga.OrderState, error) {
	v, err := e.orders.Get(id)
	if err != nil {
		return nil, fmt.Errorf("get order %s: %w", id, err)
	}
	if v == nil {
		return nil, nil
	}
	st, ok := v.(*saga.OrderState)
	if !ok {
		return nil, fmt.Errorf("get order %s: the view holds %T, want *saga.OrderState", id, v)
	}
	return st, nil
}

// writeJSON answers with v as JSON.
func (e *Edge) writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only the edge's own answer types get here, and they always marshal.
		e.log.Error("cannot marshal an answer", "type", fmt.Sprintf("%T", v), "err", err)
		writeProblem(ctx, internalError())
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

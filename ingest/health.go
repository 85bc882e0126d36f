package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/topology"

	"github.com/orderpipe/orderpipe/internal/health"

	"github.com/valyala/fasthttp"
)

// healthz is liveness: the process serves HTTP. It checks nothing
// external, so that a broker outage does not get every edge restarted.
func (e *Edge) healthz(ctx *fasthttp.RequestCtx, _ *client, _ string) {
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"ok"}`)
}

// readyJSON is the answer of /readyz.
type readyJSON = health.Report

// readyz is readiness: whether a load balancer should send traffic here.
// Built-in critical checks: both views have recovered (before that they
// answer with stale data) and the edge is not shutting down.
func (e *Edge) readyz(ctx *fasthttp.RequestCtx, _ *client, _ string) {
	checks := []Check{
		{Name: "orders_view", Critical: true, Fn: recovered(e.orders)},
		{Name: "inventory_view", Critical: true, Fn: recovered(e.stock)},
		{Name: "edge", Critical: true, Fn: e.accepting},
		{Name: "orders_view_live", Critical: false, Fn: live(e.orders)},
		{Name: "inventory_view_live", Critical: false, Fn: live(e.stock)},
		// Not critical: every edge shares the broker, and a 503 from this
		// one is as good an answer as a load balancer's.
		{Name: "broker", Critical: false, Fn: e.brokerAnswering},
	}
	checks = append(checks, e.checks...)
	out := health.Evaluate(checks)
	status := fasthttp.StatusOK
	if out.Status == health.NotReady {
		status = fasthttp.StatusServiceUnavailable
		ctx.Response.Header.Set("Retry-After", "1")
	}
	e.writeJSON(ctx, status, out)
}

func recovered(v View) func() error {
	if tv, ok := v.(*tableView); ok {
		return tv.check
	}
	return func() error {
		if !readable(v) {
			return errors.New("recovering")
		}
		return nil
	}
}

// staleView is a View that can serve its local copy while it reconnects
// (tableView; tests' views).
type staleView interface {
	readable() bool
	live() error
}

// readable reports whether reads may be answered from v: a staleView says
// so itself; any other View once recovered.
func readable(v View) bool {
	if sv, ok := v.(staleView); ok {
		return sv.readable()
	}
	return v.Recovered()
}

// live is a view's non-critical check: whether it is up to date.
func live(v View) func() error {
	if sv, ok := v.(staleView); ok {
		return sv.live
	}
	return func() error { return nil }
}

// accepting fails once Run's context ended.
func (e *Edge) accepting() error {
	select {
	case <-e.stopping:
		return errors.New("shutting down")
	default:
		return nil
	}
}

// brokerAnswering fails while records are in doubt (written to a broker
// that has not answered within the produce timeout) or no broker answers
// the edge's pings (one a second), whichever shows first.
func (e *Edge) brokerAnswering() error {
	if n := e.doubt.total(); n > 0 {
		return fmt.Errorf("%d records in doubt: the broker has not answered within the produce timeout", n)
	}
	if f := e.pingFailing.Load(); f != nil {
		return fmt.Errorf("no broker answers a ping since %s: %v", f.since.UTC().Format(time.RFC3339), f.err)
	}
	return nil
}

// Ready reports nil once both views have recovered and the edge accepts
// orders: what /readyz's critical built-in checks say.
func (e *Edge) Ready() error {
	if err := recovered(e.orders)(); err != nil {
		return fmt.Errorf("orders view: %w", err)
	}
	if err := recovered(e.stock)(); err != nil {
		return fmt.Errorf("inventory view: %w", err)
	}
	return e.accepting()
}

// ViewNext returns, per partition of table (the orders or the inventory
// table), the offset of the next record the edge's view of it will apply,
// from Goka's view stats: for measuring its lag (package lag). Partitions
// the view has not started on yet are left out, and so is every partition
// while the view is being rebuilt. Safe for concurrent use.
func (e *Edge) ViewNext(ctx context.Context, table goka.Table) map[int32]int64 {
	var v View
	switch table {
	case topology.OrdersTable():
		v = e.orders
	case topology.InventoryTable():
		v = e.stock
	}
	tv, ok := v.(*tableView)
	if !ok {
		return nil
	}
	cur := tv.cur.Load()
	if cur == nil {
		return nil
	}
	out := map[int32]int64{}
	for p, st := range cur.Stats(ctx).Partitions {
		switch {
		case st == nil:
		case st.Input != nil && st.Input.Count > 0:
			out[p] = st.Input.LastOffset + 1
		case st.Recovery != nil && !st.Recovery.StartTime.IsZero():
			// Nothing applied since the start: the view is where its
			// recovery began (its local storage's offset).
			out[p] = st.Recovery.Offset
		}
	}
	return out
}

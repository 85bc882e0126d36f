package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// traceJSON is a step of a trace as a client reads it.
type traceJSON struct {
	Step   string     `json:"step"`
	SKU    string     `json:"sku"`
	Result string     `json:"result"`
	At     *time.Time `json:"at"`
	Note   string     `json:"note"`
}

func (s traceJSON) String() string {
	at := "-"
	if s.At != nil {
		at = s.At.Format("15:04:05.000")
	}
	return fmt.Sprintf("%s %s %s @%s %s", s.Step, s.SKU, s.Result, at, s.Note)
}

// TestTrace: ?trace=1 lists the steps an order went through, in time order,
// from the times its state and Postgres hold.
func TestTrace(t *testing.T) {
	t0 := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	stored := ms(40)
	var storedFor map[saga.OrderID]time.Time
	storedErr := errors.New("connection refused")
	cfg := Config{StoredAt: func(_ context.Context, id saga.OrderID) (time.Time, bool, error) {
		if id == failing {
			return time.Time{}, false, storedErr
		}
		at, ok := storedFor[id]
		return at, ok, nil
	}}
	h := newHarness(t, options{cfg: cfg})
	without := newHarness(t, options{})

	oid := func(n byte) saga.OrderID { return saga.OrderIDForKey("trace-test", string('a'+n)) }
	line := func(sku string, r saga.LineResult, req, ans time.Time) saga.Line {
		return saga.Line{Item: saga.Item{SKU: sku, Quantity: 1, UnitPriceCents: 5}, Result: r, RequestedAt: req, AnsweredAt: ans}
	}
	state := func(id saga.OrderID, status saga.Status, updated time.Time, lines ...saga.Line) *saga.OrderState {
		return &saga.OrderState{Version: 3, OrderID: id, CustomerID: "c", Currency: "EUR", Status: status,
			CreatedAt: t0, UpdatedAt: updated, Lines: lines}
	}
	step := func(name, sku, result string, at time.Time) traceJSON {
		return traceJSON{Step: name, SKU: sku, Result: result, At: &at}
	}
	note := func(name, sku, result, why string) traceJSON {
		return traceJSON{Step: name, SKU: sku, Result: result, Note: why}
	}
	confirmed := state(oid(1), saga.StatusConfirmed, ms(30),
		line("B", saga.LineReserved, ms(2), ms(20)), line("A", saga.LineReserved, ms(2), ms(10)))
	storedFor = map[saga.OrderID]time.Time{oid(1): stored}

	cases := []struct {
		name string
		h    *harness
		st   *saga.OrderState
		want []traceJSON
	}{
		{
			name: "confirmed and stored: every step, answers in the order they came",
			h:    h, st: confirmed,
			want: []traceJSON{
				step("accepted", "", "", t0),
				step("reservation_requested", "B", "", ms(2)), step("reservation_requested", "A", "", ms(2)),
				step("reservation_answered", "A", "reserved", ms(10)), step("reservation_answered", "B", "reserved", ms(20)),
				step("confirmed", "", "", ms(30)), step("stored", "", "", stored),
			},
		},
		{
			name: "rejected, not in Postgres yet",
			h:    h, st: state(oid(2), saga.StatusRejected, ms(12), line("A", saga.LineInsufficient, ms(1), ms(11))),
			want: []traceJSON{
				step("accepted", "", "", t0), step("reservation_requested", "A", "", ms(1)),
				step("reservation_answered", "A", "insufficient", ms(11)), step("rejected", "", "", ms(12)),
				note("stored", "", "", "not in Postgres yet: the sink has not written the final version"),
			},
		},
		{
			name: "pending: what happened so far, no stored step",
			h:    h, st: state(oid(3), saga.StatusPending, ms(10), line("A", saga.LineReserved, ms(1), ms(9)), line("B", 0, ms(1), time.Time{})),
			want: []traceJSON{
				step("accepted", "", "", t0), step("reservation_requested", "A", "", ms(1)), step("reservation_requested", "B", "", ms(1)),
				step("reservation_answered", "A", "reserved", ms(9)),
			},
		},
		{
			name: "rejected as invalid: nothing was requested",
			h:    h, st: state(oid(4), saga.StatusRejected, ms(1), line("A", 0, time.Time{}, time.Time{})),
			want: []traceJSON{
				step("accepted", "", "", t0), step("rejected", "", "", ms(1)),
				note("stored", "", "", "not in Postgres yet: the sink has not written the final version"),
			},
		},
		{
			name: "a state written before step times: the steps are there, without times",
			h:    h, st: state(oid(5), saga.StatusConfirmed, ms(5), line("A", saga.LineReserved, time.Time{}, time.Time{})),
			want: []traceJSON{
				step("accepted", "", "", t0), step("confirmed", "", "", ms(5)),
				note("reservation_requested", "A", "", noStepTimes), note("reservation_answered", "A", "reserved", noStepTimes),
				note("stored", "", "", "not in Postgres yet: the sink has not written the final version"),
			},
		},
		{
			name: "Postgres cannot be read",
			h:    h, st: state(failing, saga.StatusConfirmed, ms(5), line("A", saga.LineReserved, ms(1), ms(4))),
			want: []traceJSON{
				step("accepted", "", "", t0), step("reservation_requested", "A", "", ms(1)),
				step("reservation_answered", "A", "reserved", ms(4)), step("confirmed", "", "", ms(5)),
				note("stored", "", "", "unknown: Postgres could not be read"),
			},
		},
		{
			name: "an edge without a database",
			h:    without, st: confirmed,
			want: []traceJSON{
				step("accepted", "", "", t0),
				step("reservation_requested", "B", "", ms(2)), step("reservation_requested", "A", "", ms(2)),
				step("reservation_answered", "A", "reserved", ms(10)), step("reservation_answered", "B", "reserved", ms(20)),
				step("confirmed", "", "", ms(30)), note("stored", "", "", "unknown: this edge has no database to ask (give it --postgres-url)"),
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := c.st.OrderID.String()
			c.h.writeTable(topology.OrdersTable(), id, c.st.Encode())
			await.Until(t, "order in the view", 10*time.Second, func() error {
				if v, err := c.h.orders.Get(id); err != nil || v == nil {
					return errors.Join(errNotYet, err)
				}
				return nil
			})
			r := c.h.do("GET", "/v1/orders/"+id+"?trace=1", "", "")
			var got struct {
				Trace []traceJSON `json:"trace"`
			}
			if r.status != 200 || json.Unmarshal(r.body, &got) != nil {
				t.Fatalf("GET ?trace=1: got %s, want 200 with a trace", r)
			}
			if !reflect.DeepEqual(got.Trace, c.want) {
				t.Errorf("trace:\n got %v\nwant %v", got.Trace, c.want)
			}
			for _, q := range []string{"", "?trace=0", "?trace=false"} {
				var plain map[string]any
				if r := c.h.do("GET", "/v1/orders/"+id+q, "", ""); r.status != 200 || json.Unmarshal(r.body, &plain) != nil || plain["trace"] != nil {
					t.Errorf("GET %s: got %s, want 200 without a trace", q, r)
				}
			}
		})
	}
}

// failing is the order whose stored_at lookup fails in TestTrace.
var failing = saga.OrderIDForKey("trace-test", "failing")

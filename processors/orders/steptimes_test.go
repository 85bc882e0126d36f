package orders_test

import (
	"testing"
	"time"

	"github.com/lovoo/goka/tester"
	"github.com/orderpipe/orderpipe/processors/orders"
	"github.com/orderpipe/orderpipe/saga"
)

// withoutStepTimes is a copy of st without the lines' step times.
func withoutStepTimes(st *saga.OrderState) *saga.OrderState {
	if st == nil {
		return nil
	}
	c := *st
	c.Lines = append([]saga.Line(nil), st.Lines...)
	for i := range c.Lines {
		c.Lines[i].RequestedAt, c.Lines[i].AnsweredAt = time.Time{}, time.Time{}
	}
	return &c
}

// sendAt consumes in as a record stamped ts by its producer.
func (r *rig) sendAt(in input, ts time.Time) {
	r.t.Helper()
	r.tt.Consume(string(in.topic), in.key, in.msg(), tester.WithTime(ts))
}

// TestStepTimes: the times of an order's journey, as the orders processor
// records them. The rig's clock reads at(n) at its n-th reading, once per
// callback that writes; a result's answer time is its record's timestamp.
func TestStepTimes(t *testing.T) {
	answeredA := at(1).Add(250 * time.Millisecond) // stamped by the inventory
	type times struct{ requested, answered time.Time }
	cases := []struct {
		name    string
		steps   func(r *rig)
		status  saga.Status
		updated time.Time
		lines   []times // per line of itemA, itemB
	}{
		{
			name:   "a fresh order: every Reserve requested at the submission's clock reading",
			steps:  func(r *rig) { r.send(submit(order(itemA, itemB))) },
			status: saga.StatusPending, updated: at(1),
			lines: []times{{requested: at(1)}, {requested: at(1)}},
		},
		{
			name: "an answer takes its record's timestamp",
			steps: func(r *rig) {
				r.send(submit(order(itemA, itemB)))
				r.sendAt(reservedAt("sku-a", 7), answeredA)
			},
			status: saga.StatusPending, updated: at(2),
			lines: []times{{at(1), answeredA}, {requested: at(1)}},
		},
		{
			name: "an answer without a timestamp takes the clock",
			steps: func(r *rig) {
				r.send(submit(order(itemA, itemB)))
				r.send(reservedAt("sku-a", 7))
			},
			status: saga.StatusPending, updated: at(2),
			lines: []times{{at(1), at(2)}, {requested: at(1)}},
		},
		{
			name: "confirmed: the final version's UpdatedAt is the decision",
			steps: func(r *rig) {
				r.send(submit(order(itemA, itemB)))
				r.sendAt(reservedAt("sku-a", 7), answeredA)
				r.sendAt(reservedAt("sku-b", 8), at(3).Add(-time.Millisecond))
			},
			status: saga.StatusConfirmed, updated: at(3),
			lines: []times{{at(1), answeredA}, {at(1), at(3).Add(-time.Millisecond)}},
		},
		{
			name: "a replayed submission and a duplicate answer keep the first times",
			steps: func(r *rig) {
				r.send(submit(order(itemA, itemB)))
				r.sendAt(reservedAt("sku-a", 7), answeredA)
				r.send(submit(order(itemA, itemB)))
				r.sendAt(reservedAt("sku-a", 7), answeredA.Add(time.Hour))
			},
			status: saga.StatusPending, updated: at(2),
			lines: []times{{at(1), answeredA}, {requested: at(1)}},
		},
		{
			name:   "an order rejected as invalid requested nothing",
			steps:  func(r *rig) { r.send(submit(order(itemA, itemA))) },
			status: saga.StatusRejected, updated: at(1),
			lines: []times{{}, {}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, orders.Limits{})
			c.steps(r)
			got := r.order(id.String())
			if got == nil {
				t.Fatalf("order: got none, want %s", c.status)
			}
			if got.Status != c.status || !got.UpdatedAt.Equal(c.updated) {
				t.Errorf("order: got %s updated %s, want %s updated %s", got.Status, got.UpdatedAt, c.status, c.updated)
			}
			if len(got.Lines) != len(c.lines) {
				t.Fatalf("lines: got %d, want %d", len(got.Lines), len(c.lines))
			}
			for i, w := range c.lines {
				l := got.Lines[i]
				if !l.RequestedAt.Equal(w.requested) || !l.AnsweredAt.Equal(w.answered) {
					t.Errorf("line %s: got requested %s answered %s, want %s and %s", l.SKU, l.RequestedAt, l.AnsweredAt, w.requested, w.answered)
				}
			}
		})
	}
}

// TestStepTimesInOrder: in a whole saga, each step of a confirmed order is
// at or after the one before: accepted, requested, answered, final.
func TestStepTimesInOrder(t *testing.T) {
	s := newSagaRig(t)
	for _, sku := range []string{"sku-a", "sku-b", "sku-c"} {
		s.setStock(sku, 10)
	}
	s.submit()
	s.drain(1)
	o := s.orders.order(id.String())
	if o == nil || o.Status != saga.StatusConfirmed {
		t.Fatalf("order: got %+v, want confirmed", o)
	}
	for _, l := range o.Lines {
		steps := []time.Time{o.CreatedAt, l.RequestedAt, l.AnsweredAt, o.UpdatedAt}
		for i := 1; i < len(steps); i++ {
			if steps[i].IsZero() || steps[i].Before(steps[i-1]) {
				t.Errorf("line %s: step %d at %s, want a time at or after %s", l.SKU, i, steps[i], steps[i-1])
			}
		}
	}
}

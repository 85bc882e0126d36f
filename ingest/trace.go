package ingest

import (
	"context"
	"slices"
	"time"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/valyala/fasthttp"
)

// traceStep is one step of an order's journey, the answer's "trace" with
// ?trace=1. A step that happened has its time; one whose time is not known
// (not in Postgres yet, no database to ask, a state written before
// orderpipe kept step times) has a note saying why instead.
type traceStep struct {
	Step   string     `json:"step"`
	SKU    string     `json:"sku,omitempty"`
	Result string     `json:"result,omitempty"`
	At     *time.Time `json:"at,omitempty"`
	Note   string     `json:"note,omitempty"`
}

// The step names of a trace.
const (
	stepAccepted             = "accepted"
	stepReservationRequested = "reservation_requested"
	stepReservationAnswered  = "reservation_answered"
	stepStored               = "stored"
	// a final order's step is named by its status: confirmed or rejected
)

// storedAtTimeout bounds the Postgres read of a trace, so that a database
// that does not answer costs a traced GET a second, not a hang.
const storedAtTimeout = time.Second

const noStepTimes = "this order's state was written before orderpipe kept step times"

// wantsTrace reports whether the request asks for its order's journey:
// ?trace with any value but 0 and false.
func wantsTrace(ctx *fasthttp.RequestCtx) bool {
	args := ctx.QueryArgs()
	if !args.Has("trace") {
		return false
	}
	v := string(args.Peek("trace"))
	return v != "0" && v != "false"
}

// trace is the journey of st, in time order: accepted (the edge's time,
// CreatedAt), each line's reservation requested (when the orders processor
// emitted its Reserve) and answered (the inventory.results record's
// timestamp), the final status (the final version's UpdatedAt), and stored
// (orders.stored_at, set by Postgres when the sink wrote the final
// version). Steps that have not happened yet are left out, except stored
// of a final order, which says why it has no time. Steps with the same
// time keep this order; steps without one come last.
func (e *Edge) trace(st *saga.OrderState) []traceStep {
	steps := []traceStep{{Step: stepAccepted, At: timePtr(st.CreatedAt)}}
	for _, l := range st.Lines {
		answered := l.Result != saga.LineAwaiting
		switch {
		case !l.RequestedAt.IsZero():
			steps = append(steps, traceStep{Step: stepReservationRequested, SKU: l.SKU, At: timePtr(l.RequestedAt)})
		case answered:
			steps = append(steps, traceStep{Step: stepReservationRequested, SKU: l.SKU, Note: noStepTimes})
		}
		if !answered {
			continue
		}
		s := traceStep{Step: stepReservationAnswered, SKU: l.SKU, Result: lineResult(l.Result), At: timePtr(l.AnsweredAt)}
		if s.At == nil {
			s.Note = noStepTimes
		}
		steps = append(steps, s)
	}
	if st.Status.Final() {
		steps = append(steps, traceStep{Step: st.Status.String(), At: timePtr(st.UpdatedAt)}, e.storedStep(st.OrderID))
	}
	slices.SortStableFunc(steps, func(a, b traceStep) int {
		switch {
		case a.At == nil && b.At == nil:
			return 0
		case a.At == nil:
			return 1
		case b.At == nil:
			return -1
		}
		return a.At.Compare(*b.At)
	})
	return steps
}

// storedStep is the stored step of final order id, read from Postgres.
func (e *Edge) storedStep(id saga.OrderID) traceStep {
	s := traceStep{Step: stepStored}
	if e.cfg.StoredAt == nil {
		s.Note = "unknown: this edge has no database to ask (give it --postgres-url)"
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), storedAtTimeout)
	defer cancel()
	at, ok, err := e.cfg.StoredAt(ctx, id)
	switch {
	case err != nil:
		e.log.Warn("trace: cannot read when the order was stored", "order_id", id, "err", err)
		s.Note = "unknown: Postgres could not be read"
	case !ok:
		s.Note = "not in Postgres yet: the sink has not written the final version"
	default:
		s.At = timePtr(at)
	}
	return s
}

func lineResult(r saga.LineResult) string {
	if r == saga.LineInsufficient {
		return "insufficient"
	}
	return "reserved"
}

// timePtr is &t, nil for the zero time.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

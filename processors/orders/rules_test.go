package orders_test

import (
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lovoo/goka"
	"github.com/lovoo/goka/tester"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/processors/internal/rulestest"
	"github.com/orderpipe/orderpipe/processors/inventory"
	"github.com/orderpipe/orderpipe/processors/orders"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// The rules of the orders callbacks, run on goka/tester: no broker, one
// partition. Results are written by hand here; TestSaga wires both
// processors together.

var (
	base        = time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
	submittedAt = time.Date(2026, 3, 4, 4, 59, 0, 0, time.UTC)
	id          = saga.OrderIDForKey("client-1", "key-1")
	hash        = [16]byte{1, 2, 3}

	itemA = saga.Item{SKU: "sku-a", Quantity: 2, UnitPriceCents: 150}
	itemB = saga.Item{SKU: "sku-b", Quantity: 3, UnitPriceCents: 75}
	itemC = saga.Item{SKU: "sku-c", Quantity: 1, UnitPriceCents: 999}
)

// at is the time of the n-th reading of a rig's clock. The processor reads
// it once per table write, so a state of version v was written at at(v).
func at(n uint64) time.Time { return base.Add(time.Duration(n-1) * time.Second) }

func order(items ...saga.Item) *saga.OrderSubmitted {
	return &saga.OrderSubmitted{
		OrderID: id, CustomerID: "cust-1", Currency: "EUR", Items: items, SubmittedAt: submittedAt,
		ClientID: "client-1", IdempotencyKey: "key-1", RequestHash: hash,
	}
}

// input is one record of an input topic of the orders group.
type input struct {
	topic goka.Stream
	key   string
	value []byte
	noVal bool
}

func submit(sub *saga.OrderSubmitted) input {
	return input{topology.OrdersSubmitted, sub.OrderID.String(), sub.Encode(), false}
}

func answer(sku string, out saga.Outcome, available, hold int64) input {
	r := &saga.ReservationResult{OrderID: id, SKU: sku, Outcome: out, Quantity: 1, Available: available, HoldOffset: hold}
	return input{topology.InventoryResults, id.String(), r.Encode(), false}
}

// reservedAt is the inventory's yes for sku, from the hold made at offset hold.
func reservedAt(sku string, hold int64) input {
	return answer(sku, saga.OutcomeReserved, 100, hold)
}

// shortAt is the inventory's no for sku, to the Reserve at offset hold.
func shortAt(sku string, available, hold int64) input {
	return answer(sku, saga.OutcomeInsufficient, available, hold)
}

func raw(topic goka.Stream, key string, b []byte) input { return input{topic, key, b, false} }

func (in input) String() string {
	if in.noVal {
		return fmt.Sprintf("nil value on %s for %q", in.topic, in.key)
	}
	return fmt.Sprintf("%x on %s for %q", in.value, in.topic, in.key)
}

// msg is what the record carries: nil, a record without a value, if noVal.
func (in input) msg() []byte {
	if in.noVal {
		return nil
	}
	return in.value
}

// state is the expected order of the fixture, written at version. It has
// no step times: the rules tests compare orders without them, and
// TestStepTimes checks them.
func state(version uint64, status saga.Status, reason string, lines ...saga.Line) *saga.OrderState {
	return &saga.OrderState{
		Version: version, OrderID: id, CustomerID: "cust-1", Currency: "EUR", Status: status, Reason: reason,
		CreatedAt: submittedAt, UpdatedAt: at(version), ClientID: "client-1", IdempotencyKey: "key-1",
		RequestHash: hash, Lines: lines,
	}
}

func awaiting(it saga.Item) saga.Line { return saga.Line{Item: it} }

func reserved(it saga.Item, hold int64) saga.Line {
	return saga.Line{Item: it, Result: saga.LineReserved, HoldOffset: hold}
}

func short(it saga.Item, hold int64) saga.Line {
	return saga.Line{Item: it, Result: saga.LineInsufficient, HoldOffset: hold}
}

// sent is an expected inventory command, keyed by its SKU.
type sent struct {
	key string
	cmd saga.InventoryCommand
}

func reserveCmd(it saga.Item) sent {
	return sent{it.SKU, saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: id, Quantity: it.Quantity}}
}

func commitCmd(sku string, hold int64) sent {
	return sent{sku, saga.InventoryCommand{Kind: saga.CmdCommit, OrderID: id, HoldOffset: hold}}
}

func releaseCmd(sku string, hold int64) sent {
	return sent{sku, saga.InventoryCommand{Kind: saga.CmdRelease, OrderID: id, HoldOffset: hold}}
}

// dead is an expected dead letter: the in record it comes from and its reason.
type dead = rulestest.Dead

type recorder struct {
	mu      sync.Mutex
	finals  []saga.Status
	replays int
	dead    int
}

func (m *recorder) Final(st *saga.OrderState) {
	m.mu.Lock()
	m.finals = append(m.finals, st.Status)
	m.mu.Unlock()
}
func (m *recorder) Replay()     { m.mu.Lock(); m.replays++; m.mu.Unlock() }
func (m *recorder) DeadLetter() { m.mu.Lock(); m.dead++; m.mu.Unlock() }

func (m *recorder) take() (finals []saga.Status, replays, dead int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	finals, replays, dead = m.finals, m.replays, m.dead
	m.finals, m.replays, m.dead = nil, 0, 0
	return finals, replays, dead
}

// rig is one orders processor on its own tester, with a clock that ticks a
// second at every reading.
type rig struct {
	t       *testing.T
	tt      *tester.Tester
	metrics *recorder
	inputs  *rulestest.Inputs // what send consumed, for the dead-letter check
}

func newRig(t *testing.T, limits orders.Limits) *rig {
	t.Helper()
	m := &recorder{}
	var ticks atomic.Uint64
	clock := func() time.Time { return at(ticks.Add(1)) }
	tt := rulestest.Start(t, orders.New(testlog.New(), m, clock, limits).Graph(), testlog.New())
	return &rig{t: t, tt: tt, metrics: m, inputs: rulestest.NewInputs(tt)}
}

func (r *rig) order(key string) *saga.OrderState {
	return rulestest.TableValue[*saga.OrderState](r.tt, topology.OrdersTable(), key)
}

// send consumes in and checks what must hold after any input: a final
// order never changes, and a write is one version up.
func (r *rig) send(in input) {
	r.t.Helper()
	prev := r.order(in.key)
	r.inputs.Consume(in.topic, in.key, in.msg())
	got := r.order(in.key)
	switch {
	case prev == nil && got != nil && got.Version != 1:
		r.t.Errorf("%s: got a new order at version %d, want 1", in, got.Version)
	case prev == nil:
	case got == nil:
		r.t.Errorf("%s: got the order deleted, want %+v", in, prev)
	case prev.Status.Final() && !reflect.DeepEqual(got, prev):
		r.t.Errorf("%s: final order changed: got %+v, want %+v", in, got, prev)
	case got.Version == prev.Version && !reflect.DeepEqual(got, prev):
		r.t.Errorf("%s: order changed without a new version: got %+v, want %+v", in, got, prev)
	case got.Version != prev.Version && got.Version != prev.Version+1:
		r.t.Errorf("%s: got version %d after %d, want one up", in, got.Version, prev.Version)
	}
}

type ordersCase struct {
	name   string
	limits orders.Limits
	before []input // consumed first; outputs not checked
	in     []input // the records under test

	cmds    []sent           // inventory commands emitted by in, in order
	dead    []dead           // dead letters of in
	state   *saga.OrderState // the order after in; nil: the table has no key
	finals  []saga.Status    // Metrics.Final calls made by in
	replays int              // Metrics.Replay calls made by in
}

func TestOnSubmitted(t *testing.T) {
	var many []saga.Item
	var manyLines []saga.Line
	for i := range 1001 {
		it := saga.Item{SKU: fmt.Sprintf("sku-%04d", i), Quantity: 1}
		many, manyLines = append(many, it), append(manyLines, awaiting(it))
	}
	other := order(saga.Item{SKU: "sku-d", Quantity: 9})
	other.CustomerID, other.RequestHash = "cust-2", [16]byte{9}
	noTime := order(itemA)
	noTime.SubmittedAt = time.Time{}
	createdNow := state(1, saga.StatusPending, "", awaiting(itemA))
	createdNow.CreatedAt = at(1)
	free, negative := itemA, itemB
	free.UnitPriceCents, negative.UnitPriceCents = 0, -1
	atLimit, overLimit := itemA, itemB
	atLimit.Quantity, overLimit.Quantity = 1_000_000, 1_000_001

	cases := []ordersCase{
		{
			name:  "fresh submission emits one reserve per line keyed by sku",
			in:    []input{submit(order(itemA, itemB, itemC))},
			cmds:  []sent{reserveCmd(itemA), reserveCmd(itemB), reserveCmd(itemC)},
			state: state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB), awaiting(itemC)),
		},
		{
			name:  "fresh submission without a time is created now",
			in:    []input{submit(noTime)},
			cmds:  []sent{reserveCmd(itemA)},
			state: createdNow,
		},
		{
			name:   "no items: rejected, nothing reserved",
			in:     []input{submit(order())},
			state:  state(1, saga.StatusRejected, "invalid order: no items"),
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:   "more items than the limit",
			limits: orders.Limits{MaxItems: 2},
			in:     []input{submit(order(itemA, itemB, itemC))},
			state:  state(1, saga.StatusRejected, "invalid order: 3 items, more than 2", awaiting(itemA), awaiting(itemB), awaiting(itemC)),
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:   "items up to the limit are accepted",
			limits: orders.Limits{MaxItems: 2},
			in:     []input{submit(order(itemA, itemB))},
			cmds:   []sent{reserveCmd(itemA), reserveCmd(itemB)},
			state:  state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB)),
		},
		{
			name:   "more items than the default limit of 1000",
			in:     []input{submit(order(many...))},
			state:  state(1, saga.StatusRejected, "invalid order: 1001 items, more than 1000", manyLines...),
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:   "empty sku",
			in:     []input{submit(order(itemA, saga.Item{Quantity: 1}))},
			state:  state(1, saga.StatusRejected, "invalid order: empty sku", awaiting(itemA), awaiting(saga.Item{Quantity: 1})),
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:   "quantity zero",
			in:     []input{submit(order(saga.Item{SKU: "sku-a"}))},
			state:  state(1, saga.StatusRejected, "invalid order: sku sku-a: quantity 0 out of range", awaiting(saga.Item{SKU: "sku-a"})),
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:   "quantity over the limit",
			limits: orders.Limits{MaxQuantity: 2},
			in:     []input{submit(order(itemA, itemB))},
			state:  state(1, saga.StatusRejected, "invalid order: sku sku-b: quantity 3 out of range", awaiting(itemA), awaiting(itemB)),
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:   "quantity over the default limit of 1,000,000",
			in:     []input{submit(order(atLimit, overLimit))},
			state:  state(1, saga.StatusRejected, "invalid order: sku sku-b: quantity 1000001 out of range", awaiting(atLimit), awaiting(overLimit)),
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:  "quantity at the default limit is accepted",
			in:    []input{submit(order(atLimit))},
			cmds:  []sent{reserveCmd(atLimit)},
			state: state(1, saga.StatusPending, "", awaiting(atLimit)),
		},
		{
			name:   "negative price (zero is fine)",
			in:     []input{submit(order(free, negative))},
			state:  state(1, saga.StatusRejected, "invalid order: sku sku-b: negative price", awaiting(free), awaiting(negative)),
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:   "sku twice",
			in:     []input{submit(order(itemA, itemB, itemA))},
			state:  state(1, saga.StatusRejected, "invalid order: sku sku-a appears twice", awaiting(itemA), awaiting(itemB), awaiting(itemA)),
			finals: []saga.Status{saga.StatusRejected},
		},

		// A submission of an order that exists is a replay.
		{
			name:    "replay while nothing is answered re-sends every reserve",
			before:  []input{submit(order(itemA, itemB, itemC))},
			in:      []input{submit(order(itemA, itemB, itemC))},
			cmds:    []sent{reserveCmd(itemA), reserveCmd(itemB), reserveCmd(itemC)},
			state:   state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB), awaiting(itemC)),
			replays: 1,
		},
		{
			name:    "replay while reserving re-sends the pending reserves only",
			before:  []input{submit(order(itemA, itemB, itemC)), reservedAt("sku-a", 7), shortAt("sku-c", 0, 9)},
			in:      []input{submit(order(itemA, itemB, itemC))},
			cmds:    []sent{reserveCmd(itemB)},
			state:   state(3, saga.StatusPending, "", reserved(itemA, 7), awaiting(itemB), short(itemC, 9)),
			replays: 1,
		},
		{
			name:    "replay after confirmed re-sends the commits, no reserve",
			before:  []input{submit(order(itemA, itemB)), reservedAt("sku-a", 7), reservedAt("sku-b", 8)},
			in:      []input{submit(order(itemA, itemB))},
			cmds:    []sent{commitCmd("sku-a", 7), commitCmd("sku-b", 8)},
			state:   state(3, saga.StatusConfirmed, "", reserved(itemA, 7), reserved(itemB, 8)),
			replays: 1,
		},
		{
			name:    "replay after rejected re-sends the releases of reserved lines, no reserve",
			before:  []input{submit(order(itemA, itemB, itemC)), reservedAt("sku-a", 7), shortAt("sku-b", 1, 8), reservedAt("sku-c", 9)},
			in:      []input{submit(order(itemA, itemB, itemC))},
			cmds:    []sent{releaseCmd("sku-a", 7), releaseCmd("sku-c", 9)},
			state:   state(4, saga.StatusRejected, "insufficient stock: sku-b (requested 3)", reserved(itemA, 7), short(itemB, 8), reserved(itemC, 9)),
			replays: 1,
		},
		{
			name:    "replay of an invalid order emits nothing",
			before:  []input{submit(order(itemA, negative))},
			in:      []input{submit(order(itemA, negative))},
			state:   state(1, saga.StatusRejected, "invalid order: sku sku-b: negative price", awaiting(itemA), awaiting(negative)),
			replays: 1,
		},
		{
			name:    "another body under the same id: the first one stays and is replayed",
			before:  []input{submit(order(itemA, itemB))},
			in:      []input{submit(other)},
			cmds:    []sent{reserveCmd(itemA), reserveCmd(itemB)},
			state:   state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB)),
			replays: 1,
		},

		// What the callback cannot use goes to the dead-letter topic and
		// changes nothing.
		{
			name:   "garbage",
			before: []input{submit(order(itemA))},
			in:     []input{raw(topology.OrdersSubmitted, id.String(), []byte("garbage"))},
			dead:   []dead{{In: 0, Reason: "malformed payload: unknown codec version 103"}},
			state:  state(1, saga.StatusPending, "", awaiting(itemA)),
		},
		{
			name: "truncated submission",
			in:   []input{raw(topology.OrdersSubmitted, id.String(), order(itemA).Encode()[:20])},
			dead: []dead{{In: 0, Reason: "malformed payload: truncated: want 6 bytes, have 1"}},
		},
		{
			name: "a result on the submission topic",
			in:   []input{raw(topology.OrdersSubmitted, id.String(), reservedAt("sku-a", 1).value)},
			dead: []dead{{In: 0, Reason: "malformed payload: got a ReservationResult, want a OrderSubmitted"}},
		},
		{
			name: "key is not the order id",
			in:   []input{raw(topology.OrdersSubmitted, "other", order(itemA).Encode())},
			dead: []dead{{In: 0, Reason: fmt.Sprintf("key \"other\" is not the order id %s", id)}},
		},
		{
			// Goka's default nil handling (NilIgnore, which the runner
			// keeps) drops it before the callback: no dead letter.
			name:   "record without a value is dropped",
			before: []input{submit(order(itemA))},
			in:     []input{{topology.OrdersSubmitted, id.String(), nil, true}},
			state:  state(1, saga.StatusPending, "", awaiting(itemA)),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t) })
	}
}

func TestOnResult(t *testing.T) {
	abc := submit(order(itemA, itemB, itemC))
	confirmed := []input{abc, reservedAt("sku-a", 7), reservedAt("sku-b", 8), reservedAt("sku-c", 9)}
	rejected := []input{abc, reservedAt("sku-a", 7), shortAt("sku-b", 1, 8), reservedAt("sku-c", 9)}
	confirmedState := state(4, saga.StatusConfirmed, "", reserved(itemA, 7), reserved(itemB, 8), reserved(itemC, 9))
	rejectedState := state(4, saga.StatusRejected, "insufficient stock: sku-b (requested 3)", reserved(itemA, 7), short(itemB, 8), reserved(itemC, 9))
	negative := itemB
	negative.UnitPriceCents = -1
	badOutcome := &saga.ReservationResult{OrderID: id, SKU: "sku-a", Outcome: 9, Quantity: 1}

	cases := []ordersCase{
		{
			name:    "result for an unknown order changes nothing",
			in:      []input{reservedAt("sku-a", 7)},
			replays: 1,
		},
		{
			name:   "first answer is recorded, the order stays pending",
			before: []input{abc},
			in:     []input{reservedAt("sku-b", 8)},
			state:  state(2, saga.StatusPending, "", awaiting(itemA), reserved(itemB, 8), awaiting(itemC)),
		},
		{
			name:   "an insufficient answer waits for the other lines",
			before: []input{abc},
			in:     []input{shortAt("sku-a", 1, 7)},
			state:  state(2, saga.StatusPending, "", short(itemA, 7), awaiting(itemB), awaiting(itemC)),
		},
		{
			name:   "all reserved: confirmed, one commit per line",
			before: confirmed[:3],
			in:     confirmed[3:],
			cmds:   []sent{commitCmd("sku-a", 7), commitCmd("sku-b", 8), commitCmd("sku-c", 9)},
			state:  confirmedState,
			finals: []saga.Status{saga.StatusConfirmed},
		},
		{
			name:   "last line insufficient: rejected, what was reserved is released",
			before: confirmed[:3],
			in:     []input{shortAt("sku-c", 0, 9)},
			cmds:   []sent{releaseCmd("sku-a", 7), releaseCmd("sku-b", 8)},
			state:  state(4, saga.StatusRejected, "insufficient stock: sku-c (requested 1, available 0)", reserved(itemA, 7), reserved(itemB, 8), short(itemC, 9)),
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:   "an earlier line insufficient: rejected when the last answers",
			before: rejected[:3],
			in:     rejected[3:],
			cmds:   []sent{releaseCmd("sku-a", 7), releaseCmd("sku-c", 9)},
			state:  rejectedState,
			finals: []saga.Status{saga.StatusRejected},
		},
		{
			name:   "every line insufficient: rejected, nothing to release",
			before: []input{abc, shortAt("sku-a", 1, 7), shortAt("sku-b", 2, 8)},
			in:     []input{shortAt("sku-c", 0, 9)},
			state: state(4, saga.StatusRejected, "insufficient stock: sku-a (requested 2), sku-b (requested 3), sku-c (requested 1, available 0)",
				short(itemA, 7), short(itemB, 8), short(itemC, 9)),
			finals: []saga.Status{saga.StatusRejected},
		},

		// Answers for lines that have one, or for final orders.
		{
			name:    "duplicate answer on a pending order changes nothing",
			before:  []input{abc, reservedAt("sku-a", 7), shortAt("sku-b", 1, 8)},
			in:      []input{reservedAt("sku-a", 7), shortAt("sku-b", 1, 8)},
			state:   state(3, saga.StatusPending, "", reserved(itemA, 7), short(itemB, 8), awaiting(itemC)),
			replays: 2,
		},
		{
			name:    "duplicate answer on a confirmed order re-sends its commits",
			before:  confirmed,
			in:      []input{reservedAt("sku-b", 8)},
			cmds:    []sent{commitCmd("sku-a", 7), commitCmd("sku-b", 8), commitCmd("sku-c", 9)},
			state:   confirmedState,
			replays: 1,
		},
		{
			name:    "duplicate answer on a rejected order re-sends its releases",
			before:  rejected,
			in:      []input{shortAt("sku-b", 1, 8)},
			cmds:    []sent{releaseCmd("sku-a", 7), releaseCmd("sku-c", 9)},
			state:   rejectedState,
			replays: 1,
		},
		{
			name:    "stray hold on a pending order is released",
			before:  []input{abc, reservedAt("sku-a", 7)},
			in:      []input{reservedAt("sku-a", 12)},
			cmds:    []sent{releaseCmd("sku-a", 12)},
			state:   state(2, saga.StatusPending, "", reserved(itemA, 7), awaiting(itemB), awaiting(itemC)),
			replays: 1,
		},
		{
			name:    "stray hold for a line that was refused is released",
			before:  []input{abc, shortAt("sku-b", 1, 8)},
			in:      []input{reservedAt("sku-b", 12)},
			cmds:    []sent{releaseCmd("sku-b", 12)},
			state:   state(2, saga.StatusPending, "", awaiting(itemA), short(itemB, 8), awaiting(itemC)),
			replays: 1,
		},
		{
			name:    "stray hold on a confirmed order is released, nothing else",
			before:  confirmed,
			in:      []input{reservedAt("sku-c", 12)},
			cmds:    []sent{releaseCmd("sku-c", 12)},
			state:   confirmedState,
			replays: 1,
		},
		{
			name:    "stray hold on a rejected order is released, nothing else",
			before:  rejected,
			in:      []input{reservedAt("sku-b", 12)},
			cmds:    []sent{releaseCmd("sku-b", 12)},
			state:   rejectedState,
			replays: 1,
		},
		{
			// No hold was made, so the Release changes nothing in the
			// inventory; the processor does not look at the outcome.
			name:    "stale refusal under another offset on a final order is released too",
			before:  confirmed,
			in:      []input{shortAt("sku-a", 0, 12)},
			cmds:    []sent{releaseCmd("sku-a", 12)},
			state:   confirmedState,
			replays: 1,
		},
		{
			// Offset 0 is the HoldOffset of a line that has no answer: the
			// line's result, not its offset, says it was never answered.
			name:    "answer under offset 0 for an order rejected as invalid is released",
			before:  []input{submit(order(itemA, negative))},
			in:      []input{reservedAt("sku-a", 0)},
			cmds:    []sent{releaseCmd("sku-a", 0)},
			state:   state(1, saga.StatusRejected, "invalid order: sku sku-b: negative price", awaiting(itemA), awaiting(negative)),
			replays: 1,
		},

		// What the callback cannot use goes to the dead-letter topic and
		// changes nothing.
		{
			name:   "result for a sku the order does not have",
			before: []input{abc},
			in:     []input{reservedAt("sku-x", 5)},
			dead:   []dead{{In: 0, Reason: fmt.Sprintf("order %s has no line for sku \"sku-x\"", id)}},
			state:  state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB), awaiting(itemC)),
		},
		{
			name:   "garbage",
			before: []input{abc},
			in:     []input{raw(topology.InventoryResults, id.String(), []byte{1, 3})},
			dead:   []dead{{In: 0, Reason: "malformed payload: truncated: want 16 bytes, have 0"}},
			state:  state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB), awaiting(itemC)),
		},
		{
			name:   "unknown outcome",
			before: []input{abc},
			in:     []input{raw(topology.InventoryResults, id.String(), badOutcome.Encode())},
			dead:   []dead{{In: 0, Reason: "malformed payload: unknown outcome 9"}},
			state:  state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB), awaiting(itemC)),
		},
		{
			name:   "a submission on the result topic",
			before: []input{abc},
			in:     []input{raw(topology.InventoryResults, id.String(), abc.value)},
			dead:   []dead{{In: 0, Reason: "malformed payload: got a OrderSubmitted, want a ReservationResult"}},
			state:  state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB), awaiting(itemC)),
		},
		{
			name:   "result keyed by another order",
			before: []input{abc},
			in:     []input{raw(topology.InventoryResults, "other", reservedAt("sku-a", 7).value)},
			dead:   []dead{{In: 0, Reason: fmt.Sprintf("key \"other\" is not the order id %s", id)}},
			state:  state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB), awaiting(itemC)),
		},
		{
			name:   "record without a value is dropped",
			before: []input{abc},
			in:     []input{{topology.InventoryResults, id.String(), nil, true}},
			state:  state(1, saga.StatusPending, "", awaiting(itemA), awaiting(itemB), awaiting(itemC)),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t) })
	}
}

func (c ordersCase) run(t *testing.T) {
	r := newRig(t, c.limits)
	for _, in := range c.before {
		r.send(in)
	}
	cmds := r.tt.NewQueueTracker(string(topology.InventoryCommands))
	r.metrics.take()
	r.inputs.UnderTest()
	for _, in := range c.in {
		r.send(in)
	}

	var got []sent
	for {
		key, v, ok := cmds.Next()
		if !ok {
			break
		}
		got = append(got, sent{key, *v.(*saga.InventoryCommand)})
	}
	if !reflect.DeepEqual(got, c.cmds) {
		t.Errorf("inventory commands:\n got %+v\nwant %+v", got, c.cmds)
	}

	keys := r.tt.GetTableKeys(topology.OrdersTable())
	switch {
	case c.state == nil && len(keys) != 0:
		t.Errorf("orders table: got keys %q, want none", keys)
	case c.state != nil && !reflect.DeepEqual(keys, []string{id.String()}):
		t.Errorf("orders table: got keys %q, want [%q]", keys, id)
	}
	if c.state != nil {
		if got := withoutStepTimes(r.order(id.String())); !reflect.DeepEqual(got, c.state) {
			t.Errorf("order:\n got %+v\nwant %+v", got, c.state)
		}
	}

	finals, replays, deadLetters := r.metrics.take()
	r.inputs.CheckDeadLetters(t, c.dead, deadLetters)
	if !reflect.DeepEqual(finals, c.finals) {
		t.Errorf("final metric: got %v, want %v", finals, c.finals)
	}
	if replays != c.replays {
		t.Errorf("replay metric: got %d, want %d", replays, c.replays)
	}
}

// sagaRig is both processors, each on its own tester (the two graphs read
// inventory.commands and inventory.results with different codecs, which one
// tester refuses), with the records between them moved by hand.
type sagaRig struct {
	t        *testing.T
	orders   *rig
	inv      *tester.Tester
	commands *tester.QueueTracker // orders' inventory.commands
	results  *tester.QueueTracker // inventory's inventory.results
	set      map[string]int64     // the last SetStock of every SKU
}

func newSagaRig(t *testing.T) *sagaRig {
	o := newRig(t, orders.Limits{})
	inv := rulestest.Start(t, inventory.New(testlog.New(), nil, nil).Graph(), testlog.New())
	return &sagaRig{
		t: t, orders: o, inv: inv,
		commands: o.tt.NewQueueTracker(string(topology.InventoryCommands)),
		results:  inv.NewQueueTracker(string(topology.InventoryResults)),
		set:      map[string]int64{},
	}
}

func (s *sagaRig) command(sku string, c *saga.InventoryCommand) {
	s.inv.Consume(string(topology.InventoryCommands), sku, c.Encode())
}

func (s *sagaRig) submit() { s.orders.send(submit(order(itemA, itemB, itemC))) }

func (s *sagaRig) setStock(sku string, n int64) {
	s.set[sku] = n
	s.command(sku, &saga.InventoryCommand{Kind: saga.CmdSetStock, Available: n})
}

// toInventory delivers every pending inventory command times times and
// reports how many there were.
func (s *sagaRig) toInventory(times int) int {
	var n int
	for ; ; n++ {
		key, v, ok := s.commands.Next()
		if !ok {
			return n
		}
		for range times {
			s.command(key, v.(*saga.InventoryCommand))
		}
	}
}

// toOrders delivers every pending reservation result times times.
func (s *sagaRig) toOrders(times int) int {
	var n int
	for ; ; n++ {
		key, v, ok := s.results.Next()
		if !ok {
			return n
		}
		for range times {
			s.orders.send(input{topology.InventoryResults, key, v.(*saga.ReservationResult).Encode(), false})
		}
	}
}

// drain moves records, each delivered times times, until neither side has
// anything left to say.
func (s *sagaRig) drain(times int) {
	for range 100 {
		if s.toInventory(times)+s.toOrders(times) == 0 {
			return
		}
	}
	s.t.Fatalf("the processors did not go quiet after 100 rounds")
}

func TestSaga(t *testing.T) {
	type units struct{ available, reserved, sold int64 }
	full := map[string]int64{"sku-a": 10, "sku-b": 10, "sku-c": 10}
	sold := map[string]units{"sku-a": {8, 0, 2}, "sku-b": {7, 0, 3}, "sku-c": {9, 0, 1}}
	bShort := map[string]int64{"sku-a": 10, "sku-b": 1, "sku-c": 10}
	givenBack := map[string]units{"sku-a": {10, 0, 0}, "sku-b": {1, 0, 0}, "sku-c": {10, 0, 0}}
	zombie := func(s *sagaRig) { // a Reserve re-sent by an instance that lost its partitions
		s.command("sku-a", &saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: id, Quantity: itemA.Quantity})
	}
	drain := func(s *sagaRig) { s.drain(1) }
	submit := (*sagaRig).submit

	cases := []struct {
		name    string
		stock   map[string]int64 // SetStock before the order
		steps   []func(*sagaRig)
		status  saga.Status
		reason  string
		version uint64
		units   map[string]units
	}{
		{
			name: "enough stock: confirmed, every line sold", stock: full,
			steps:  []func(*sagaRig){submit, drain},
			status: saga.StatusConfirmed, version: 4, units: sold,
		},
		{
			name: "one line short: rejected, the others given back", stock: bShort,
			steps:  []func(*sagaRig){submit, drain},
			status: saga.StatusRejected, reason: "insufficient stock: sku-b (requested 3)", version: 4, units: givenBack,
		},
		{
			name: "submission replayed before any answer: no unit reserved twice", stock: full,
			steps:  []func(*sagaRig){submit, submit, drain},
			status: saga.StatusConfirmed, version: 4, units: sold,
		},
		{
			name: "submission replayed after the order is final: nothing moves", stock: full,
			steps:  []func(*sagaRig){submit, drain, submit, drain},
			status: saga.StatusConfirmed, version: 4, units: sold,
		},
		{
			name: "every command and result delivered twice", stock: full,
			steps:  []func(*sagaRig){submit, func(s *sagaRig) { s.drain(2) }},
			status: saga.StatusConfirmed, version: 4, units: sold,
		},
		{
			name: "a late reserve after confirmation is a stray hold, released", stock: full,
			steps:  []func(*sagaRig){submit, drain, zombie, drain},
			status: saga.StatusConfirmed, version: 4, units: sold,
		},
		{
			name: "a late reserve after rejection is a stray hold, released", stock: bShort,
			steps:  []func(*sagaRig){submit, drain, zombie, drain},
			status: saga.StatusRejected, reason: "insufficient stock: sku-b (requested 3)", version: 4, units: givenBack,
		},
		{
			// The Commit re-sent for the replayed submission reaches the
			// inventory while the stray hold is open: it names the first
			// hold, so it must not sell the stray one.
			name: "a settlement re-sent while a stray hold is open does not sell it", stock: full,
			steps: []func(*sagaRig){submit, drain, zombie, submit,
				func(s *sagaRig) { s.toInventory(1) }, drain},
			status: saga.StatusConfirmed, version: 4, units: sold,
		},
		{
			// B is refused, stock comes back, the replayed submission
			// re-sends B's Reserve and it is granted: the order is rejected
			// on the first answer and the second hold is released.
			name: "stock comes back between a refusal and a re-sent reserve", stock: bShort,
			steps: []func(*sagaRig){submit, func(s *sagaRig) { s.toInventory(1) },
				func(s *sagaRig) { s.setStock("sku-b", 10) }, submit, drain},
			status: saga.StatusRejected, reason: "insufficient stock: sku-b (requested 3)", version: 4,
			units: map[string]units{"sku-a": {10, 0, 0}, "sku-b": {10, 0, 0}, "sku-c": {10, 0, 0}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSagaRig(t)
			for sku, n := range c.stock {
				s.setStock(sku, n)
			}
			for _, step := range c.steps {
				step(s)
			}
			o := s.orders.order(id.String())
			if o == nil {
				t.Fatalf("order: got none, want %s", c.status)
			}
			if o.Status != c.status || o.Reason != c.reason || o.Version != c.version {
				t.Errorf("order: got %s %q version %d, want %s %q version %d", o.Status, o.Reason, o.Version, c.status, c.reason, c.version)
			}
			for sku, want := range c.units {
				st := rulestest.TableValue[*saga.StockState](s.inv, topology.InventoryTable(), sku)
				if st == nil {
					t.Errorf("stock of %s: got none, want %+v", sku, want)
					continue
				}
				if got := (units{st.Available, st.Reserved, st.Sold}); got != want {
					t.Errorf("stock of %s: got %+v, want %+v", sku, got, want)
				}
				if n := st.HoldCount(); n != 0 {
					t.Errorf("stock of %s: got %d holds when quiet, want 0: %+v", sku, n, st.Holds())
				}
				if got, want := st.Available+st.Reserved+st.Sold, s.set[sku]; got != want {
					t.Errorf("stock of %s: conservation: got available+reserved+sold %d, want %d (last set, with nothing held then)", sku, got, want)
				}
			}
			for name, tt := range map[string]*tester.Tester{"orders": s.orders.tt, "inventory": s.inv} {
				dlq := tt.NewQueueTracker(string(topology.DeadLetter))
				dlq.Seek(0)
				if _, v, ok := dlq.NextRaw(); ok {
					t.Errorf("%s dead letters: got %x, want none", name, v)
				}
			}
		})
	}
}

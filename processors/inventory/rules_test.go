package inventory_test

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/lovoo/goka/tester"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/processors/internal/rulestest"
	"github.com/orderpipe/orderpipe/processors/inventory"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// The rules of the inventory callback, run on goka/tester: no broker, one
// partition, offsets of inventory.commands counted from 0 in every case.

var now = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

const skuA, skuB = "sku-a", "sku-b"

var (
	o1 = saga.OrderIDForKey("client", "o1")
	o2 = saga.OrderIDForKey("client", "o2")
)

// record is one input of inventory.commands: cmd encoded, or raw bytes, or a
// record without a value.
type record struct {
	key   string
	cmd   *saga.InventoryCommand
	raw   []byte
	noVal bool
}

func setStock(sku string, n int64) record {
	return record{key: sku, cmd: &saga.InventoryCommand{Kind: saga.CmdSetStock, Available: n}}
}

func reserve(sku string, o saga.OrderID, q uint32) record {
	return record{key: sku, cmd: &saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: o, Quantity: q}}
}

func commit(sku string, o saga.OrderID, hold int64) record {
	return record{key: sku, cmd: &saga.InventoryCommand{Kind: saga.CmdCommit, OrderID: o, HoldOffset: hold}}
}

func release(sku string, o saga.OrderID, hold int64) record {
	return record{key: sku, cmd: &saga.InventoryCommand{Kind: saga.CmdRelease, OrderID: o, HoldOffset: hold}}
}

func raw(key string, b []byte) record { return record{key: key, raw: b} }

// value is what the record carries: nil, a record without a value, if noVal.
func (r record) value() []byte {
	switch {
	case r.noVal:
		return nil
	case r.raw != nil:
		return r.raw
	}
	return r.cmd.Encode()
}

func (r record) String() string {
	switch {
	case r.noVal:
		return fmt.Sprintf("nil value for %q", r.key)
	case r.raw != nil:
		return fmt.Sprintf("raw %x for %q", r.raw, r.key)
	}
	return fmt.Sprintf("%s %+v for %q", r.cmd.Kind, *r.cmd, r.key)
}

// setsStock reports whether r is a SetStock the callback can apply.
func (r record) setsStock() bool {
	return r.cmd != nil && r.raw == nil && !r.noVal && r.key != "" &&
		r.cmd.Kind == saga.CmdSetStock && r.cmd.Available >= 0
}

func answer(o saga.OrderID, sku string, out saga.Outcome, q uint32, avail, hold int64) saga.ReservationResult {
	return saga.ReservationResult{OrderID: o, SKU: sku, Outcome: out, Quantity: q, Available: avail, HoldOffset: hold}
}

func held(o saga.OrderID, q uint32, off int64) saga.Hold {
	return saga.Hold{OrderID: o, Quantity: q, Outcome: saga.HoldReserved, Offset: off}
}

func refusedHold(o saga.OrderID, q uint32, off int64) saga.Hold {
	return saga.Hold{OrderID: o, Quantity: q, Outcome: saga.HoldRefused, Offset: off}
}

// stock is the expected value of one SKU.
type stock struct {
	available, reserved, sold, lastOffset int64
	version                               uint64
	holds                                 []saga.Hold
}

func st(available, reserved, sold, lastOffset int64, version uint64, holds ...saga.Hold) *stock {
	return &stock{available, reserved, sold, lastOffset, version, holds}
}

// seeded is a table value written around the callback: states the current
// code no longer makes (refused holds) but may still find in a table.
func seeded(w *stock) *saga.StockState {
	s := &saga.StockState{Version: w.version, Available: w.available, Reserved: w.reserved, Sold: w.sold, LastOffset: w.lastOffset, UpdatedAt: now}
	for _, h := range w.holds {
		s.PutHold(h)
	}
	return s
}

// dead is an expected dead letter: the in record it comes from and its reason.
type dead = rulestest.Dead

// counted is one call of Metrics.Command.
type counted struct {
	kind   saga.CommandKind
	replay bool
}

type recorder struct {
	mu       sync.Mutex
	commands []counted
	dead     int
	behind   int
}

func (m *recorder) StateBehind() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.behind++
}

func (m *recorder) Command(kind saga.CommandKind, replay bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commands = append(m.commands, counted{kind, replay})
}

func (m *recorder) DeadLetter() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dead++
}

func (m *recorder) take() ([]counted, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, d := m.commands, m.dead
	m.commands, m.dead = nil, 0
	return c, d
}

// rig is one inventory processor on its own tester.
type rig struct {
	t       *testing.T
	tt      *tester.Tester
	metrics *recorder
	// redelivering: every record sent is already in the table, so it must
	// change nothing at all.
	redelivering bool
	inputs       *rulestest.Inputs // what send consumed, for the dead-letter check
}

func newRig(t *testing.T) *rig {
	t.Helper()
	m := &recorder{}
	p := inventory.New(testlog.New(), m, func() time.Time { return now })
	tt := rulestest.Start(t, p.Graph(), testlog.New())
	return &rig{t: t, tt: tt, metrics: m, inputs: rulestest.NewInputs(tt)}
}

func (r *rig) stock(sku string) *saga.StockState {
	return rulestest.TableValue[*saga.StockState](r.tt, topology.InventoryTable(), sku)
}

func (r *rig) seed(values map[string]*saga.StockState) {
	for k, v := range values {
		r.tt.SetTableValue(topology.InventoryTable(), k, v)
	}
}

func (r *rig) snapshot() map[string]*saga.StockState {
	out := map[string]*saga.StockState{}
	for _, k := range r.tt.GetTableKeys(topology.InventoryTable()) {
		out[k] = r.stock(k)
	}
	return out
}

func total(s *saga.StockState) int64 {
	if s == nil {
		return 0
	}
	return s.Available + s.Reserved + s.Sold
}

// send consumes rec and checks what must hold after any command: stock is
// never negative, Reserved is what the reserved holds hold, and units are
// conserved (only SetStock changes the total: to its value plus the units
// held and sold).
func (r *rig) send(rec record) {
	r.t.Helper()
	prev := r.stock(rec.key)
	r.inputs.Consume(topology.InventoryCommands, rec.key, rec.value())
	got := r.stock(rec.key)
	if r.redelivering {
		if (prev == nil) != (got == nil) || (got != nil && !bytes.Equal(got.Encode(), prev.Encode())) {
			r.t.Errorf("redelivered %s: got stock %+v, want it unchanged %+v", rec, got, prev)
		}
		return
	}
	if got == nil {
		if prev != nil {
			r.t.Errorf("%s: got no stock, want %+v", rec, prev)
		}
		return
	}
	if got.Available < 0 || got.Reserved < 0 || got.Sold < 0 {
		r.t.Errorf("%s: got negative stock %+v", rec, got)
	}
	var inHolds int64
	for _, h := range got.Holds() {
		if h.Outcome == saga.HoldReserved {
			inHolds += int64(h.Quantity)
		}
	}
	if inHolds != got.Reserved {
		r.t.Errorf("%s: got reserved %d, want %d (the units in reserved holds)", rec, got.Reserved, inHolds)
	}
	want := total(prev)
	if rec.setsStock() {
		want = rec.cmd.Available
		if prev != nil {
			want += prev.Reserved + prev.Sold
		}
	}
	if got := total(got); got != want {
		r.t.Errorf("%s: conservation: got available+reserved+sold %d, want %d", rec, got, want)
	}
}

type invCase struct {
	name   string
	before []record                    // applied first; outputs not checked
	seed   map[string]*saga.StockState // then written into the table
	in     []record                    // the records under test
	// redeliver: in was applied and its table writes landed, but the
	// offsets were not committed (a crash): in is delivered again to a
	// fresh processor on that table, and that redelivery is what is checked.
	redeliver bool

	results []saga.ReservationResult // emitted by in, in order, each keyed by its order id
	dead    []dead
	stock   map[string]*stock // every key of the table after in; nil: none
	metrics []counted         // Metrics.Command calls made by in
}

func TestOnCommand(t *testing.T) {
	cases := []invCase{
		// SetStock
		{
			name:    "set stock on a new sku",
			in:      []record{setStock(skuA, 10)},
			stock:   map[string]*stock{skuA: st(10, 0, 0, 0, 1)},
			metrics: []counted{{saga.CmdSetStock, false}},
		},
		{
			name:    "set stock keeps the holds and the reserved units",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3)},
			in:      []record{setStock(skuA, 5)},
			stock:   map[string]*stock{skuA: st(5, 3, 0, 2, 3, held(o1, 3, 1))},
			metrics: []counted{{saga.CmdSetStock, false}},
		},
		{
			name:    "set stock to zero",
			before:  []record{setStock(skuA, 10)},
			in:      []record{setStock(skuA, 0)},
			stock:   map[string]*stock{skuA: st(0, 0, 0, 1, 2)},
			metrics: []counted{{saga.CmdSetStock, false}},
		},

		// Reserve
		{
			name:    "reserve with enough stock holds it and answers reserved",
			before:  []record{setStock(skuA, 10)},
			in:      []record{reserve(skuA, o1, 3)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeReserved, 3, 7, 1)},
			stock:   map[string]*stock{skuA: st(7, 3, 0, 1, 2, held(o1, 3, 1))},
			metrics: []counted{{saga.CmdReserve, false}},
		},
		{
			name:    "reserve of exactly the available stock",
			before:  []record{setStock(skuA, 3)},
			in:      []record{reserve(skuA, o1, 3)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeReserved, 3, 0, 1)},
			stock:   map[string]*stock{skuA: st(0, 3, 0, 1, 2, held(o1, 3, 1))},
			metrics: []counted{{saga.CmdReserve, false}},
		},
		{
			name:    "two orders hold the same sku side by side",
			before:  []record{setStock(skuA, 10)},
			in:      []record{reserve(skuA, o1, 3), reserve(skuA, o2, 4)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeReserved, 3, 7, 1), answer(o2, skuA, saga.OutcomeReserved, 4, 3, 2)},
			stock:   map[string]*stock{skuA: st(3, 7, 0, 2, 3, held(o1, 3, 1), held(o2, 4, 2))},
			metrics: []counted{{saga.CmdReserve, false}, {saga.CmdReserve, false}},
		},
		{
			name:    "reserve with insufficient stock answers insufficient and holds nothing",
			before:  []record{setStock(skuA, 2)},
			in:      []record{reserve(skuA, o1, 3)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeInsufficient, 3, 2, 1)},
			stock:   map[string]*stock{skuA: st(2, 0, 0, 0, 1)},
			metrics: []counted{{saga.CmdReserve, false}},
		},
		{
			name:    "reserve on a sku never stocked is refused and writes nothing",
			in:      []record{reserve(skuA, o1, 1)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeInsufficient, 1, 0, 0)},
			metrics: []counted{{saga.CmdReserve, false}},
		},
		{
			name:    "reserve re-sent for an open order answers the recorded hold and changes nothing",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3)},
			in:      []record{reserve(skuA, o1, 3)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeReserved, 3, 7, 1)},
			stock:   map[string]*stock{skuA: st(7, 3, 0, 1, 2, held(o1, 3, 1))},
			metrics: []counted{{saga.CmdReserve, false}},
		},
		{
			name:    "reserve re-sent for an open order answers its hold even when it would not fit now",
			before:  []record{setStock(skuA, 3), reserve(skuA, o1, 3)},
			in:      []record{reserve(skuA, o1, 5)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeReserved, 3, 0, 1)},
			stock:   map[string]*stock{skuA: st(0, 3, 0, 1, 2, held(o1, 3, 1))},
			metrics: []counted{{saga.CmdReserve, false}},
		},
		{
			name:    "reserve for an order with a refused hold answers insufficient from it",
			before:  []record{setStock(skuA, 10)},
			seed:    map[string]*saga.StockState{skuA: seeded(st(10, 0, 0, 0, 1, refusedHold(o1, 3, 0)))},
			in:      []record{reserve(skuA, o1, 3)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeInsufficient, 3, 10, 0)},
			stock:   map[string]*stock{skuA: st(10, 0, 0, 0, 1, refusedHold(o1, 3, 0))},
			metrics: []counted{{saga.CmdReserve, false}},
		},

		// Commit and Release
		{
			name:    "commit of an open hold sells it",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3)},
			in:      []record{commit(skuA, o1, 1)},
			stock:   map[string]*stock{skuA: st(7, 0, 3, 2, 3)},
			metrics: []counted{{saga.CmdCommit, false}},
		},
		{
			name:    "release of an open hold gives it back",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3)},
			in:      []record{release(skuA, o1, 1)},
			stock:   map[string]*stock{skuA: st(10, 0, 0, 2, 3)},
			metrics: []counted{{saga.CmdRelease, false}},
		},
		{
			name:    "settling one order leaves the other's hold",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3), reserve(skuA, o2, 4)},
			in:      []record{commit(skuA, o2, 2)},
			stock:   map[string]*stock{skuA: st(3, 3, 4, 3, 4, held(o1, 3, 1))},
			metrics: []counted{{saga.CmdCommit, false}},
		},
		{
			name:    "commit for an order without a hold changes nothing",
			before:  []record{setStock(skuA, 10)},
			in:      []record{commit(skuA, o1, 0)},
			stock:   map[string]*stock{skuA: st(10, 0, 0, 0, 1)},
			metrics: []counted{{saga.CmdCommit, false}},
		},
		{
			name:    "release for an order without a hold changes nothing",
			before:  []record{setStock(skuA, 10), reserve(skuA, o2, 4)},
			in:      []record{release(skuA, o1, 1)},
			stock:   map[string]*stock{skuA: st(6, 4, 0, 1, 2, held(o2, 4, 1))},
			metrics: []counted{{saga.CmdRelease, false}},
		},
		{
			name:    "commit naming another hold of the order changes nothing",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3)},
			in:      []record{commit(skuA, o1, 0)},
			stock:   map[string]*stock{skuA: st(7, 3, 0, 1, 2, held(o1, 3, 1))},
			metrics: []counted{{saga.CmdCommit, false}},
		},
		{
			name:    "release naming another hold of the order changes nothing",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3)},
			in:      []record{release(skuA, o1, 2)},
			stock:   map[string]*stock{skuA: st(7, 3, 0, 1, 2, held(o1, 3, 1))},
			metrics: []counted{{saga.CmdRelease, false}},
		},
		{
			name:    "second commit of a sold hold changes nothing",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3), commit(skuA, o1, 1)},
			in:      []record{commit(skuA, o1, 1)},
			stock:   map[string]*stock{skuA: st(7, 0, 3, 2, 3)},
			metrics: []counted{{saga.CmdCommit, false}},
		},
		{
			name:    "release after commit does not give sold units back",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3), commit(skuA, o1, 1)},
			in:      []record{release(skuA, o1, 1)},
			stock:   map[string]*stock{skuA: st(7, 0, 3, 2, 3)},
			metrics: []counted{{saga.CmdRelease, false}},
		},
		{
			name:    "commit on a sku never stocked writes nothing",
			in:      []record{commit(skuA, o1, 0)},
			metrics: []counted{{saga.CmdCommit, false}},
		},
		{
			name:    "commit of a refused hold forgets it and sells nothing",
			before:  []record{setStock(skuA, 10)},
			seed:    map[string]*saga.StockState{skuA: seeded(st(10, 0, 0, 0, 1, refusedHold(o1, 3, 0)))},
			in:      []record{commit(skuA, o1, 0)},
			stock:   map[string]*stock{skuA: st(10, 0, 0, 1, 2)},
			metrics: []counted{{saga.CmdCommit, false}},
		},
		{
			name:    "release of a refused hold forgets it and gives nothing back",
			before:  []record{setStock(skuA, 10)},
			seed:    map[string]*saga.StockState{skuA: seeded(st(10, 0, 0, 0, 1, refusedHold(o1, 3, 0)))},
			in:      []record{release(skuA, o1, 0)},
			stock:   map[string]*stock{skuA: st(10, 0, 0, 1, 2)},
			metrics: []counted{{saga.CmdRelease, false}},
		},

		// Late Reserve: there is no tombstone. A Reserve after its order's
		// hold was settled makes a new hold under its own offset; the orders
		// processor releases it as a stray (see the orders rules).
		{
			name:    "late reserve after release makes a new hold under its own offset",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3), release(skuA, o1, 1)},
			in:      []record{reserve(skuA, o1, 3)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeReserved, 3, 7, 3)},
			stock:   map[string]*stock{skuA: st(7, 3, 0, 3, 4, held(o1, 3, 3))},
			metrics: []counted{{saga.CmdReserve, false}},
		},
		{
			name:    "late reserve after commit makes a new hold under its own offset",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3), commit(skuA, o1, 1)},
			in:      []record{reserve(skuA, o1, 3)},
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeReserved, 3, 4, 3)},
			stock:   map[string]*stock{skuA: st(4, 3, 3, 3, 4, held(o1, 3, 3))},
			metrics: []counted{{saga.CmdReserve, false}},
		},
		{
			name:    "a late hold is settled only by its own offset",
			before:  []record{setStock(skuA, 10), reserve(skuA, o1, 3), release(skuA, o1, 1), reserve(skuA, o1, 3)},
			in:      []record{release(skuA, o1, 1), commit(skuA, o1, 1), release(skuA, o1, 3)},
			stock:   map[string]*stock{skuA: st(10, 0, 0, 6, 5)},
			metrics: []counted{{saga.CmdRelease, false}, {saga.CmdCommit, false}, {saga.CmdRelease, false}},
		},

		// Redelivery after a crash: records at or below LastOffset.
		{
			name:      "redelivered set stock does not undo the reserve after it",
			in:        []record{setStock(skuA, 10), reserve(skuA, o1, 3)},
			redeliver: true,
			results:   []saga.ReservationResult{answer(o1, skuA, saga.OutcomeReserved, 3, 7, 1)},
			stock:     map[string]*stock{skuA: st(7, 3, 0, 1, 2, held(o1, 3, 1))},
			metrics:   []counted{{saga.CmdSetStock, true}, {saga.CmdReserve, true}},
		},
		{
			name:      "redelivered reserve answers its hold again and takes no second unit",
			before:    []record{setStock(skuA, 10)},
			in:        []record{reserve(skuA, o1, 3)},
			redeliver: true,
			results:   []saga.ReservationResult{answer(o1, skuA, saga.OutcomeReserved, 3, 7, 1)},
			stock:     map[string]*stock{skuA: st(7, 3, 0, 1, 2, held(o1, 3, 1))},
			metrics:   []counted{{saga.CmdReserve, true}},
		},
		{
			name:      "redelivered refused reserve, stock set since, is refused again",
			before:    []record{setStock(skuA, 2)},
			in:        []record{reserve(skuA, o1, 3), setStock(skuA, 50)},
			redeliver: true,
			// Available is the table's now, not the 2 of the first answer.
			results: []saga.ReservationResult{answer(o1, skuA, saga.OutcomeInsufficient, 3, 50, 1)},
			stock:   map[string]*stock{skuA: st(50, 0, 0, 2, 2)},
			metrics: []counted{{saga.CmdReserve, true}, {saga.CmdSetStock, true}},
		},
		{
			name:      "redelivered refused reserve, nothing applied since, is decided again the same way",
			before:    []record{setStock(skuA, 2)},
			in:        []record{reserve(skuA, o1, 3)},
			redeliver: true,
			results:   []saga.ReservationResult{answer(o1, skuA, saga.OutcomeInsufficient, 3, 2, 1)},
			stock:     map[string]*stock{skuA: st(2, 0, 0, 0, 1)},
			metrics:   []counted{{saga.CmdReserve, false}},
		},
		{
			name:      "redelivered reserve and commit sell once and answer insufficient",
			before:    []record{setStock(skuA, 10)},
			in:        []record{reserve(skuA, o1, 3), commit(skuA, o1, 1)},
			redeliver: true,
			results:   []saga.ReservationResult{answer(o1, skuA, saga.OutcomeInsufficient, 3, 7, 1)},
			stock:     map[string]*stock{skuA: st(7, 0, 3, 2, 3)},
			metrics:   []counted{{saga.CmdReserve, true}, {saga.CmdCommit, true}},
		},
		{
			name:      "redelivered reserve and release give back once and answer insufficient",
			before:    []record{setStock(skuA, 10)},
			in:        []record{reserve(skuA, o1, 3), release(skuA, o1, 1)},
			redeliver: true,
			results:   []saga.ReservationResult{answer(o1, skuA, saga.OutcomeInsufficient, 3, 10, 1)},
			stock:     map[string]*stock{skuA: st(10, 0, 0, 2, 3)},
			metrics:   []counted{{saga.CmdReserve, true}, {saga.CmdRelease, true}},
		},
		{
			// The first delivery answered reserved from the hold made at
			// offset 1; the redelivery answers insufficient under offset 2.
			// The orders processor takes it for a stray and releases hold 2,
			// which changes nothing: harmless, but not "the recorded result".
			name:      "redelivered re-sent reserve answers insufficient under its own offset",
			before:    []record{setStock(skuA, 10), reserve(skuA, o1, 3)},
			in:        []record{reserve(skuA, o1, 3), setStock(skuA, 20)},
			redeliver: true,
			results:   []saga.ReservationResult{answer(o1, skuA, saga.OutcomeInsufficient, 3, 20, 2)},
			stock:     map[string]*stock{skuA: st(20, 3, 0, 3, 3, held(o1, 3, 1))},
			metrics:   []counted{{saga.CmdReserve, true}, {saga.CmdSetStock, true}},
		},
		{
			name:      "redelivered commit without a hold changes nothing",
			before:    []record{setStock(skuA, 10)},
			in:        []record{commit(skuA, o1, 0)},
			redeliver: true,
			stock:     map[string]*stock{skuA: st(10, 0, 0, 0, 1)},
			metrics:   []counted{{saga.CmdCommit, false}},
		},

		// Records the callback cannot use go to the dead-letter topic and
		// change nothing.
		{
			name:   "garbage",
			before: []record{setStock(skuA, 10)},
			in:     []record{raw(skuA, []byte("not a command"))},
			dead:   []dead{{In: 0, Reason: "malformed payload: unknown codec version 110"}},
			stock:  map[string]*stock{skuA: st(10, 0, 0, 0, 1)},
		},
		{
			name:   "truncated reserve",
			before: []record{setStock(skuA, 10)},
			in:     []record{raw(skuA, reserve(skuA, o1, 3).cmd.Encode()[:10])},
			dead:   []dead{{In: 0, Reason: "malformed payload: truncated: want 16 bytes, have 7"}},
			stock:  map[string]*stock{skuA: st(10, 0, 0, 0, 1)},
		},
		{
			name:   "trailing bytes",
			before: []record{setStock(skuA, 10)},
			in:     []record{raw(skuA, append(setStock(skuA, 1).cmd.Encode(), 0))},
			dead:   []dead{{In: 0, Reason: "malformed payload: 1 trailing bytes"}},
			stock:  map[string]*stock{skuA: st(10, 0, 0, 0, 1)},
		},
		{
			name: "a reservation result on the command topic",
			in:   []record{raw(skuA, (&saga.ReservationResult{OrderID: o1, SKU: skuA, Outcome: saga.OutcomeReserved, Quantity: 1}).Encode())},
			dead: []dead{{In: 0, Reason: "malformed payload: got a ReservationResult, want a InventoryCommand"}},
		},
		{
			name: "unknown command kind",
			in:   []record{raw(skuA, []byte{1, 2, 9})},
			dead: []dead{{In: 0, Reason: "malformed payload: unknown command kind 9"}},
		},
		{
			name: "reserve of zero units",
			in:   []record{reserve(skuA, o1, 0)},
			dead: []dead{{In: 0, Reason: "malformed payload: reserve of zero units"}},
		},
		{
			name:   "negative set stock",
			before: []record{setStock(skuA, 10)},
			in:     []record{setStock(skuA, -1)},
			dead:   []dead{{In: 0, Reason: "malformed payload: negative stock -1"}},
			stock:  map[string]*stock{skuA: st(10, 0, 0, 0, 1)},
		},
		{
			name:   "negative hold offset",
			before: []record{setStock(skuA, 10), reserve(skuA, o1, 3)},
			in:     []record{commit(skuA, o1, -1)},
			dead:   []dead{{In: 0, Reason: "malformed payload: negative hold offset -1"}},
			stock:  map[string]*stock{skuA: st(7, 3, 0, 1, 2, held(o1, 3, 1))},
		},
		{
			name:   "command without a sku key",
			before: []record{setStock(skuA, 10)},
			in:     []record{setStock("", 5)},
			dead:   []dead{{In: 0, Reason: "inventory command without a SKU key"}},
			stock:  map[string]*stock{skuA: st(10, 0, 0, 0, 1)},
		},
		{
			// Goka's default nil handling (NilIgnore, which the runner
			// keeps) drops it before the callback: no dead letter.
			name:   "record without a value is dropped",
			before: []record{setStock(skuA, 10)},
			in:     []record{{key: skuA, noVal: true}},
			stock:  map[string]*stock{skuA: st(10, 0, 0, 0, 1)},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t) })
	}
}

func (c invCase) run(t *testing.T) {
	r := newRig(t)
	for _, rec := range c.before {
		r.send(rec)
	}
	r.seed(c.seed)
	if c.redeliver {
		for _, rec := range c.in {
			r.send(rec)
		}
		table := r.snapshot()
		r = newRig(t)
		for _, rec := range c.before {
			r.send(rec) // the same offsets again
		}
		r.seed(c.seed)
		r.seed(table)
		r.redelivering = true
	}
	results := r.tt.NewQueueTracker(string(topology.InventoryResults))
	r.metrics.take()
	r.inputs.UnderTest()
	for _, rec := range c.in {
		r.send(rec)
	}

	var got []saga.ReservationResult
	for {
		key, v, ok := results.Next()
		if !ok {
			break
		}
		res := *v.(*saga.ReservationResult)
		if key != res.OrderID.String() {
			t.Errorf("result %+v: got key %q, want its order id", res, key)
		}
		got = append(got, res)
	}
	if !reflect.DeepEqual(got, c.results) {
		t.Errorf("results:\n got %+v\nwant %+v", got, c.results)
	}

	keys := r.tt.GetTableKeys(topology.InventoryTable())
	sort.Strings(keys)
	var wantKeys []string
	for k := range c.stock {
		wantKeys = append(wantKeys, k)
	}
	sort.Strings(wantKeys)
	if len(keys) != len(wantKeys) || (len(keys) > 0 && !reflect.DeepEqual(keys, wantKeys)) {
		t.Errorf("table keys: got %q, want %q", keys, wantKeys)
	}
	for sku, w := range c.stock {
		s := r.stock(sku)
		if s == nil {
			t.Errorf("stock of %s: got none, want %+v", sku, *w)
			continue
		}
		got := stock{s.Available, s.Reserved, s.Sold, s.LastOffset, s.Version, nil}
		got.holds = append(got.holds, s.Holds()...)
		want := *w
		want.holds = append([]saga.Hold(nil), w.holds...)
		sort.Slice(want.holds, func(i, j int) bool {
			return bytes.Compare(want.holds[i].OrderID[:], want.holds[j].OrderID[:]) < 0
		})
		if !reflect.DeepEqual(got, want) {
			t.Errorf("stock of %s:\n got %+v\nwant %+v", sku, got, want)
		}
		if !s.UpdatedAt.Equal(now) {
			t.Errorf("stock of %s: got updated at %v, want %v", sku, s.UpdatedAt, now)
		}
	}

	calls, deadLetters := r.metrics.take()
	if !reflect.DeepEqual(calls, c.metrics) {
		t.Errorf("command metrics: got %+v, want %+v", calls, c.metrics)
	}
	r.inputs.CheckDeadLetters(t, c.dead, deadLetters)
}

// TestStateBehindAnAcknowledgedHold: a Commit that names a hold above the
// state's LastOffset (the state lost the Reserve that made it) is counted;
// a stray Commit at or below LastOffset and a Release above it are not
// (a Release may name a refused Reserve, which never moves LastOffset).
func TestStateBehindAnAcknowledgedHold(t *testing.T) {
	o, _ := saga.NewOrderID()
	for _, tc := range []struct {
		name string
		rec  record
		want int
	}{
		{"commit above LastOffset", commit("S1", o, 1_000), 1},
		{"commit at LastOffset", commit("S1", o, 0), 0},
		{"release above LastOffset", release("S1", o, 1_000), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.send(setStock("S1", 10)) // LastOffset 0: the tester's first offset
			r.send(tc.rec)
			r.metrics.mu.Lock()
			got := r.metrics.behind
			r.metrics.mu.Unlock()
			if got != tc.want {
				t.Fatalf("state-behind count %d, want %d (LastOffset %d)", got, tc.want, r.stock("S1").LastOffset)
			}
		})
	}
}

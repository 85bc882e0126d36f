package saga_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/saga"
)

func id(b byte) saga.OrderID {
	var o saga.OrderID
	for i := range o {
		o[i] = b + byte(i)
	}
	return o
}

func TestRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 24, 12, 0, 0, 123000, time.UTC)
	sub := &saga.OrderSubmitted{
		OrderID: id(1), CustomerID: "cust-1", Currency: "EUR", SubmittedAt: ts,
		ClientID: "shop", IdempotencyKey: "k-1", RequestHash: [16]byte{9, 9},
		Items: []saga.Item{{SKU: "A", Quantity: 2, UnitPriceCents: 150}, {SKU: "B", Quantity: 1, UnitPriceCents: 0}},
	}
	got, err := saga.DecodeOrderSubmitted(sub.Encode())
	if err != nil || !reflect.DeepEqual(got, sub) {
		t.Errorf("OrderSubmitted: got %+v, %v; want %+v", got, err, sub)
	}
	for _, c := range []*saga.InventoryCommand{
		{Kind: saga.CmdReserve, OrderID: id(2), Quantity: 7},
		{Kind: saga.CmdCommit, OrderID: id(3)},
		{Kind: saga.CmdRelease, OrderID: id(4)},
		{Kind: saga.CmdSetStock, Available: 1 << 40},
	} {
		got, err := saga.DecodeInventoryCommand(c.Encode())
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Errorf("InventoryCommand %s: got %+v, %v; want %+v", c.Kind, got, err, c)
		}
	}
	res := &saga.ReservationResult{OrderID: id(5), SKU: "A", Outcome: saga.OutcomeInsufficient, Quantity: 3, Available: 2}
	if got, err := saga.DecodeReservationResult(res.Encode()); err != nil || !reflect.DeepEqual(got, res) {
		t.Errorf("ReservationResult: got %+v, %v; want %+v", got, err, res)
	}
	st := &saga.OrderState{
		Version: 3, OrderID: id(6), CustomerID: "c", Currency: "USD", Status: saga.StatusRejected,
		Reason: "insufficient stock", CreatedAt: ts, UpdatedAt: ts.Add(time.Second), ClientID: "x",
		IdempotencyKey: "k", RequestHash: [16]byte{1},
		Lines: []saga.Line{{Item: saga.Item{SKU: "A", Quantity: 1, UnitPriceCents: 10}, Result: saga.LineInsufficient}},
	}
	if got, err := saga.DecodeOrderState(st.Encode()); err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("OrderState: got %+v, %v; want %+v", got, err, st)
	}
	if st.TotalCents() != 10 {
		t.Errorf("TotalCents = %d, want 10", st.TotalCents())
	}
	ss := saga.NewStockState()
	ss.Version, ss.Available, ss.Reserved, ss.Sold, ss.LastOffset, ss.UpdatedAt = 4, 10, 3, 2, 99, ts
	ss.PutHold(saga.Hold{OrderID: id(7), Quantity: 3, Outcome: saga.HoldReserved})
	ss.PutHold(saga.Hold{OrderID: id(1), Quantity: 5, Outcome: saga.HoldRefused})
	got2, err := saga.DecodeStockState(ss.Encode())
	if err != nil {
		t.Fatalf("StockState: %v", err)
	}
	if !reflect.DeepEqual(got2.Holds(), ss.Holds()) || got2.Available != 10 || got2.LastOffset != 99 || !got2.UpdatedAt.Equal(ts) {
		t.Errorf("StockState: got %+v holds %v; want %+v holds %v", got2, got2.Holds(), ss, ss.Holds())
	}
}

func TestDecodeRejects(t *testing.T) {
	good := (&saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: id(1), Quantity: 1}).Encode()
	cases := map[string][]byte{
		"empty":          nil,
		"version":        append([]byte{2}, good[1:]...),
		"wrong type":     (&saga.ReservationResult{OrderID: id(1), SKU: "A", Outcome: 1}).Encode(),
		"trailing":       append(bytes.Clone(good), 0),
		"truncated":      good[:len(good)-1],
		"zero quantity":  (&saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: id(1)}).Encode(),
		"unknown kind":   {1, 2, 99},
		"negative stock": (&saga.InventoryCommand{Kind: saga.CmdSetStock, Available: -1}).Encode(),
	}
	for name, b := range cases {
		if _, err := saga.DecodeInventoryCommand(b); !errors.Is(err, saga.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

// TestHoldsModel drives the sorted hold records and a map with the same
// random operations and compares them after every step.
func TestHoldsModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	st := saga.NewStockState()
	model := map[saga.OrderID]saga.Hold{}
	for step := 0; step < 3000; step++ {
		var oid saga.OrderID
		oid[0], oid[15] = byte(rng.IntN(8)), byte(rng.IntN(32))
		switch rng.IntN(3) {
		case 0, 1:
			h := saga.Hold{OrderID: oid, Quantity: 1 + rng.Uint32N(100), Outcome: saga.HoldOutcome(1 + rng.IntN(2))}
			st.PutHold(h)
			model[oid] = h
		case 2:
			_, want := model[oid]
			if got := st.DeleteHold(oid); got != want {
				t.Fatalf("step %d: DeleteHold = %v, want %v", step, got, want)
			}
			delete(model, oid)
		}
		if st.HoldCount() != len(model) {
			t.Fatalf("step %d: %d holds, want %d", step, st.HoldCount(), len(model))
		}
		h, ok := st.Hold(oid)
		if mh, mok := model[oid]; ok != mok || h != mh {
			t.Fatalf("step %d: Hold = %+v,%v; want %+v,%v", step, h, ok, mh, mok)
		}
	}
	want := make([]saga.Hold, 0, len(model))
	for _, h := range model {
		want = append(want, h)
	}
	sort.Slice(want, func(i, j int) bool { return bytes.Compare(want[i].OrderID[:], want[j].OrderID[:]) < 0 })
	if got := st.Holds(); !reflect.DeepEqual(got, want) {
		t.Fatalf("holds differ from the model")
	}
	if _, err := saga.DecodeStockState(st.Encode()); err != nil {
		t.Fatalf("decode after random operations: %v", err)
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder: none may panic, and
// anything accepted must encode back to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add((&saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: id(1), Quantity: 3}).Encode())
	f.Add((&saga.OrderSubmitted{OrderID: id(1), CustomerID: "c", Items: []saga.Item{{SKU: "A", Quantity: 1}}}).Encode())
	f.Add((&saga.ReservationResult{OrderID: id(1), SKU: "A", Outcome: 1}).Encode())
	f.Add((&saga.OrderState{Status: 1, Lines: []saga.Line{{Item: saga.Item{SKU: "A", Quantity: 1}}}}).Encode())
	f.Add(timedState().Encode())
	f.Add(mustHex(f, oldOrderState))
	ss := saga.NewStockState()
	ss.PutHold(saga.Hold{OrderID: id(1), Quantity: 1, Outcome: 1})
	f.Add(ss.Encode())
	f.Add([]byte{1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := saga.DecodeOrderSubmitted(b); err == nil && !bytes.Equal(m.Encode(), b) {
			t.Errorf("OrderSubmitted re-encodes differently")
		}
		if m, err := saga.DecodeInventoryCommand(b); err == nil && !bytes.Equal(m.Encode(), b) {
			t.Errorf("InventoryCommand re-encodes differently")
		}
		if m, err := saga.DecodeReservationResult(b); err == nil && !bytes.Equal(m.Encode(), b) {
			t.Errorf("ReservationResult re-encodes differently")
		}
		if m, err := saga.DecodeOrderState(b); err == nil && !bytes.Equal(m.Encode(), b) {
			t.Errorf("OrderState re-encodes differently")
		}
		if m, err := saga.DecodeStockState(b); err == nil && !bytes.Equal(m.Encode(), b) {
			t.Errorf("StockState re-encodes differently")
		}
	})
}

// oldOrderState is an OrderState as the codec wrote it before step times
// (version 1), captured from that code: a confirmed order of two lines.
const oldOrderState = "010404101112131415161718191a1b1c1d1e1f06637573742d31034555520200f6c1bcb28ec1b006b6cff3b38ec1b0060473686f70036b2d310707000000000000000000000000000002014102ac020152014201c6010154"

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// timedState is a state with step times: one line answered, one line
// awaiting, one requested by a clock behind the edge's.
func timedState() *saga.OrderState {
	ts := time.Date(2026, 11, 24, 12, 0, 0, 123000, time.UTC)
	return &saga.OrderState{
		Version: 2, OrderID: id(8), CustomerID: "c", Currency: "EUR", Status: saga.StatusPending,
		CreatedAt: ts, UpdatedAt: ts.Add(3 * time.Millisecond),
		Lines: []saga.Line{
			{Item: saga.Item{SKU: "A", Quantity: 1, UnitPriceCents: 10}, Result: saga.LineReserved, HoldOffset: 5,
				RequestedAt: ts.Add(time.Millisecond), AnsweredAt: ts.Add(3 * time.Millisecond)},
			{Item: saga.Item{SKU: "B", Quantity: 2}, RequestedAt: ts},
			{Item: saga.Item{SKU: "C", Quantity: 3}, RequestedAt: ts.Add(-2 * time.Microsecond)},
		},
	}
}

// TestOrderStateVersion1 reads a payload of the code before step times: it
// decodes to the same order without them, and a state without step times
// is still written as version 1, which that code can read.
func TestOrderStateVersion1(t *testing.T) {
	old := mustHex(t, oldOrderState)
	got, err := saga.DecodeOrderState(old)
	if err != nil {
		t.Fatalf("decode a version 1 payload: %v", err)
	}
	ts := time.Date(2026, 11, 24, 12, 0, 0, 123000, time.UTC)
	var oid saga.OrderID
	for i := range oid {
		oid[i] = byte(0x10 + i)
	}
	want := &saga.OrderState{
		Version: 4, OrderID: oid, CustomerID: "cust-1", Currency: "EUR", Status: saga.StatusConfirmed,
		CreatedAt: ts, UpdatedAt: ts.Add(1500 * time.Millisecond), ClientID: "shop", IdempotencyKey: "k-1", RequestHash: [16]byte{7, 7},
		Lines: []saga.Line{
			{Item: saga.Item{SKU: "A", Quantity: 2, UnitPriceCents: 150}, Result: saga.LineReserved, HoldOffset: 41},
			{Item: saga.Item{SKU: "B", Quantity: 1, UnitPriceCents: 99}, Result: saga.LineReserved, HoldOffset: 42},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("version 1 payload: got %+v, want %+v", got, want)
	}
	if enc := want.Encode(); !bytes.Equal(enc, old) {
		t.Errorf("a state without step times: got %x, want the version 1 payload %x", enc, old)
	}
}

func TestOrderStateStepTimes(t *testing.T) {
	st := timedState()
	b := st.Encode()
	if b[0] != 2 {
		t.Errorf("codec version of a state with step times: got %d, want 2", b[0])
	}
	got, err := saga.DecodeOrderState(b)
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("round trip: got %+v, %v; want %+v", got, err, st)
	}
	// Relative to CreatedAt, the three lines' times take 9 bytes: 8 each
	// if they were absolute.
	if bare := (&saga.OrderState{Version: st.Version, OrderID: st.OrderID, CustomerID: st.CustomerID, Currency: st.Currency,
		Status: st.Status, CreatedAt: st.CreatedAt, UpdatedAt: st.UpdatedAt, Lines: []saga.Line{
			{Item: st.Lines[0].Item, Result: saga.LineReserved, HoldOffset: 5}, {Item: st.Lines[1].Item}, {Item: st.Lines[2].Item},
		}}).Encode(); len(b)-len(bare) > 12 {
		t.Errorf("step times cost %d bytes, want at most 12", len(b)-len(bare))
	}
}

func TestDecodeOrderStateRejects(t *testing.T) {
	v1 := mustHex(t, oldOrderState)
	timed := timedState().Encode()
	// The last line's answer (0, none) made "out of int64" from CreatedAt.
	overflow := bytes.Clone(timed[:len(timed)-1])
	overflow = append(overflow, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
	cases := map[string][]byte{
		"version 2 without step times": append([]byte{2}, v1[1:]...),
		"version 2 truncated":          timed[:len(timed)-1],
		"unknown version 3":            append([]byte{3}, timed[1:]...),
		"step time out of range":       overflow,
	}
	for name, b := range cases {
		if _, err := saga.DecodeOrderState(b); !errors.Is(err, saga.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

package saga

import (
	"bytes"
	"encoding/binary"
	"sort"
)

// HoldOutcome is what a hold records for its order.
type HoldOutcome byte

// The hold outcomes: a reserved hold keeps units out of Available; a refused
// one only remembers the answer until the order's Release.
const (
	HoldReserved HoldOutcome = 1
	HoldRefused  HoldOutcome = 2
)

// holdSize is the size of a hold record: order id, quantity (uint32 big
// endian), outcome, offset (int64 big endian).
const holdSize = 16 + 4 + 1 + 8

// Hold is one decoded hold.
type Hold struct {
	OrderID  OrderID
	Quantity uint32
	Outcome  HoldOutcome
	// Offset is the inventory.commands offset of the Reserve that made the
	// hold: its identity. Commit and Release name it, so that they can only
	// settle the hold the orders processor was told about, never a stray one
	// made by a stale Reserve (from a zombie instance after a rebalance).
	Offset int64
}

// HoldCount is the number of holds, i.e. orders in flight on this SKU.
func (s *StockState) HoldCount() int { return len(s.holds) / holdSize }

// search returns the index of the first hold with an id >= id, and whether it
// is id.
func (s *StockState) search(id OrderID) (int, bool) {
	n := s.HoldCount()
	i := sort.Search(n, func(i int) bool {
		return bytes.Compare(s.holds[i*holdSize:i*holdSize+16], id[:]) >= 0
	})
	return i, i < n && bytes.Equal(s.holds[i*holdSize:i*holdSize+16], id[:])
}

// Hold returns the hold of order id, if any.
func (s *StockState) Hold(id OrderID) (Hold, bool) {
	i, ok := s.search(id)
	if !ok {
		return Hold{}, false
	}
	r := s.holds[i*holdSize : (i+1)*holdSize]
	return decodeHold(r), true
}

// PutHold inserts or replaces the hold of h.OrderID. It never writes into the
// current slice, which may alias storage owned by Goka: it builds a new one
// with a single copy.
func (s *StockState) PutHold(h Hold) {
	i, found := s.search(h.OrderID)
	var out []byte
	if found {
		out = bytes.Clone(s.holds)
	} else {
		out = make([]byte, len(s.holds)+holdSize)
		copy(out, s.holds[:i*holdSize])
		copy(out[(i+1)*holdSize:], s.holds[i*holdSize:])
	}
	r := out[i*holdSize : (i+1)*holdSize]
	copy(r, h.OrderID[:])
	binary.BigEndian.PutUint32(r[16:20], h.Quantity)
	r[20] = byte(h.Outcome)
	binary.BigEndian.PutUint64(r[21:29], uint64(h.Offset))
	s.holds = out
}

// DeleteHold removes the hold of id and reports whether there was one.
func (s *StockState) DeleteHold(id OrderID) bool {
	i, found := s.search(id)
	if !found {
		return false
	}
	out := make([]byte, len(s.holds)-holdSize)
	copy(out, s.holds[:i*holdSize])
	copy(out[i*holdSize:], s.holds[(i+1)*holdSize:])
	s.holds = out
	return true
}

// Holds returns every hold in order-id order (for tests and tools).
func (s *StockState) Holds() []Hold {
	out := make([]Hold, 0, s.HoldCount())
	for i := 0; i < s.HoldCount(); i++ {
		out = append(out, decodeHold(s.holds[i*holdSize:(i+1)*holdSize]))
	}
	return out
}

// validHolds checks a decoded hold block: whole records, strictly increasing
// ids, known outcomes, positive quantities.
func validHolds(b []byte) bool {
	if len(b)%holdSize != 0 {
		return false
	}
	for i := 0; i < len(b); i += holdSize {
		r := b[i : i+holdSize]
		if o := HoldOutcome(r[20]); o != HoldReserved && o != HoldRefused {
			return false
		}
		if binary.BigEndian.Uint32(r[16:20]) == 0 || int64(binary.BigEndian.Uint64(r[21:29])) < 0 {
			return false
		}
		if i > 0 && bytes.Compare(b[i-holdSize:i-holdSize+16], r[:16]) >= 0 {
			return false
		}
	}
	return true
}

func decodeHold(r []byte) Hold {
	var h Hold
	copy(h.OrderID[:], r[:16])
	h.Quantity = binary.BigEndian.Uint32(r[16:20])
	h.Outcome = HoldOutcome(r[20])
	h.Offset = int64(binary.BigEndian.Uint64(r[21:29]))
	return h
}

package saga

import (
	"fmt"
	"time"
)

// The payload codec is a compact binary format: two header bytes (version,
// type), then the fields in a fixed order as varints and length-prefixed
// strings. It exists because JSON took ~40% of the CPU of a prototype of this
// saga (see shared/notes/saga-prototype.md), and because a strict decoder
// with limits is what the dead-letter path needs. A new field means a new
// version byte and a decoder that still reads the older ones (see
// orderStateV2 in wire.go).

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// Encode returns the payload of m.
func (m *OrderSubmitted) Encode() []byte {
	e := newEncoder(typeOrderSubmitted, 64+len(m.Items)*24)
	e.orderID(m.OrderID)
	e.string(m.CustomerID)
	e.string(m.Currency)
	e.varint(micros(m.SubmittedAt))
	e.string(m.ClientID)
	e.string(m.IdempotencyKey)
	e.raw(m.RequestHash[:])
	encodeItems(e, m.Items)
	return e.b
}

func encodeItems(e *encoder, items []Item) {
	e.uvarint(uint64(len(items)))
	for _, it := range items {
		e.string(it.SKU)
		e.uvarint(uint64(it.Quantity))
		e.varint(it.UnitPriceCents)
	}
}

func decodeItem(d *decoder) Item {
	return Item{SKU: d.string(), Quantity: d.uint32(), UnitPriceCents: d.varint()}
}

// DecodeOrderSubmitted parses a payload written by OrderSubmitted.Encode.
func DecodeOrderSubmitted(data []byte) (*OrderSubmitted, error) {
	d := newDecoder(data, typeOrderSubmitted)
	m := &OrderSubmitted{}
	m.OrderID = d.orderID()
	m.CustomerID = d.string()
	m.Currency = d.string()
	m.SubmittedAt = fromMicros(d.varint())
	m.ClientID = d.string()
	m.IdempotencyKey = d.string()
	copy(m.RequestHash[:], d.raw(len(m.RequestHash)))
	if n := d.count(maxItems); n > 0 {
		m.Items = make([]Item, n)
		for i := range m.Items {
			m.Items[i] = decodeItem(d)
		}
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return m, nil
}

// Encode returns the payload of c.
func (c *InventoryCommand) Encode() []byte {
	e := newEncoder(typeInventoryCommand, 32)
	e.byte(byte(c.Kind))
	switch c.Kind {
	case CmdSetStock:
		e.varint(c.Available)
	case CmdReserve:
		e.orderID(c.OrderID)
		e.uvarint(uint64(c.Quantity))
	default:
		e.orderID(c.OrderID)
		e.varint(c.HoldOffset)
	}
	return e.b
}

// DecodeInventoryCommand parses a payload written by InventoryCommand.Encode.
func DecodeInventoryCommand(data []byte) (*InventoryCommand, error) {
	d := newDecoder(data, typeInventoryCommand)
	c := &InventoryCommand{Kind: CommandKind(d.byte())}
	switch c.Kind {
	case CmdSetStock:
		c.Available = d.varint()
		if c.Available < 0 && d.err == nil {
			d.fail("negative stock %d", c.Available)
		}
	case CmdReserve:
		c.OrderID = d.orderID()
		c.Quantity = d.uint32()
		if c.Quantity == 0 && d.err == nil {
			d.fail("reserve of zero units")
		}
	case CmdCommit, CmdRelease:
		c.OrderID = d.orderID()
		c.HoldOffset = d.varint()
		if c.HoldOffset < 0 && d.err == nil {
			d.fail("negative hold offset %d", c.HoldOffset)
		}
	default:
		d.fail("unknown command kind %d", byte(c.Kind))
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return c, nil
}

// Encode returns the payload of r.
func (r *ReservationResult) Encode() []byte {
	e := newEncoder(typeReservationResult, 48+len(r.SKU))
	e.orderID(r.OrderID)
	e.string(r.SKU)
	e.byte(byte(r.Outcome))
	e.uvarint(uint64(r.Quantity))
	e.varint(r.Available)
	e.varint(r.HoldOffset)
	return e.b
}

// DecodeReservationResult parses a payload written by ReservationResult.Encode.
func DecodeReservationResult(data []byte) (*ReservationResult, error) {
	d := newDecoder(data, typeReservationResult)
	r := &ReservationResult{}
	r.OrderID = d.orderID()
	r.SKU = d.string()
	r.Outcome = Outcome(d.byte())
	r.Quantity = d.uint32()
	r.Available = d.varint()
	r.HoldOffset = d.varint()
	if d.err == nil && r.Outcome != OutcomeReserved && r.Outcome != OutcomeInsufficient {
		d.fail("unknown outcome %d", byte(r.Outcome))
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return r, nil
}

// Encode returns the payload of o: version 2 if a line has a step time,
// else version 1 (see orderStateV2).
func (o *OrderState) Encode() []byte {
	version := wireVersion
	if o.hasStepTimes() {
		version = orderStateV2
	}
	e := newEncoderVersion(version, typeOrderState, 96+len(o.Lines)*30+len(o.Reason))
	e.uvarint(o.Version)
	e.orderID(o.OrderID)
	e.string(o.CustomerID)
	e.string(o.Currency)
	e.byte(byte(o.Status))
	e.string(o.Reason)
	created := micros(o.CreatedAt)
	e.varint(created)
	e.varint(micros(o.UpdatedAt))
	e.string(o.ClientID)
	e.string(o.IdempotencyKey)
	e.raw(o.RequestHash[:])
	e.uvarint(uint64(len(o.Lines)))
	for _, l := range o.Lines {
		e.string(l.SKU)
		e.uvarint(uint64(l.Quantity))
		e.varint(l.UnitPriceCents)
		e.byte(byte(l.Result))
		e.varint(l.HoldOffset)
		if version >= orderStateV2 {
			e.stepTime(l.RequestedAt, created)
			e.stepTime(l.AnsweredAt, created)
		}
	}
	return e.b
}

// hasStepTimes reports whether a line of o has a step time.
func (o *OrderState) hasStepTimes() bool {
	for _, l := range o.Lines {
		if !l.RequestedAt.IsZero() || !l.AnsweredAt.IsZero() {
			return true
		}
	}
	return false
}

// DecodeOrderState parses a payload written by OrderState.Encode, of
// either version.
func DecodeOrderState(data []byte) (*OrderState, error) {
	d := newDecoderUpTo(data, typeOrderState, orderStateV2)
	o := &OrderState{}
	o.Version = d.uvarint()
	o.OrderID = d.orderID()
	o.CustomerID = d.string()
	o.Currency = d.string()
	o.Status = Status(d.byte())
	o.Reason = d.string()
	created := d.varint()
	o.CreatedAt = fromMicros(created)
	o.UpdatedAt = fromMicros(d.varint())
	o.ClientID = d.string()
	o.IdempotencyKey = d.string()
	copy(o.RequestHash[:], d.raw(len(o.RequestHash)))
	if n := d.count(maxItems); n > 0 {
		o.Lines = make([]Line, n)
		for i := range o.Lines {
			l := &o.Lines[i]
			*l = Line{Item: decodeItem(d), Result: LineResult(d.byte()), HoldOffset: d.varint()}
			if d.version >= orderStateV2 {
				l.RequestedAt = d.stepTime(created)
				l.AnsweredAt = d.stepTime(created)
			}
			if r := l.Result; d.err == nil && r > LineInsufficient {
				d.fail("unknown line result %d", r)
			}
		}
	}
	switch {
	case d.err != nil:
	case o.Status < StatusPending || o.Status > StatusRejected:
		d.fail("unknown status %d", byte(o.Status))
	case d.version >= orderStateV2 && !o.hasStepTimes():
		d.fail("version %d without step times (that is version 1)", d.version)
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return o, nil
}

// Encode returns the payload of s.
func (s *StockState) Encode() []byte {
	e := newEncoder(typeStockState, 48+len(s.holds))
	e.uvarint(s.Version)
	e.varint(s.Available)
	e.varint(s.Reserved)
	e.varint(s.Sold)
	e.varint(s.LastOffset)
	e.varint(micros(s.UpdatedAt))
	e.uvarint(uint64(s.HoldCount()))
	e.raw(s.holds)
	return e.b
}

// DecodeStockState parses a payload written by StockState.Encode. The holds
// are not copied: the state refers to data until a hold changes.
func DecodeStockState(data []byte) (*StockState, error) {
	d := newDecoder(data, typeStockState)
	s := &StockState{}
	s.Version = d.uvarint()
	s.Available = d.varint()
	s.Reserved = d.varint()
	s.Sold = d.varint()
	s.LastOffset = d.varint()
	s.UpdatedAt = fromMicros(d.varint())
	n := d.count(maxHolds)
	s.holds = d.raw(n * holdSize)
	if d.err == nil {
		switch {
		case s.Available < 0 || s.Reserved < 0 || s.Sold < 0:
			d.fail("negative stock (available %d, reserved %d, sold %d)", s.Available, s.Reserved, s.Sold)
		case !validHolds(s.holds):
			d.fail("holds are not sorted, unique, positive records")
		}
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return s, nil
}

// Goka codecs. Inputs are read with RawCodec and decoded in the callback, so
// that a record that cannot be decoded goes to the dead-letter topic instead
// of stopping the processor (Goka fails the partition on a codec error).

// RawCodec passes bytes through.
type RawCodec struct{}

// Encode implements goka.Codec.
func (RawCodec) Encode(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot encode %T", v)
	}
	return b, nil
}

// Decode implements goka.Codec.
func (RawCodec) Decode(b []byte) (any, error) { return b, nil }

// encodable is implemented by every message type.
type encodable interface{ Encode() []byte }

// typedCodec is a goka.Codec for one message type.
type typedCodec[T encodable] struct {
	decode func([]byte) (T, error)
}

func (c typedCodec[T]) Encode(v any) ([]byte, error) {
	m, ok := v.(T)
	if !ok {
		var want T
		return nil, fmt.Errorf("codec: cannot encode %T as %T", v, want)
	}
	return m.Encode(), nil
}

func (c typedCodec[T]) Decode(b []byte) (any, error) { return c.decode(b) }

// OrderStateCodec encodes *OrderState values of the orders table.
func OrderStateCodec() typedCodec[*OrderState] {
	return typedCodec[*OrderState]{decode: DecodeOrderState}
}

// StockStateCodec encodes *StockState values of the inventory table.
func StockStateCodec() typedCodec[*StockState] {
	return typedCodec[*StockState]{decode: DecodeStockState}
}

// InventoryCommandCodec encodes *InventoryCommand records.
func InventoryCommandCodec() typedCodec[*InventoryCommand] {
	return typedCodec[*InventoryCommand]{decode: DecodeInventoryCommand}
}

// ReservationResultCodec encodes *ReservationResult records.
func ReservationResultCodec() typedCodec[*ReservationResult] {
	return typedCodec[*ReservationResult]{decode: DecodeReservationResult}
}

// OrderStateVersion reads only the Version of an encoded OrderState: the
// table detectors compare it on every record a view applies, where a full
// decode would be wasted.
func OrderStateVersion(data []byte) (uint64, error) {
	d := newDecoderUpTo(data, typeOrderState, orderStateV2)
	v := d.uvarint()
	return v, d.err
}

// StockStateLastOffset reads only the LastOffset of an encoded StockState,
// for the same reason as OrderStateVersion.
func StockStateLastOffset(data []byte) (int64, error) {
	d := newDecoder(data, typeStockState)
	d.uvarint() // Version
	d.varint()  // Available
	d.varint()  // Reserved
	d.varint()  // Sold
	v := d.varint()
	return v, d.err
}

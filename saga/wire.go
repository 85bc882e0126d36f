package saga

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Every payload starts with two bytes: the codec version and the message
// type. A consumer that meets an unknown version or the wrong type refuses the
// record (it goes to the dead-letter topic) instead of guessing.
//
// Version 1 is every type's first layout. A type that gains fields gets the
// next version for the payloads that carry them, and its decoder still reads
// the older ones.
const (
	wireVersion byte = 1
	// orderStateV2 adds each line's step times (Line.RequestedAt and
	// AnsweredAt). OrderState.Encode writes it only for a state that has
	// one: a state without them stays version 1, readable by decoders that
	// know only that, and every value keeps one encoding.
	// Upgrade the orders table's readers (edges, sink) before the orders
	// processor: a reader that knows only version 1 refuses version 2
	// states (the sink dead-letters them).
	orderStateV2 byte = 2
)

type msgType byte

const (
	typeOrderSubmitted    msgType = 1
	typeInventoryCommand  msgType = 2
	typeReservationResult msgType = 3
	typeOrderState        msgType = 4
	typeStockState        msgType = 5
)

func (t msgType) String() string {
	switch t {
	case typeOrderSubmitted:
		return "OrderSubmitted"
	case typeInventoryCommand:
		return "InventoryCommand"
	case typeReservationResult:
		return "ReservationResult"
	case typeOrderState:
		return "OrderState"
	case typeStockState:
		return "StockState"
	}
	return fmt.Sprintf("type(%d)", byte(t))
}

// Decoding limits: they bound the memory one hostile record can make us
// allocate.
const (
	maxString = 1 << 12
	maxItems  = 1 << 10
	maxHolds  = 1 << 20
)

// ErrMalformed is wrapped by every decoding error, so callers can route such
// records to the dead-letter topic by kind rather than by message text.
var ErrMalformed = errors.New("malformed payload")

// encoder appends a payload to b.
type encoder struct{ b []byte }

func newEncoder(t msgType, sizeHint int) *encoder {
	return newEncoderVersion(wireVersion, t, sizeHint)
}

func newEncoderVersion(version byte, t msgType, sizeHint int) *encoder {
	e := &encoder{b: make([]byte, 0, sizeHint)}
	e.b = append(e.b, version, byte(t))
	return e
}

func (e *encoder) byte(v byte)       { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64)  { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)    { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) raw(v []byte)      { e.b = append(e.b, v...) }
func (e *encoder) string(s string)   { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) orderID(v OrderID) { e.b = append(e.b, v[:]...) }

// stepTime writes t as microseconds after base (micros of a time the
// payload has already), which takes 2-4 bytes for the steps of an order
// instead of 8. 0 stands for the zero time, so a difference d >= 0 is
// written as d+1 and a negative one (another machine's clock) as is.
func (e *encoder) stepTime(t time.Time, base int64) {
	if t.IsZero() {
		e.varint(0)
		return
	}
	d := t.UnixMicro() - base
	if d >= 0 {
		d++
	}
	e.varint(d)
}

// decoder reads a payload; the first error sticks and later reads return
// zero values, so decoding functions check d.err once at the end.
type decoder struct {
	b       []byte
	err     error
	version byte // of the payload, once its header is read
}

func newDecoder(data []byte, want msgType) *decoder {
	return newDecoderUpTo(data, want, wireVersion)
}

// newDecoderUpTo is newDecoder for a type whose payloads may have any
// version from 1 to newest; the decoder's version says which.
func newDecoderUpTo(data []byte, want msgType, newest byte) *decoder {
	d := &decoder{b: data}
	if len(data) < 2 {
		d.fail("payload of %d bytes is too short", len(data))
		return d
	}
	if data[0] < wireVersion || data[0] > newest {
		d.fail("unknown codec version %d", data[0])
		return d
	}
	d.version = data[0]
	if got := msgType(data[1]); got != want {
		d.fail("got a %s, want a %s", got, want)
		return d
	}
	d.b = data[2:]
	return d
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		// Only the shortest form is accepted, so one value has one encoding.
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("value %d overflows uint32", v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) count(limit int) int {
	v := d.uvarint()
	if v > uint64(limit) {
		d.fail("count %d over limit %d", v, limit)
		return 0
	}
	return int(v)
}

func (d *decoder) raw(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.fail("truncated: want %d bytes, have %d", n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.count(maxString)
	b := d.raw(n)
	if d.err != nil {
		return ""
	}
	if !utf8.Valid(b) {
		d.fail("string is not UTF-8")
		return ""
	}
	return string(b)
}

// stepTime reads what encoder.stepTime wrote for base.
func (d *decoder) stepTime(base int64) time.Time {
	x := d.varint()
	if d.err != nil || x == 0 {
		return time.Time{}
	}
	if x > 0 {
		x--
	}
	v := base + x
	if (x > 0 && v < base) || (x < 0 && v > base) || v == 0 {
		// Out of int64, or a time that would read back as "none".
		d.fail("step time %+d from %d out of range", x, base)
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

func (d *decoder) orderID() OrderID {
	var id OrderID
	copy(id[:], d.raw(len(id)))
	return id
}

// finish reports the sticky error, or trailing bytes: a payload must be
// consumed exactly.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

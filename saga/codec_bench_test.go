package saga_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/saga"
)

// codecCase is one wire message for BenchmarkCodec: encode and decode run
// it, check proves that the codec gives the message back.
type codecCase struct {
	name   string
	encode func() []byte
	decode func([]byte) error
	check  func() error
}

// newCodecCase binds msg to its decoder.
func newCodecCase[T interface{ Encode() []byte }](name string, msg T, decode func([]byte) (T, error)) codecCase {
	return codecCase{
		name:   name,
		encode: msg.Encode,
		decode: func(p []byte) error {
			_, err := decode(p)
			return err
		},
		check: func() error {
			got, err := decode(msg.Encode())
			switch {
			case err != nil:
				return fmt.Errorf("decode(encode(x)): %w", err)
			case !reflect.DeepEqual(got, msg):
				return fmt.Errorf("decode(encode(x)): got %+v, want %+v", got, msg)
			}
			return nil
		},
	}
}

// codecCases are the messages of a busy shop: order ids derived from
// idempotency keys, SKUs and prices as a catalogue has them, offsets and
// stock levels of a topic that has run for a while.
func codecCases() []codecCase {
	submitted := time.Date(2026, 3, 14, 9, 26, 53, 589_793_000, time.UTC)
	oid := saga.OrderIDForKey("shop-eu-1", "checkout-7f3a9c1e-2b4d-4e8f-9a10-5c6d7e8f9012")
	hash := [16]byte{0x3c, 0x9e, 0x51, 0x0a, 0xd4, 0x77, 0x18, 0xb2, 0x6f, 0xe0, 0x2d, 0x93, 0x41, 0xc8, 0x05, 0xaa}
	items := []saga.Item{
		{SKU: "TSHIRT-BLK-M", Quantity: 2, UnitPriceCents: 1999},
		{SKU: "MUG-CERAMIC-WHT", Quantity: 1, UnitPriceCents: 1250},
		{SKU: "SOCKS-3PK-42", Quantity: 3, UnitPriceCents: 899},
	}
	submittedOrder := func(n int) *saga.OrderSubmitted {
		return &saga.OrderSubmitted{
			OrderID: oid, CustomerID: "cust-00042817", Currency: "EUR", SubmittedAt: submitted,
			ClientID: "shop-eu-1", IdempotencyKey: "checkout-7f3a9c1e-2b4d-4e8f-9a10-5c6d7e8f9012",
			RequestHash: hash, Items: items[:n],
		}
	}
	const holdOffset = 1_284_551
	lines := make([]saga.Line, len(items))
	for i, it := range items {
		lines[i] = saga.Line{Item: it, Result: saga.LineReserved, HoldOffset: holdOffset + int64(i)*7}
	}
	stock := saga.NewStockState()
	stock.Version, stock.Available, stock.Reserved, stock.Sold = 9421, 118, 16, 9066
	stock.LastOffset, stock.UpdatedAt = holdOffset+40, submitted.Add(35*time.Millisecond)
	// Eight orders in flight on a popular SKU.
	for i := range 8 {
		stock.PutHold(saga.Hold{
			OrderID:  saga.OrderIDForKey("shop-eu-1", fmt.Sprintf("checkout-%d", i)),
			Quantity: 2, Outcome: saga.HoldReserved, Offset: holdOffset + int64(i)*5,
		})
	}
	return []codecCase{
		newCodecCase("OrderSubmitted/items-1", submittedOrder(1), saga.DecodeOrderSubmitted),
		newCodecCase("OrderSubmitted/items-3", submittedOrder(3), saga.DecodeOrderSubmitted),
		newCodecCase("InventoryCommand/reserve", &saga.InventoryCommand{Kind: saga.CmdReserve, OrderID: oid, Quantity: 2}, saga.DecodeInventoryCommand),
		newCodecCase("InventoryCommand/commit", &saga.InventoryCommand{Kind: saga.CmdCommit, OrderID: oid, HoldOffset: holdOffset}, saga.DecodeInventoryCommand),
		newCodecCase("InventoryCommand/set-stock", &saga.InventoryCommand{Kind: saga.CmdSetStock, Available: 1200}, saga.DecodeInventoryCommand),
		newCodecCase("ReservationResult", &saga.ReservationResult{
			OrderID: oid, SKU: "TSHIRT-BLK-M", Outcome: saga.OutcomeReserved, Quantity: 2, Available: 118, HoldOffset: holdOffset,
		}, saga.DecodeReservationResult),
		newCodecCase("OrderState/lines-3", &saga.OrderState{
			Version: 5, OrderID: oid, CustomerID: "cust-00042817", Currency: "EUR", Status: saga.StatusConfirmed,
			CreatedAt: submitted, UpdatedAt: submitted.Add(42 * time.Millisecond), ClientID: "shop-eu-1",
			IdempotencyKey: "checkout-7f3a9c1e-2b4d-4e8f-9a10-5c6d7e8f9012", RequestHash: hash, Lines: lines,
		}, saga.DecodeOrderState),
		newCodecCase("StockState/holds-8", stock, saga.DecodeStockState),
	}
}

// BenchmarkCodec measures Encode and Decode of every wire message, one
// message per op. Each case first checks that decode(encode(x)) is x, so a
// broken codec fails the benchmark instead of timing it. wire-B is the size
// of the payload.
func BenchmarkCodec(b *testing.B) {
	for _, c := range codecCases() {
		b.Run(c.name, func(b *testing.B) {
			if err := c.check(); err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			payload := c.encode()
			b.Run("encode", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(payload)))
				for b.Loop() {
					c.encode()
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				b.ReportMetric(float64(len(payload)), "wire-B")
			})
			b.Run("decode", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(payload)))
				for b.Loop() {
					if err := c.decode(payload); err != nil {
						b.Fatalf("%s: decode: %v", c.name, err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				b.ReportMetric(float64(len(payload)), "wire-B")
			})
		})
	}
}

package ingest

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkDecodeOrder measures decodeOrder, the edge's JSON decoding and
// validation of a POST /v1/orders body, at the default limits, one body per
// op. "max-lines" is about the largest valid order: DefaultMaxItems lines
// with SKUs of maxSKULen and a customer id of maxCustomerIDChars. "invalid"
// is a 3-line order with two broken rules, so the cost of building the
// problem answer is visible.
func BenchmarkDecodeOrder(b *testing.B) {
	lim := Config{}.withDefaults().limits()
	maxLines := make([]string, DefaultMaxItems)
	for i := range maxLines {
		maxLines[i] = fmt.Sprintf("%s-%03d:%d", strings.Repeat("S", maxSKULen-4), i, 1+i%5)
	}
	three := []string{"TSHIRT-BLK-M:2", "MUG-CERAMIC-WHT:1", "SOCKS-3PK-42:3"}
	invalid := strings.Replace(orderBody("cust-00042817", three...), `"EUR"`, `"eur"`, 1)
	invalid = strings.Replace(invalid, `"quantity":3`, `"quantity":0`, 1)
	cases := []struct {
		name  string
		body  string
		lines int // of the decoded order; 0 for a body that must be refused
		bad   badOrder
	}{
		{name: "lines-1", body: orderBody("cust-00042817", "TSHIRT-BLK-M:2"), lines: 1},
		{name: "lines-3", body: orderBody("cust-00042817", three...), lines: 3},
		{name: "max-lines", body: orderBody(strings.Repeat("c", maxCustomerIDChars), maxLines...), lines: DefaultMaxItems},
		{name: "invalid", body: invalid, bad: badOrder{"invalid", invalid, "invalid-order", "items[2].quantity"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			body := []byte(c.body)
			in, p := decodeOrder(body, lim)
			switch {
			case c.lines == 0:
				if err := checkProblem(c.bad, p); err != nil {
					b.Fatalf("%s: %v", c.name, err)
				}
			case p != nil:
				b.Fatalf("%s: got problem %s %+v, want an order", c.name, p.Detail, p.Errors)
			case len(in.Items) != c.lines:
				b.Fatalf("%s: got %d lines, want %d", c.name, len(in.Items), c.lines)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				decodeOrder(body, lim)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
		})
	}
}

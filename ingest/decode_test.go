package ingest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/orderpipe/orderpipe/saga"
)

// badOrder is a body that breaks a rule: the answer must be a problem of
// type typ listing field among its errors (field "-" for a problem without
// an errors list).
type badOrder struct {
	name  string
	body  string
	typ   string
	field string
}

const validItem = `{"sku":"A-1","quantity":1,"unit_price_cents":100}`

// withItem is a valid order whose only line is item.
func withItem(item string) string {
	return `{"customer_id":"c1","items":[` + item + `],"currency":"EUR"}`
}

// withField is a valid order with field replaced (or added) as raw JSON.
func withField(name, raw string) string {
	fields := map[string]string{"customer_id": `"c1"`, "items": "[" + validItem + "]", "currency": `"EUR"`}
	fields[name] = raw
	var parts []string
	for _, k := range []string{"customer_id", "items", "currency"} {
		parts = append(parts, strconv.Quote(k)+":"+fields[k])
		delete(fields, k)
	}
	for k, v := range fields {
		parts = append(parts, strconv.Quote(k)+":"+v)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// without is a valid order without field name.
func without(name string) string {
	fields := map[string]string{"customer_id": `"c1"`, "items": "[" + validItem + "]", "currency": `"EUR"`}
	var parts []string
	for _, k := range []string{"customer_id", "items", "currency"} {
		if k != name {
			parts = append(parts, strconv.Quote(k)+":"+fields[k])
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func manyItems(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`{"sku":"S%d","quantity":1,"unit_price_cents":1}`, i)
	}
	return `{"customer_id":"c1","items":[` + strings.Join(items, ",") + `],"currency":"EUR"}`
}

// badOrders lists every rule of an order body with a body that breaks it.
// Both the decoder's unit test and the HTTP test (which also checks that
// nothing reaches a topic) run it.
func badOrders() []badOrder {
	valid := withItem(validItem)
	deep := `{"x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `,` + valid[1:]
	return []badOrder{
		// Not JSON at all.
		{"empty body", ``, "malformed-json", "-"},
		{"whitespace only", " \n\t", "malformed-json", "-"},
		{"not json", `hello`, "malformed-json", "-"},
		{"truncated", valid[:len(valid)-5], "malformed-json", "-"},
		{"trailing garbage", valid + ` x`, "malformed-json", "-"},
		{"two objects", valid + valid, "malformed-json", "-"},
		{"trailing comma", strings.Replace(valid, `"EUR"}`, `"EUR",}`, 1), "malformed-json", "-"},
		{"single quotes", strings.ReplaceAll(valid, `"`, `'`), "malformed-json", "-"},
		{"invalid UTF-8 in a string", strings.Replace(valid, `"c1"`, "\"c\xff1\"", 1), "malformed-json", "-"},
		{"invalid UTF-8 outside strings", valid + "\xff", "malformed-json", "-"},
		{"overlong UTF-8", strings.Replace(valid, `"c1"`, "\"c\xc0\xaf\"", 1), "malformed-json", "-"},
		{"UTF-8 encoded surrogate", strings.Replace(valid, `"c1"`, "\"c\xed\xa0\x80\"", 1), "malformed-json", "-"},
		{"lone high surrogate escape", strings.Replace(valid, `"c1"`, `"c\ud800"`, 1), "malformed-json", "-"},
		{"lone low surrogate escape", strings.Replace(valid, `"c1"`, `"c\udc00x"`, 1), "malformed-json", "-"},
		{"raw control character", strings.Replace(valid, `"c1"`, "\"c\x011\"", 1), "malformed-json", "-"},
		{"invalid escape", strings.Replace(valid, `"c1"`, `"c\x41"`, 1), "malformed-json", "-"},
		{"byte order mark", "\ufeff" + valid, "malformed-json", "-"},
		{"NaN", withItem(`{"sku":"A","quantity":NaN,"unit_price_cents":1}`), "malformed-json", "-"},
		{"leading zero", withItem(`{"sku":"A","quantity":01,"unit_price_cents":1}`), "malformed-json", "-"},
		{"plus sign", withItem(`{"sku":"A","quantity":+1,"unit_price_cents":1}`), "malformed-json", "-"},
		{"hex number", withItem(`{"sku":"A","quantity":0x1,"unit_price_cents":1}`), "malformed-json", "-"},
		{"nesting too deep", deep, "malformed-json", "-"},

		// JSON, but not an order.
		{"array body", `[` + valid + `]`, "invalid-order", ""},
		{"string body", `"order"`, "invalid-order", ""},
		{"null body", `null`, "invalid-order", ""},
		{"unknown field", withField("price", "1"), "invalid-order", "price"},
		{"client-set status", withField("status", `"confirmed"`), "invalid-order", "status"},
		{"key differing in case", `{"Customer_ID":"c1","customer_id":"c1","items":[` + validItem + `],"currency":"EUR"}`, "invalid-order", "Customer_ID"},
		{"key differing in case only", `{"CUSTOMER_ID":"c1","items":[` + validItem + `],"currency":"EUR"}`, "invalid-order", "customer_id"},
		{"duplicate key", `{"customer_id":"c1","customer_id":"c2","items":[` + validItem + `],"currency":"EUR"}`, "invalid-order", "customer_id"},
		{"duplicate key via escape", `{"customer_id":"c1","\u0063ustomer_id":"c2","items":[` + validItem + `],"currency":"EUR"}`, "invalid-order", "customer_id"},
		{"duplicate items key", `{"customer_id":"c1","items":[` + validItem + `],"items":[],"currency":"EUR"}`, "invalid-order", "items"},
		{"duplicate item key", withItem(`{"sku":"A","quantity":1,"quantity":5,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"unknown item field", withItem(`{"sku":"A","quantity":1,"unit_price_cents":1,"discount":5}`), "invalid-order", "items[0].discount"},
		{"item key differing in case", withItem(`{"SKU":"A","quantity":1,"unit_price_cents":1}`), "invalid-order", "items[0].sku"},

		{"customer_id missing", without("customer_id"), "invalid-order", "customer_id"},
		{"customer_id empty", withField("customer_id", `""`), "invalid-order", "customer_id"},
		{"customer_id too long", withField("customer_id", strconv.Quote(strings.Repeat("é", 129))), "invalid-order", "customer_id"},
		{"customer_id not printable", withField("customer_id", `"c\u0007"`), "invalid-order", "customer_id"},
		{"customer_id with a newline", withField("customer_id", `"c\n1"`), "invalid-order", "customer_id"},
		{"customer_id a number", withField("customer_id", `123`), "invalid-order", "customer_id"},
		{"customer_id null", withField("customer_id", `null`), "invalid-order", "customer_id"},
		{"currency missing", without("currency"), "invalid-order", "currency"},
		{"currency lower case", withField("currency", `"eur"`), "invalid-order", "currency"},
		{"currency too long", withField("currency", `"EURO"`), "invalid-order", "currency"},
		{"currency with a digit", withField("currency", `"E1R"`), "invalid-order", "currency"},
		{"currency an object", withField("currency", `{"code":"EUR"}`), "invalid-order", "currency"},
		{"items missing", without("items"), "invalid-order", "items"},
		{"items empty", withField("items", `[]`), "invalid-order", "items"},
		{"items an object", withField("items", validItem), "invalid-order", "items"},
		{"items null", withField("items", `null`), "invalid-order", "items"},
		{"too many items", manyItems(DefaultMaxItems + 1), "invalid-order", "items"},
		{"item not an object", withItem(`1`), "invalid-order", "items[0]"},
		{"duplicate SKU", `{"customer_id":"c1","items":[` + validItem + `,` + validItem + `],"currency":"EUR"}`, "invalid-order", "items[1].sku"},

		{"sku missing", withItem(`{"quantity":1,"unit_price_cents":1}`), "invalid-order", "items[0].sku"},
		{"sku empty", withItem(`{"sku":"","quantity":1,"unit_price_cents":1}`), "invalid-order", "items[0].sku"},
		{"sku with a space", withItem(`{"sku":"A 1","quantity":1,"unit_price_cents":1}`), "invalid-order", "items[0].sku"},
		{"sku with a slash", withItem(`{"sku":"A/1","quantity":1,"unit_price_cents":1}`), "invalid-order", "items[0].sku"},
		{"sku not ASCII", withItem(`{"sku":"Ä1","quantity":1,"unit_price_cents":1}`), "invalid-order", "items[0].sku"},
		{"sku too long", withItem(`{"sku":"` + strings.Repeat("A", 65) + `","quantity":1,"unit_price_cents":1}`), "invalid-order", "items[0].sku"},
		{"sku a number", withItem(`{"sku":5,"quantity":1,"unit_price_cents":1}`), "invalid-order", "items[0].sku"},

		{"quantity missing", withItem(`{"sku":"A","unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity zero", withItem(`{"sku":"A","quantity":0,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity negative", withItem(`{"sku":"A","quantity":-1,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity above max", withItem(`{"sku":"A","quantity":10001,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity 2^53+1", withItem(`{"sku":"A","quantity":9007199254740993,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity beyond int64", withItem(`{"sku":"A","quantity":99999999999999999999999,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity with a fraction", withItem(`{"sku":"A","quantity":1.5,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity whole with a fraction", withItem(`{"sku":"A","quantity":1.0,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity with an exponent", withItem(`{"sku":"A","quantity":1e2,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity 1e400", withItem(`{"sku":"A","quantity":1e400,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity a string", withItem(`{"sku":"A","quantity":"2","unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity null", withItem(`{"sku":"A","quantity":null,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},
		{"quantity true", withItem(`{"sku":"A","quantity":true,"unit_price_cents":1}`), "invalid-order", "items[0].quantity"},

		{"price missing", withItem(`{"sku":"A","quantity":1}`), "invalid-order", "items[0].unit_price_cents"},
		{"price negative", withItem(`{"sku":"A","quantity":1,"unit_price_cents":-1}`), "invalid-order", "items[0].unit_price_cents"},
		{"price absurd", withItem(`{"sku":"A","quantity":1,"unit_price_cents":1000000001}`), "invalid-order", "items[0].unit_price_cents"},
		{"price with a fraction", withItem(`{"sku":"A","quantity":1,"unit_price_cents":9.99}`), "invalid-order", "items[0].unit_price_cents"},
		{"price a string", withItem(`{"sku":"A","quantity":1,"unit_price_cents":"100"}`), "invalid-order", "items[0].unit_price_cents"},
	}
}

// checkProblem checks a problem against a badOrder.
func checkProblem(c badOrder, p *problem) error {
	switch {
	case p == nil:
		return errors.New("accepted, want a problem")
	case p.Type != problemTypeBase+c.typ:
		return fmt.Errorf("type: got %s, want %s%s (%s)", p.Type, problemTypeBase, c.typ, p.Detail)
	case p.Status < 400 || p.Status > 499:
		return fmt.Errorf("status: got %d, want 4xx", p.Status)
	case c.field == "-":
		return nil
	}
	for _, e := range p.Errors {
		if e.Field == c.field {
			return nil
		}
	}
	return fmt.Errorf("errors: got %+v, want one for field %q", p.Errors, c.field)
}

func TestDecodeOrderRefuses(t *testing.T) {
	lim := Config{}.withDefaults().limits()
	for _, c := range badOrders() {
		t.Run(c.name, func(t *testing.T) {
			in, p := decodeOrder([]byte(c.body), lim)
			if err := checkProblem(c, p); err != nil {
				t.Fatalf("%s (decoded %+v)", err, in)
			}
			if in != nil {
				t.Errorf("got an order %+v with a problem", in)
			}
		})
	}
}

func TestDecodeOrderAccepts(t *testing.T) {
	lim := Config{}.withDefaults().limits()
	for _, c := range []struct {
		name, body string
		want       orderInput
	}{
		{"plain", withItem(validItem), orderInput{"c1", "EUR", []saga.Item{{SKU: "A-1", Quantity: 1, UnitPriceCents: 100}}}},
		{"keys in any order, whitespace", " \r\n{ \"currency\" : \"USD\",\t\"items\":[{\"unit_price_cents\":0,\"quantity\":10000,\"sku\":\"a.b_c-D9\"}] , \"customer_id\":\"x\" } \n",
			orderInput{"x", "USD", []saga.Item{{SKU: "a.b_c-D9", Quantity: 10000, UnitPriceCents: 0}}}},
		{"escapes", `{"customer_id":"\u00e9\ud83d\ude00 \"q\" \/\\","items":[{"sku":"\u0041","quantity":1,"unit_price_cents":-0}],"currency":"\u0045UR"}`,
			orderInput{"é😀 \"q\" /\\", "EUR", []saga.Item{{SKU: "A", Quantity: 1, UnitPriceCents: 0}}}},
		{"max price, 128 characters", `{"customer_id":"` + strings.Repeat("ü", 128) + `","items":[{"sku":"` + strings.Repeat("Z", 64) + `","quantity":1,"unit_price_cents":1000000000}],"currency":"JPY"}`,
			orderInput{strings.Repeat("ü", 128), "JPY", []saga.Item{{SKU: strings.Repeat("Z", 64), Quantity: 1, UnitPriceCents: 1000000000}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			in, p := decodeOrder([]byte(c.body), lim)
			if p != nil {
				t.Fatalf("got problem %s %+v, want an order", p.Detail, p.Errors)
			}
			if in.CustomerID != c.want.CustomerID || in.Currency != c.want.Currency || !slices.Equal(in.Items, c.want.Items) {
				t.Errorf("got %+v, want %+v", *in, c.want)
			}
		})
	}
	t.Run("max items", func(t *testing.T) {
		if in, p := decodeOrder([]byte(manyItems(DefaultMaxItems)), lim); p != nil || len(in.Items) != DefaultMaxItems {
			t.Errorf("got %v, want %d lines", p, DefaultMaxItems)
		}
	})
}

func TestDecodeOrderCopiesStrings(t *testing.T) {
	body := []byte(withItem(validItem))
	in, p := decodeOrder(body, Config{}.withDefaults().limits())
	if p != nil {
		t.Fatal(p)
	}
	for i := range body {
		body[i] = 'X' // what fasthttp does to its buffer, in effect
	}
	if in.CustomerID != "c1" || in.Items[0].SKU != "A-1" {
		t.Errorf("decoded strings alias the input: got %+v", in)
	}
}

func TestRequestHashIsCanonical(t *testing.T) {
	lim := Config{}.withDefaults().limits()
	hash := func(body string) [16]byte {
		t.Helper()
		in, p := decodeOrder([]byte(body), lim)
		if p != nil {
			t.Fatalf("%s: %s %+v", body, p.Detail, p.Errors)
		}
		return requestHash(in)
	}
	base := hash(`{"customer_id":"c1","items":[{"sku":"A","quantity":1,"unit_price_cents":5},{"sku":"B","quantity":2,"unit_price_cents":7}],"currency":"EUR"}`)
	for _, same := range []string{
		`  {"currency":"EUR","items":[{"unit_price_cents":5,"sku":"A","quantity":1},{"sku":"B","quantity":2,"unit_price_cents":7}],"customer_id":"c1"}`,
		`{"customer_id":"\u00631","items":[{"sku":"B","quantity":2,"unit_price_cents":7},{"sku":"A","quantity":1,"unit_price_cents":5}],"currency":"EUR"}`,
	} {
		if got := hash(same); got != base {
			t.Errorf("%s: hash %x, want %x (same order)", same, got, base)
		}
	}
	for _, other := range []string{
		`{"customer_id":"c2","items":[{"sku":"A","quantity":1,"unit_price_cents":5},{"sku":"B","quantity":2,"unit_price_cents":7}],"currency":"EUR"}`,
		`{"customer_id":"c1","items":[{"sku":"A","quantity":1,"unit_price_cents":5},{"sku":"B","quantity":2,"unit_price_cents":7}],"currency":"USD"}`,
		`{"customer_id":"c1","items":[{"sku":"A","quantity":2,"unit_price_cents":5},{"sku":"B","quantity":2,"unit_price_cents":7}],"currency":"EUR"}`,
		`{"customer_id":"c1","items":[{"sku":"A","quantity":1,"unit_price_cents":6},{"sku":"B","quantity":2,"unit_price_cents":7}],"currency":"EUR"}`,
		`{"customer_id":"c1","items":[{"sku":"A","quantity":1,"unit_price_cents":5}],"currency":"EUR"}`,
		// Length prefixes keep fields apart: "c1"+"AB" is not "c1A"+"B".
		`{"customer_id":"c1","items":[{"sku":"AB","quantity":1,"unit_price_cents":5},{"sku":"B","quantity":2,"unit_price_cents":7}],"currency":"EUR"}`,
	} {
		if got := hash(other); got == base {
			t.Errorf("%s: same hash as a different order", other)
		}
	}
}

func TestDecodeStockLevel(t *testing.T) {
	for _, c := range []struct {
		body string
		want int64
		typ  string
	}{
		{`{"available":0}`, 0, ""},
		{` {"available": 1000000000000 } `, 1_000_000_000_000, ""},
		{`{"available":-1}`, 0, "invalid-stock-level"},
		{`{"available":1000000000001}`, 0, "invalid-stock-level"},
		{`{"available":1.5}`, 0, "invalid-stock-level"},
		{`{"available":"5"}`, 0, "invalid-stock-level"},
		{`{"available":1,"available":2}`, 0, "invalid-stock-level"},
		{`{"Available":1}`, 0, "invalid-stock-level"},
		{`{}`, 0, "invalid-stock-level"},
		{`{"available":1} {}`, 0, "malformed-json"},
		{`[1]`, 0, "malformed-json"},
		{``, 0, "malformed-json"},
	} {
		got, p := decodeStockLevel([]byte(c.body))
		switch {
		case c.typ == "" && p != nil:
			t.Errorf("%s: got problem %s %+v, want %d", c.body, p.Detail, p.Errors, c.want)
		case c.typ == "" && got != c.want:
			t.Errorf("%s: got %d, want %d", c.body, got, c.want)
		case c.typ != "" && (p == nil || p.Type != problemTypeBase+c.typ):
			t.Errorf("%s: got %d, %+v, want a %s problem", c.body, got, p, c.typ)
		}
	}
}

func TestDecodeBatch(t *testing.T) {
	lim := Config{}.withDefaults().limits()
	ok := withItem(validItem)
	entries, p := decodeBatchArray([]byte(`[`+ok+`, 5, `+withField("currency", `"x"`)+`,`+ok+`]`), lim, 10)
	if p != nil {
		t.Fatal(p)
	}
	var got []bool
	for _, e := range entries {
		got = append(got, e.in != nil && e.prob == nil)
	}
	if want := []bool{true, false, false, true}; !slices.Equal(got, want) {
		t.Errorf("array: valid entries %v, want %v", got, want)
	}
	for _, c := range []struct{ body, typ string }{
		{`[` + ok + `,` + ok + `,` + ok + `]`, "payload-too-large"},
		{`[` + ok + `,{"customer_id":]`, "malformed-json"},
		{`[]`, "invalid-request"},
		{ok, "malformed-json"},
		{`[` + ok + `] []`, "malformed-json"},
	} {
		if _, p := decodeBatchArray([]byte(c.body), lim, 2); p == nil || p.Type != problemTypeBase+c.typ {
			t.Errorf("array %.40s: got %+v, want %s", c.body, p, c.typ)
		}
	}

	entries, p = decodeBatchNDJSON([]byte(ok+"\n\r\n{bad\n"+ok+" trailing\n"+strings.Repeat(" ", 100)+ok+"\n"+ok), lim, 10, 100)
	if p != nil {
		t.Fatal(p)
	}
	got = got[:0]
	for _, e := range entries {
		got = append(got, e.in != nil && e.prob == nil)
	}
	if want := []bool{true, false, false, false, true}; !slices.Equal(got, want) {
		t.Errorf("ndjson: valid entries %v, want %v", got, want)
	}
	if entries[3].prob.Status != 413 {
		t.Errorf("ndjson: oversized line got %+v, want 413", entries[3].prob)
	}
	if _, p := decodeBatchNDJSON([]byte(ok+"\n"+ok+"\n"+ok), lim, 2, 1000); p == nil || p.Status != 413 {
		t.Errorf("ndjson over the order limit: got %+v, want 413", p)
	}
	if _, p := decodeBatchNDJSON([]byte("\n \n"), lim, 2, 1000); p == nil || p.Status != 400 {
		t.Errorf("ndjson without orders: got %+v, want 400", p)
	}
}

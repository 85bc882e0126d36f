package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/orderpipe/orderpipe/saga"
)

// The fixed rules of a request body; the configurable ones are in limits.
const (
	maxCustomerIDChars = 128
	maxSKULen          = 64
	// maxUnitPriceCents is ten million in the major unit: a higher price is
	// a bug or an attack, and the cap keeps every total far from overflow.
	maxUnitPriceCents = 1_000_000_000
	// maxAvailable is the highest stock level PUT /v1/inventory accepts.
	maxAvailable = 1_000_000_000_000
	// maxFieldErrors caps the broken rules listed in one answer, so that the
	// answer does not grow with a hostile body.
	maxFieldErrors = 20
)

// limits are the configurable rules of an order.
type limits struct {
	maxItems    int
	maxQuantity int64
}

// orderInput is an order request that passed every rule. Its strings are
// copies: nothing in it aliases the request buffer.
type orderInput struct {
	CustomerID string
	Currency   string
	Items      []saga.Item
}

// fieldErrors collects broken rules: it counts them all and keeps the
// first maxFieldErrors.
type fieldErrors struct {
	list  []fieldError
	count int
}

func (f *fieldErrors) add(field, format string, args ...any) {
	f.count++
	if len(f.list) < maxFieldErrors {
		f.list = append(f.list, fieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
}

// decodeOrder reads the body of POST /v1/orders: exactly one JSON object
// and nothing after it but whitespace. It returns the order, or the problem
// to answer with: malformed-json for input that is not JSON, invalid-order
// listing every broken rule otherwise.
func decodeOrder(data []byte, lim limits) (*orderInput, *problem) {
	if len(bytes.TrimLeft(data, " \t\r\n")) == 0 {
		return nil, malformedJSON("the body is empty; want a JSON object")
	}
	s := newScanner(data)
	defer s.release()
	switch s.peek() {
	case '{':
	case 0:
		return nil, malformedJSON(s.unexpected("a JSON object").Error())
	default:
		if err := s.skipValue(0); err != nil {
			return nil, malformedJSON(err.Error())
		}
		return nil, invalidOrder([]fieldError{{Field: "", Message: "the body must be a JSON object"}})
	}
	in, errs, err := s.order(lim)
	if err == nil && !s.atEnd() {
		err = s.fail("trailing data after the JSON object")
	}
	if err != nil {
		return nil, malformedJSON(err.Error())
	}
	if errs.count > 0 {
		return nil, invalidOrder(errs.list)
	}
	return in, nil
}

// order reads an order object. Broken rules go to the returned fieldErrors;
// an error means the input is not JSON.
func (s *scanner) order(lim limits) (*orderInput, fieldErrors, error) {
	var (
		in   orderInput
		errs fieldErrors
		// seen tracks customer_id, items, currency: keys must be exact (no
		// case folding) and unique (no "last one wins").
		seen [3]bool
	)
	err := s.members(func(key []byte) error {
		idx := -1
		switch string(key) {
		case "customer_id":
			idx = 0
		case "items":
			idx = 1
		case "currency":
			idx = 2
		}
		switch {
		case idx < 0:
			k := string(key)
			errs.add(truncate(k), "%s", unknownField(k, "customer_id", "items", "currency"))
			return s.skipValue(0)
		case seen[idx]:
			errs.add(string(key), "duplicate field")
			return s.skipValue(0)
		}
		seen[idx] = true
		var (
			broke string
			err   error
		)
		switch idx {
		case 0:
			if in.CustomerID, broke, err = s.stringValue(); broke == "" && err == nil {
				checkCustomerID(in.CustomerID, &errs)
			}
			if broke != "" {
				errs.add("customer_id", "%s", broke)
			}
		case 2:
			if in.Currency, broke, err = s.stringValue(); broke == "" && err == nil && !validCurrency(in.Currency) {
				broke = "must be three capital letters (ISO 4217), like \"EUR\""
			}
			if broke != "" {
				errs.add("currency", "%s", broke)
			}
		default:
			in.Items, err = s.items(lim, &errs)
		}
		return err
	})
	if err != nil {
		return nil, fieldErrors{}, err
	}
	for i, name := range []string{"customer_id", "items", "currency"} {
		if !seen[i] {
			errs.add(name, "is required")
		}
	}
	return &in, errs, nil
}

// items reads the lines of an order. A SKU may appear on one line only:
// the inventory holds one reservation per order and SKU.
func (s *scanner) items(lim limits, errs *fieldErrors) ([]saga.Item, error) {
	if s.peek() != '[' {
		errs.add("items", "must be an array of order lines")
		return nil, s.skipValue(0)
	}
	var (
		items []saga.Item
		skus  map[string]int // the first line of each SKU
		n     int
	)
	err := s.array(func(i int) error {
		n++
		if i >= lim.maxItems {
			return s.skipValue(0)
		}
		it, ok, err := s.item(i, lim, errs)
		if !ok {
			return err
		}
		if first, dup := skus[it.SKU]; dup {
			errs.add(itemField(i, "sku"), "duplicate SKU %q (also on items[%d]): put the whole quantity on one line", it.SKU, first)
			return nil
		}
		if skus == nil {
			skus = make(map[string]int, 8)
		}
		skus[it.SKU] = i
		if items == nil {
			items = make([]saga.Item, 0, 4)
		}
		items = append(items, it)
		return nil
	})
	switch {
	case n == 0:
		errs.add("items", "must not be empty")
	case n > lim.maxItems:
		errs.add("items", "has %d lines; at most %d are allowed", n, lim.maxItems)
	}
	return items, err
}

// item reads line i of an order; ok is false if it broke a rule. Field
// names are built only for an answer that needs them.
func (s *scanner) item(i int, lim limits, errs *fieldErrors) (it saga.Item, ok bool, err error) {
	if s.peek() != '{' {
		errs.add(itemField(i, ""), "must be an object")
		return it, false, s.skipValue(0)
	}
	before := errs.count
	var seen [3]bool
	err = s.members(func(key []byte) error {
		idx := -1
		switch string(key) {
		case "sku":
			idx = 0
		case "quantity":
			idx = 1
		case "unit_price_cents":
			idx = 2
		}
		switch {
		case idx < 0:
			k := string(key)
			errs.add(itemField(i, truncate(k)), "%s", unknownField(k, "sku", "quantity", "unit_price_cents"))
			return s.skipValue(0)
		case seen[idx]:
			errs.add(itemField(i, string(key)), "duplicate field")
			return s.skipValue(0)
		}
		seen[idx] = true
		var (
			broke string
			err   error
		)
		switch idx {
		case 0:
			if it.SKU, broke, err = s.stringValue(); broke == "" && err == nil && !validSKU(it.SKU) {
				broke = fmt.Sprintf("must be 1 to %d characters from A-Z, a-z, 0-9, '.', '_', '-'", maxSKULen)
			}
		case 1:
			var v int64
			v, broke, err = s.integer(1, lim.maxQuantity)
			it.Quantity = uint32(v)
		default:
			it.UnitPriceCents, broke, err = s.integer(0, maxUnitPriceCents)
		}
		if broke != "" {
			errs.add(itemField(i, itemKeys[idx]), "%s", broke)
		}
		return err
	})
	for j, name := range itemKeys {
		if !seen[j] {
			errs.add(itemField(i, name), "is required")
		}
	}
	return it, err == nil && errs.count == before, err
}

// itemKeys are the keys of an order line, in the order item indexes them.
var itemKeys = [...]string{"sku", "quantity", "unit_price_cents"}

// stringValue reads a value that must be a string; broke names the rule a
// value of another type breaks. Such a value is skipped, so that one answer
// lists every broken rule.
func (s *scanner) stringValue() (v, broke string, err error) {
	if s.peek() != '"' {
		return "", "must be a string", s.skipValue(0)
	}
	v, err = s.str()
	return v, "", err
}

// integer reads a value that must be an integer literal in [lo, hi]; broke
// names the rule it breaks, if any. The literal is parsed as an integer,
// never through float64, so 2^53+1 stays itself; fractions and exponents
// ("1.0", "1e2") are refused even when whole.
func (s *scanner) integer(lo, hi int64) (n int64, broke string, err error) {
	if s.peek() != '0' {
		return 0, "must be an integer", s.skipValue(0)
	}
	lit, integer, err := s.number()
	switch {
	case err != nil:
		return 0, "", err
	case !integer:
		return 0, "must be an integer, without fraction or exponent", nil
	}
	n, inRange := parseInt(lit, lo, hi)
	if !inRange {
		return n, fmt.Sprintf("must be between %d and %d", lo, hi), nil
	}
	return n, "", nil
}

// intValue is integer for a value whose field name is at hand: a broken
// rule goes to errs under field.
func (s *scanner) intValue(field string, lo, hi int64, errs *fieldErrors) (int64, bool, error) {
	n, broke, err := s.integer(lo, hi)
	if broke != "" {
		errs.add(field, "%s", broke)
	}
	return n, broke == "" && err == nil, err
}

// parseInt parses an integer literal that jsontext checked (optional
// minus, no leading zeros) and reports whether it lies in [lo, hi], which
// must lie within ±(10^18-1): a literal of more than 18 digits is out of
// range without being parsed, so no length of input can overflow.
func parseInt(lit []byte, lo, hi int64) (int64, bool) {
	neg := len(lit) > 0 && lit[0] == '-'
	if neg {
		lit = lit[1:]
	}
	if len(lit) == 0 || len(lit) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range lit {
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, n >= lo && n <= hi
}

// checkCustomerID checks 1..128 printable characters (unicode.IsPrint:
// letters, marks, numbers, punctuation, symbols and the ASCII space).
func checkCustomerID(v string, errs *fieldErrors) {
	n := 0
	for _, r := range v {
		n++
		if !unicode.IsPrint(r) {
			errs.add("customer_id", "must hold printable characters only")
			return
		}
	}
	if n == 0 || n > maxCustomerIDChars {
		errs.add("customer_id", "must be 1 to %d characters", maxCustomerIDChars)
	}
}

func validCurrency(v string) bool {
	return len(v) == 3 && isUpper(v[0]) && isUpper(v[1]) && isUpper(v[2])
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }

// validSKU reports whether v matches ^[A-Za-z0-9._-]{1,64}$.
func validSKU(v string) bool {
	if len(v) == 0 || len(v) > maxSKULen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(isUpper(c) || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func itemField(i int, name string) string {
	f := "items[" + strconv.Itoa(i) + "]"
	if name != "" {
		f += "." + name
	}
	return f
}

// unknownField explains an unknown key, pointing out a key that differs from
// a known one only in case: encoding/json would have taken it.
func unknownField(key string, known ...string) string {
	for _, k := range known {
		if strings.EqualFold(key, k) {
			return fmt.Sprintf("unknown field; field names are case-sensitive, did you mean %q?", k)
		}
	}
	return "unknown field; allowed: " + strings.Join(known, ", ")
}

// truncate shortens a client-chosen key before it is echoed in an answer.
func truncate(key string) string {
	const maxEcho = 64
	if len(key) <= maxEcho {
		return key
	}
	return strings.ToValidUTF8(key[:maxEcho], "") + "…"
}

// requestHash is the RequestHash of an order: the first 16 bytes of SHA-256
// over a canonical encoding of what the order means (customer, currency and
// lines), so whitespace, key order and escapes in the body do not matter.
// Lines are hashed sorted by SKU: a SKU appears once per order, so their
// order carries no meaning. Changing the encoding would make retries of
// orders in flight look like a different request: its version is in the tag.
func requestHash(in *orderInput) [16]byte {
	items := slices.Clone(in.Items)
	slices.SortFunc(items, func(a, b saga.Item) int { return strings.Compare(a.SKU, b.SKU) })
	b := make([]byte, 0, 64+len(items)*32)
	b = append(b, "orderpipe.order.v1"...)
	str := func(v string) {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	str(in.CustomerID)
	str(in.Currency)
	b = binary.AppendUvarint(b, uint64(len(items)))
	for _, it := range items {
		str(it.SKU)
		b = binary.BigEndian.AppendUint32(b, it.Quantity)
		b = binary.BigEndian.AppendUint64(b, uint64(it.UnitPriceCents))
	}
	sum := sha256.Sum256(b)
	return [16]byte(sum[:16])
}

package ingest

import (
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
	s := &scanner{buf: data}
	switch s.peek() {
	case '{':
	case 0:
		if s.atEnd() {
			return nil, malformedJSON("the body is empty; want a JSON object")
		}
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
	err := s.object(func(key string) error {
		idx := slices.Index([]string{"customer_id", "items", "currency"}, key)
		switch {
		case idx < 0:
			errs.add(truncate(key), "%s", unknownField(key, "customer_id", "items", "currency"))
			return s.skipValue(0)
		case seen[idx]:
			errs.add(key, "duplicate field")
			return s.skipValue(0)
		}
		seen[idx] = true
		var (
			ok  bool
			err error
		)
		switch key {
		case "customer_id":
			if in.CustomerID, ok, err = s.stringValue(key, &errs); ok {
				checkCustomerID(in.CustomerID, &errs)
			}
		case "currency":
			if in.Currency, ok, err = s.stringValue(key, &errs); ok && !validCurrency(in.Currency) {
				errs.add(key, "must be three capital letters (ISO 4217), like \"EUR\"")
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

// item reads line i of an order; ok is false if it broke a rule.
func (s *scanner) item(i int, lim limits, errs *fieldErrors) (it saga.Item, ok bool, err error) {
	if s.peek() != '{' {
		errs.add(itemField(i, ""), "must be an object")
		return it, false, s.skipValue(0)
	}
	before := errs.count
	var seen [3]bool
	err = s.object(func(key string) error {
		idx := slices.Index([]string{"sku", "quantity", "unit_price_cents"}, key)
		switch {
		case idx < 0:
			errs.add(itemField(i, truncate(key)), "%s", unknownField(key, "sku", "quantity", "unit_price_cents"))
			return s.skipValue(0)
		case seen[idx]:
			errs.add(itemField(i, key), "duplicate field")
			return s.skipValue(0)
		}
		seen[idx] = true
		switch key {
		case "sku":
			v, ok, err := s.stringValue(itemField(i, key), errs)
			if ok && !validSKU(v) {
				errs.add(itemField(i, key), "must be 1 to %d characters from A-Z, a-z, 0-9, '.', '_', '-'", maxSKULen)
			}
			it.SKU = v
			return err
		case "quantity":
			v, _, err := s.intValue(itemField(i, key), 1, lim.maxQuantity, errs)
			it.Quantity = uint32(v)
			return err
		default:
			v, _, err := s.intValue(itemField(i, key), 0, maxUnitPriceCents, errs)
			it.UnitPriceCents = v
			return err
		}
	})
	for j, name := range []string{"sku", "quantity", "unit_price_cents"} {
		if !seen[j] {
			errs.add(itemField(i, name), "is required")
		}
	}
	return it, err == nil && errs.count == before, err
}

// stringValue reads a value that must be a string. A value of another type
// is reported and skipped, so that one answer lists every broken rule.
func (s *scanner) stringValue(field string, errs *fieldErrors) (string, bool, error) {
	if s.peek() != '"' {
		errs.add(field, "must be a string")
		return "", false, s.skipValue(0)
	}
	v, err := s.str()
	return v, err == nil, err
}

// intValue reads a value that must be an integer literal in [lo, hi]. The
// literal is parsed as an integer, never through float64, so 2^53+1 stays
// itself; fractions and exponents ("1.0", "1e2") are refused even when whole.
func (s *scanner) intValue(field string, lo, hi int64, errs *fieldErrors) (int64, bool, error) {
	if c := s.peek(); c != '-' && (c < '0' || c > '9') {
		errs.add(field, "must be an integer")
		return 0, false, s.skipValue(0)
	}
	lit, integer, err := s.number()
	switch {
	case err != nil:
		return 0, false, err
	case !integer:
		errs.add(field, "must be an integer, without fraction or exponent")
		return 0, false, nil
	}
	n, inRange := parseInt(lit, lo, hi)
	if !inRange {
		errs.add(field, "must be between %d and %d", lo, hi)
	}
	return n, inRange, nil
}

// parseInt parses an integer literal that the scanner checked (optional
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

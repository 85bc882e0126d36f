package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/orderpipe/orderpipe/saga"
)

// FuzzDecodeOrder checks that the decoder never panics and never accepts
// what the rules refuse, against an independent reference decoder built on
// encoding/json's token stream; that what it accepts reads the same as a
// batch of one and survives a round trip with the same hash; and that the
// stock-level decoder does not panic on the same input.
func FuzzDecodeOrder(f *testing.F) {
	f.Add([]byte(withItem(validItem)))
	f.Add([]byte(`{"customer_id":"c","items":[{"sku":"A","quantity":1,"unit_price_cents":0},{"sku":"B","quantity":3,"unit_price_cents":7}],"currency":"EUR"}`))
	for _, c := range badOrders() {
		f.Add([]byte(c.body))
	}
	for _, seed := range []string{
		`{"customer_id":"a","customer_id":"b","items":[` + validItem + `],"currency":"EUR"}`,
		`{"customer_id":"a","Customer_id":"b","items":[` + validItem + `],"currency":"EUR"}`,
		withItem(`{"sku":"A","quantity":1e400,"unit_price_cents":1}`),
		withItem(`{"sku":"A","quantity":9007199254740993,"unit_price_cents":1}`),
		withItem(`{"sku":"A","quantity":1,"unit_price_cents":9007199254740993}`),
		withItem(`{"sku":"A","quantity":"1.5","unit_price_cents":1}`),
		withItem(`{"sku":"A","quantity":1.5,"unit_price_cents":1}`),
		"{\"customer_id\":\"\xff\xfe\",\"items\":[" + validItem + "],\"currency\":\"EUR\"}",
		withItem(validItem) + "garbage",
		withItem(validItem) + "\x00",
		`{"customer_id":"\ud83d\ude00","items":[` + validItem + `],"currency":"EUR"}`,
		`{"customer_id":"\ud83d","items":[` + validItem + `],"currency":"EUR"}`,
	} {
		f.Add([]byte(seed))
	}
	lim := Config{}.withDefaults().limits()
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeStockLevel(data) // the other body decoder: it must not panic
		in, p := decodeOrder(data, lim)
		if (in == nil) == (p == nil) {
			t.Fatalf("got order %v and problem %v: want exactly one", in, p)
		}
		ref, refErr := referenceDecode(data, lim)
		if p != nil {
			if p.Status < 400 || p.Status > 499 || !strings.HasPrefix(p.Type, problemTypeBase) {
				t.Fatalf("bad problem %+v", p)
			}
			// The reference cannot see escapes of lone surrogates (encoding/json
			// turns them into U+FFFD), so it may accept those; nothing else.
			if refErr == nil && !bytes.Contains(data, []byte(`\u`)) && !bytes.Contains(data, []byte(`\U`)) {
				t.Fatalf("refused (%s %+v) what the reference accepts: %+v", p.Detail, p.Errors, ref)
			}
			return
		}
		if refErr != nil {
			t.Fatalf("accepted %+v, but the reference refuses it: %v", in, refErr)
		}
		if in.CustomerID != ref.CustomerID || in.Currency != ref.Currency || !slices.Equal(in.Items, ref.Items) {
			t.Fatalf("decoded %+v, the reference %+v", in, ref)
		}
		// A batch of this one order reads it the same way.
		entries, bp := decodeBatchArray(append(append([]byte("["), data...), ']'), lim, 1)
		if bp != nil || len(entries) != 1 || entries[0].in == nil || requestHash(entries[0].in) != requestHash(in) {
			t.Fatalf("as a batch of one: got %+v, %v; want the order %+v", entries, bp, in)
		}
		// Round trip: encoding/json's rendering decodes to the same order.
		again, p := decodeOrder(marshalOrder(t, in), lim)
		if p != nil {
			t.Fatalf("round trip refused: %s %+v", p.Detail, p.Errors)
		}
		if requestHash(again) != requestHash(in) {
			t.Fatalf("round trip changed the hash: %+v vs %+v", again, in)
		}
	})
}

func marshalOrder(t *testing.T, in *orderInput) []byte {
	type item struct {
		SKU   string `json:"sku"`
		Qty   uint32 `json:"quantity"`
		Price int64  `json:"unit_price_cents"`
	}
	var items []item
	for _, it := range in.Items {
		items = append(items, item{it.SKU, it.Quantity, it.UnitPriceCents})
	}
	b, err := json.Marshal(struct {
		CustomerID string `json:"customer_id"`
		Items      []item `json:"items"`
		Currency   string `json:"currency"`
	}{in.CustomerID, items, in.Currency})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The rules as regular expressions, for referenceDecode.
var (
	integer  = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)
	sku      = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	currency = regexp.MustCompile(`^[A-Z]{3}$`)
)

// referenceDecode applies the order rules with encoding/json's Decoder.Token
// and regular expressions: slow, simple and independent of the scanner.
func referenceDecode(data []byte, lim limits) (*orderInput, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	delim := func(want json.Delim) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if tok != want {
			return fmt.Errorf("got %v, want %v", tok, want)
		}
		return nil
	}
	str := func() (string, error) {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		s, ok := tok.(string)
		if !ok {
			return "", fmt.Errorf("got %v, want a string", tok)
		}
		return s, nil
	}
	num := func(lo, hi int64) (int64, error) {
		tok, err := dec.Token()
		if err != nil {
			return 0, err
		}
		n, ok := tok.(json.Number)
		if !ok || !integer.MatchString(string(n)) {
			return 0, fmt.Errorf("got %v, want an integer", tok)
		}
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || v < lo || v > hi {
			return 0, fmt.Errorf("%s out of range", n)
		}
		return v, nil
	}
	// object reads the members of an object whose keys must be exactly known.
	object := func(known []string, member func(key string) error) error {
		if err := delim('{'); err != nil {
			return err
		}
		seen := map[string]bool{}
		for dec.More() {
			key, err := str()
			if err != nil {
				return err
			}
			if !slices.Contains(known, key) || seen[key] {
				return fmt.Errorf("unknown or duplicate key %q", key)
			}
			seen[key] = true
			if err := member(key); err != nil {
				return err
			}
		}
		if len(seen) != len(known) {
			return errors.New("missing keys")
		}
		return delim('}')
	}
	var in orderInput
	err := object([]string{"customer_id", "items", "currency"}, func(key string) error {
		var err error
		switch key {
		case "customer_id":
			in.CustomerID, err = str()
			n := utf8.RuneCountInString(in.CustomerID)
			if err == nil && (n < 1 || n > 128 || strings.IndexFunc(in.CustomerID, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0) {
				err = errors.New("bad customer_id")
			}
		case "currency":
			in.Currency, err = str()
			if err == nil && !currency.MatchString(in.Currency) {
				err = errors.New("bad currency")
			}
		case "items":
			if err := delim('['); err != nil {
				return err
			}
			for dec.More() {
				var it saga.Item
				err := object([]string{"sku", "quantity", "unit_price_cents"}, func(key string) error {
					var err error
					var v int64
					switch key {
					case "sku":
						it.SKU, err = str()
						if err == nil && !sku.MatchString(it.SKU) {
							err = errors.New("bad sku")
						}
					case "quantity":
						v, err = num(1, lim.maxQuantity)
						it.Quantity = uint32(v)
					default:
						it.UnitPriceCents, err = num(0, 1_000_000_000)
					}
					return err
				})
				if err != nil {
					return err
				}
				if slices.ContainsFunc(in.Items, func(o saga.Item) bool { return o.SKU == it.SKU }) {
					return errors.New("duplicate sku")
				}
				in.Items = append(in.Items, it)
			}
			if len(in.Items) < 1 || len(in.Items) > lim.maxItems {
				return errors.New("bad item count")
			}
			return delim(']')
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data: %v", err)
	}
	return &in, nil
}

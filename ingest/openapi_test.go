package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/valyala/fasthttp"
)

// The tests of openapi.json hold the document to the code three ways: its
// operations to the routing table, its limits and rules to the decoder's,
// and real exchanges with a running edge to its schemas.

// loadOpenAPI parses the embedded document and validates it. kin-openapi
// (v0.153) supports OpenAPI 3.1: Validate sees "openapi": "3.1.0" and
// checks the schemas as JSON Schema 2020-12, and openapi3filter validates
// values with a 2020-12 validator for such documents, so no option is
// needed to keep the document 3.1. It still uses only constructs that 3.0
// also has (no type arrays, const or numeric exclusive bounds), so that
// 3.0-only tools can read it too.
func loadOpenAPI(t testing.TB) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData([]byte(openAPIDocument))
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(loader.Context, openapi3.EnableMultiError(), openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document: %v", err)
	}
	return doc
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.1.0" || !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi: got %q, want 3.1.0 (SPEC section 3)", doc.OpenAPI)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" {
				t.Errorf("%s %s: no operationId (it must be the route's name)", method, path)
			}
			if op.Security == nil {
				t.Errorf("%s %s: no security (use [] for a public route)", method, path)
			}
		}
	}
}

// codeRoute is one route of the edge's routing table.
type codeRoute struct {
	method, name string
	scopes       []string // nil: public
}

// routingTable reads every route of e.routes: each field of routes is a
// resource, each non-nil *route field of a resource serves the method it
// is named after.
func routingTable(t *testing.T, e *Edge) []codeRoute {
	t.Helper()
	var out []codeRoute
	rv := reflect.ValueOf(e.routes)
	for i := range rv.NumField() {
		res := rv.Field(i)
		if res.Type() != reflect.TypeFor[resource]() {
			t.Fatalf("routes.%s is a %s, want a resource", rv.Type().Field(i).Name, res.Type())
		}
		for j := range res.NumField() {
			p := res.Field(j)
			if p.Type() != reflect.TypeFor[*route]() {
				t.Fatalf("resource.%s is a %s, want a *route", res.Type().Field(j).Name, p.Type())
			}
			if p.IsNil() {
				continue
			}
			rt := p.Elem()
			cr := codeRoute{method: strings.ToUpper(res.Type().Field(j).Name), name: rt.FieldByName("name").String()}
			if s := rt.FieldByName("scopes"); !s.IsNil() {
				cr.scopes = []string{}
				for k := range s.Len() {
					cr.scopes = append(cr.scopes, s.Index(k).String())
				}
			}
			out = append(out, cr)
		}
	}
	return out
}

// examplePath fills path's parameters with their examples.
func examplePath(t *testing.T, path string, op *openapi3.Operation) string {
	t.Helper()
	for _, p := range op.Parameters {
		if p.Value.In != openapi3.ParameterInPath {
			continue
		}
		ex, ok := p.Value.Example.(string)
		if !ok {
			t.Fatalf("%s: path parameter %s has no string example", path, p.Value.Name)
		}
		path = strings.ReplaceAll(path, "{"+p.Value.Name+"}", ex)
	}
	return path
}

// docScopes returns the scopes of an operation's security alternatives
// (one scope each), nil for a public operation.
func docScopes(t *testing.T, what string, op *openapi3.Operation) []string {
	t.Helper()
	if op.Security == nil || len(*op.Security) == 0 {
		return nil
	}
	scopes := []string{}
	for _, req := range *op.Security {
		s, ok := req["apiKey"]
		if len(req) != 1 || !ok || len(s) != 1 {
			t.Errorf("%s: security requirement %v, want {\"apiKey\": [one scope]}: the edge grants a route on any one of its scopes", what, req)
			continue
		}
		scopes = append(scopes, s[0])
	}
	return scopes
}

// TestOpenAPIRoutesMatchRoutingTable: every route of the edge is an
// operation of the document, named by its operationId, with the same
// method, path and scopes; every operation is a route.
func TestOpenAPIRoutesMatchRoutingTable(t *testing.T) {
	doc := loadOpenAPI(t)
	e := &Edge{}
	e.routes = e.newRoutes()
	code := routingTable(t, e)

	byName := map[string]codeRoute{}
	for _, cr := range code {
		if _, dup := byName[cr.name]; dup {
			t.Fatalf("route name %s appears twice in the routing table", cr.name)
		}
		byName[cr.name] = cr
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			what := method + " " + path
			concrete := examplePath(t, path, op)
			rt, _, _ := e.resolve([]byte(method), []byte(concrete))
			switch {
			case rt == nil:
				t.Errorf("%s (%s): the edge has no route for %s %s", what, op.OperationID, method, concrete)
				continue
			case rt.name != op.OperationID:
				t.Errorf("%s: operationId %s, but the edge routes %s %s to %s", what, op.OperationID, method, concrete, rt.name)
				continue
			}
			documented[op.OperationID] = true
			cr := byName[op.OperationID]
			if cr.method != method {
				t.Errorf("%s: route %s serves %s, want %s", what, cr.name, cr.method, method)
			}
			got, want := docScopes(t, what, op), cr.scopes
			slices.Sort(got)
			want = slices.Sorted(slices.Values(want))
			if (got == nil) != (cr.scopes == nil) || !slices.Equal(got, want) {
				t.Errorf("%s: the document grants it to scopes %v, the edge to %v (nil: public)", what, got, cr.scopes)
			}
		}
	}
	for _, cr := range code {
		if !documented[cr.name] {
			t.Errorf("route %s (%s) is not in openapi.json", cr.name, cr.method)
		}
	}
	if len(code) < 9 {
		t.Errorf("routing table: got %d routes, want at least the 9 of SPEC section 3: %v", len(code), code)
	}
}

// schema returns a component schema.
func schema(t *testing.T, doc *openapi3.T, name string) *openapi3.Schema {
	t.Helper()
	s := doc.Components.Schemas[name]
	if s == nil || s.Value == nil {
		t.Fatalf("openapi.json has no schema %s", name)
	}
	return s.Value
}

func prop(t *testing.T, s *openapi3.Schema, name string) *openapi3.Schema {
	t.Helper()
	p := s.Properties[name]
	if p == nil || p.Value == nil {
		t.Fatalf("schema has no property %s", name)
	}
	return p.Value
}

func operation(t *testing.T, doc *openapi3.T, method, path string) *openapi3.Operation {
	t.Helper()
	item := doc.Paths.Value(path)
	if item == nil || item.GetOperation(method) == nil {
		t.Fatalf("openapi.json has no %s %s", method, path)
	}
	return item.GetOperation(method)
}

// number reads a numeric JSON value (an extension's) as an int64.
func number(v any) (int64, bool) {
	switch n := v.(type) {
	case float64:
		return int64(n), float64(int64(n)) == n
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case int:
		return int64(n), true
	case int64:
		return n, true
	case uint64:
		return int64(n), true
	}
	return 0, false
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestOpenAPILimitsMatchCode: every limit in the document is the code's
// default, and the schemas accept exactly what the edge's decoder accepts
// on a corpus of bodies and values.
func TestOpenAPILimitsMatchCode(t *testing.T) {
	doc := loadOpenAPI(t)
	order := schema(t, doc, "OrderRequest")
	line := schema(t, doc, "OrderLine")
	items := prop(t, order, "items")
	customer := prop(t, order, "customer_id")
	sku := schema(t, doc, "SKU")
	quantity := prop(t, line, "quantity")
	price := prop(t, line, "unit_price_cents")
	available := prop(t, schema(t, doc, "StockLevel"), "available")
	batch := schema(t, doc, "BatchRequest")
	postOrder := operation(t, doc, http.MethodPost, "/v1/orders")
	postBatch := operation(t, doc, http.MethodPost, "/v1/orders:batch")
	putStock := operation(t, doc, http.MethodPut, "/v1/inventory/{sku}")
	idemKey := doc.Components.Parameters["IdempotencyKey"].Value
	wait := doc.Components.Parameters["Wait"].Value
	batchAnswer := postBatch.Responses.Status(200).Value.Content.Get("application/json").Schema.Value

	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"OrderRequest.items maxItems", deref(items.MaxItems), uint64(DefaultMaxItems)},
		{"OrderRequest.items minItems", items.MinItems, uint64(1)},
		{"OrderRequest.customer_id maxLength", deref(customer.MaxLength), uint64(maxCustomerIDChars)},
		{"OrderRequest.customer_id minLength", customer.MinLength, uint64(1)},
		{"SKU maxLength", deref(sku.MaxLength), uint64(maxSKULen)},
		{"SKU minLength", sku.MinLength, uint64(1)},
		{"OrderLine.quantity maximum", deref(quantity.Max), float64(DefaultMaxQuantity)},
		{"OrderLine.quantity minimum", deref(quantity.Min), float64(1)},
		{"OrderLine.unit_price_cents maximum", deref(price.Max), float64(maxUnitPriceCents)},
		{"OrderLine.unit_price_cents minimum", deref(price.Min), float64(0)},
		{"StockLevel.available maximum", deref(available.Max), float64(maxAvailable)},
		{"StockLevel.available minimum", deref(available.Min), float64(0)},
		{"BatchRequest maxItems", deref(batch.MaxItems), uint64(DefaultMaxBatchOrders)},
		{"the batch answer's maxItems", deref(batchAnswer.MaxItems), uint64(DefaultMaxBatchOrders)},
		{"Problem.errors maxItems", deref(prop(t, schema(t, doc, "Problem"), "errors").MaxItems), uint64(maxFieldErrors)},
		{"Idempotency-Key maxLength", deref(idemKey.Schema.Value.MaxLength), uint64(maxIdempotencyKeyLen)},
		{"wait x-orderpipe-max-wait", wait.Extensions["x-orderpipe-max-wait"], DefaultMaxWait.String()},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v (%T), want %v (%T)", c.what, c.got, c.got, c.want, c.want)
		}
	}
	for _, c := range []struct {
		what string
		ext  map[string]any
		key  string
		want int
	}{
		{"POST /v1/orders body", postOrder.RequestBody.Value.Extensions, "x-orderpipe-max-body-bytes", DefaultMaxBodyBytes},
		{"PUT /v1/inventory/{sku} body", putStock.RequestBody.Value.Extensions, "x-orderpipe-max-body-bytes", DefaultMaxBodyBytes},
		{"POST /v1/orders:batch body", postBatch.RequestBody.Value.Extensions, "x-orderpipe-max-body-bytes", DefaultMaxBatchBodyBytes},
		{"POST /v1/orders:batch NDJSON line", postBatch.RequestBody.Value.Extensions, "x-orderpipe-max-line-bytes", DefaultMaxBodyBytes},
	} {
		if n, ok := number(c.ext[c.key]); !ok || n != int64(c.want) {
			t.Errorf("%s: %s is %v, want %d", c.what, c.key, c.ext[c.key], c.want)
		}
	}

	// The schemas and the decoder, on the same inputs.
	opts := []openapi3.SchemaValidationOption{openapi3.EnableJSONSchema2020(), openapi3.VisitAsRequest()}
	accepts := func(s *openapi3.Schema, v any) error { return s.VisitJSON(v, opts...) }
	lim := Config{}.withDefaults().limits()
	lines := func(n int) string {
		var b []string
		for i := range n {
			b = append(b, fmt.Sprintf(`{"sku":"S%d","quantity":1,"unit_price_cents":1}`, i))
		}
		return strings.Join(b, ",")
	}
	withLine := func(l string) string { return `{"customer_id":"c","currency":"EUR","items":[` + l + `]}` }
	withCustomer := func(c string) string {
		b, _ := json.Marshal(c)
		return `{"customer_id":` + string(b) + `,"currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`
	}
	for _, body := range []string{
		orderBody("cust-1", "A:1", "B:2"),
		withLine(lines(DefaultMaxItems)),
		withLine(lines(DefaultMaxItems + 1)),
		withLine(""),
		`{"customer_id":"c","currency":"EUR","items":{}}`,
		`{"customer_id":"c","currency":"EUR"}`,
		`{"customer_id":"c","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`,
		`{"customer_id":"c","currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":1}],"note":"x"}`,
		`{"Customer_id":"c","currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`,
		withLine(`{"sku":"A","quantity":0,"unit_price_cents":1}`),
		withLine(`{"sku":"A","quantity":1,"unit_price_cents":1}`),
		withLine(fmt.Sprintf(`{"sku":"A","quantity":%d,"unit_price_cents":1}`, DefaultMaxQuantity)),
		withLine(fmt.Sprintf(`{"sku":"A","quantity":%d,"unit_price_cents":1}`, DefaultMaxQuantity+1)),
		withLine(`{"sku":"A","quantity":-1,"unit_price_cents":1}`),
		withLine(`{"sku":"A","quantity":"1","unit_price_cents":1}`),
		withLine(`{"sku":"A","quantity":1,"unit_price_cents":0}`),
		withLine(`{"sku":"A","quantity":1,"unit_price_cents":-1}`),
		withLine(fmt.Sprintf(`{"sku":"A","quantity":1,"unit_price_cents":%d}`, maxUnitPriceCents)),
		withLine(fmt.Sprintf(`{"sku":"A","quantity":1,"unit_price_cents":%d}`, maxUnitPriceCents+1)),
		withLine(`{"sku":"A","quantity":1}`),
		withLine(`{"sku":"A","quantity":1,"unit_price_cents":1,"discount":0}`),
		withLine(`{"sku":"","quantity":1,"unit_price_cents":1}`),
		withLine(`{"sku":"` + strings.Repeat("s", maxSKULen) + `","quantity":1,"unit_price_cents":1}`),
		withLine(`{"sku":"` + strings.Repeat("s", maxSKULen+1) + `","quantity":1,"unit_price_cents":1}`),
		withLine(`{"sku":"a.b_c-D9","quantity":1,"unit_price_cents":1}`),
		withLine(`{"sku":"a b","quantity":1,"unit_price_cents":1}`),
		withLine(`{"sku":"a/b","quantity":1,"unit_price_cents":1}`),
		withLine(`{"sku":"é","quantity":1,"unit_price_cents":1}`),
		withLine(`"A:1"`),
		withCustomer(""),
		withCustomer(" "),
		withCustomer("Zoë Ørsted-Łukasiewicz №7 ☃"),
		withCustomer(strings.Repeat("é", maxCustomerIDChars)),
		withCustomer(strings.Repeat("é", maxCustomerIDChars+1)),
		withCustomer("tab\there"),
		withCustomer("new\nline"),
		withCustomer("nbsp\u00a0"),
		withCustomer("zero\u200bwidth"),
		`{"customer_id":1,"currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`,
		`{"customer_id":"c","currency":"eur","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`,
		`{"customer_id":"c","currency":"EU","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`,
		`{"customer_id":"c","currency":"EURO","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`,
		`{"customer_id":"c","currency":"ÉUR","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`,
		`[]`,
		`"order"`,
	} {
		var v any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("corpus body is not JSON: %v: %s", err, body)
		}
		_, p := decodeOrder([]byte(body), lim)
		docErr := accepts(order, v)
		if (p == nil) != (docErr == nil) {
			t.Errorf("order %.200s: the edge says %v, the document says %v", body, problemSummary(p), docErr)
		}
	}
	// Rules JSON Schema cannot say, which the descriptions state instead:
	// the decoder refuses these, the schema accepts them.
	for _, body := range []string{
		withLine(`{"sku":"A","quantity":1,"unit_price_cents":1},{"sku":"A","quantity":2,"unit_price_cents":1}`), // a SKU on two lines
		withLine(`{"sku":"A","quantity":1.0,"unit_price_cents":1}`),                                             // an integer written with a fraction
		`{"customer_id":"c","customer_id":"d","currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`,
	} {
		var v any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		if _, p := decodeOrder([]byte(body), lim); p == nil {
			t.Errorf("order %s: the edge accepts it, want it refused (the document says so in words)", body)
		}
	}

	for _, body := range []string{
		`{"available":0}`, `{"available":250}`,
		fmt.Sprintf(`{"available":%d}`, maxAvailable), fmt.Sprintf(`{"available":%d}`, maxAvailable+1),
		`{"available":-1}`, `{"available":"1"}`, `{}`, `{"available":1,"reserved":0}`, `[1]`,
	} {
		var v any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		_, p := decodeStockLevel([]byte(body))
		if docErr := accepts(schema(t, doc, "StockLevel"), v); (p == nil) != (docErr == nil) {
			t.Errorf("stock level %s: the edge says %v, the document says %v", body, problemSummary(p), docErr)
		}
	}

	// Path, query and header values.
	e := &Edge{cfg: Config{}.withDefaults()}
	idOK := func(s string) bool { _, err := saga.ParseOrderID(s); return err == nil }
	waitOK := func(s string) bool {
		ctx := &fasthttp.RequestCtx{}
		ctx.Request.SetRequestURI("/v1/orders/x?wait=" + url.QueryEscape(s))
		_, p := e.waitParam(ctx)
		return p == nil
	}
	keyOK := func(s string) bool {
		ctx := &fasthttp.RequestCtx{}
		ctx.Request.Header.Set("Idempotency-Key", s)
		k, p := idempotencyKey(ctx)
		return p == nil && k != ""
	}
	for _, c := range []struct {
		what   string
		schema *openapi3.Schema
		code   func(string) bool
		values []string
	}{
		{"SKU", sku, validSKU, []string{"A", "sku-1.b_2", strings.Repeat("Z", maxSKULen), strings.Repeat("Z", maxSKULen+1), "", "a b", "a#b", "ä", "a\x00"}},
		{"order id", schema(t, doc, "OrderID"), idOK, []string{
			"0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e", "0190C1B2-7A3E-7CC1-9D4E-1F2A3B4C5D6E", "0190c1b27a3e7cc19d4e1f2a3b4c5d6e",
			"{0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e}", "urn:uuid:0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e", "0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6g", "nope", "",
		}},
		{"wait", wait.Schema.Value, waitOK, []string{"2s", "500ms", "1m30s", "1.5h", ".5s", "1.s", "0", "10us", "10µs", "+1s", "1h", "", "1", "abc", "-1s", "2 s", "2S", "1d"}},
		{"Idempotency-Key", idemKey.Schema.Value, keyOK, []string{"k", "order 2024/01#1", "~!@", strings.Repeat("k", maxIdempotencyKeyLen), strings.Repeat("k", maxIdempotencyKeyLen+1), "clé", "tab\tkey", "del\x7f"}},
	} {
		for _, v := range c.values {
			if docErr := accepts(c.schema, v); c.code(v) != (docErr == nil) {
				t.Errorf("%s %q: the edge accepts it: %v; the document says %v", c.what, v, c.code(v), docErr)
			}
		}
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Request.SetRequestURI("/v1/orders/x?wait=1h")
	if d, p := e.waitParam(ctx); p != nil || d != DefaultMaxWait {
		t.Errorf("?wait=1h: got %s %v, want the cap %s of x-orderpipe-max-wait", d, p, DefaultMaxWait)
	}
}

func problemSummary(p *problem) string {
	if p == nil {
		return "ok"
	}
	return fmt.Sprintf("%d %s %s %v", p.Status, p.Type, p.Detail, p.Errors)
}

// TestOpenAPIProblemTypes: the document enumerates exactly the problem
// types the code makes: the slug literals of newProblem and unavailable
// calls in the package's source.
func TestOpenAPIProblemTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	code := map[string]string{} // slug → where
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			fn, ok := call.Fun.(*ast.Ident)
			if !ok {
				return true
			}
			arg := -1
			switch {
			case fn.Name == "newProblem" && len(call.Args) == 4:
				arg = 1
			case fn.Name == "unavailable" && len(call.Args) == 3:
				arg = 0
			}
			if arg < 0 {
				return true
			}
			where := fset.Position(call.Pos()).String()
			lit, ok := call.Args[arg].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				// The definitions of newProblem's wrappers pass their own
				// slug parameter through.
				if id, isIdent := call.Args[arg].(*ast.Ident); isIdent && id.Name == "slug" {
					return true
				}
				t.Errorf("%s: a problem slug that is not a string literal cannot be checked against openapi.json", where)
				return true
			}
			slug, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			code[slug] = where
			return true
		})
	}
	documented := map[string]bool{}
	for _, v := range schema(t, doc, "ProblemType").Enum {
		uri, _ := v.(string)
		slug, ok := strings.CutPrefix(uri, problemTypeBase)
		if !ok {
			t.Errorf("problem type %v does not start with %s", v, problemTypeBase)
			continue
		}
		documented[slug] = true
		if _, ok := code[slug]; !ok {
			t.Errorf("problem type %s is in openapi.json but the code never makes it", slug)
		}
	}
	for slug, where := range code {
		if !documented[slug] {
			t.Errorf("problem type %s (%s) is not in openapi.json's ProblemType", slug, where)
		}
	}
	if len(code) < 10 {
		t.Errorf("found %d problem types in the source, want many more: is the parsing broken? %v", len(code), code)
	}
}

// contract validates real exchanges with an edge against the document.
type contract struct {
	doc    *openapi3.T
	router routers.Router
	// scopes are the edge's API keys (the keys themselves) and what they
	// grant: the validator's model of the edge's authentication.
	scopes map[string][]string
}

func newContract(t *testing.T, scopes map[string][]string) *contract {
	t.Helper()
	doc := loadOpenAPI(t)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("router: %v", err)
	}
	// kin-openapi has no decoder for NDJSON; the registry is kin-openapi's
	// own and registering replaces, so tests may call this again.
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", decodeNDJSON)
	// Nor for the dashboard's files, which the document says are strings.
	for _, ct := range []string{"text/html", "text/javascript", "text/css"} {
		openapi3filter.RegisterBodyDecoder(ct, decodeText)
	}
	return &contract{doc: doc, router: router, scopes: scopes}
}

// decodeText reads a body as one string.
func decodeText(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	b, err := io.ReadAll(body)
	return string(b), err
}

// decodeNDJSON reads an NDJSON body as the array of its non-blank lines,
// which is what the document's schema of it describes.
func decodeNDJSON(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	var out []any
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, DefaultMaxBatchBodyBytes)
	for sc.Scan() {
		line := bytes.Trim(sc.Bytes(), " \t\r")
		if len(line) == 0 {
			continue
		}
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			return nil, &openapi3filter.ParseError{Kind: openapi3filter.KindInvalidFormat, Reason: "an NDJSON line is not JSON", Cause: err}
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

// authenticate is the AuthenticationFunc of the request validator: a
// request passes a security requirement when it has the key of a client
// with one of the requirement's scopes.
func (c *contract) authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	token, ok := bearerToken([]byte(in.RequestValidationInput.Request.Header.Get("Authorization")))
	if !ok {
		return errors.New("no Authorization: Bearer <key>")
	}
	granted, ok := c.scopes[string(token)]
	if !ok {
		return errors.New("not a key of the edge")
	}
	for _, s := range in.Scopes {
		if slices.Contains(granted, s) {
			return nil
		}
	}
	return fmt.Errorf("the key grants %v, not one of %v", granted, in.Scopes)
}

// exchange is one request to the edge and the answer it must get.
type exchange struct {
	name                          string
	method, path, contentType     string
	body                          string
	headers                       []string
	status                        int
	orStatus                      int    // another status the answer may have; 0 for none
	typ                           string // the problem type's slug, "" if the answer is not a problem
	refused                       bool   // the document refuses the request too
	header, headerValue, bodyPart string // checks of the answer beyond the document
}

// check sends x to h's edge, checks its status, and validates the request
// and the answer with openapi3filter: the answer must match the document
// exactly (documented status, headers and body schema), and the request
// must be valid unless x.refused, when the document must refuse it too.
func (c *contract) check(t *testing.T, h *harness, x exchange) response {
	t.Helper()
	r := h.do(x.method, x.path, x.contentType, x.body, x.headers...)
	if r.status != x.status && (x.orStatus == 0 || r.status != x.orStatus) {
		t.Errorf("%s: got %s, want %d", x.name, r, x.status)
		return r
	}
	if x.typ != "" {
		if p := problemOf(t, r); p.Type != problemTypeBase+x.typ {
			t.Errorf("%s: problem type %s, want %s", x.name, p.Type, x.typ)
		}
	}
	if x.header != "" && r.header[x.header] != x.headerValue {
		t.Errorf("%s: header %s: got %q, want %q", x.name, x.header, r.header[x.header], x.headerValue)
	}
	if x.bodyPart != "" && !contains(r.body, x.bodyPart) {
		t.Errorf("%s: body %s lacks %s", x.name, r.body, x.bodyPart)
	}

	req, err := http.NewRequest(x.method, "http://"+h.edge.Addr()+x.path, strings.NewReader(x.body))
	if err != nil {
		t.Fatalf("%s: %v", x.name, err)
	}
	if x.contentType != "" {
		req.Header.Set("Content-Type", x.contentType)
	}
	for i := 0; i+1 < len(x.headers); i += 2 {
		req.Header.Set(x.headers[i], x.headers[i+1])
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Errorf("%s: %s %s is not in the document: %v", x.name, x.method, x.path, err)
		return r
	}
	in := &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true, AuthenticationFunc: c.authenticate},
	}
	err = openapi3filter.ValidateRequest(context.Background(), in)
	switch {
	case x.refused && err == nil:
		t.Errorf("%s: the edge refuses the request with %d, the document accepts it", x.name, r.status)
	case !x.refused && err != nil:
		t.Errorf("%s: the edge answers %d, the document refuses the request: %v", x.name, r.status, err)
	}
	header := http.Header{}
	for k, v := range r.header {
		header.Set(k, v)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: r.status, Header: header,
		Options: &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true},
	}
	out.SetBodyBytes(r.body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s: the answer %s does not match the document: %v", x.name, r, err)
	}
	return r
}

// testKeys writes an API keys file for clients (id → scopes) and returns
// its path, each client's key and each key's scopes.
func testKeys(t *testing.T, clients map[string][]string) (path string, keys map[string]string, scopes map[string][]string) {
	t.Helper()
	keys, scopes = map[string]string{}, map[string][]string{}
	var lines []string
	for id, s := range clients {
		key, line, err := NewAPIKey(id, s)
		if err != nil {
			t.Fatal(err)
		}
		keys[id], scopes[key] = key, s
		lines = append(lines, line)
	}
	path = filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, keys, scopes
}

// contractClients are the clients of the contract tests' keys files.
func contractClients() map[string][]string {
	return map[string][]string{
		"shop":   {ScopeOrdersWrite, ScopeOrdersRead},
		"reader": {ScopeOrdersRead},
		"admin":  {ScopeInventoryAdmin},
	}
}

// TestOpenAPIContract sends requests covering every route and most
// statuses to an edge with authentication on, and validates each request
// and answer against the document.
func TestOpenAPIContract(t *testing.T) {
	keysFile, keys, scopes := testKeys(t, contractClients())
	c := newContract(t, scopes)
	h := newHarness(t, options{cfg: Config{APIKeysFile: keysFile}})
	as := func(client string, more ...string) []string {
		return append([]string{"Authorization", "Bearer " + keys[client]}, more...)
	}
	const j = "application/json"
	post := func(name, body string, status int, typ string, refused bool, headers ...string) exchange {
		return exchange{name: name, method: "POST", path: "/v1/orders", contentType: j, body: body, headers: as("shop", headers...), status: status, typ: typ, refused: refused}
	}
	valid := orderBody("cust-1", "A:1", "B:2")
	var big []string
	for i := range 2000 {
		big = append(big, fmt.Sprintf("S%d:1", i))
	}

	// Orders.
	r := c.check(t, h, post("order", valid, 202, "", false))
	id := field(t, r.body, "order_id")
	if r.header["Location"] != "/v1/orders/"+id {
		t.Errorf("Location: got %q, want /v1/orders/%s", r.header["Location"], id)
	}
	keyed := c.check(t, h, post("order with a key", orderBody("cust-2", "A:1"), 202, "", false, "Idempotency-Key", "k-1"))
	replay := post("same key, same body", orderBody("cust-2", "A:1"), 202, "", false, "Idempotency-Key", "k-1")
	replay.header, replay.headerValue = "Idempotent-Replayed", "true"
	c.check(t, h, replay)
	for _, x := range []exchange{
		post("same key, another body", orderBody("cust-2", "B:1"), 422, "idempotency-key-reuse", false, "Idempotency-Key", "k-1"),
		post("key too long", valid, 400, "invalid-request", true, "Idempotency-Key", strings.Repeat("k", maxIdempotencyKeyLen+1)),
		post("quantity 0", orderBody("c", "A:0"), 400, "invalid-order", true),
		post("unknown field", `{"customer_id":"c","currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":1}],"x":1}`, 400, "invalid-order", true),
		post("too many lines", orderBody("c", big[:DefaultMaxItems+1]...), 400, "invalid-order", true),
		post("malformed JSON", `{"customer_id":`, 400, "malformed-json", true),
		post("body over 64 KiB", orderBody("c", big...), 413, "payload-too-large", true),
		{name: "text/plain order", method: "POST", path: "/v1/orders", contentType: "text/plain", body: valid, headers: as("shop"), status: 415, typ: "unsupported-media-type", refused: true},
		{name: "no key", method: "POST", path: "/v1/orders", contentType: j, body: valid, status: 401, typ: "unauthorized", refused: true},
		{name: "wrong key", method: "POST", path: "/v1/orders", contentType: j, body: valid, headers: []string{"Authorization", "Bearer nope"}, status: 401, typ: "unauthorized", refused: true},
		{name: "reader posts", method: "POST", path: "/v1/orders", contentType: j, body: valid, headers: as("reader"), status: 403, typ: "forbidden", refused: true},
	} {
		c.check(t, h, x)
	}

	// Batches.
	batch := func(name, contentType, body string, status int, typ string, refused bool) exchange {
		return exchange{name: name, method: "POST", path: "/v1/orders:batch", contentType: contentType, body: body, headers: as("shop"), status: status, typ: typ, refused: refused}
	}
	many := make([]string, DefaultMaxBatchOrders+1)
	for i := range many {
		many[i] = orderBody(fmt.Sprint("c", i), "A:1")
	}
	r = c.check(t, h, batch("batch", j, "["+orderBody("b1", "A:1")+","+orderBody("b2", "B:1")+"]", 200, "", false))
	var results []batchResult
	if err := json.Unmarshal(r.body, &results); err != nil || len(results) != 2 || results[0].Status != "pending" {
		t.Fatalf("batch: got %s, want two pending results", r)
	}
	pendingID := results[0].OrderID
	for _, x := range []exchange{
		batch("batch with a bad order", j, "["+orderBody("b3", "A:1")+","+orderBody("b4", "A:0")+"]", 200, "", true),
		batch("NDJSON batch", "application/x-ndjson", orderBody("n1", "A:1")+"\n\n"+orderBody("n2", "B:1")+"\n", 200, "", false),
		batch("NDJSON batch with a bad line", "application/x-ndjson", orderBody("n3", "A:1")+"\n{\n", 200, "", true),
		batch("empty batch", j, "[]", 400, "invalid-request", true),
		batch("batch not an array", j, orderBody("b5", "A:1"), 400, "malformed-json", true),
		batch("batch over 1000 orders", j, "["+strings.Join(many, ",")+"]", 413, "payload-too-large", true),
		batch("text/plain batch", "text/plain", "[]", 415, "unsupported-media-type", true),
		{name: "reader posts a batch", method: "POST", path: "/v1/orders:batch", contentType: j, body: "[" + valid + "]", headers: as("reader"), status: 403, typ: "forbidden", refused: true},
	} {
		c.check(t, h, x)
	}

	// Reading orders.
	get := func(name, path, client string, status int, typ string, refused bool) exchange {
		return exchange{name: name, method: "GET", path: path, headers: as(client), status: status, typ: typ, refused: refused}
	}
	unknown, _ := saga.NewOrderID()
	c.check(t, h, get("unknown order", "/v1/orders/"+unknown.String(), "shop", 404, "not-found", false))
	subs := h.submitted()
	h.setOrder(subs[id], saga.StatusConfirmed, 2)
	keyedID := field(t, keyed.body, "order_id")
	h.setOrder(subs[keyedID], saga.StatusRejected, 2)
	h.setOrder(subs[pendingID], saga.StatusPending, 1)
	replayed := post("replay of a rejected order", orderBody("cust-2", "A:1"), 202, "", false, "Idempotency-Key", "k-1")
	replayed.bodyPart = `"status":"rejected"`
	for _, x := range []exchange{
		get("confirmed order", "/v1/orders/"+id, "shop", 200, "", false),
		get("confirmed order, wait", "/v1/orders/"+id+"?wait=2s", "shop", 200, "", false),
		get("confirmed order, trace", "/v1/orders/"+id+"?trace=1", "shop", 200, "", false),
		get("pending order, trace", "/v1/orders/"+pendingID+"?trace=1", "shop", 200, "", false),
		get("rejected order", "/v1/orders/"+keyedID, "shop", 200, "", false),
		get("rejected order, trace", "/v1/orders/"+keyedID+"?trace=true", "shop", 200, "", false),
		get("pending order, wait 50ms", "/v1/orders/"+pendingID+"?wait=50ms", "shop", 200, "", false),
		get("pending order, wait=0", "/v1/orders/"+pendingID+"?wait=0", "shop", 200, "", false),
		replayed,
		get("another client's order", "/v1/orders/"+id, "reader", 404, "not-found", false),
		get("order id not a UUID", "/v1/orders/nope", "shop", 400, "invalid-request", true),
		get("wait not a duration", "/v1/orders/"+id+"?wait=soon", "shop", 400, "invalid-request", true),
		get("admin reads an order", "/v1/orders/"+id, "admin", 403, "forbidden", true),
		{name: "GET order without a key", method: "GET", path: "/v1/orders/" + id, status: 401, typ: "unauthorized", refused: true},
	} {
		c.check(t, h, x)
	}

	// Inventory.
	put := func(name, path, contentType, body, client string, status int, typ string, refused bool) exchange {
		return exchange{name: name, method: "PUT", path: path, contentType: contentType, body: body, headers: as(client), status: status, typ: typ, refused: refused}
	}
	for _, x := range []exchange{
		put("set stock", "/v1/inventory/SKU-1", j, `{"available":5}`, "admin", 202, "", false),
		put("negative stock", "/v1/inventory/SKU-1", j, `{"available":-1}`, "admin", 400, "invalid-stock-level", true),
		put("unknown stock field", "/v1/inventory/SKU-1", j, `{"available":1,"reserved":0}`, "admin", 400, "invalid-stock-level", true),
		put("stock not JSON", "/v1/inventory/SKU-1", j, `{"available":`, "admin", 400, "malformed-json", true),
		put("bad SKU", "/v1/inventory/bad%20sku", j, `{"available":1}`, "admin", 400, "invalid-request", true),
		put("text/plain stock", "/v1/inventory/SKU-1", "text/plain", `{"available":1}`, "admin", 415, "unsupported-media-type", true),
		put("shop sets stock", "/v1/inventory/SKU-1", j, `{"available":1}`, "shop", 403, "forbidden", true),
		get("stock not in the view", "/v1/inventory/SKU-1", "reader", 404, "not-found", false),
		get("stock with a bad SKU", "/v1/inventory/"+strings.Repeat("A", maxSKULen+1), "reader", 400, "invalid-request", true),
	} {
		c.check(t, h, x)
	}
	st := saga.NewStockState()
	st.Version, st.Available, st.Reserved, st.Sold, st.UpdatedAt = 3, 240, 7, 3, time.Now()
	h.writeTable(topology.InventoryTable(), "SKU-1", st.Encode())
	await.Until(t, "stock in the view", 10*time.Second, func() error {
		if v, err := h.stock.Get("SKU-1"); err != nil || v == nil {
			return errors.Join(errNotYet, err)
		}
		return nil
	})
	c.check(t, h, get("stock (admin)", "/v1/inventory/SKU-1", "admin", 200, "", false))
	c.check(t, h, get("stock (reader)", "/v1/inventory/SKU-1", "reader", 200, "", false))

	// Operations: public, even with authentication on.
	for _, x := range []exchange{
		{name: "healthz", method: "GET", path: "/healthz", status: 200},
		{name: "readyz", method: "GET", path: "/readyz", status: 200},
		{name: "metrics", method: "GET", path: "/metrics", status: 200},
		{name: "openapi.json", method: "GET", path: "/openapi.json", status: 200},
		{name: "dashboard", method: "GET", path: "/ui", status: 200},
		{name: "dashboard script", method: "GET", path: "/ui/app.js", status: 200},
		{name: "dashboard style", method: "GET", path: "/ui/style.css", status: 200},
		{name: "dashboard, no such file", method: "GET", path: "/ui/nope.js", status: 404, typ: "not-found"},
		{name: "front page", method: "GET", path: "/", status: 302, header: "Location", headerValue: "/ui"},
		{name: "openapi.json revalidated", method: "GET", path: "/openapi.json", headers: []string{"If-None-Match", openAPIETag()}, status: 304},
	} {
		c.check(t, h, x)
	}
}

// TestOpenAPIContractDegraded covers the answers of an edge whose views
// have not recovered (503) and of a client over its rate (429).
func TestOpenAPIContractDegraded(t *testing.T) {
	keysFile, keys, scopes := testKeys(t, contractClients())
	c := newContract(t, scopes)
	h := newHarness(t, options{deferViews: true, cfg: Config{APIKeysFile: keysFile, RateLimit: 0.001, RateBurst: 4}})
	shop := []string{"Authorization", "Bearer " + keys["shop"]}
	id, _ := saga.NewOrderID()
	for _, x := range []exchange{
		{name: "readyz recovering", method: "GET", path: "/readyz", status: 503},
		{name: "order, view recovering", method: "GET", path: "/v1/orders/" + id.String(), headers: shop, status: 503, typ: "not-ready"},
		{name: "stock, view recovering", method: "GET", path: "/v1/inventory/SKU-1", headers: shop, status: 503, typ: "not-ready"},
		{name: "keyed order, view recovering", method: "POST", path: "/v1/orders", contentType: "application/json", body: orderBody("c", "A:1"),
			headers: append([]string{"Idempotency-Key", "k"}, shop...), status: 503, typ: "not-ready"},
		{name: "keyed batch, view recovering", method: "POST", path: "/v1/orders:batch", contentType: "application/json", body: "[" + orderBody("c", "A:1") + "]",
			headers: append([]string{"Idempotency-Key", "k"}, shop...), status: 503, typ: "not-ready"},
		{name: "over the rate", method: "GET", path: "/v1/orders/" + id.String(), headers: shop, status: 429, typ: "rate-limited"},
		{name: "healthz is not rate limited", method: "GET", path: "/healthz", status: 200},
	} {
		c.check(t, h, x)
	}
}

// TestOpenAPIContractFailures covers 500 (a view that panics) and the
// answers with the broker gone: 503 (not produced) and 504 (outcome
// unknown).
func TestOpenAPIContractFailures(t *testing.T) {
	// This edge has no keys file, so it lets every caller in; the requests
	// carry a key all the same, which the validator's model accepts for
	// every scope, as the document requires one.
	c := newContract(t, map[string][]string{"any": {ScopeOrdersWrite, ScopeOrdersRead, ScopeInventoryAdmin}})
	key := []string{"Authorization", "Bearer any"}
	h := newHarness(t, options{cfg: Config{ProduceTimeout: time.Second}, ordersView: func(v View) View { return panickyView{v} }})
	id, _ := saga.NewOrderID()
	c.check(t, h, exchange{name: "view panics", method: "GET", path: "/v1/orders/" + id.String(), headers: key, status: 500, typ: "internal"})
	h.cluster.Close()
	for i := range 3 {
		c.check(t, h, exchange{name: fmt.Sprint("order ", i, " with the broker gone"), method: "POST", path: "/v1/orders", contentType: "application/json",
			body: orderBody(fmt.Sprint("c", i), "A:1"), headers: key, status: 504, orStatus: 503})
	}
	c.check(t, h, exchange{name: "stock with the broker gone", method: "PUT", path: "/v1/inventory/SKU-1", contentType: "application/json",
		body: `{"available":1}`, headers: key, status: 504, orStatus: 503})
}

// TestOpenAPIServed: GET /openapi.json answers the embedded document, byte
// for byte, as JSON, without a key, cacheable.
func TestOpenAPIServed(t *testing.T) {
	keysFile, _, _ := testKeys(t, contractClients())
	h := newHarness(t, options{cfg: Config{APIKeysFile: keysFile}})
	onDisk, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != openAPIDocument {
		t.Fatal("the embedded document differs from openapi.json")
	}
	r := h.do("GET", "/openapi.json", "", "")
	switch {
	case r.status != 200:
		t.Fatalf("GET /openapi.json without a key: got %d, want 200", r.status)
	case !bytes.Equal(r.body, onDisk):
		t.Errorf("GET /openapi.json: got %d bytes that differ from openapi.json's %d", len(r.body), len(onDisk))
	case r.header["Content-Type"] != "application/json":
		t.Errorf("Content-Type: got %q, want application/json", r.header["Content-Type"])
	case r.header["Cache-Control"] != openAPICacheControl || r.header["Etag"] != openAPIETag():
		t.Errorf("caching headers: got Cache-Control %q ETag %q, want %q and %q", r.header["Cache-Control"], r.header["Etag"], openAPICacheControl, openAPIETag())
	}
	for _, c := range []struct {
		ifNoneMatch string
		status      int
	}{
		{openAPIETag(), 304},
		{"W/" + openAPIETag(), 304},
		{`"other", ` + openAPIETag(), 304},
		{"*", 304},
		{`"other"`, 200},
	} {
		r := h.do("GET", "/openapi.json", "", "", "If-None-Match", c.ifNoneMatch)
		if r.status != c.status || (c.status == 304 && len(r.body) != 0) {
			t.Errorf("If-None-Match %s: got %d with %d bytes, want %d", c.ifNoneMatch, r.status, len(r.body), c.status)
		}
	}
	if r := h.do("HEAD", "/openapi.json", "", ""); r.status != 200 || len(r.body) != 0 {
		t.Errorf("HEAD /openapi.json: got %d with %d bytes, want 200 without a body", r.status, len(r.body))
	}
}

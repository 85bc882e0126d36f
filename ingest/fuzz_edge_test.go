package ingest

import (
	"bytes"
	"encoding/json"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/valyala/fasthttp"
)

// FuzzEdgeRequest sends arbitrary requests (method, URI, Content-Type,
// Authorization, Idempotency-Key, body) through the edge's whole handler,
// with authentication on, producing to an in-process broker. Every answer
// must have a status openapi.json documents for the operation (for a
// request that matches none, any documented status or 405), never 500 (the
// handler turns a panic into one), and a problem+json body that repeats
// the status for 4xx and 5xx. An order the edge accepts, alone or in a
// batch, must be one the reference decoder of FuzzDecodeOrder accepts.
//
// auth "shop", "reader" and "admin" stand for "Bearer " and that client's
// key, so that the fuzzer reaches past authentication; any other value is
// sent as the Authorization header itself.
func FuzzEdgeRequest(f *testing.F) {
	order := withItem(validItem)
	for _, seed := range []struct {
		method, uri, ct, auth, key string
		body                       string
	}{
		{"POST", "/v1/orders", "application/json", "shop", "", order},
		{"POST", "/v1/orders", "application/json", "shop", "k-1", order},
		{"POST", "/v1/orders", "application/json; charset=utf-8", "shop", "", manyItems(3)},
		{"POST", "/v1/orders", "text/plain", "shop", "", order},
		{"POST", "/v1/orders", "application/json", "", "", order},
		{"POST", "/v1/orders", "application/json", "Bearer nope", "", order},
		{"POST", "/v1/orders", "application/json", "reader", "", order},
		{"POST", "/v1/orders", "application/json", "shop", "", `{"customer_id":"c1","customer_id":"c2","items":[` + validItem + `],"currency":"EUR"}`},
		{"POST", "/v1/orders", "application/json", "shop", "", "{\"customer_id\":\"c\xff\",\"items\":[" + validItem + "],\"currency\":\"EUR\"}"},
		{"POST", "/v1/orders", "application/json", "shop", "", withItem(`{"sku":"A","quantity":9007199254740993,"unit_price_cents":1}`)},
		{"POST", "/v1/orders:batch", "application/json", "shop", "", "[" + order + ",5," + withField("currency", `"x"`) + "]"},
		{"POST", "/v1/orders:batch", "application/x-ndjson", "shop", "b-1", order + "\n{bad\n" + withItem(`{"sku":"B","quantity":2,"unit_price_cents":3}`) + "\n"},
		{"GET", "/v1/orders/0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e", "", "shop", "", ""},
		{"GET", "/v1/orders/not-an-id", "", "reader", "", ""},
		{"HEAD", "/v1/orders/0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e", "", "shop", "", ""},
		{"PUT", "/v1/inventory/A-1", "application/json", "admin", "", `{"available":5}`},
		{"PUT", "/v1/inventory/A-1", "application/json", "admin", "", `{"available":1,"available":2}`},
		{"GET", "/v1/inventory/A-1", "", "reader", "", ""},
		{"DELETE", "/v1/orders", "", "shop", "", ""},
		{"GET", "/healthz", "", "", "", ""},
		{"GET", "/readyz", "", "", "", ""},
		{"GET", "/openapi.json", "", "", "", ""},
		{"GET", "/nowhere/%2e%2e/v1/orders", "", "shop", "", ""},
	} {
		f.Add(seed.method, seed.uri, seed.ct, seed.auth, seed.key, []byte(seed.body))
	}

	keysFile, bearer := fuzzKeys(f)
	h := newHarness(f, options{cfg: Config{APIKeysFile: keysFile}})
	statuses := documentedStatuses(f)
	lim := h.edge.limits
	final, _ := saga.NewOrderID()
	finalState := (&saga.OrderState{Version: 2, OrderID: final, Status: saga.StatusConfirmed}).Encode()
	handler := h.edge.Handler()
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

	f.Fuzz(func(t *testing.T, method, uri, contentType, auth, idemKey string, body []byte) {
		var req fasthttp.Request
		req.Header.SetMethod(method)
		req.SetRequestURI(uri)
		if contentType != "" {
			req.Header.SetContentType(contentType)
		}
		if b, ok := bearer[auth]; ok {
			auth = b
		}
		if auth != "" {
			req.Header.Set(fasthttp.HeaderAuthorization, auth)
		}
		if idemKey != "" {
			req.Header.Set("Idempotency-Key", idemKey)
		}
		req.SetBody(body)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, remote, nil)
		handler(&ctx)

		status := ctx.Response.StatusCode()
		op := string(ctx.Method()) + " " + string(ctx.Path())
		if want := statuses.of(ctx.Method(), ctx.Path()); !want[status] {
			t.Fatalf("%s: got status %d, want one of %v (openapi.json): %s", op, status, slices.Sorted(maps.Keys(want)), ctx.Response.Body())
		}
		if status == fasthttp.StatusInternalServerError {
			t.Fatalf("%s: got 500 (a panic or a bug): %s", op, ctx.Response.Body())
		}
		if status >= 400 && !ctx.IsHead() {
			checkProblemAnswer(t, op, status, &ctx.Response)
		}
		if status < 200 || status > 299 || string(ctx.Method()) != fasthttp.MethodPost {
			return
		}
		switch string(ctx.Path()) {
		case "/v1/orders":
			if _, err := referenceDecode(body, lim); err != nil {
				t.Fatalf("%s: accepted with %d, but the reference refuses the body: %v", op, status, err)
			}
			var answer struct {
				OrderID string `json:"order_id"`
			}
			if err := json.Unmarshal(ctx.Response.Body(), &answer); err != nil || answer.OrderID == "" {
				t.Fatalf("%s: answer %s has no order_id: %v", op, ctx.Response.Body(), err)
			}
			// Final at once, as the orders view would report it, so that
			// admission control does not fill up with orders in flight.
			h.edge.orderUpdated(answer.OrderID, finalState)
		case "/v1/orders:batch":
			var results []batchResult
			if err := json.Unmarshal(ctx.Response.Body(), &results); err != nil {
				t.Fatalf("%s: the answer is not an array of results: %v: %s", op, err, ctx.Response.Body())
			}
			elems, err := batchElements(body, hasMediaType(req.Header.ContentType(), "application/x-ndjson"))
			if err != nil {
				t.Fatalf("%s: accepted with %d, but the body does not parse as a batch: %v", op, status, err)
			}
			if len(elems) != len(results) {
				t.Fatalf("%s: %d results for %d orders", op, len(results), len(elems))
			}
			for i, r := range results {
				if r.OrderID == "" {
					continue
				}
				if _, err := referenceDecode(elems[i], lim); err != nil {
					t.Fatalf("%s: order %d accepted as %s, but the reference refuses it: %v", op, i, r.OrderID, err)
				}
				h.edge.orderUpdated(r.OrderID, finalState)
			}
		}
	})
}

// checkProblemAnswer checks that an error answer is a problem that repeats
// its status.
func checkProblemAnswer(t *testing.T, op string, status int, resp *fasthttp.Response) {
	t.Helper()
	if ct := string(resp.Header.ContentType()); ct != "application/problem+json" {
		t.Fatalf("%s: %d with Content-Type %q, want application/problem+json", op, status, ct)
	}
	var p problem
	if err := json.Unmarshal(resp.Body(), &p); err != nil {
		t.Fatalf("%s: %d with a problem that is not JSON: %v: %s", op, status, err, resp.Body())
	}
	if p.Status != status || p.Title == "" || !strings.HasPrefix(p.Type, problemTypeBase) {
		t.Fatalf("%s: problem %+v does not match status %d or lacks type or title", op, p, status)
	}
}

// batchElements splits a batch body the way the edge reads it: the
// elements of a JSON array (by encoding/json, independently of the
// decoder), or the non-blank lines of NDJSON.
func batchElements(body []byte, ndjson bool) ([][]byte, error) {
	if !ndjson {
		var raw []json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, err
		}
		out := make([][]byte, len(raw))
		for i, r := range raw {
			out[i] = r
		}
		return out, nil
	}
	var out [][]byte
	for line := range bytes.SplitSeq(body, []byte{'\n'}) {
		if len(bytes.Trim(line, " \t\r")) > 0 {
			out = append(out, line)
		}
	}
	return out, nil
}

// fuzzKeys writes an API keys file with a client for each scope set of the
// contract tests and returns its path and each client's Authorization value.
func fuzzKeys(f *testing.F) (string, map[string]string) {
	f.Helper()
	bearer := map[string]string{}
	var lines []string
	for id, scopes := range contractClients() {
		key, line, err := NewAPIKey(id, scopes)
		if err != nil {
			f.Fatal(err)
		}
		bearer[id] = "Bearer " + key
		lines = append(lines, line)
	}
	path := filepath.Join(f.TempDir(), "keys")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	return path, bearer
}

// statusSets are the statuses openapi.json documents, per operation and
// in all.
type statusSets struct {
	ops map[string]map[int]bool // "GET /v1/orders/{order_id}" → statuses
	// unmatched are those of a request no operation matches: any
	// documented status, and 405, which OpenAPI has no operation to list
	// under.
	unmatched map[int]bool
}

func documentedStatuses(f *testing.F) statusSets {
	f.Helper()
	s := statusSets{ops: map[string]map[int]bool{}, unmatched: map[int]bool{fasthttp.StatusMethodNotAllowed: true}}
	for path, item := range loadOpenAPI(f).Paths.Map() {
		for method, op := range item.Operations() {
			set := map[int]bool{}
			for code := range op.Responses.Map() {
				n, err := strconv.Atoi(code)
				if err != nil {
					f.Fatalf("%s %s: response %q is not a status code", method, path, code)
				}
				set[n], s.unmatched[n] = true, true
			}
			s.ops[method+" "+path] = set
		}
	}
	return s
}

// of returns the statuses documented for a request: those of the operation
// whose path template matches path (HEAD as GET), or the unmatched set.
func (s statusSets) of(method, path []byte) map[int]bool {
	m := string(method)
	if m == fasthttp.MethodHead {
		m = fasthttp.MethodGet
	}
	for op, set := range s.ops {
		opMethod, template, _ := strings.Cut(op, " ")
		if opMethod == m && matchTemplate(template, string(path)) {
			return set
		}
	}
	return s.unmatched
}

// matchTemplate reports whether path fills an OpenAPI path template: each
// "{name}" segment matches one non-empty segment.
func matchTemplate(template, path string) bool {
	ts, ps := strings.Split(template, "/"), strings.Split(path, "/")
	if len(ts) != len(ps) {
		return false
	}
	for i, seg := range ts {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			if ps[i] == "" {
				return false
			}
		} else if seg != ps[i] {
			return false
		}
	}
	return true
}

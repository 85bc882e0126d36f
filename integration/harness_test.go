package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/internal/await"

	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/topology"
)

// backend is what a suite runs on. Both functions are called once per
// scenario and register their cleanup with t.
type backend struct {
	// kind names the broker, for the suite's summary.
	kind string
	// broker starts a fresh cluster and returns its seed brokers, and a
	// way to stop and start it (nil if it has none).
	broker func(t *testing.T) ([]string, brokerControl)
	// restartable: broker returns a brokerControl.
	restartable bool
	// database creates a fresh database and returns its URL.
	database func(t *testing.T) string
}

// localDatabase is a fresh database on the package's local PostgreSQL.
func localDatabase(t *testing.T) string {
	url, err := pg.CreateDatabase(t.Context(), fmt.Sprintf("it_%d", time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// brokerControl stops, kills and starts a single-broker cluster on the
// same data and address; *kafkatest.Kafka is one.
type brokerControl interface {
	Stop(ctx context.Context) error
	Kill(ctx context.Context) error
	Start(ctx context.Context) error
	Pid(ctx context.Context) (int, error)
}

// scenario is one behaviour checked end to end.
type scenario struct {
	name string
	run  func(e *env)
	// restartsBroker: the scenario stops and starts the broker, so it runs
	// only on backends with a brokerControl.
	restartsBroker bool
}

// env is what a scenario runs on: a fresh cluster and a fresh database.
type env struct {
	t       *testing.T
	kind    string
	brokers []string
	broker  brokerControl // nil: the backend cannot restart its broker
	pgURL   string
	http    *http.Client
}

// runSuite runs every scenario against clusters made by fresh, and says how
// many ran on which broker.
func runSuite(t *testing.T, b backend) {
	var passed, failed int
	for _, sc := range scenarios() {
		if sc.restartsBroker && !b.restartable {
			t.Logf("scenario %s stops and starts the broker, which %s cannot: it runs on the real-broker suite", sc.name, b.kind)
			continue
		}
		ran := false // t.Run also reports true for a scenario -run filtered out
		ok := t.Run(sc.name, func(t *testing.T) {
			ran = true
			brokers, ctl := b.broker(t)
			e := &env{t: t, kind: b.kind, brokers: brokers, broker: ctl, pgURL: b.database(t), http: &http.Client{
				Timeout:   30 * time.Second,
				Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256},
			}}
			sc.run(e)
		})
		switch {
		case !ran:
		case ok:
			passed++
		default:
			failed++
		}
	}
	t.Logf("scenario suite on %s: %d passed, %d failed", b.kind, passed, failed)
}

// start runs the given roles in this process against the scenario's
// cluster and database, until the test ends or Stop.
func (e *env) start(roles app.Roles, dataDir string) *apptest.Process {
	e.t.Helper()
	return apptest.StartFor(e.t, app.Config{
		Brokers: e.brokers, PostgresURL: e.pgURL, DataDir: dataDir, Topology: topology.DefaultConfig(),
	}, roles)
}

// startAll runs every role in one process, creating the topics.
func (e *env) startAll() *apptest.Process {
	return e.start(app.Roles{Ingest: true, Process: true, Sink: true, EnsureTopics: true}, e.t.TempDir())
}

type line struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Price    int    `json:"unit_price_cents"`
}

type order struct {
	CustomerID string `json:"customer_id"`
	Currency   string `json:"currency"`
	Items      []line `json:"items"`
}

func newOrder(items ...line) order { return order{CustomerID: "c-1", Currency: "EUR", Items: items} }

// do sends one request to the edge at base and decodes the JSON answer.
func (e *env) do(base, method, path string, body any, hdr map[string]string) (int, map[string]any) {
	e.t.Helper()
	code, out, err := e.tryDo(base, method, path, body, hdr)
	if err != nil {
		e.t.Fatal(err)
	}
	return code, out
}

// tryDo is do without t, for goroutines other than the test's: FailNow
// must only be called from the test's own goroutine.
func (e *env) tryDo(base, method, path string, body any, hdr map[string]string) (int, map[string]any, error) {
	return e.tryDoWith(base, method, path, body, hdr, nil)
}

// tryDoWith is tryDo that hands the answer's headers to gotHeader, if set.
func (e *env) tryDoWith(base, method, path string, body any, hdr map[string]string, gotHeader func(http.Header)) (int, map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+base+path, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if gotHeader != nil {
		gotHeader(resp.Header)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	var out map[string]any
	if len(b) > 0 && json.Unmarshal(b, &out) != nil {
		return 0, nil, fmt.Errorf("%s %s: status %d, body %q is not a JSON object", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, out, nil
}

func (e *env) setStock(base string, stock map[string]int) {
	e.t.Helper()
	for sku, n := range stock {
		if code, body := e.do(base, "PUT", "/v1/inventory/"+sku, map[string]any{"available": n}, nil); code != 202 {
			e.t.Fatalf("set stock of %s: %d %v", sku, code, body)
		}
	}
	await.Until(e.t, "stock visible", time.Minute, func() error {
		for sku, n := range stock {
			code, body := e.do(base, "GET", "/v1/inventory/"+sku, nil, nil)
			if code != 200 || body["available"] != float64(n) {
				return fmt.Errorf("%s: %d %v", sku, code, body)
			}
		}
		return nil
	})
}

// submit posts orders concurrently and returns their ids, in order; every
// one must be accepted.
func (e *env) submit(base string, orders []order) []string {
	e.t.Helper()
	ids, err := e.trySubmit(base, orders, submitConcurrency)
	if err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// submitConcurrency is how many orders submit posts at a time.
const submitConcurrency = 64

// trySubmit posts orders, n at a time, and returns their ids in order; it
// does not touch t, so it may run on a goroutine of its own.
func (e *env) trySubmit(base string, orders []order, n int) ([]string, error) {
	ids := make([]string, len(orders))
	var wg sync.WaitGroup
	sem := make(chan struct{}, n)
	errs := make(chan error, len(orders))
	for i, o := range orders {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			code, body, err := e.postShed(base, o)
			if err != nil {
				errs <- fmt.Errorf("order %d: %w", i, err)
				return
			}
			if code != 202 {
				errs <- fmt.Errorf("order %d: %d %v", i, code, body)
				return
			}
			ids[i], _ = body["order_id"].(string)
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return ids, errors.Join(all...)
}

// postShed posts o, and posts it again after a second each time the edge
// sheds it (503 overloaded: nothing was produced), as a client told to
// retry does, at most 60 times. A burst larger than the edge's admission
// limits is then taken in turn instead of refused.
func (e *env) postShed(base string, o order) (int, map[string]any, error) {
	for attempt := 1; ; attempt++ {
		code, body, err := e.tryDo(base, "POST", "/v1/orders", o, nil)
		if err != nil || code != 503 || body["type"] != "https://orderpipe.dev/problems/overloaded" || attempt == 60 {
			return code, body, err
		}
		t := time.NewTimer(time.Second) // the edge's Retry-After
		select {
		case <-t.C:
		case <-e.t.Context().Done():
			t.Stop()
			return code, body, err
		}
	}
}

// final waits until every order is confirmed or rejected and returns their
// API representations by id.
func (e *env) final(base string, ids []string, within time.Duration) map[string]map[string]any {
	e.t.Helper()
	out := make(map[string]map[string]any, len(ids))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	deadline := time.Now().Add(within)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for time.Now().Before(deadline) {
				code, body, err := e.tryDo(base, "GET", "/v1/orders/"+id+"?wait=5s", nil, nil)
				if err != nil {
					e.t.Error(err)
					return
				}
				if code == 200 && (body["status"] == "confirmed" || body["status"] == "rejected") {
					mu.Lock()
					out[id] = body
					mu.Unlock()
					return
				}
				if code != 200 && code != 404 && code != 503 {
					e.t.Errorf("GET order %s: %d %v", id, code, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(out) != len(ids) {
		e.t.Fatalf("%d of %d orders final within %s", len(out), len(ids), within)
	}
	return out
}

// checkConservation checks, through the API, that every SKU holds
// initial - confirmed units with nothing reserved, and returns the stock.
func (e *env) checkConservation(base string, initial map[string]int, orders map[string]map[string]any) map[string]int {
	e.t.Helper()
	confirmed := map[string]int{}
	for _, o := range orders {
		if o["status"] != "confirmed" {
			continue
		}
		for _, it := range o["items"].([]any) {
			m := it.(map[string]any)
			confirmed[m["sku"].(string)] += int(m["quantity"].(float64))
		}
	}
	stock := map[string]int{}
	await.Until(e.t, "inventory quiet and conserved", time.Minute, func() error {
		for sku, n := range initial {
			code, body := e.do(base, "GET", "/v1/inventory/"+sku, nil, nil)
			if code != 200 {
				return fmt.Errorf("%s: %d %v", sku, code, body)
			}
			avail, reserved := int(body["available"].(float64)), int(body["reserved"].(float64))
			sold := int(body["sold"].(float64))
			if reserved != 0 || avail < 0 || avail+confirmed[sku] != n || sold != confirmed[sku] {
				return fmt.Errorf("%s: available %d reserved %d sold %d, confirmed %d, initial %d", sku, avail, reserved, sold, confirmed[sku], n)
			}
			stock[sku] = avail
		}
		return nil
	})
	return stock
}

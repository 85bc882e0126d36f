package integration_test

import (
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// testReadYourWrites: read-your-writes on any edge (issue 11 item 1). Two
// edges, the processors beside the first: every order is posted on one
// edge and its Location read at once on the other, which has neither
// accepted it nor seen it in its view yet. None may answer 404; an unknown
// id still answers 404, quickly; and an edge restarted on its data dir,
// where nothing new happens to the table, answers both at once.
func testReadYourWrites(e *env) {
	const (
		orders  = 2000
		workers = 32
		unknown = 1000
		skus    = 40
	)
	dirB := e.t.TempDir()
	a := e.startLookup(app.Roles{Ingest: true, Process: true, Sink: true, EnsureTopics: true}, e.t.TempDir())
	b := e.startLookup(app.Roles{Ingest: true}, dirB)
	edges := []string{a.Addr, b.Addr}
	initial := stockOf(skus, 1_000_000)
	e.setStock(a.Addr, initial)

	var (
		mu       sync.Mutex
		ids      []string
		errs     []error
		got404   atomic.Int64
		got503   atomic.Int64
		unknowns []time.Duration
		shedBy   = map[string]int{} // the 503s of the GETs, by problem type and detail
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	all := randomOrders(orders, skus, 11)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= orders {
					return
				}
				post, get := edges[i%2], edges[(i+1)%2]
				var location string
				code, body, err := e.tryDoWith(post, "POST", "/v1/orders", all[i], nil, func(h http.Header) { location = h.Get("Location") })
				for attempt := 0; err == nil && code == 503 && attempt < 30; attempt++ {
					shed(e)
					code, body, err = e.tryDoWith(post, "POST", "/v1/orders", all[i], nil, func(h http.Header) { location = h.Get("Location") })
				}
				if err != nil || code != 202 || location == "" {
					fail(fmt.Errorf("order %d: POST on %s: %v %d %v (Location %q)", i, post, err, code, body, location))
					continue
				}
				id, _ := body["order_id"].(string)
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
				// At once, on the other edge. A 503 means retry; a 404
				// is the bug.
				for attempt := 0; ; attempt++ {
					code, body, err = e.tryDo(get, "GET", location, nil, nil)
					if err != nil {
						fail(fmt.Errorf("order %s: GET on %s: %w", id, get, err))
						break
					}
					if code == 404 {
						got404.Add(1)
						fail(fmt.Errorf("order %s: GET on the other edge right after its 202: 404 %v", id, body))
						break
					}
					if code == 503 && attempt < 30 {
						got503.Add(1)
						mu.Lock()
						detail, _, _ := strings.Cut(fmt.Sprint(body["detail"]), " order ")
						shedBy[path.Base(fmt.Sprint(body["type"]))+": "+detail]++
						mu.Unlock()
						shed(e)
						continue
					}
					if st := body["status"]; code != 200 || (st != "pending" && st != "confirmed" && st != "rejected") {
						fail(fmt.Errorf("order %s: GET on the other edge: %d %v, want 200 pending or final", id, code, body))
					}
					break
				}
			}
		}()
	}
	// Meanwhile, ids nobody used, on both edges: 404, or 503 when the
	// edge could not tell in time, which a client retries.
	var unknown503 atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range unknown {
			id, err := saga.NewOrderID()
			if err != nil {
				fail(err)
				return
			}
			for attempt := 0; ; attempt++ {
				start := time.Now()
				code, body, err := e.tryDo(edges[i%2], "GET", "/v1/orders/"+id.String(), nil, nil)
				took := time.Since(start)
				if err == nil && code == 503 && attempt < 30 {
					unknown503.Add(1)
					shed(e)
					continue
				}
				if err != nil || code != 404 {
					fail(fmt.Errorf("unknown id %s on %s: %v %d %v, want 404", id, edges[i%2], err, code, body))
				} else if attempt == 0 {
					mu.Lock()
					unknowns = append(unknowns, took)
					mu.Unlock()
				}
				break
			}
		}
	}()
	wg.Wait()
	for _, err := range errs[:min(len(errs), 20)] {
		e.t.Error(err)
	}
	if len(errs) > 0 {
		e.t.Fatalf("%d failures (%d × 404 on the other edge)", len(errs), got404.Load())
	}
	slices.Sort(unknowns)
	p50, p99 := unknowns[len(unknowns)/2], unknowns[len(unknowns)*99/100]
	e.t.Logf("%s: %d orders posted on one edge and read at once on the other: %d × 404, %d × 503 (retried, by reason %v); %d unknown ids during the load: all 404 in the end, %d × 503 first (retried); the 404s at the first try: p50 %s, p99 %s",
		e.kind, len(ids), got404.Load(), got503.Load(), shedBy, unknown, unknown503.Load(), p50, p99)
	if n := unknown503.Load(); n > unknown/50 {
		e.t.Errorf("%d of %d unknown ids got 503 before their 404, want at most 2%%", n, unknown)
	}
	// A sanity bound, not the target (5-20ms on a dedicated machine): on the
	// shared 2-core machine under -race it measured 0.4-0.95s.
	if p99 > 1500*time.Millisecond {
		e.t.Errorf("p99 of an unknown id's 404 under load: %s, want under 1.5s", p99)
	}

	final := e.final(a.Addr, ids, 3*time.Minute)
	e.final(b.Addr, ids, time.Minute)
	e.checkConservation(a.Addr, initial, final)

	// Restart b on its data dir: its table is up to date there, so it
	// applies nothing while it recovers.
	if err := b.Stop(); err != nil {
		e.t.Fatalf("stop edge b: %v", err)
	}
	b = e.startLookup(app.Roles{Ingest: true}, dirB)
	ready := time.Now()
	for i, id := range ids[:50] {
		if code, body, err := e.tryDo(b.Addr, "GET", "/v1/orders/"+id, nil, nil); err != nil || code != 200 {
			e.t.Errorf("restarted edge: known order %d: %v %d %v, want 200", i, err, code, body)
		}
		u, _ := saga.NewOrderID()
		start := time.Now()
		if code, body, err := e.tryDo(b.Addr, "GET", "/v1/orders/"+u.String(), nil, nil); err != nil || code != 404 || time.Since(start) > time.Second {
			e.t.Errorf("restarted edge: unknown id: %v %d %v after %s, want 404 within 1s", err, code, body, time.Since(start))
		}
	}
	e.t.Logf("restarted edge: 50 known orders 200 and 50 unknown ids 404 within %s of ready", time.Since(ready).Round(time.Millisecond))
}

// lookupTimeout is the edges' LookupTimeout in this scenario, above the
// default 500ms: under -race, on a shared 2-core machine, the in-process
// broker answered single requests in 30-300ms during the load, and a
// lookup takes two or three of them, after the one running before it.
const lookupTimeout = 2 * time.Second

// startLookup is env.start with lookupTimeout.
func (e *env) startLookup(roles app.Roles, dataDir string) *apptest.Process {
	e.t.Helper()
	return apptest.StartFor(e.t, app.Config{
		Brokers: e.brokers, PostgresURL: e.pgURL, DataDir: dataDir, Topology: topology.DefaultConfig(),
		Ingest: ingest.Config{LookupTimeout: lookupTimeout},
	}, roles)
}

// shed waits the edge's Retry-After (1s) before a retry, or until the test
// ends.
func shed(e *env) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.t.Context().Done():
	}
}

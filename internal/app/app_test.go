package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/internal/await"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/orderpipe/orderpipe/topology"
)

// system is one `orderpipe run` process on the in-process broker with a
// real PostgreSQL, reached over HTTP like a user would.
type system struct {
	t    *testing.T
	base string
	pg   *pglocal.Server
	url  string
	http *http.Client
}

func startSystem(t *testing.T) *system {
	t.Helper()
	pg := apptest.PostgresFor(t)
	s := &system{t: t, pg: pg, url: pg.URL(), http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256},
	}}
	proc := apptest.StartFor(t, app.Config{PostgresURL: s.url, Topology: topology.DefaultConfig()},
		app.Roles{Ingest: true, Process: true, Sink: true, EnsureTopics: true})
	s.base = "http://" + proc.Addr
	return s
}

func (s *system) do(method, path string, body any, hdr map[string]string) (int, map[string]any) {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			s.t.Fatalf("%s %s: status %d, body %q is not a JSON object: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, out
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

// TestOrdersEndToEnd is the core acceptance scenario: 2,000 concurrent orders
// over 20 SKUs with scarce stock, through HTTP, the processors and the sink.
func TestOrdersEndToEnd(t *testing.T) {
	s := startSystem(t)
	const skus, initial, orders = 20, 60, 2000
	for i := range skus {
		if code, body := s.do("PUT", fmt.Sprintf("/v1/inventory/SKU-%d", i), map[string]any{"available": initial}, nil); code != 202 {
			t.Fatalf("set stock: %d %v", code, body)
		}
	}
	await.Until(t, "stock visible", 30*time.Second, func() error {
		for i := range skus {
			code, body := s.do("GET", fmt.Sprintf("/v1/inventory/SKU-%d", i), nil, nil)
			if code != 200 || body["available"] != float64(initial) {
				return fmt.Errorf("SKU-%d: %d %v", i, code, body)
			}
		}
		return nil
	})

	start := time.Now()
	ids := make([]string, orders)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	errs := make(chan error, orders)
	for i := range orders {
		rng := rand.New(rand.NewPCG(uint64(i), 99))
		perm := rng.Perm(skus)[:1+rng.IntN(3)]
		o := order{CustomerID: fmt.Sprintf("c-%d", i%50), Currency: "EUR"}
		for _, p := range perm {
			o.Items = append(o.Items, line{SKU: fmt.Sprintf("SKU-%d", p), Quantity: 1 + rng.IntN(3), Price: 100 + p})
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// A 503 means the order will not happen and the client is to
			// retry: the edge sheds when too many lines of one SKU are in
			// flight, which a slow (loaded, -race) machine reaches with 128
			// clients on 20 SKUs. Retried a bounded number of times.
			var (
				code int
				body map[string]any
			)
			for attempt := 1; ; attempt++ {
				if code, body = s.do("POST", "/v1/orders", o, nil); code != 503 || attempt == 100 {
					break
				}
				select {
				case <-time.After(50 * time.Millisecond):
				case <-t.Context().Done():
					return
				}
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
	for err := range errs {
		t.Fatal(err)
	}
	accepted := time.Since(start)

	statuses := map[string]map[string]any{}
	var mu sync.Mutex
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				code, body := s.do("GET", "/v1/orders/"+id+"?wait=5s", nil, nil)
				if code == 200 && (body["status"] == "confirmed" || body["status"] == "rejected") {
					mu.Lock()
					statuses[id] = body
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	final := time.Since(start)
	if len(statuses) != orders {
		t.Fatalf("%d of %d orders final within a minute", len(statuses), orders)
	}
	t.Logf("%d orders: accepted in %s, all final in %s (%.0f orders/s end to end)", orders, accepted.Round(time.Millisecond), final.Round(time.Millisecond), orders/final.Seconds())

	// Conservation through the API: available + confirmed = initial, and
	// nothing reserved once quiet.
	confirmed := map[string]int{}
	var nConfirmed int
	for _, body := range statuses {
		if body["status"] != "confirmed" {
			continue
		}
		nConfirmed++
		for _, it := range body["items"].([]any) {
			m := it.(map[string]any)
			confirmed[m["sku"].(string)] += int(m["quantity"].(float64))
		}
	}
	if nConfirmed == 0 || nConfirmed == orders {
		t.Errorf("%d of %d confirmed: the scenario must both confirm and reject", nConfirmed, orders)
	}
	apiStock := map[string][2]int64{}
	await.Until(t, "inventory quiet", 30*time.Second, func() error {
		for i := range skus {
			sku := fmt.Sprintf("SKU-%d", i)
			code, body := s.do("GET", "/v1/inventory/"+sku, nil, nil)
			if code != 200 {
				return fmt.Errorf("%s: %d", sku, code)
			}
			avail, reserved := int(body["available"].(float64)), int(body["reserved"].(float64))
			if reserved != 0 {
				return fmt.Errorf("%s: %d still reserved", sku, reserved)
			}
			if avail < 0 || avail+confirmed[sku] != initial {
				t.Fatalf("%s: available %d + confirmed %d != %d", sku, avail, confirmed[sku], initial)
			}
			apiStock[sku] = [2]int64{int64(avail), 0}
		}
		return nil
	})

	// Postgres converges to what the API says.
	conn, err := pgx.Connect(t.Context(), s.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	await.Until(t, "postgres converged", 60*time.Second, func() error {
		rows, err := conn.Query(t.Context(), "select order_id::text, status from orders")
		if err != nil {
			return err
		}
		got := map[string]string{}
		for rows.Next() {
			var id, st string
			if err := rows.Scan(&id, &st); err != nil {
				return err
			}
			got[id] = st
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for id, body := range statuses {
			if got[id] != body["status"] {
				return fmt.Errorf("order %s: postgres %q, api %q (%d rows)", id, got[id], body["status"], len(got))
			}
		}
		for sku, st := range apiStock {
			var avail, reserved int64
			if err := conn.QueryRow(t.Context(), "select available, reserved from inventory where sku = $1", sku).Scan(&avail, &reserved); err != nil {
				return fmt.Errorf("%s: %w", sku, err)
			}
			if avail != st[0] || reserved != st[1] {
				return fmt.Errorf("%s: postgres available %d reserved %d, api %v", sku, avail, reserved, st)
			}
		}
		return nil
	})
	var items int
	if err := conn.QueryRow(t.Context(), "select count(*) from order_items").Scan(&items); err != nil || items < orders {
		t.Errorf("order_items: %d rows (%v), want at least %d", items, err, orders)
	}
}

// TestPostgresDownThenBack stops Postgres while orders flow: orders are still
// accepted, processed and readable from the cache, and the sink catches up
// when Postgres returns.
func TestPostgresDownThenBack(t *testing.T) {
	s := startSystem(t)
	if code, _ := s.do("PUT", "/v1/inventory/P", map[string]any{"available": 1000}, nil); code != 202 {
		t.Fatal("set stock failed")
	}
	if err := s.pg.Halt(t.Context()); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 50 {
		code, body := s.do("POST", "/v1/orders", order{CustomerID: "c", Currency: "EUR", Items: []line{{SKU: "P", Quantity: 1 + i%3, Price: 1}}}, nil)
		if code != 202 {
			t.Fatalf("order %d while postgres is down: %d %v", i, code, body)
		}
		ids = append(ids, body["order_id"].(string))
	}
	for _, id := range ids {
		await.Until(t, "order final while postgres is down", 30*time.Second, func() error {
			code, body := s.do("GET", "/v1/orders/"+id+"?wait=2s", nil, nil)
			if code != 200 || body["status"] != "confirmed" {
				return fmt.Errorf("%d %v", code, body)
			}
			return nil
		})
	}
	await.Until(t, "readiness says postgres is degraded", 30*time.Second, func() error {
		code, body := s.do("GET", "/readyz", nil, nil)
		if code != 200 || body["status"] != "degraded" {
			return fmt.Errorf("%d %v", code, body)
		}
		return nil
	})
	if err := s.pg.Resume(t.Context()); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), s.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	await.Until(t, "sink caught up", 90*time.Second, func() error {
		var n int
		if err := conn.QueryRow(t.Context(), "select count(*) from orders where status = 'confirmed' and order_id = any($1::uuid[])", ids).Scan(&n); err != nil {
			return err
		}
		if n != len(ids) {
			return fmt.Errorf("%d of %d orders in postgres", n, len(ids))
		}
		return nil
	})
	await.Until(t, "ready again", 30*time.Second, func() error {
		if code, body := s.do("GET", "/readyz", nil, nil); code != 200 || body["status"] != "ready" {
			return errors.New("not ready")
		}
		return nil
	})
}

package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/proctest"
	"github.com/orderpipe/orderpipe/saga"
)

type line struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Price    int    `json:"unit_price_cents"`
}

type orderBody struct {
	CustomerID string `json:"customer_id"`
	Currency   string `json:"currency"`
	Items      []line `json:"items"`
}

// clientOrder is one order of a client that retries as real clients do:
// on a 5xx and on a broken connection, with the same Idempotency-Key.
type clientOrder struct {
	key string
	// id is the order id the key gets (the edge derives it from the
	// anonymous client and the key), whether or not an answer said so.
	id    string
	items []line
	// intended is when the open-loop schedule meant to send it.
	intended time.Time
	attempts int
	// answers counts the answers by status; 0 is a transport error.
	answers map[int]int
	// broken is the first transport error.
	broken string
	// refusedAs counts the refusals by problem type.
	refusedAs map[string]int
	// refusals are how long each 429 or 503 took to come.
	refusals []time.Duration
	// unavailable are when each 503 and 504 came.
	unavailable []time.Time
	// accepted is when the 202 came; zero if none did.
	accepted time.Time
	// replayed: the 202 said an earlier attempt had landed.
	replayed bool
	// retryAfterMissing counts the 429s and 503s without Retry-After;
	// noRetryAfter is the first one's body.
	retryAfterMissing int
	noRetryAfter      string
	last              int
}

// load is an open-loop load: orders are started on a fixed schedule
// whatever the answers, and each is then retried by its own client until
// it is accepted or refused for good. Every loop is bounded.
type load struct {
	c    *cluster
	rate float64
	next func(n int, rng *rand.Rand) []line
	// prefix starts every key of the load.
	prefix string
	max    int
	// attempts bounds each client's attempts (default maxAttempts).
	attempts int

	mu     sync.Mutex
	orders []*clientOrder
	wg     sync.WaitGroup
	stop   chan struct{}
	// late counts orders started more than 100ms behind schedule: the
	// harness itself could not keep the rate.
	late atomic.Int64
}

const (
	// maxAttempts and maxRetrying bound each client's retries.
	maxAttempts = 60
	maxRetrying = 2 * time.Minute
	// maxClients bounds the clients in flight at once.
	maxClients = 8000
)

// startLoad starts orders at rate per second, at most max of them, with
// lines from next, keys prefix-N, each tried at most attempts times.
func (c *cluster) startLoad(prefix string, rate float64, max, attempts int, next func(n int, rng *rand.Rand) []line) *load {
	l := &load{c: c, rate: rate, next: next, prefix: prefix, max: max, attempts: attempts, stop: make(chan struct{})}
	l.wg.Add(1)
	go l.schedule()
	return l
}

func (l *load) schedule() {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(len(l.prefix)), 42))
	sem := make(chan struct{}, maxClients)
	interval := time.Duration(float64(time.Second) / l.rate)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for n := range l.max {
		intended := start.Add(time.Duration(n) * interval)
		timer.Reset(time.Until(intended))
		select {
		case <-l.stop:
			return
		case <-l.c.t.Context().Done():
			return
		case <-timer.C:
		}
		select {
		case sem <- struct{}{}:
		case <-l.stop:
			return
		}
		if time.Since(intended) > 100*time.Millisecond {
			l.late.Add(1)
		}
		key := fmt.Sprintf("%s-%d", l.prefix, n)
		o := &clientOrder{key: key, id: orderIDFor(key), items: l.next(n, rng), intended: intended, answers: map[int]int{}}
		l.mu.Lock()
		l.orders = append(l.orders, o)
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() { <-sem }()
			l.c.place(o, &l.mu, l.attempts)
		}()
	}
}

// orderIDFor is the id of the order of key: the edge derives it from the
// (anonymous) client and the key.
func orderIDFor(key string) string { return saga.OrderIDForKey("", key).String() }

// end stops starting orders and waits until every client is done.
func (l *load) end() []*clientOrder {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*clientOrder(nil), l.orders...)
}

// acceptedSince counts the orders accepted after t.
func (l *load) acceptedSince(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, o := range l.orders {
		if !o.accepted.IsZero() && o.accepted.After(t) {
			n++
		}
	}
	return n
}

// awaitAccepted waits until n orders were accepted after t.
func (l *load) awaitAccepted(n int, t time.Time, what string, within time.Duration) {
	l.c.t.Helper()
	await.Until(l.c.t, what, within, func() error {
		if got := l.acceptedSince(t); got < n {
			return fmt.Errorf("%d of %d accepted", got, n)
		}
		return nil
	})
}

// place posts o through the load balancer until it is accepted or
// refused for good (a 4xx other than 429), retrying after Retry-After (at
// most 1s) or a short backoff, at most attempts times. mu guards o, which
// the harness reads while the load runs.
func (c *cluster) place(o *clientOrder, mu *sync.Mutex, attempts int) {
	body, err := json.Marshal(orderBody{CustomerID: "c-1", Currency: "EUR", Items: o.items})
	if err != nil {
		panic(err) // a fixed struct always marshals
	}
	began := time.Now()
	backoff := 50 * time.Millisecond
	for attempt := 1; attempt <= attempts && time.Since(began) < maxRetrying; attempt++ {
		sent := time.Now()
		code, hdr, answer := c.post(body, o.key)
		took := time.Since(sent)
		mu.Lock()
		if code == 429 || code == 503 {
			o.refusals = append(o.refusals, took)
			if o.refusedAs == nil {
				o.refusedAs = map[string]int{}
			}
			o.refusedAs[problemType(answer)]++
		}
		if code == 0 && o.broken == "" {
			o.broken = string(answer)
		}
		if code == 503 || code == 504 {
			o.unavailable = append(o.unavailable, time.Now())
		}
		o.attempts, o.last = attempt, code
		o.answers[code]++
		if (code == 429 || code == 503) && hdr.Get("Retry-After") == "" {
			if o.retryAfterMissing == 0 {
				o.noRetryAfter = string(proctest.Tail(answer, 200))
			}
			o.retryAfterMissing++
		}
		if code == 202 {
			o.accepted = time.Now()
			o.replayed = hdr.Get("Idempotent-Replayed") == "true"
		}
		mu.Unlock()
		if code == 202 || (code >= 400 && code < 500 && code != 429) {
			return
		}
		wait := backoff
		if s, err := strconv.Atoi(hdr.Get("Retry-After")); err == nil {
			wait = min(time.Duration(s)*time.Second, time.Second)
		}
		backoff = min(2*backoff, time.Second)
		t := time.NewTimer(wait + rand.N(wait/2+1))
		select {
		case <-t.C:
		case <-c.t.Context().Done():
			t.Stop()
			return
		}
	}
}

// post sends one attempt and returns its status (0: no answer), headers
// and body.
func (c *cluster) post(body []byte, key string) (int, http.Header, []byte) {
	req, err := http.NewRequest("POST", "http://"+c.lb.Addr+"/v1/orders", bytes.NewReader(body))
	if err != nil {
		return 0, http.Header{}, nil
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, http.Header{}, []byte(err.Error())
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, http.Header{}, []byte(err.Error()) // a broken answer is no answer
	}
	return resp.StatusCode, resp.Header, answer
}

// problemType is the last part of a problem's type URI, "?" if the body
// is no problem.
func problemType(body []byte) string {
	var p struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(body, &p) != nil || p.Type == "" {
		return "?"
	}
	return path.Base(p.Type)
}

// getJSON GETs path through the load balancer.
func (c *cluster) getJSON(path string) (int, map[string]any, error) {
	resp, err := c.http.Get("http://" + c.lb.Addr + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	var out map[string]any
	if len(b) > 0 && json.Unmarshal(b, &out) != nil {
		return resp.StatusCode, nil, fmt.Errorf("GET %s: %d %q is not a JSON object", path, resp.StatusCode, b)
	}
	return resp.StatusCode, out, nil
}

// setStock sets every SKU's stock through the load balancer and waits
// until it reads back.
func (c *cluster) setStock(stock map[string]int) {
	c.t.Helper()
	for sku, n := range stock {
		b, _ := json.Marshal(map[string]int{"available": n})
		req, err := http.NewRequest("PUT", "http://"+c.lb.Addr+"/v1/inventory/"+sku, bytes.NewReader(b))
		if err != nil {
			c.t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.http.Do(req)
		if err != nil {
			c.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 202 {
			c.t.Fatalf("set stock of %s: %d", sku, resp.StatusCode)
		}
	}
	await.Until(c.t, "stock visible on both edges", time.Minute, func() error {
		for sku, n := range stock {
			for range 2 { // HAProxy alternates: both edges answer
				code, body, err := c.getJSON("/v1/inventory/" + sku)
				if err != nil || code != 200 || body["available"] != float64(n) {
					return fmt.Errorf("%s: %d %v %v", sku, code, body, err)
				}
			}
		}
		return nil
	})
}

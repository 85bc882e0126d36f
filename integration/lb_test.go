package integration_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/saga"
)

// haproxyBinary returns HAProxy's path: $ORDERPIPE_HAPROXY (set by
// .ci/run), else what scripts/ensure-haproxy.sh prints, which installs
// Debian's package when it is missing, as make test does.
func haproxyBinary() (string, error) {
	if p := os.Getenv("ORDERPIPE_HAPROXY"); p != "" {
		return p, nil
	}
	out, err := exec.Command("../scripts/ensure-haproxy.sh").Output()
	if err != nil {
		return "", fmt.Errorf("scripts/ensure-haproxy.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func freeAddr(e *env) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// spawnHAProxy runs HAProxy in the foreground with deploy/haproxy.cfg in
// front of the two edges, and returns its frontend and stats addresses.
func (e *env) spawnHAProxy(edge1, edge2 string) (lb, stats string, p *proc) {
	e.t.Helper()
	bin, err := haproxyBinary()
	if err != nil {
		e.t.Fatal(err)
	}
	lb, stats = freeAddr(e), freeAddr(e)
	cmd := exec.Command(bin, "-db", "-f", "../deploy/haproxy.cfg")
	cmd.Env = append(os.Environ(),
		"ORDERPIPE_LB_LISTEN="+lb, "ORDERPIPE_LB_STATS="+stats,
		"ORDERPIPE_LB_EDGE_1="+edge1, "ORDERPIPE_LB_EDGE_2="+edge2, "ORDERPIPE_LB_MAXCONN=2000")
	// HAProxy exits 143 on SIGTERM.
	p = e.startProcess("haproxy", cmd, false)
	return lb, stats, p
}

// serverStatus is HAProxy's view of the edges' backend: server -> status
// (UP, DOWN, "UP 1/2", ...), from its stats CSV.
func (e *env) serverStatus(stats string) (map[string]string, error) {
	resp, err := e.http.Get("http://" + stats + "/;csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimPrefix(buf.String(), "# "), "\n")
	cols := strings.Split(lines[0], ",")
	col := -1
	for i, c := range cols {
		if c == "status" {
			col = i
		}
	}
	if col < 0 {
		return nil, fmt.Errorf("no status column in %q", lines[0])
	}
	out := map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) > col && f[0] == "edges" && f[1] != "BACKEND" {
			out[f[1]] = f[col]
		}
	}
	return out, nil
}

// retried is one order of a retrying client: every attempt carries the
// same Idempotency-Key, as a real client's retries do.
type retried struct {
	key      string
	attempts int
	status   int  // the last answer; 0 for a transport error
	replayed bool // the 202 said Idempotent-Replayed: an earlier attempt had landed
	orderID  string
}

// postRetrying posts o with key until it is answered 202 or refused for
// good (4xx), retrying on 5xx and broken connections after Retry-After
// (at most 1s), at most 30 times.
func (e *env) postRetrying(lb, key string, o order) retried {
	r := retried{key: key}
	for r.attempts < 30 {
		r.attempts++
		code, body, hdr, err := e.tryDoHeader(lb, "POST", "/v1/orders", o, map[string]string{"Idempotency-Key": key})
		r.status = code
		if err == nil && code == 202 {
			r.orderID, _ = body["order_id"].(string)
			r.replayed = hdr.Get("Idempotent-Replayed") == "true"
			return r
		}
		if err == nil && code < 500 {
			return r
		}
		wait := 200 * time.Millisecond
		if err == nil && hdr.Get("Retry-After") != "" {
			wait = time.Second
		}
		// A client's backoff between attempts, cut short when the test ends.
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-e.t.Context().Done():
			t.Stop()
			return r
		}
	}
	return r
}

// tryDoHeader is tryDo that also returns the answer's headers.
func (e *env) tryDoHeader(base, method, path string, body any, hdr map[string]string) (int, map[string]any, http.Header, error) {
	var got http.Header
	code, out, err := e.tryDoWith(base, method, path, body, hdr, func(h http.Header) { got = h })
	return code, out, got, err
}

// testEdgeKillBehindLB: two edges behind HAProxy, a processor and a sink
// as processes; clients that retry with the same Idempotency-Key send
// orders through HAProxy; one edge is SIGKILLed. HAProxy must take it out,
// the retries must land on the other edge and create no second order, and
// every order answered 202 must become final, once, in the API and in
// Postgres.
func testEdgeKillBehindLB(e *env) {
	e.oneShot("topics")
	e.oneShot("migrate", "--postgres-url", e.pgURL)
	edges := []*proc{
		e.spawnRole("ingest-1", "ingest", "--listen", "127.0.0.1:0"),
		e.spawnRole("ingest-2", "ingest", "--listen", "127.0.0.1:0"),
	}
	others := []*proc{e.spawnRole("process-1", "process"), e.spawnRole("sink-1", "sink", "--postgres-url", e.pgURL)}
	addr1, addr2 := edges[0].ready(e), edges[1].ready(e)
	for _, p := range others {
		p.ready(e)
	}
	lb, stats, _ := e.spawnHAProxy(addr1, addr2)
	await.Until(e.t, "both edges up behind HAProxy", time.Minute, func() error {
		st, err := e.serverStatus(stats)
		if err != nil || st["ingest-1"] != "UP" || st["ingest-2"] != "UP" {
			return fmt.Errorf("%v %v", st, err)
		}
		return nil
	})
	initial := stockOf(20, 100000)
	e.setStock(lb, initial)

	var (
		mu      sync.Mutex
		results []retried
		wg      sync.WaitGroup
		stop    = make(chan struct{})
	)
	const clients = 16
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 11))
			for n := range 5000 { // bounded; stop ends it long before
				select {
				case <-stop:
					return
				default:
				}
				first := rng.IntN(20)
				var items []line
				for i := range 1 + rng.IntN(3) {
					items = append(items, line{SKU: fmt.Sprintf("S%d", (first+i)%20), Quantity: 1 + rng.IntN(3), Price: 100})
				}
				r := e.postRetrying(lb, fmt.Sprintf("lb-%d-%d", c, n), newOrder(items...))
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	accepted := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range results {
			if r.status == 202 {
				n++
			}
		}
		return n
	}
	await.Until(e.t, "300 orders accepted through HAProxy", 3*time.Minute, func() error {
		if n := accepted(); n < 300 {
			return fmt.Errorf("%d", n)
		}
		return nil
	})
	pid := edges[0].cmd.Process.Pid
	if err := edges[0].kill(); err != nil {
		e.t.Fatal(err)
	}
	killedAt := time.Now()
	await.Until(e.t, "HAProxy marks the killed edge DOWN", time.Minute, func() error {
		st, err := e.serverStatus(stats)
		if err != nil || !strings.HasPrefix(st["ingest-1"], "DOWN") {
			return fmt.Errorf("%v %v", st, err)
		}
		return nil
	})
	e.t.Logf("ingest-1 (pid %d) SIGKILLed; HAProxy marked it DOWN after %s", pid, time.Since(killedAt).Round(time.Millisecond))
	before := accepted()
	await.Until(e.t, "300 more orders accepted after the kill", 3*time.Minute, func() error {
		if n := accepted() - before; n < 300 {
			return fmt.Errorf("%d", n)
		}
		return nil
	})
	close(stop)
	wg.Wait()

	var ids []string
	keys := map[string]bool{}
	retriedAfterFailure, replayed := 0, 0
	for _, r := range results {
		if keys[r.key] {
			e.t.Errorf("key %s used by two orders of the test", r.key)
		}
		keys[r.key] = true
		if r.status != 202 {
			e.t.Errorf("order %s: gave up after %d attempts, last answer %d", r.key, r.attempts, r.status)
			continue
		}
		if want := saga.OrderIDForKey("", r.key).String(); r.orderID != want {
			e.t.Errorf("order %s: id %s, want %s (the key's)", r.key, r.orderID, want)
		}
		if r.attempts > 1 {
			retriedAfterFailure++
		}
		if r.replayed {
			replayed++
		}
		ids = append(ids, r.orderID)
	}
	e.t.Logf("%d orders through HAProxy, all accepted; %d needed more than one attempt, %d of those had landed before their retry (Idempotent-Replayed)",
		len(results), retriedAfterFailure, replayed)
	if retriedAfterFailure == 0 {
		e.t.Errorf("no order needed a retry: the kill did not reach the clients")
	}
	final := e.final(lb, ids, 3*time.Minute)
	stock := e.checkConservation(lb, initial, final)
	// One order per key: Postgres holds exactly the accepted orders.
	e.checkPostgres(final, stock)
}

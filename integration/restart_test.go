package integration_test

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/proctest"
	"github.com/orderpipe/orderpipe/saga"
)

// outage is how long the broker stays away in the restart scenarios: about
// what a rolling restart of one broker takes.
const outage = 15 * time.Second

// produceTimeout is the edges' --produce-timeout in these scenarios.
const produceTimeout = 3 * time.Second

// testBrokerKillRun: `orderpipe run` as one process, steady load, and the
// broker SIGKILLed, then started again after 15s.
func testBrokerKillRun(e *env) {
	p := e.spawnRole("run-1", "run", "--listen", "127.0.0.1:0", "--postgres-url", e.pgURL,
		"--data-dir", e.t.TempDir(), "--produce-timeout", produceTimeout.String())
	e.rideOutBrokerOutage(ready(e, p), []*proc{p}, true)
}

// attempt is one POST of the load and its answer.
type attempt struct {
	key        string
	sent, done time.Time
	status     int // 0: no answer (a transport error)
	orderID    string
	problem    string // the problem type of a refusal
	err        error
}

// load posts orders with an Idempotency-Key each, from clients at a steady
// rate, never retrying: every key is one attempt whose answer is final for
// the test. It stops at stop or after max attempts per client.
type load struct {
	mu       sync.Mutex
	attempts []attempt
	wg       sync.WaitGroup
	stop     chan struct{}
}

func (e *env) startLoad(edge string, clients int, every time.Duration, skus int) *load {
	l := &load{stop: make(chan struct{})}
	const maxPerClient = 2000 // bounds the loop: ~2000 x every per client
	for c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			t := time.NewTicker(every)
			defer t.Stop()
			for n := range maxPerClient {
				select {
				case <-l.stop:
					return
				case <-t.C:
				}
				var items []line
				first := rng.IntN(skus)
				for i := range 1 + rng.IntN(3) {
					items = append(items, line{SKU: fmt.Sprintf("S%d", (first+i)%skus), Quantity: 1 + rng.IntN(3), Price: 100}) // stockOf's names
				}
				a := attempt{key: fmt.Sprintf("load-%d-%d", c, n), sent: time.Now()}
				code, body, err := e.tryDo(edge, "POST", "/v1/orders", newOrder(items...), map[string]string{"Idempotency-Key": a.key})
				a.done, a.status, a.err = time.Now(), code, err
				if code == 202 {
					a.orderID, _ = body["order_id"].(string)
				} else if typ, ok := body["type"].(string); ok {
					a.problem = path.Base(typ)
				}
				l.mu.Lock()
				l.attempts = append(l.attempts, a)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) end() []attempt {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]attempt(nil), l.attempts...)
}

// count counts the attempts with status, or all when status is -1, among
// those answered after since.
func (l *load) count(status int, since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.attempts {
		if a.done.After(since) && (status == -1 || a.status == status) {
			n++
		}
	}
	return n
}

// rideOutBrokerOutage drives load through edge, takes the broker away for
// the outage (SIGKILL when kill, else a graceful stop) and brings it back,
// then checks from outside that every process kept running, that the edge
// answered 503 during the gap and nothing answered 503 happened, that every
// order answered 202 became final, and that stock and Postgres agree.
func (e *env) rideOutBrokerOutage(edge string, procs []*proc, kill bool) {
	ctx := e.t.Context()
	initial := stockOf(20, 100000)
	e.setStock(edge, initial)
	l := e.startLoad(edge, 16, 60*time.Millisecond, 20)
	began := time.Now()
	e.awaitCount(l, 202, began, 300, "orders accepted before the outage")

	pid0, err := e.broker.Pid(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	gapStart := time.Now()
	how := "stopped (SIGTERM)"
	if kill {
		how = "SIGKILLed"
		err = e.broker.Kill(ctx)
	} else {
		err = e.broker.Stop(ctx)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	stopped := time.Since(gapStart)
	// The outage itself: a fault held for its length, not a wait for a
	// condition.
	hold := time.NewTimer(outage - stopped)
	select {
	case <-hold.C:
	case <-ctx.Done():
		hold.Stop()
		e.t.Fatal("the test ended during the outage")
	}
	if err := e.broker.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	gapEnd := time.Now()
	pid1, err := e.broker.Pid(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if pid1 == pid0 {
		e.t.Fatalf("the broker's pid is still %d: it was not restarted", pid0)
	}
	e.t.Logf("broker %s (pid %d, down in %s), started again after %s (pid %d)", how, pid0, stopped.Round(time.Millisecond), gapEnd.Sub(gapStart).Round(time.Millisecond), pid1)

	// Recovery: the first order sent after the broker is back and accepted.
	recovered := e.awaitFirstAccepted(l, gapEnd, 3*time.Minute)
	e.awaitCount(l, 202, recovered, 300, "orders accepted after the outage")
	attempts := l.end()
	e.t.Logf("first order accepted %s after the broker was back", recovered.Sub(gapEnd).Round(time.Millisecond))

	for _, p := range procs {
		select {
		case <-p.Exited():
			e.t.Fatalf("%s exited during the outage (%v): %s", p.Name, p.Cmd.ProcessState, proctest.Tail(p.Output(), 3000))
		default:
		}
	}

	// Sort the answers.
	inGap, problems := map[int]int{}, map[string]int{}
	var accepted, refused, unknown []attempt
	var slowest503 time.Duration
	for _, a := range attempts {
		if !a.sent.Before(gapStart) && a.sent.Before(gapEnd) {
			inGap[a.status]++
		}
		switch a.status {
		case 202:
			accepted = append(accepted, a)
		case 503:
			refused = append(refused, a)
			problems[a.problem]++
			slowest503 = max(slowest503, a.done.Sub(a.sent))
		case 504:
			unknown = append(unknown, a)
		default:
			e.t.Errorf("order %s: status %d (%v), want 202, 503 or 504", a.key, a.status, a.err)
		}
	}
	e.t.Logf("%d orders sent: %d answered 202, %d 503, %d 504; sent during the gap: %d 202s, %d 503s, %d 504s; slowest 503 %s (produce timeout %s)",
		len(attempts), len(accepted), len(refused), len(unknown), inGap[202], inGap[503], inGap[504], slowest503.Round(time.Millisecond), produceTimeout)
	e.t.Logf("503s by problem type: %v", problems)
	if inGap[503] == 0 {
		e.t.Errorf("no 503 during the gap: the outage did not reach the edge")
	}
	if slowest503 > produceTimeout+time.Second {
		e.t.Errorf("slowest 503 took %s, want within the produce timeout %s", slowest503, produceTimeout)
	}

	ids := make([]string, 0, len(accepted))
	for _, a := range accepted {
		ids = append(ids, a.orderID)
	}
	final := e.final(edge, ids, 3*time.Minute)
	e.t.Logf("all %d accepted orders final %s after the broker was back", len(final), time.Since(gapEnd).Round(time.Millisecond))

	// Nothing answered 503 exists; an order answered 504 may (its record
	// reached the broker) and then counts like any other. Every accepted
	// order is final, so the edge's view has seen every order there is.
	for _, a := range append(refused, unknown...) {
		id := saga.OrderIDForKey("", a.key).String() // the anonymous client's id is ""
		path := "/v1/orders/" + id
		if a.status == 504 {
			path += "?wait=2s" // one stored late may still be on its way to the view
		}
		// A 503 here is the edge saying it cannot tell yet (the lookup's
		// broker round trips outlived --lookup-timeout on a busy machine):
		// a client asks again, and so does the test.
		var (
			code int
			body map[string]any
		)
		await.Until(e.t, "an answer other than 503 for order "+a.key, time.Minute, func() error {
			code, body = e.do(edge, "GET", path, nil, nil)
			if code == 503 {
				return fmt.Errorf("503 %v", body)
			}
			return nil
		})
		switch {
		case a.status == 503 && code != 404:
			e.t.Errorf("order %s was answered 503 but exists: %d %v", a.key, code, body)
		case a.status == 504 && code == 200:
			if body["status"] != "confirmed" && body["status"] != "rejected" {
				body = e.final(edge, []string{id}, time.Minute)[id]
			}
			final[id] = body
		case a.status == 504 && code != 404:
			e.t.Errorf("order %s (answered 504): GET answered %d %v", a.key, code, body)
		}
	}
	stock := e.checkConservation(edge, initial, final)
	e.checkPostgres(final, stock)
	e.t.Logf("stock conserved and Postgres converged over %d orders, %s after the broker was back", len(final), time.Since(gapEnd).Round(time.Millisecond))
	e.checkProducerCleanLogs(procs)
	e.checkDetectors(edge)
}

// checkProducerCleanLogs: the processors rode the outage out without a
// broken producer sequence and without rebuilding a processor group (with
// Goka's Sarama producer, "out of order sequence number" errors made a
// group fail and rebuild its in-memory table after every broker restart).
func (e *env) checkProducerCleanLogs(procs []*proc) {
	e.t.Helper()
	for _, p := range procs {
		var outOfOrder, rebuilds int
		for l := range strings.Lines(string(p.Output())) {
			low := strings.ToLower(l)
			if strings.Contains(low, "out of order sequence") || strings.Contains(low, "out_of_order_sequence") || strings.Contains(low, "message out of sequence") {
				outOfOrder++
			}
			if strings.Contains(l, `msg="role failed, restarting it"`) && strings.Contains(l, "processor") {
				rebuilds++
			}
		}
		e.t.Logf("%s: %d processor restarts, %d out-of-sequence log lines", p.Name, rebuilds, outOfOrder)
		if outOfOrder > 0 || rebuilds > 0 {
			e.t.Errorf("%s: %d processor restarts and %d out-of-sequence log lines, want 0: %s", p.Name, rebuilds, outOfOrder, proctest.Tail(p.Output(), 3000))
		}
	}
}

// checkDetectors reads addr's /metrics: the producer's data-loss counter,
// the tables' regressions and the inventory's state-behind count must all
// be 0 (docs/producer.md).
func (e *env) checkDetectors(addr string) {
	e.t.Helper()
	resp, err := e.http.Get("http://" + addr + "/metrics")
	if err != nil {
		e.t.Errorf("read the detectors: %v", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Errorf("read the detectors: %v", err)
		return
	}
	seen := map[string]bool{}
	for l := range strings.Lines(string(b)) {
		for _, name := range []string{"orderpipe_producer_data_loss_total", "orderpipe_table_regressions_total", "orderpipe_inventory_state_behind_total"} {
			if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != '{' && l[len(name)] != ' ') {
				continue
			}
			seen[name] = true
			if f := strings.Fields(l); f[len(f)-1] != "0" {
				e.t.Errorf("detector %s", strings.TrimSpace(l))
			}
		}
	}
	// The counters without labels are always there; the labelled ones
	// only once counted, which is what must not happen.
	if !seen["orderpipe_inventory_state_behind_total"] {
		e.t.Errorf("%s/metrics has no orderpipe_inventory_state_behind_total: the detectors are not wired", addr)
	}
}

// awaitCount waits until the load has n answers with status after since.
func (e *env) awaitCount(l *load, status int, since time.Time, n int, what string) {
	e.t.Helper()
	await.Until(e.t, what, 3*time.Minute, func() error {
		if got := l.count(status, since); got < n {
			return fmt.Errorf("%d of %d (answers since: %d)", got, n, l.count(-1, since))
		}
		return nil
	})
}

// awaitFirstAccepted waits for the first order sent after t that was
// accepted, and returns when it was answered.
func (e *env) awaitFirstAccepted(l *load, t time.Time, within time.Duration) time.Time {
	e.t.Helper()
	var first time.Time
	await.Until(e.t, "an order sent after the broker's return accepted", within, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, a := range l.attempts {
			if a.status == 202 && a.sent.After(t) && (first.IsZero() || a.done.Before(first)) {
				first = a.done
			}
		}
		if first.IsZero() {
			return errors.New("none yet")
		}
		return nil
	})
	return first
}

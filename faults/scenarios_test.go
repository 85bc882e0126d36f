package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/health"
	"github.com/orderpipe/orderpipe/internal/proctest"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kgo"
)

// scenarios are run in this order, each on what the one before left: a
// fault is healed before the next one.
func scenarios() []scenario {
	return []scenario{
		{name: "process-kill", short: true, fault: func(r *run) { r.killProcesses(1) }},
		{name: "process-kill-x5", fault: func(r *run) { r.killProcesses(5) }},
		{name: "broker-stop-15s", short: true, fault: func(r *run) { r.brokerOutage(false) }},
		{name: "broker-kill", fault: func(r *run) { r.brokerOutage(true) }},
		{name: "postgres-down-30s", short: true, fault: func(r *run) { r.postgresDown(30 * time.Second) }},
		{name: "postgres-down-300s", max: 90000, converge: 5 * time.Minute, fault: func(r *run) { r.postgresDown(300 * time.Second) }},
		{name: "sink-kill", fault: (*run).killSink},
		{name: "postgres-kill", fault: (*run).killPostgres},
		{name: "ingest-kill", short: true, fault: (*run).killIngest},
		{name: "poison", short: true, fault: (*run).poison},
		{name: "rebalance-1-3-1", fault: (*run).rebalance131},
		{name: "overload", rate: 20, fault: (*run).overload},
		{name: "rebuild", fault: (*run).rebuild, check: (*run).compareRebuild},
		{name: "oversell", short: true, skus: 1, stock: 100, rate: 200, max: 1000, burst: true, soldOut: true, lines: oneUnit, fault: (*run).rebalanceDuringBurst},
	}
}

// oneUnit: one unit of the scenario's one SKU.
func oneUnit(skus []string, _ int, _ *rand.Rand) []line {
	return []line{{SKU: skus[0], Quantity: 1, Price: 100}}
}

// memberIDs is, per client id, the member id the coordinator gave each
// member of group: a new id for a client is a rejoin, seen by the broker.
func (c *cluster) memberIDs(group string) (map[string]string, error) {
	gs, err := c.adm.DescribeGroups(c.t.Context(), group)
	if err != nil {
		return nil, err
	}
	g, ok := gs[group]
	if !ok || g.Err != nil {
		return nil, fmt.Errorf("group %s: %v", group, g.Err)
	}
	out := map[string]string{}
	for _, m := range g.Members {
		out[m.ClientID] = m.MemberID
	}
	return out, nil
}

// awaitMembers waits until exactly the named clients are the members of
// both processor groups, and returns the orders group's member ids.
func (c *cluster) awaitMembers(names ...string) map[string]string {
	c.t.Helper()
	var ids map[string]string
	await.Until(c.t, fmt.Sprintf("processor groups made of %v", names), 2*time.Minute, func() error {
		for _, g := range []string{string(topology.OrdersGroup), string(topology.InventoryGroup)} {
			m, err := c.memberIDs(g)
			if err != nil {
				return err
			}
			if len(m) != len(names) {
				return fmt.Errorf("group %s: members %v", g, m)
			}
			for _, n := range names {
				if m[n] == "" {
					return fmt.Errorf("group %s: members %v", g, m)
				}
			}
			if g == string(topology.OrdersGroup) {
				ids = m
			}
		}
		return nil
	})
	return ids
}

// killProcesses SIGKILLs process-1 n times mid-load, each time restarting
// it on its data dir once the survivor has taken its partitions.
func (r *run) killProcesses(n int) {
	c, m := r.c, r.c.procs[0]
	before := c.awaitMembers("process-1", "process-2")
	for i := range n {
		r.load.awaitAccepted(100*(i+1), r.faultAt, "orders accepted before the kill", 2*time.Minute)
		pid := c.kill(m)
		alone := c.awaitMembers("process-2")
		c.start(m)
		after := c.awaitMembers("process-1", "process-2")
		if after["process-1"] != before["process-1"] && m.p.Pid() != pid {
			r.evidenced("kill %d: process-1 pid %d SIGKILLed; the coordinator gave its partitions to %v, then it rejoined as pid %d with member id %s (was %s)",
				i+1, pid, keys(alone), m.p.Pid(), short(after["process-1"]), short(before["process-1"]))
		} else {
			r.breach("kill %d: no rejoin seen: member ids %v then %v, pids %d then %d", i+1, before, after, pid, m.p.Pid())
		}
		before = after
	}
	r.healed()
}

// brokerOutage stops the broker (SIGKILL when kill) and starts it again
// 15s later, on its data.
func (r *run) brokerOutage(kill bool) {
	c, ctx := r.c, r.c.t.Context()
	pid0, err := c.kafka.Pid(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	if kill {
		err = c.kafka.Kill(ctx)
	} else {
		err = c.kafka.Stop(ctx)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	stopped := time.Now()
	watch := r.watchReady(c.edges[1].addr)
	id := r.acceptedID()
	r.hold(15*time.Second - time.Since(r.faultAt))
	// The cache serves reads while the broker is away.
	if code, body, err := c.getJSON("/v1/orders/" + id); err != nil || code != 200 {
		r.breach("GET %s with the broker down: %d %v %v", id, code, body, err)
	}
	if err := c.kafka.Start(ctx); err != nil {
		c.t.Fatal(err)
	}
	r.healed()
	c.t.Logf("the broker was down in %s and back %s after; ingest-2's /readyz meanwhile: %v",
		stopped.Sub(r.faultAt).Round(time.Millisecond), r.healAt.Sub(stopped).Round(time.Millisecond), watch())
	pid1, err := c.kafka.Pid(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	how := "stopped"
	if kill {
		how = "SIGKILLed"
	}
	if pid1 != pid0 {
		r.evidenced("the broker (pid %d) %s, back after %s as pid %d", pid0, how, r.healAt.Sub(r.faultAt).Round(time.Millisecond), pid1)
	}
	c.awaitLB("both edges UP again after the broker's return", func(st map[string]string) bool {
		return st["ingest-1"] == "UP" && st["ingest-2"] == "UP"
	})
}

// postgresDown stops Postgres for d. Orders must still be taken, and the
// sink's /readyz must say it is degraded, not the edges'.
func (r *run) postgresDown(d time.Duration) {
	c, ctx := r.c, r.c.t.Context()
	pid0 := c.pg.Pid()
	if err := c.pg.Halt(ctx); err != nil {
		c.t.Fatal(err)
	}
	watch := r.watchReady(c.sink.addr)
	watchEdge := r.watchReady(c.edges[1].addr)
	id := r.acceptedID()
	r.hold(d - time.Since(r.faultAt))
	// The cache serves reads while the database is away.
	if code, body, err := c.getJSON("/v1/orders/" + id); err != nil || code != 200 {
		r.breach("GET %s with Postgres down: %d %v %v", id, code, body, err)
	}
	acked := r.load.acceptedSince(r.faultAt)
	if err := c.pg.Resume(ctx); err != nil {
		c.t.Fatal(err)
	}
	r.healed()
	degraded := watch()[health.Degraded]
	if edge := watchEdge(); len(edge) != 1 || edge[health.Ready] == "" {
		r.breach("ingest-2's readiness while Postgres was down: %v, want ready throughout", edge)
	}
	if acked == 0 {
		r.breach("no order accepted while Postgres was down")
	}
	if degraded != "" && c.pg.Pid() != pid0 {
		r.evidenced("postgres (pid %d) down for %s, back as pid %d; the sink said %q on /readyz; %d orders accepted meanwhile",
			pid0, r.healAt.Sub(r.faultAt).Round(time.Millisecond), c.pg.Pid(), degraded, acked)
	}
}

// watchReady polls addr's /readyz until the returned func is called,
// which returns the first answer seen for each readiness status.
func (r *run) watchReady(addr string) func() map[string]string {
	c := r.c
	ctx, cancel := context.WithCancel(c.t.Context())
	seen := map[string]string{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sleepCtx(ctx, 250*time.Millisecond) {
			resp, err := c.http.Get("http://" + addr + "/readyz")
			if err != nil {
				if _, ok := seen["unreachable"]; !ok {
					seen["unreachable"] = err.Error()
				}
				continue
			}
			var rep health.Report
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_ = json.Unmarshal(b, &rep)
			if _, ok := seen[rep.Status]; !ok {
				seen[rep.Status] = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
			}
		}
	}()
	return func() map[string]string {
		cancel()
		wg.Wait()
		return seen
	}
}

// acceptedID is the id of an order accepted before the fault.
func (r *run) acceptedID() string {
	r.load.mu.Lock()
	defer r.load.mu.Unlock()
	for _, o := range r.load.orders {
		if !o.accepted.IsZero() {
			return o.id
		}
	}
	r.c.t.Fatal("no order accepted before the fault")
	return ""
}

// killSink SIGKILLs the sink under load (it writes a batch every few ms),
// three times, restarting it.
func (r *run) killSink() {
	c := r.c
	for i := range 3 {
		r.load.awaitAccepted(150*(i+1), r.faultAt, "orders accepted before the sink's kill", 2*time.Minute)
		pid := c.kill(c.sink)
		c.start(c.sink)
		if c.sink.p.Pid() != pid {
			r.evidenced("kill %d: sink pid %d SIGKILLed under load, restarted as pid %d", i+1, pid, c.sink.p.Pid())
		}
	}
	r.healed()
}

// killPostgres SIGKILLs the postmaster and its backends during batches,
// and starts it again (crash recovery).
func (r *run) killPostgres() {
	c, ctx := r.c, r.c.t.Context()
	logBefore := len(c.sink.p.Output())
	pid0 := c.pg.Pid()
	if err := c.pg.Kill(); err != nil {
		c.t.Fatal(err)
	}
	r.hold(5 * time.Second)
	if err := c.pg.Resume(ctx); err != nil {
		c.t.Fatal(err)
	}
	r.healed()
	sinkLog := c.sink.p.Output()[logBefore:]
	if c.pg.Pid() != pid0 && bytes.Contains(sinkLog, []byte("level=")) && (bytes.Contains(sinkLog, []byte("WARN")) || bytes.Contains(sinkLog, []byte("ERROR"))) {
		r.evidenced("postgres pid %d SIGKILLed, recovered as pid %d; the sink logged: %s", pid0, c.pg.Pid(), firstLine(sinkLog, "postgres"))
	}
}

// killIngest SIGKILLs ingest-1 behind HAProxy: HAProxy must take it out
// and the clients' retries land on ingest-2. Then it comes back.
func (r *run) killIngest() {
	c := r.c
	m := c.edges[0]
	pid := c.kill(m)
	killed := time.Now()
	c.awaitLB("HAProxy marks the killed edge DOWN", func(st map[string]string) bool { return strings.HasPrefix(st["ingest-1"], "DOWN") })
	r.evidenced("ingest-1 (pid %d) SIGKILLed; HAProxy's stats show it DOWN %s later", pid, time.Since(killed).Round(time.Millisecond))
	r.load.awaitAccepted(200, killed, "orders accepted on the other edge", 2*time.Minute)
	c.start(m)
	c.awaitLB("ingest-1 UP again", func(st map[string]string) bool { return st["ingest-1"] == "UP" })
	r.healed()
}

// poison writes records no decoder accepts straight into every input
// topic. Each must reach the dead-letter topic with its reason and origin.
func (r *run) poison() {
	c, ctx := r.c, r.c.t.Context()
	inputs := []string{string(topology.OrdersSubmitted), string(topology.InventoryCommands), string(topology.InventoryResults)}
	type origin struct {
		topic     string
		partition int32
		offset    int64
	}
	var sent []origin
	for _, topic := range inputs {
		for i := range 5 {
			rec := &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("%s-poison-%d", r.sc.name, i)), Value: []byte("\x00not a record of orderpipe")}
			res := c.kcl.ProduceSync(ctx, rec)
			if err := res.FirstErr(); err != nil {
				c.t.Fatal(err)
			}
			sent = append(sent, origin{topic, res[0].Record.Partition, res[0].Record.Offset})
		}
	}
	want := map[origin]bool{}
	for _, o := range sent {
		want[o] = true
	}
	var reasons []string
	await.Until(c.t, "every poison record in the dead-letter topic", 2*time.Minute, func() error {
		recs, err := c.readTopic(ctx, string(topology.DeadLetter))
		if err != nil {
			return err
		}
		found := 0
		reasons = reasons[:0]
		for _, rec := range recs {
			h := map[string]string{}
			for _, kv := range rec.Headers {
				h[kv.Key] = string(kv.Value)
			}
			p, _ := strconv.ParseInt(h[topology.HeaderDLQPartition], 10, 32)
			off, _ := strconv.ParseInt(h[topology.HeaderDLQOffset], 10, 64)
			o := origin{h[topology.HeaderDLQTopic], int32(p), off}
			if want[o] && h[topology.HeaderDLQReason] != "" {
				found++
				if len(reasons) < 3 {
					reasons = append(reasons, o.topic+": "+h[topology.HeaderDLQReason])
				}
			}
		}
		if found != len(want) {
			return fmt.Errorf("%d of %d", found, len(want))
		}
		return nil
	})
	r.evidenced("%d poison records written to %v; all %d in %s with reason and origin, e.g. %q", len(sent), inputs, len(sent), topology.DeadLetter, reasons)
	r.load.awaitAccepted(100, time.Now(), "valid orders after the poison", 2*time.Minute)
	r.healed()
}

// rebalance131 goes from 2 processes to 1, then 3, then 1, under load,
// and back to 2 for the scenarios after it.
func (r *run) rebalance131() {
	c := r.c
	third := c.procThree()
	c.stop(c.procs[1])
	c.awaitMembers("process-1")
	r.evidenced("the groups shrank to process-1 alone")
	r.load.awaitAccepted(100, time.Now(), "orders accepted on one process", 2*time.Minute)
	c.start(c.procs[1])
	c.start(third)
	c.awaitMembers("process-1", "process-2", "process-3")
	r.evidenced("the groups grew to 3 members")
	r.load.awaitAccepted(100, time.Now(), "orders accepted on three processes", 2*time.Minute)
	c.stop(c.procs[1])
	c.stop(third)
	c.awaitMembers("process-1")
	r.evidenced("the groups shrank to process-1 alone again")
	r.load.awaitAccepted(100, time.Now(), "orders accepted on one process again", 2*time.Minute)
	c.start(c.procs[1])
	c.awaitMembers("process-1", "process-2")
	r.healed()
}

// procThree is a third processor, made once.
func (c *cluster) procThree() *member {
	if len(c.procs) < 3 {
		c.procs = append(c.procs, c.member("process-3", "process"))
		c.procs[2].down = true
	}
	return c.procs[2]
}

// rebalanceDuringBurst: while the scenario's burst of orders is placed, a
// third processor joins and leaves, moving partitions twice.
func (r *run) rebalanceDuringBurst() {
	c := r.c
	third := c.procThree()
	c.launch(third) // joins while the burst is placed
	c.awaitReady(third)
	c.awaitMembers("process-1", "process-2", "process-3")
	r.evidenced("process-3 joined the groups during the burst (%d of %d orders accepted by then)", r.load.acceptedSince(r.faultAt), r.sc.max)
	c.stop(third)
	c.awaitMembers("process-1", "process-2")
	r.evidenced("process-3 left again (%d accepted by then)", r.load.acceptedSince(r.faultAt))
	r.healed()
	r.load.awaitAccepted(r.sc.max, time.Time{}, "every order of the burst accepted", 3*time.Minute)
	// Exactly the stock is sold: checked by verify's conservation, and
	// here as the scenario's own figure.
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func short(id string) string {
	if i := strings.LastIndexByte(id, '-'); i >= 0 && len(id)-i > 8 {
		return id[i+1 : i+9]
	}
	return id
}

// firstLine is the first line of log that mentions word, else the first.
func firstLine(log []byte, word string) string {
	lines := bytes.Split(bytes.TrimSpace(log), []byte("\n"))
	for _, l := range lines {
		if bytes.Contains(bytes.ToLower(l), []byte(word)) {
			return string(proctest.Tail(l, 300))
		}
	}
	return string(proctest.Tail(lines[0], 300))
}

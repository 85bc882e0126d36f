package bench_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/bench"
	"github.com/orderpipe/orderpipe/internal/kafkatest"
	"github.com/orderpipe/orderpipe/internal/proctest"
)

// profile sizes a report run: the quick one (make bench) stays within
// about five minutes; ORDERPIPE_BENCH_PROFILE=long runs longer steps up to
// higher rates.
type profile struct {
	name  string
	step  time.Duration
	warm  time.Duration
	rates []float64
	burst int
}

func benchProfile() profile {
	if os.Getenv("ORDERPIPE_BENCH_PROFILE") == "long" {
		return profile{name: "long", step: 20 * time.Second, warm: time.Minute, burst: 60000,
			rates: []float64{500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10000}}
	}
	return profile{name: "quick", step: 6 * time.Second, warm: 30 * time.Second, burst: 20000,
		rates: []float64{500, 1000, 1500, 1750, 2000, 2250, 2500, 3000, 4000, 5000, 6000}}
}

const reportSKUs = 200

// stepOrder is order i of the step with customer prefix p.
func stepOrder(p string, i int) []byte { return bench.OrderJSON(p, i, reportSKUs) }

// BenchmarkReport is `make bench`: the baselines, then the pipeline on a
// real broker and a real PostgreSQL, each role a process of its own, taken
// up a ladder of offered rates (open loop) until a step is not sustained;
// then a burst that measures the edge alone and leaves a backlog for the
// sink to catch up on. It writes bench/out/report.json, plot.svg and
// summary.md. Run it with -benchtime=1x.
func BenchmarkReport(b *testing.B) {
	kafkatest.RequireKafka(b, "the benchmark report")
	prof := benchProfile()
	for b.Loop() {
		rep := runReport(b, prof)
		root, err := proctest.RepoRoot()
		if err != nil {
			b.Fatal(err)
		}
		dir := filepath.Join(root, "bench", "out")
		if err := rep.WriteAll(dir); err != nil {
			b.Fatal(err)
		}
		fmt.Println(rep.Summary())
		fmt.Printf("BenchmarkReport: wrote %s/{report.json,plot.svg,summary.md}\n", dir)
		b.ReportMetric(rep.E2E.OrdersPerS, "final/s")
		b.ReportMetric(rep.E2E.IdleP99ms, "idle-p99-ms")
	}
}

func say(format string, args ...any) {
	fmt.Printf("bench: "+format+"\n", args...)
}

func runReport(b *testing.B, prof profile) *bench.Report {
	ctx := b.Context()
	rep := &bench.Report{Profile: prof.name, Machine: machine()}
	start := time.Now()

	say("starting the pipeline: Kafka 4.3.1, PostgreSQL, ingest, process and sink as processes")
	pl := startPipeline(b, strings.Fields(os.Getenv("ORDERPIPE_BENCH_EDGE_ARGS")), strings.Fields(os.Getenv("ORDERPIPE_BENCH_PROCESS_ARGS")))
	rep.Machine.Broker = "Apache Kafka 4.3.1 (scripts/kafka.sh, KRaft, one node)"
	if err := pl.db.QueryRow(ctx, "SHOW server_version").Scan(&rep.Machine.Postgres); err != nil {
		b.Fatal(err)
	}
	rep.Machine.Postgres = "PostgreSQL " + rep.Machine.Postgres

	say("baselines: H_null, P_raw, D_raw")
	var err error
	if rep.Baselines.HNullRPS, err = bench.HNull(ctx, 50000, 64); err != nil {
		b.Fatal(err)
	}
	praw, err := bench.PRaw(ctx, pl.kafka.Brokers(), 300000, "bench.praw")
	if err != nil {
		b.Fatal(err)
	}
	rep.Baselines.PRawRPS, rep.Baselines.PRawConsumeRPS = praw.ProduceRPS, praw.ConsumeRPS
	draw, err := pl.pg.CreateDatabase(ctx, "draw")
	if err != nil {
		b.Fatal(err)
	}
	if rep.Baselines.DRawRowsPerS, err = bench.DRaw(ctx, draw, 50000); err != nil {
		b.Fatal(err)
	}
	say("H_null %.0f req/s, P_raw %.0f records/s produced and %.0f consumed, D_raw %.0f rows/s",
		rep.Baselines.HNullRPS, praw.ProduceRPS, praw.ConsumeRPS, rep.Baselines.DRawRowsPerS)

	say("stock for %d SKUs, then a warm-up (a fresh JVM compiles its hot paths first)", reportSKUs)
	if res, err := bench.Run(ctx, bench.Load{Addr: pl.edge.addr, Requests: reportSKUs, Concurrency: 8, Body: func(i int) bench.Request {
		return bench.Request{Method: "PUT", Path: fmt.Sprintf("/v1/inventory/SKU-%d", i), Body: []byte(`{"available":1000000000}`)}
	}}); err != nil || res.OK != reportSKUs {
		b.Fatalf("set stock: %v %v", res, err)
	}
	// The broker's JIT compilers take a core for tens of seconds once
	// traffic starts; the warm-up lets most of that pass.
	u0, err := pl.usages(ctx)
	if err != nil {
		b.Fatal(err)
	}
	pl.step(rep, "warm", 1000, prof.warm, false)
	u1, err := pl.usages(ctx)
	if err != nil {
		b.Fatal(err)
	}
	say("warm-up: the broker's JIT compilers used %s of CPU", (u1["broker-jit"].cpu - u0["broker-jit"].cpu).Round(10*time.Millisecond))

	say("idle latency: 20 orders/s for 10s")
	idle := pl.step(rep, "idle", 20, 10*time.Second, false)
	rep.E2E.IdleP50ms, rep.E2E.IdleP99ms = idle.FinalP50ms, idle.FinalP99ms

	var best *stepResult
	var bestCost bench.Cost
	var bestRoles []bench.RoleUsage
	genCPU, genTime := time.Duration(0), time.Duration(0)
	// Each step's closing reading of the broker's counters opens the next
	// (a reading takes seconds: the JDK compiles the reader first).
	before, berr := pl.kafka.Metrics(ctx)
	for i, rate := range prof.rates {
		u0, err := pl.usages(ctx)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		st := pl.step(rep, fmt.Sprintf("s%d", i), rate, prof.step, true)
		elapsed := time.Since(t0)
		u1, err := pl.usages(ctx)
		if err != nil {
			b.Fatal(err)
		}
		after, aerr := pl.kafka.Metrics(ctx)
		genCPU += st.genCPU
		genTime += st.genTime
		last := &rep.Steps[len(rep.Steps)-1]
		last.CPUusPerOrder = map[string]float64{}
		for name, u := range u1 {
			if st.final > 0 {
				last.CPUusPerOrder[name] = float64((u.cpu - u0[name].cpu).Microseconds()) / float64(st.final)
			}
		}
		if berr == nil && aerr == nil && st.final > 0 {
			last.FetchPerOrder = (after.Requests["Fetch"] - before.Requests["Fetch"]) / float64(st.final)
			last.ProducePerOrder = (after.Requests["Produce"] - before.Requests["Produce"]) / float64(st.final)
		}
		if !st.Sustained {
			break
		}
		best = &st
		bestRoles = roleUsage(u0, u1, elapsed)
		bestCost = bench.Cost{CPUusPerOrder: last.CPUusPerOrder, BrokerCPUusPerOrder: last.CPUusPerOrder["broker"]}
		if berr == nil && aerr == nil {
			brokerCost(&bestCost, before, after, float64(st.final))
		} else {
			say("no broker metrics for this step: %v %v", berr, aerr)
		}
		before, berr = after, aerr
	}
	if genTime > 0 {
		rep.LoadGenCPUCores = genCPU.Seconds() / genTime.Seconds()
	}
	if best == nil {
		b.Fatalf("not even %.0f orders/s were sustained: %+v", prof.rates[0], rep.Steps)
	}
	rep.Edge = bench.EdgeFig{MaxSustainedRPS: best.AcceptedRPS, P50ms: best.EdgeP50ms, P99ms: best.EdgeP99ms, P999ms: best.EdgeP999ms}
	rep.E2E.OrdersPerS, rep.E2E.P50ms, rep.E2E.P99ms = best.FinalRPS, best.FinalP50ms, best.FinalP99ms
	rep.E2E.StoredP99ms = best.storedP99
	rep.Cost, rep.Roles = bestCost, bestRoles

	pl.batches(rep, 200, 50)
	pl.burst(rep, prof.burst)

	if rep.Cost.RecordsPerOrder > 0 && rep.Baselines.PRawRPS > 0 {
		rep.Ratios.E2EVsBrokerBound = rep.E2E.OrdersPerS / (rep.Baselines.PRawRPS / rep.Cost.RecordsPerOrder)
	}
	if rep.Baselines.HNullRPS > 0 {
		rep.Ratios.EdgeVsHNull = rep.Edge.BurstRPS / rep.Baselines.HNullRPS
	}
	if rep.Baselines.DRawRowsPerS > 0 {
		rep.Ratios.SinkVsDRaw = rep.Sink.RowsPerS / rep.Baselines.DRawRowsPerS
	}
	say("done in %s", time.Since(start).Round(time.Second))
	return rep
}

// stepResult is a Step with what the ladder needs besides.
type stepResult struct {
	bench.Step
	final           int
	storedP99       float64
	genCPU, genTime time.Duration
}

// step offers rate orders/s for d (open loop, latency from the intended
// send time), waits for them to be final in Postgres, and reads their
// latencies from the orders table. record adds it to the ladder.
func (pl *pipeline) step(rep *bench.Report, name string, rate float64, d time.Duration, record bool) stepResult {
	b, ctx := pl.b, pl.b.Context()
	n := int(rate * d.Seconds())
	prefix := name + "-"
	var lagAtMid atomic.Int64
	lagAtMid.Store(-1)
	mid := time.AfterFunc(d/2, func() {
		if l, err := pl.lag(ctx); err == nil {
			lagAtMid.Store(l)
		}
	})
	t0 := time.Now()
	res, err := bench.Run(ctx, bench.Load{Addr: pl.edge.addr, Rate: rate, Requests: n, Concurrency: 1024,
		MaxDuration: d + 30*time.Second, Progress: os.Stdout, Name: "bench: " + name + " ",
		Body: func(i int) bench.Request {
			return bench.Request{Method: "POST", Path: "/v1/orders", Body: stepOrder(prefix, i)}
		}})
	mid.Stop()
	if err != nil {
		b.Fatal(err)
	}
	lagMid := lagAtMid.Load()
	lagEnd, err := pl.lag(ctx)
	if err != nil {
		b.Fatal(err)
	}
	got, drainErr := pl.awaitFinalRows(ctx, prefix, res.OK, 60*time.Second)
	p50, p99, stored, last, err := pl.stepLatency(ctx, prefix)
	if err != nil {
		b.Fatal(err)
	}
	st := stepResult{final: got, storedP99: stored, genCPU: res.CPU, genTime: res.Elapsed}
	st.Step = bench.Step{
		OfferedRPS: float64(n) / d.Seconds(), AcceptedRPS: res.Throughput(),
		Accepted:  float64(res.OK) / float64(n),
		EdgeP50ms: ms(res.Percentile(50)), EdgeP99ms: ms(res.Percentile(99)), EdgeP999ms: ms(res.Percentile(99.9)),
		FinalP50ms: p50, FinalP99ms: p99, LagStart: lagMid, LagEnd: lagEnd, Codes: res.Codes,
		DurationMS: res.Elapsed.Milliseconds(),
	}
	if span := last.Sub(t0).Seconds(); span > 0 {
		st.FinalRPS = float64(got) / span
	}
	// Sustained: ≥ 99% accepted, all final, p99 accept→final ≤ 1s, and the
	// lag at the end not more than a second of orders above midway (lag
	// counts records of every topic: ~14 per order).
	lagGrowing := lagMid >= 0 && float64(lagEnd-lagMid) > 14*rate
	st.Sustained = st.Accepted >= 0.99 && drainErr == nil && p99 <= 1000 && !lagGrowing
	say("%s: offered %.0f/s, accepted %.0f/s (%.1f%%), final %.0f/s; edge p50 %.1fms p99 %.1fms; accept→final p50 %.1fms p99 %.1fms; stored p99 %.1fms; lag %d→%d; sustained %v %v",
		name, st.OfferedRPS, st.AcceptedRPS, 100*st.Accepted, st.FinalRPS, st.EdgeP50ms, st.EdgeP99ms, p50, p99, stored, lagMid, lagEnd, st.Sustained, errString(drainErr))
	if record {
		rep.Steps = append(rep.Steps, st.Step)
	}
	return st
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return "(" + err.Error() + ")"
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// batches sends n batches of size orders to POST /v1/orders:batch, closed
// loop over 8 connections, and waits for their orders to be final.
func (pl *pipeline) batches(rep *bench.Report, n, size int) {
	b, ctx := pl.b, pl.b.Context()
	say("batches: %d requests of %d orders to /v1/orders:batch", n, size)
	res, err := bench.Run(ctx, bench.Load{Addr: pl.edge.addr, Requests: n, Concurrency: 8, MaxDuration: 3 * time.Minute,
		KeepBodies: true, Progress: os.Stdout, Name: "bench: batches ", Body: func(i int) bench.Request {
			body := []byte{'['}
			for j := range size {
				if j > 0 {
					body = append(body, ',')
				}
				body = append(body, stepOrder("batch-", i*size+j)...)
			}
			return bench.Request{Method: "POST", Path: "/v1/orders:batch", Body: append(body, ']')}
		}})
	if err != nil {
		b.Fatal(err)
	}
	// A batch answers 200 with a result per order: an id, or the problem
	// of an order refused alone (shed, say).
	accepted := 0
	for _, body := range res.Responses {
		var results []struct {
			OrderID string          `json:"order_id"`
			Error   json.RawMessage `json:"error"`
		}
		if body == nil {
			continue
		}
		if err := json.Unmarshal(body, &results); err != nil {
			b.Fatalf("batch answer: %v: %.200s", err, body)
		}
		for _, r := range results {
			if r.OrderID != "" && r.Error == nil {
				accepted++
			}
		}
	}
	got, err := pl.awaitFinalRows(ctx, "batch-", accepted, 2*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	rep.Edge.BatchOrdersPerS = float64(accepted) / res.Elapsed.Seconds()
	rep.Edge.BatchAccepted = float64(accepted) / float64(n*size)
	rep.Edge.BatchP99ms = ms(res.Percentile(99))
	say("batches: %v; %d of %d orders accepted (the rest shed), all %d final; %.0f orders/s accepted through the batch endpoint", res, accepted, n*size, got, rep.Edge.BatchOrdersPerS)
}

// burst sends n orders closed loop with the sink stopped: the edge's own
// rate against H_null, then, once the processors are done, the sink's
// rate catching up on that backlog against D_raw.
func (pl *pipeline) burst(rep *bench.Report, n int) {
	b, ctx := pl.b, pl.b.Context()
	say("burst: %d orders closed loop, 64 connections, with the sink stopped", n)
	if err := pl.sink.p.Stop(time.Minute); err != nil {
		b.Fatal(err)
	}
	before, err := pl.metric(pl.proc, "orderpipe_orders_final_total")
	if err != nil {
		b.Fatal(err)
	}
	res, err := bench.Run(ctx, bench.Load{Addr: pl.edge.addr, Requests: n, Concurrency: 64, MaxDuration: 3 * time.Minute,
		Progress: os.Stdout, Name: "bench: burst ", Body: func(i int) bench.Request {
			return bench.Request{Method: "POST", Path: "/v1/orders", Body: stepOrder("burst-", i)}
		}})
	if err != nil {
		b.Fatal(err)
	}
	rep.Edge.BurstRPS = res.Throughput()
	say("burst: edge %v", res)
	// Wait for the saga to finish the backlog, so that the sink is timed alone.
	if _, err := bench.WaitScrape(ctx, pl.proc.addr, "orderpipe_orders_final_total", before+float64(res.OK), 3*time.Minute); err != nil {
		b.Fatal(err)
	}
	var lines int
	var ordersBefore int
	if err := pl.db.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&ordersBefore); err != nil {
		b.Fatal(err)
	}
	pl.launch(pl.sink)
	// Timed from the sink's readiness (migrations checked, group joined):
	// its rate on a backlog, not its start.
	pl.sink.p.Ready(b, 3*time.Minute)
	t0 := time.Now()
	if _, err := pl.awaitFinalRows(ctx, "burst-", res.OK, 3*time.Minute); err != nil {
		b.Fatal(err)
	}
	el := time.Since(t0)
	if err := pl.db.QueryRow(ctx, "SELECT count(*) FROM order_items i JOIN orders o USING (order_id) WHERE o.customer_id LIKE 'burst-%'").Scan(&lines); err != nil {
		b.Fatal(err)
	}
	rep.Sink.RowsPerS = float64(res.OK+lines) / el.Seconds()
	say("sink: %d orders and %d lines in %s from its readiness: %.0f rows/s", res.OK, lines, el.Round(time.Millisecond), rep.Sink.RowsPerS)
}

// brokerCost fills the broker's share of the cost model from two readings
// of its own metrics around a step that finished orders orders.
func brokerCost(c *bench.Cost, before, after kafkatest.Metrics, orders float64) {
	c.RecordsByTopic = map[string]float64{}
	c.RequestsByAPI = map[string]float64{}
	for topic, v := range after.Records {
		if d := v - before.Records[topic]; d > 0 && !strings.HasPrefix(topic, "bench.") {
			c.RecordsByTopic[topic] = d / orders
			if !strings.HasPrefix(topic, "__") {
				c.RecordsPerOrder += d / orders
			}
		}
	}
	var produceRecords float64
	for topic, v := range after.Records {
		produceRecords += v - before.Records[topic]
	}
	for api, v := range after.Requests {
		if d := v - before.Requests[api]; d > 0 {
			c.RequestsByAPI[api] = d / orders
			// FetchConsumer and FetchFollower are counted in Fetch too.
			if api != "FetchConsumer" && api != "FetchFollower" {
				c.BrokerRequestsPerOrder += d / orders
			}
		}
	}
	if p := after.Requests["Produce"] - before.Requests["Produce"]; p > 0 {
		c.RecordsPerProduce = produceRecords / p
	}
}

// roleUsage turns two usage readings d apart into cores and peak RSS.
func roleUsage(u0, u1 map[string]usage, d time.Duration) []bench.RoleUsage {
	var out []bench.RoleUsage
	for _, name := range []string{"ingest", "process", "sink", "broker", "broker-jit", "postgres"} {
		u, ok := u1[name]
		if !ok {
			continue
		}
		out = append(out, bench.RoleUsage{Role: name, CPUCores: (u.cpu - u0[name].cpu).Seconds() / d.Seconds(), MaxRSSMB: float64(u.hwmKiB) / 1024})
	}
	return out
}

// machine describes this machine from /proc and uname.
func machine() bench.Machine {
	m := bench.Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryGiB = int((kb + 1<<19) >> 20)
		}
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	return m
}

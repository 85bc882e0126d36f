package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/bench"
	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/kafkatest"
	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/orderpipe/orderpipe/internal/proctest"
	"github.com/orderpipe/orderpipe/sinks/pgsink"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// pipeline is the deployed shape for a benchmark: one ingest, one process
// and one sink, each a process of its own (so that each one's CPU and
// memory can be read from /proc), on a real broker and a real PostgreSQL.
type pipeline struct {
	b     *testing.B
	kafka *kafkatest.Kafka
	pg    *pglocal.Server
	pgURL string
	bin   string
	edge  *role
	proc  *role
	sink  *role
	adm   *kadm.Client
	db    *pgx.Conn
}

// role is one process of the pipeline; addr is the edge's listener or the
// ops listener.
type role struct {
	name, command, addr string
	args                []string
	p                   *proctest.Proc
	starts              int
}

func startPipeline(b *testing.B, edgeArgs, procArgs []string) *pipeline {
	b.Helper()
	root, err := proctest.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	pl := &pipeline{b: b}
	if pl.bin, err = proctest.Build(filepath.Join(root, "bin"), false); err != nil {
		b.Fatal(err)
	}
	pl.kafka = kafkatest.KafkaServerFor(b)
	pl.pg = apptest.PostgresFor(b)
	pl.enableCommitTimestamps()
	if pl.pgURL, err = pl.pg.CreateDatabase(b.Context(), "bench"); err != nil {
		b.Fatal(err)
	}
	kcl, err := kgo.NewClient(kgo.SeedBrokers(pl.kafka.Brokers()...))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(kcl.Close)
	pl.adm = kadm.NewClient(kcl)
	pl.oneShot(append([]string{"topics", "--brokers", pl.brokers()}, topologyArgs()...)...)
	pl.oneShot("migrate", "--postgres-url", pl.pgURL)
	if pl.db, err = pgx.Connect(b.Context(), pl.pgURL); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pl.db.Close(context.Background()) })

	pl.edge = &role{name: "ingest", command: "ingest", args: edgeArgs}
	pl.proc = &role{name: "process", command: "process", args: procArgs}
	pl.sink = &role{name: "sink", command: "sink", args: []string{"--postgres-url", pl.pgURL}}
	for _, r := range []*role{pl.edge, pl.proc, pl.sink} {
		r.addr = proctest.FreeAddr(b)
		pl.launch(r)
	}
	for _, r := range []*role{pl.edge, pl.proc, pl.sink} {
		r.p.Ready(b, 3*time.Minute)
	}
	return pl
}

// enableCommitTimestamps turns on track_commit_timestamp, so that a row's
// last commit time (pg_xact_commit_timestamp(xmin)) measures accept→stored
// from the database's own data. It needs a restart.
func (pl *pipeline) enableCommitTimestamps() {
	ctx := pl.b.Context()
	conn, err := pgx.Connect(ctx, pl.pg.URL())
	if err != nil {
		pl.b.Fatal(err)
	}
	_, err = conn.Exec(ctx, "ALTER SYSTEM SET track_commit_timestamp = on")
	_ = conn.Close(ctx)
	if err != nil {
		pl.b.Fatal(err)
	}
	if err := pl.pg.Halt(ctx); err != nil {
		pl.b.Fatal(err)
	}
	if err := pl.pg.Resume(ctx); err != nil {
		pl.b.Fatal(err)
	}
}

func (pl *pipeline) brokers() string { return strings.Join(pl.kafka.Brokers(), ",") }

// topologyArgs are the topology flags every command gets: the partitions
// of ORDERPIPE_BENCH_PARTITIONS, when set, to weigh batch sizes.
func topologyArgs() []string {
	if p := os.Getenv("ORDERPIPE_BENCH_PARTITIONS"); p != "" {
		return []string{"--partitions", p}
	}
	return nil
}

func (pl *pipeline) launch(r *role) {
	args := append([]string{r.command, "--brokers", pl.brokers(), "--client-id", r.name, "--log-level", "info"}, topologyArgs()...)
	args = append(args, r.args...)
	if r.command == "ingest" {
		args = append(args, "--listen", r.addr, "--data-dir", pl.b.TempDir())
	} else {
		args = append(args, "--ops-listen", r.addr)
		if r.command == "process" {
			args = append(args, "--data-dir", pl.b.TempDir())
		}
	}
	if dir := os.Getenv("ORDERPIPE_BENCH_PPROF"); dir != "" {
		// One profile per start; written when the role stops cleanly.
		r.starts++
		args = append(args, "--cpu-profile", filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", r.name, r.starts)))
	}
	r.p = proctest.Start(pl.b, r.name, exec.Command(pl.bin, args...), true)
}

func (pl *pipeline) oneShot(args ...string) {
	ctx, cancel := context.WithTimeout(pl.b.Context(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, pl.bin, args...).CombinedOutput(); err != nil {
		pl.b.Fatalf("orderpipe %s: %v: %s", args[0], err, proctest.Tail(out, 2000))
	}
}

// metric sums every series of a counter on r's /metrics.
func (pl *pipeline) metric(r *role, name string) (float64, error) {
	return bench.ScrapeMetric(r.addr, name)
}

// lag is the consumer lag, in records, summed over the saga's groups and
// the sink's.
func (pl *pipeline) lag(ctx context.Context) (int64, error) {
	lags, err := pl.adm.Lag(ctx, string(topology.OrdersGroup), string(topology.InventoryGroup), pgsink.DefaultGroup)
	if err != nil {
		return 0, err
	}
	var sum int64
	for g, l := range lags {
		if l.Error() != nil {
			return 0, fmt.Errorf("lag of %s: %w", g, l.Error())
		}
		sum += l.Lag.Total()
	}
	return sum, nil
}

// usage is a process tree's CPU time and peak RSS at one moment.
type usage struct {
	cpu    time.Duration
	hwmKiB int64
}

// procUsage reads pid's CPU time (user + system) and peak RSS from /proc,
// adding its children's when tree is set (Postgres's backends are children
// of the postmaster).
func procUsage(pid int, tree bool) (usage, error) {
	pids := []int{pid}
	if tree {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return usage{}, err
		}
		for _, e := range entries {
			child, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child)); err == nil {
				if f := statFields(st); len(f) > 2 && f[1] == strconv.Itoa(pid) {
					pids = append(pids, child)
				}
			}
		}
	}
	var u usage
	for i, p := range pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			if i == 0 {
				return usage{}, fmt.Errorf("read /proc/%d/stat: %w", p, err)
			}
			continue // a backend that just exited
		}
		u.cpu += statCPU(st)
		if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p)); err == nil {
			for line := range strings.Lines(string(status)) {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
					u.hwmKiB += kb
				}
			}
		}
	}
	return u, nil
}

// statCPU is the user + system CPU time in a /proc/PID/stat (or
// task/TID/stat): after the command, state(0) ppid(1) ... utime(11)
// stime(12), in clock ticks of 1/100 s on Linux.
func statCPU(st []byte) time.Duration {
	f := statFields(st)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+stt) * 10 * time.Millisecond
}

// statFields are /proc/PID/stat's fields after the command name (which may
// hold spaces), starting with the state.
func statFields(st []byte) []string {
	i := bytes.LastIndexByte(st, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(st[i+1:]))
}

// usages reads every process's usage: the roles, the broker, Postgres.
func (pl *pipeline) usages(ctx context.Context) (map[string]usage, error) {
	out := map[string]usage{}
	for _, r := range []*role{pl.edge, pl.proc, pl.sink} {
		if r.p == nil || !r.p.Running() {
			continue
		}
		u, err := procUsage(r.p.Pid(), false)
		if err != nil {
			return nil, err
		}
		out[r.name] = u
	}
	kpid, err := pl.kafka.Pid(ctx)
	if err != nil {
		return nil, err
	}
	if out["broker"], err = procUsage(kpid, false); err != nil {
		return nil, err
	}
	// The JVM's JIT compilers run for minutes after a start, on the same
	// two cores: they are reported apart, as the broker's one-off cost.
	jit, err := jitCPU(kpid)
	if err != nil {
		return nil, err
	}
	b := out["broker"]
	b.cpu -= jit
	out["broker"], out["broker-jit"] = b, usage{cpu: jit}
	if out["postgres"], err = procUsage(pl.pg.Pid(), true); err != nil {
		return nil, err
	}
	return out, nil
}

// awaitFinalRows waits until Postgres holds n final orders of customers
// with prefix, and returns how many it holds.
func (pl *pipeline) awaitFinalRows(ctx context.Context, prefix string, n int, within time.Duration) (int, error) {
	var got int
	err := await.Within(ctx, within, 100*time.Millisecond, func() error {
		if err := pl.db.QueryRow(ctx, "SELECT count(*) FROM orders WHERE customer_id LIKE $1 AND status <> 'pending'", prefix+"%").Scan(&got); err != nil {
			return err
		}
		if got < n {
			return fmt.Errorf("%d of %d final orders of %s in Postgres", got, n, prefix)
		}
		return nil
	})
	return got, err
}

// stepLatency reads, from the orders table, accept→final (updated_at -
// created_at) and accept→stored (the row's commit time - created_at)
// percentiles in ms for customers with prefix, and the last final time.
func (pl *pipeline) stepLatency(ctx context.Context, prefix string) (finalP50, finalP99, storedP99 float64, last time.Time, err error) {
	err = pl.db.QueryRow(ctx, `
		SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at)), 0) * 1000,
		       coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at)), 0) * 1000,
		       coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM pg_xact_commit_timestamp(xmin) - created_at)), 0) * 1000,
		       coalesce(max(updated_at), now())
		FROM orders WHERE customer_id LIKE $1 AND status <> 'pending'`, prefix+"%").Scan(&finalP50, &finalP99, &storedP99, &last)
	return finalP50, finalP99, storedP99, last, err
}

// jitCPU is the CPU time of a JVM's JIT compiler threads (named "C1
// CompilerThre…" and "C2 CompilerThre…" in /proc).
func jitCPU(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, fmt.Errorf("broker threads: %w", err)
	}
	var sum time.Duration
	for _, t := range tasks {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, t.Name()))
		if err != nil || !bytes.Contains(comm, []byte("CompilerThre")) {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			continue // a compiler thread that just ended
		}
		sum += statCPU(st)
	}
	return sum, nil
}

package pgsink

import (
	"context"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Stats are the sink's counters since New.
type Stats struct {
	// Records is the number of records polled, tombstones and malformed
	// ones included; a record polled again after a restart or a retry of
	// its commit counts again.
	Records uint64
	// Batches is the number of batches written to Postgres (one transaction
	// each, or two when Postgres refused a row).
	Batches uint64
	// OrderRows, ItemRows and InventoryRows count the rows inserted or moved
	// to a newer version. Replayed records leave them unchanged.
	OrderRows, ItemRows, InventoryRows uint64
	// DBErrors is the number of failed attempts to write a batch that were
	// retried after a backoff (Postgres unavailable).
	DBErrors uint64
	// RefusedBatches is the number of batches Postgres refused because of
	// the data of some row, and that were written again row by row.
	RefusedBatches uint64
	// DeadLetters is the number of records the dead-letter topic
	// acknowledged: undecodable records and rows Postgres refused.
	DeadLetters uint64
	// Commits is the number of successful offset commits.
	Commits uint64
	// Rewinds is the number of times Postgres held less than this sink had
	// written (a failover to a standby that missed the last transactions),
	// so that it read those records again.
	Rewinds uint64
	// LastCommit is the time of the last successful offset commit; zero
	// before the first.
	LastCommit time.Time
}

// counters back Stats and the metrics. Safe for concurrent use.
type counters struct {
	records, batches               atomic.Uint64
	orderRows, itemRows, stockRows atomic.Uint64
	dbErrors, refusedBatches       atomic.Uint64
	deadLetters, commits           atomic.Uint64
	rewinds                        atomic.Uint64
	lastCommit                     atomic.Int64 // unix nanoseconds
}

func (c *counters) wrote(w written) {
	c.batches.Add(1)
	c.orderRows.Add(uint64(w.orders))
	c.itemRows.Add(uint64(w.items))
	c.stockRows.Add(uint64(w.inventory))
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Records:        c.records.Load(),
		Batches:        c.batches.Load(),
		OrderRows:      c.orderRows.Load(),
		ItemRows:       c.itemRows.Load(),
		InventoryRows:  c.stockRows.Load(),
		DBErrors:       c.dbErrors.Load(),
		RefusedBatches: c.refusedBatches.Load(),
		DeadLetters:    c.deadLetters.Load(),
		Commits:        c.commits.Load(),
		Rewinds:        c.rewinds.Load(),
	}
	if ns := c.lastCommit.Load(); ns != 0 {
		s.LastCommit = time.Unix(0, ns)
	}
	return s
}

// collector exports a sink's Stats and health as Prometheus metrics, read at
// scrape time so the counters have one source, and its batch duration
// histogram. The metric names start with orderpipe_sink_.
type collector struct {
	s                                             *Sink
	records, batches, rows, dbErrors, deadLetters *prometheus.Desc
	refused, commits, lastCommitAge, backingOff   *prometheus.Desc
	rewinds, reachable                            *prometheus.Desc
}

func newCollector(s *Sink) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("orderpipe_sink_"+name, help, labels, nil)
	}
	return &collector{
		s:             s,
		records:       d("records_total", "Changelog records polled by the Postgres sink."),
		batches:       d("batches_total", "Batches written to Postgres."),
		rows:          d("rows_total", "Rows inserted or moved to a newer version, by table.", "table"),
		dbErrors:      d("db_errors_total", "Failed attempts to write a batch, retried after a backoff."),
		refused:       d("refused_batches_total", "Batches Postgres refused because of a row's data, written again row by row."),
		deadLetters:   d("dead_letters_total", "Records sent to the dead-letter topic."),
		commits:       d("commits_total", "Offset commits after a batch was written."),
		lastCommitAge: d("last_commit_age_seconds", "Seconds since the last offset commit; -1 before the first."),
		backingOff:    d("backing_off", "1 while Postgres is unavailable and the sink retries with backoff, else 0."),
		rewinds:       d("rewinds_total", "Times Postgres held less than the sink had written (a failover to a standby that missed the last transactions) and the sink read those records again."),
		reachable:     d("postgres_reachable", "1 while Postgres answers the sink's pings (every PingInterval), else 0."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	c.s.batchDur.Describe(ch)
	for _, d := range []*prometheus.Desc{c.records, c.batches, c.rows, c.dbErrors, c.refused, c.deadLetters, c.commits, c.lastCommitAge, c.backingOff, c.rewinds, c.reachable} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.s.batchDur.Collect(ch)
	st := c.s.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.records, st.Records)
	counter(c.batches, st.Batches)
	counter(c.rows, st.OrderRows, "orders")
	counter(c.rows, st.ItemRows, "order_items")
	counter(c.rows, st.InventoryRows, "inventory")
	counter(c.dbErrors, st.DBErrors)
	counter(c.refused, st.RefusedBatches)
	counter(c.deadLetters, st.DeadLetters)
	counter(c.commits, st.Commits)
	counter(c.rewinds, st.Rewinds)
	age := -1.0
	if !st.LastCommit.IsZero() {
		age = time.Since(st.LastCommit).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.lastCommitAge, prometheus.GaugeValue, age)
	backingOff := 0.0
	if c.s.health.backingOff() {
		backingOff = 1
	}
	ch <- prometheus.MustNewConstMetric(c.backingOff, prometheus.GaugeValue, backingOff)
	reachable := 1.0
	if c.s.reach.err() != nil {
		reachable = 0
	}
	ch <- prometheus.MustNewConstMetric(c.reachable, prometheus.GaugeValue, reachable)
}

// newBatchDuration is the histogram of successful batch writes.
func newBatchDuration() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "orderpipe_sink_batch_duration_seconds",
		Help:    "Time to write one batch to Postgres, successful attempts only.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1ms .. 16s
	})
}

// queryTracer is the pgx tracer of the sink's own pool: the duration of
// every statement (the batch path's few upserts, the row path's many, the
// offsets, BEGIN and COMMIT) by its first keyword and result, as
// orderpipe_sink_query_duration_seconds{op,result}.
type queryTracer struct{ dur *prometheus.HistogramVec }

var _ pgx.QueryTracer = (*queryTracer)(nil)

func newQueryTracer() *queryTracer {
	return &queryTracer{dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "orderpipe_sink_query_duration_seconds",
		Help:    "Time of one statement of the Postgres sink, by its first keyword (insert, select, begin, commit, ...) and result (ok, error); from a pgx tracer.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16), // 0.2ms .. 6.5s
	}, []string{"op", "result"})}
}

type queryStart struct {
	at time.Time
	op string
}

type queryKey struct{}

func (t *queryTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, queryKey{}, queryStart{at: time.Now(), op: sqlOp(data.SQL)})
}

func (t *queryTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	st, ok := ctx.Value(queryKey{}).(queryStart)
	if !ok {
		return
	}
	result := "ok"
	if data.Err != nil {
		result = "error"
	}
	t.dur.WithLabelValues(st.op, result).Observe(time.Since(st.at).Seconds())
}

// sqlOps are the op label's values; any other statement is "other", so
// that the label stays bounded whatever SQL runs on the pool.
var sqlOps = map[string]bool{"insert": true, "select": true, "update": true, "delete": true, "begin": true, "commit": true, "rollback": true, "with": true}

// sqlOp is the first keyword of sql, lowercased, if it is one of sqlOps.
func sqlOp(sql string) string {
	sql = strings.TrimLeft(sql, " \t\r\n(")
	end := strings.IndexFunc(sql, func(r rune) bool { return !unicode.IsLetter(r) })
	if end < 0 {
		end = len(sql)
	}
	if op := strings.ToLower(sql[:end]); sqlOps[op] {
		return op
	}
	return "other"
}

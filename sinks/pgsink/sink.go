// Package pgsink writes the Goka group tables to PostgreSQL: it consumes the
// changelogs of the orders and inventory tables and upserts the orders,
// order_items and inventory rows that users query.
//
// The sink is at-least-once on Kafka and idempotent on Postgres: a batch is
// written in one transaction, every upsert only moves a row to a higher
// version, and offsets are committed to Kafka only after that transaction
// committed. Replaying any part of a changelog therefore leaves the database
// unchanged, and a crash at any point loses nothing.
package pgsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/orderpipe/orderpipe/internal/kafkaobs"
	"github.com/orderpipe/orderpipe/internal/stages"
	"github.com/orderpipe/orderpipe/topology"
)

// DefaultGroup is the consumer group of the sink.
const DefaultGroup = "orderpipe-sink"

// Config configures a Sink. The zero value of every optional field means its
// documented default.
type Config struct {
	// Brokers are the seed brokers. Required.
	Brokers []string
	// PostgresURL is the database, when Deps.Pool is nil: the sink then
	// owns a pool of its own, opened by Run and closed (within
	// ShutdownTimeout) when Run returns. It may name several hosts with
	// target_session_attrs=read-write (pgx), for a primary that moves.
	PostgresURL string
	// Migrate applies the schema migrations at the start of Run (what
	// `orderpipe run` and `orderpipe sink` do). Default false.
	Migrate bool
	// ClientID names the sink to the brokers. Default "orderpipe-sink".
	ClientID string
	// Group is the consumer group. Default DefaultGroup ("orderpipe-sink").
	// A group seen for the first time starts at the oldest offset of the
	// changelogs, so a new group rebuilds the tables from scratch.
	Group string
	// MaxBatch is the most records written in one database transaction.
	// Default 5000.
	MaxBatch int
	// MinBackoff and MaxBackoff bound the wait between two attempts to write
	// a batch while Postgres fails: it doubles from MinBackoff up to
	// MaxBackoff, with jitter. Defaults 100ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// WriteTimeout bounds one attempt to write a batch, so that a Postgres
	// that accepts connections but does not answer (a frozen server, a
	// network partition) counts as down instead of hanging the sink.
	// Default 30s.
	WriteTimeout time.Duration
	// ShutdownTimeout bounds each offset commit, which runs to its end even
	// when Run's context ends meanwhile (the batch is already in Postgres),
	// and leaving the group when Run returns. Default 5s.
	ShutdownTimeout time.Duration
	// PingInterval is how often the sink pings Postgres, so that Health
	// follows Postgres while there is nothing to write, and a write backing
	// off is retried as soon as Postgres answers again. Default 1s.
	PingInterval time.Duration
	// PingTimeout bounds one ping: a Postgres that does not answer within it
	// counts as unreachable. Default PingInterval.
	PingTimeout time.Duration
	// ClientOpts are appended to the franz-go options the sink sets, so they
	// win: tests pass e.g. kgo.FetchMaxWait.
	ClientOpts []kgo.Opt
}

func (c *Config) setDefaults() {
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 5000
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	if c.ClientID == "" {
		c.ClientID = "orderpipe-sink"
	}
	if c.PingInterval == 0 {
		c.PingInterval = time.Second
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = c.PingInterval
	}
}

// Deps are what the sink uses but does not own.
type Deps struct {
	// Pool, if set, is the database; it stays the caller's and the sink
	// never closes it. Default: the sink's own pool on Config.PostgresURL.
	Pool *pgxpool.Pool
	// Logger receives the sink's messages, and franz-go's (through kslog)
	// with source=franz-go, its info chatter at debug level. Default
	// slog.Default().
	Logger *slog.Logger
	// Registerer, when set, receives the sink's metrics: records, batches,
	// rows by table, db errors, refused batches, dead letters, commits
	// (counters), last commit age, backing off and postgres reachable
	// (gauges), batch and query durations (histograms), all named
	// orderpipe_sink_*; the final_to_stored series of
	// orderpipe_stage_latency_seconds; and the franz-go client's kprom
	// metrics with client="sink". The query durations come from a pgx
	// tracer on the sink's own pool only (not on Pool). Optional; New fails
	// if the registry already holds another sink's metrics.
	Registerer prometheus.Registerer
}

// Validate reports the first setting that cannot work. Zero values are
// valid: they mean the defaults.
func (c Config) Validate() error {
	set := c
	set.setDefaults()
	switch {
	case len(c.Brokers) == 0:
		return errors.New("pgsink: no brokers")
	case c.PostgresURL != "":
		if _, err := pgxpool.ParseConfig(c.PostgresURL); err != nil {
			return fmt.Errorf("pgsink: postgres url: %w", err)
		}
	case c.MaxBatch < 0:
		return fmt.Errorf("pgsink: max batch must be >= 0 (0 = default), got %d", c.MaxBatch)
	case c.MinBackoff < 0 || c.MaxBackoff < 0:
		return fmt.Errorf("pgsink: backoff must be >= 0 (0 = default), got %s..%s", c.MinBackoff, c.MaxBackoff)
	case set.MinBackoff > set.MaxBackoff:
		return fmt.Errorf("pgsink: min backoff %s is above max backoff %s", set.MinBackoff, set.MaxBackoff)
	case c.WriteTimeout < 0 || c.ShutdownTimeout < 0:
		return fmt.Errorf("pgsink: timeouts must be >= 0 (0 = default), got write %s, shutdown %s", c.WriteTimeout, c.ShutdownTimeout)
	case c.PingInterval < 0 || c.PingTimeout < 0:
		return fmt.Errorf("pgsink: ping interval and timeout must be >= 0 (0 = default), got %s, %s", c.PingInterval, c.PingTimeout)
	}
	return nil
}

// Sink consumes the table changelogs and writes them to Postgres. Create it
// with New and start it with Run; Health and Stats are safe to call from any
// goroutine at any time.
type Sink struct {
	cfg      Config
	pool     *pgxpool.Pool
	ownPool  bool // Run opens pool and closes it
	log      *slog.Logger
	reg      prometheus.Registerer // nil: no metrics
	running  atomic.Bool
	health   health
	reach    reach
	back     chan struct{} // the pinger saw Postgres come back
	stats    counters
	batchDur prometheus.Histogram
	stored   prometheus.Histogram // final_to_stored
	tracer   *queryTracer
	pos      positions
}

// New checks cfg and deps and returns a sink; it registers the metrics when
// deps.Registerer is set. It connects to nothing; Run does.
func New(cfg Config, deps Deps) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Pool == nil && cfg.PostgresURL == "" {
		return nil, errors.New("pgsink: no pool and no postgres url")
	}
	cfg.setDefaults()
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Sink{cfg: cfg, pool: deps.Pool, ownPool: deps.Pool == nil, log: log, reg: deps.Registerer, back: make(chan struct{}, 1)}
	s.batchDur = newBatchDuration()
	s.stored = stages.Histogram(stages.FinalToStored)
	s.tracer = newQueryTracer()
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{newCollector(s), s.stored, s.tracer.dur} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("pgsink: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Health returns nil while Postgres answers the sink's pings (every
// PingInterval while Run runs) and the last attempt to write to it
// succeeded (or none failed yet). Otherwise it says why: "postgres
// unreachable: ..." from the last failed ping, or since when writes fail
// while the sink is backing off. Rows that Postgres refuses do not make the
// sink unhealthy: they go to the dead-letter topic.
func (s *Sink) Health() error {
	unreachable, writes := s.reach.err(), s.health.err()
	switch {
	case unreachable != nil && writes != nil:
		return fmt.Errorf("%w; %w", unreachable, writes)
	case unreachable != nil:
		return unreachable
	}
	return writes
}

// Stats returns the sink's counters since New.
func (s *Sink) Stats() Stats { return s.stats.snapshot() }

// Run consumes and writes until ctx ends, then returns nil; it returns an
// error only if the sink cannot run at all. Run owns its franz-go client
// (consumer of both changelogs, producer of dead letters), creates it on
// entry and closes it before returning, after leaving the group. It runs
// one batch at a time on the calling goroutine; franz-go's own goroutines
// are the only others. Run must not be called again while it runs.
//
// When ctx ends in the middle of a batch, a batch already committed to
// Postgres still gets its offsets committed (within ShutdownTimeout); any
// other batch is abandoned without committing, and the next owner of its
// partitions writes it again.
//
// Rebalances wait while a batch is in progress (kgo.BlockRebalanceOnPoll),
// including while Postgres is down: a new group member then waits for the
// outage, and if it outlasts the rebalance timeout (franz-go default 60s)
// this member is evicted. That is safe: its offset commit then fails, and
// the new owner of the partitions writes the same rows again.
func (s *Sink) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("pgsink: Run is already running")
	}
	defer s.running.Store(false)
	if s.ownPool {
		pc, err := pgxpool.ParseConfig(s.cfg.PostgresURL)
		if err != nil {
			return fmt.Errorf("pgsink: postgres url: %w", err)
		}
		pc.ConnConfig.Tracer = s.tracer
		pool, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return fmt.Errorf("pgsink: postgres pool: %w", err)
		}
		s.pool = pool
		defer s.closePool(pool)
	}
	pingCtx, stopPing := context.WithCancel(ctx)
	pinged := make(chan struct{})
	go func() { defer close(pinged); s.ping(pingCtx) }()
	defer func() { stopPing(); <-pinged }()
	if s.cfg.Migrate {
		if err := migrateURL(ctx, s.cfg.PostgresURL, s.log); err != nil {
			return err
		}
		s.log.Info("schema migrations applied")
	}

	cl, err := kgo.NewClient(s.clientOpts()...)
	if err != nil {
		return fmt.Errorf("pgsink: new kafka client: %w", err)
	}
	defer s.close(cl)
	s.log.Info("sink started", "group", s.cfg.Group, "topics", []string{string(topology.OrdersTable()), string(topology.InventoryTable())}, "max_batch", s.cfg.MaxBatch)

	// fetchBackoff spaces out polls that return nothing but errors.
	fetchBackoff := backoff{min: s.cfg.MinBackoff, max: s.cfg.MaxBackoff}
	for {
		fetches := cl.PollRecords(ctx, s.cfg.MaxBatch)
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("pgsink: kafka client closed while running")
		}
		failed := false
		fetches.EachError(func(topic string, partition int32, err error) {
			// franz-go retries what can be retried; what surfaces here is
			// for an operator (e.g. data loss, authorization).
			failed = true
			s.log.Error("fetch failed", "topic", topic, "partition", partition, "err", err)
		})
		recs := fetches.Records()
		if len(recs) > 0 {
			s.process(ctx, cl, recs)
		}
		// Only now may partitions move: everything polled is either
		// committed or, when ctx ended, abandoned uncommitted.
		cl.AllowRebalance()
		if !failed || len(recs) > 0 {
			fetchBackoff.reset()
		} else if err := sleep(ctx, fetchBackoff.next()); err != nil {
			return nil
		}
	}
}

func (s *Sink) clientOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ClientID(s.cfg.ClientID),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(string(topology.OrdersTable()), string(topology.InventoryTable())),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A sink that crashed holds its partitions until its session times
		// out: with franz-go's 45s, each SIGKILL in the fault harness
		// stalled Postgres for ~45s (3 kills: converged 88s after). 10s
		// and a heartbeat a second, as the processors' Sarama has.
		kgo.SessionTimeout(10 * time.Second),
		kgo.HeartbeatInterval(time.Second),
		// Offsets are committed by process, after the database commit, and
		// rebalances wait until then so we never commit a partition that
		// moved to another member meanwhile.
		kgo.DisableAutoCommit(),
		// A fetch waits for 64 KiB or 50ms: the sink is not on the
		// saga's path, and with franz-go's 1 byte every fetch under a
		// steady load came back with a few records, which cost the broker
		// a request and Postgres a transaction each. Idle, a row lands at
		// most 50ms later.
		kgo.FetchMinBytes(64 << 10),
		kgo.FetchMaxWait(50 * time.Millisecond),
		kgo.AdjustFetchOffsetsFn(s.position),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, revoked map[string][]int32) { s.pos.forget(revoked) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) { s.pos.forget(lost) }),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) {
			if err := s.Health(); err != nil {
				s.log.Warn("rebalance waits for a batch that cannot be written", "err", err)
			}
		}),
		// Dead letters: franz-go's producer is idempotent with acks=all by
		// default; the partitioner is the one every producer shares.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(topology.Partitioner()),
	}
	opts = append(opts, kafkaobs.Opts(s.reg, "sink", s.log)...)
	return append(opts, s.cfg.ClientOpts...)
}

// position is where the sink starts on partitions it is assigned: where
// Postgres says the group's rows end (sink_offsets, written with the rows),
// not where the group's commits in Kafka are. After a failover to a standby
// that missed the newest transactions, their offsets are missing too and
// the records are read again. A partition Postgres has no offset for has
// nothing in this database: it is read from its start (a rebuild into an
// empty database; a database from before sink_offsets, rewritten once with
// the same rows). While Postgres cannot be read, it retries until the
// session is revoked; an error makes franz-go rejoin the group.
func (s *Sink) position(ctx context.Context, fetched map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	bo := backoff{min: s.cfg.MinBackoff, max: s.cfg.MaxBackoff}
	var stored map[tp]int64
	for attempt := 1; ; attempt++ {
		var err error
		rctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
		stored, err = readOffsets(rctx, s.pool, s.cfg.Group, false)
		cancel()
		if err == nil {
			s.health.up()
			s.reachable()
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pgsink: positions from postgres: %w", err)
		}
		since := s.health.down(err)
		wait := bo.next()
		s.log.Warn("cannot read the sink's offsets from postgres; retrying before consuming", "attempt", attempt, "down_since", since, "retry_in", wait.Round(time.Millisecond), "err", err)
		if err := s.retryWait(ctx, wait); err != nil {
			return nil, err
		}
	}
	out := make(map[string]map[int32]kgo.Offset, len(fetched))
	var total, behind, fresh int
	for topic, parts := range fetched {
		total += len(parts)
		out[topic] = make(map[int32]kgo.Offset, len(parts))
		for p, committed := range parts {
			n, ok := stored[tp{topic, p}]
			if !ok {
				out[topic][p] = kgo.NewOffset().AtStart()
				fresh++
				continue
			}
			// No epoch: the offset is ours, not the broker's, so no
			// truncation check is asked for.
			out[topic][p] = kgo.NewOffset().At(n).WithEpoch(-1)
			s.pos.set(tp{topic, p}, n)
			if c := committed.EpochOffset().Offset; c >= 0 && n < c {
				behind++
				s.log.Warn("postgres is behind the group's commits in Kafka: reading those records again", "topic", topic, "partition", p, "postgres", n, "kafka", c)
			}
		}
	}
	s.log.Info("positions from postgres", "partitions", total, "behind_kafka", behind, "from_start", fresh)
	return out, nil
}

// close leaves the group and closes cl within ShutdownTimeout.
func (s *Sink) close(cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	cl.AllowRebalance()
	if err := cl.LeaveGroupContext(ctx); err != nil {
		s.log.Warn("leave group", "group", s.cfg.Group, "err", err)
	}
	cl.Close()
	s.log.Info("sink stopped", "group", s.cfg.Group)
}

// closePool closes the sink's own pool within ShutdownTimeout: pgxpool's
// Close waits for every connection to be released, and a batch cut off by
// shutdown releases its connection only when Postgres answers.
func (s *Sink) closePool(pool *pgxpool.Pool) {
	done := make(chan struct{})
	go func() {
		pool.Close()
		close(done)
	}()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("postgres pool not closed within the shutdown timeout", "timeout", s.cfg.ShutdownTimeout)
	}
}

// process writes one polled batch and commits its offsets. It returns when
// the batch is committed, or when ctx ended; a batch it cannot write is
// retried, never skipped.
func (s *Sink) process(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) {
	s.stats.records.Add(uint64(len(recs)))
	b := newBatch(recs)
	if _, err := s.write(ctx, cl, b); err != nil {
		var re *rewindError
		if errors.As(err, &re) {
			s.rewind(cl, re)
			return
		}
		s.log.Info("batch abandoned at shutdown", "records", len(recs), "err", err)
		return
	}
	stored := time.Now()
	for _, o := range b.orders {
		if o.state.Status.Final() && !o.rec.Timestamp.IsZero() {
			s.stored.Observe(max(0, stored.Sub(o.rec.Timestamp)).Seconds())
		}
	}
	for _, o := range b.offsets {
		s.pos.set(tp{o.topic, o.partition}, o.next)
	}
	// The batch and its offsets are in Postgres, its dead letters
	// acknowledged. Kafka's commit is for monitoring (lag): the positions
	// come from Postgres (see position). Commit even if ctx just ended.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := cl.CommitRecords(cctx, recs...); err != nil {
		// Harmless for correctness: the records are written, and whoever
		// consumes them again writes the same rows.
		s.log.Warn("commit offsets", "records", len(recs), "err", err)
		return
	}
	s.stats.commits.Add(1)
	s.stats.lastCommit.Store(time.Now().UnixNano())
}

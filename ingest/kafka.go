package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/internal/kafkaobs"
	"github.com/orderpipe/orderpipe/internal/supervise"
	"github.com/orderpipe/orderpipe/processors"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// recordDeadline is how long franz-go may keep a record before failing it,
// out of the edge's ProduceTimeout: franz-go notices an expired record on
// its next failed metadata refresh, which the options below keep within
// ~0.5s while no broker answers (measured on kfake: 0.3-0.6s), so a record
// that can be failed is failed before ProduceTimeout.
func recordDeadline(produceTimeout time.Duration) time.Duration {
	return max(produceTimeout/2, produceTimeout-1500*time.Millisecond)
}

// newProducer builds the edge's producer: idempotent with acks=all (retries
// neither duplicate nor reorder an order), the partitioner every producer
// shares (or views and lookups would read the wrong partition), and
// timeouts aligned with ProduceTimeout so that the edge learns every
// record's fate in time when it can be learnt. Its kprom metrics
// (client="edge") go to reg, its logs through kslog to log.
func newProducer(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*kgo.Client, error) {
	deadline := recordDeadline(cfg.ProduceTimeout)
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID + "-edge"),
		kgo.RecordPartitioner(topology.Partitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2 * time.Millisecond),
		kgo.MaxBufferedRecords(100_000),
		// franz-go fails an expired record when the metadata refresh that a
		// failed produce triggers fails too ("partition load error"), and
		// refreshes at most every MetadataMinAge (default 5s): with the
		// broker away, records would outlive ProduceTimeout by seconds.
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.RetryBackoffFn(func(n int) time.Duration { return min(50*time.Millisecond<<min(n, 3), 250*time.Millisecond) }),
	}
	if deadline >= time.Second { // franz-go's floor for both
		opts = append(opts,
			// A backstop for the record contexts, which carry the deadline.
			kgo.RecordDeliveryTimeout(deadline),
			// A broker that is up answers a produce within this (or says
			// it timed out), so that a slow ISR shows up before
			// ProduceTimeout.
			kgo.ProduceRequestTimeout(max(deadline/2, time.Second)),
		)
	}
	opts = append(opts, kafkaobs.Opts(reg, "edge", log)...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("ingest: producer: %w", err)
	}
	return cl, nil
}

// viewsConfig is the Goka configuration of the edge's views.
func (c Config) viewsConfig(log *slog.Logger) processors.Config {
	return processors.Config{
		Brokers: c.Brokers, DataDir: c.DataDir, ClientID: c.ClientID, Topology: c.Topology,
		Replication: c.Replication, FetchWait: c.FetchWait, Logger: log.With("component", "goka"),
	}
}

// errViewDown answers reads while a view is being rebuilt.
var errViewDown = errors.New("the view is restarting")

// tableView is a View of one table that the edge runs, and rebuilds when
// Goka gives up on it (a Goka view runs once). Reads go to the current view.
type tableView struct {
	name string
	// open builds a view and the func that closes the clients Goka opens
	// for it and never closes.
	open   func() (*goka.View, func() error, error)
	cur    atomic.Pointer[goka.View]
	status supervise.Status
	log    *slog.Logger
	// caughtUp: the view has caught up with its table once in this
	// process, so its local copy is worth serving while it reconnects.
	caughtUp atomic.Bool
	// onRunning, if set, is called with each view Run builds once it is
	// running (has recovered), on a goroutine Run owns.
	onRunning func(*goka.View)
}

// Get reads key from the current view.
func (v *tableView) Get(key string) (any, error) {
	cur := v.cur.Load()
	if cur == nil {
		return nil, errViewDown
	}
	return cur.Get(key)
}

// Recovered reports whether the current view has caught up.
func (v *tableView) Recovered() bool {
	cur := v.cur.Load()
	return cur != nil && cur.Recovered()
}

// check is the view's readiness: why it is not serving. A view that has
// caught up once stays ready while it reconnects (a broker restart): it
// serves its local copy, and live says it may be stale. Taking every
// edge out of the load balancer then would fail the reads as well as the
// writes, which get 503 from the edge anyway.
func (v *tableView) check() error {
	if v.Recovered() {
		v.caughtUp.Store(true)
		v.status.Recovered()
		return nil
	}
	if v.readable() {
		return nil
	}
	if err := v.status.Recovering(); err != nil {
		return err
	}
	return errors.New("recovering")
}

// readable: reads may be answered from the view. It is caught up, or it
// caught up once in this process and reconnects: its local copy is then
// at most as old as the outage.
func (v *tableView) readable() bool {
	return v.Recovered() || (v.caughtUp.Load() && v.cur.Load() != nil)
}

// live fails while the view is behind its table: reads may be stale.
func (v *tableView) live() error {
	switch {
	case v.Recovered():
		return nil
	case v.cur.Load() == nil:
		return errViewDown
	}
	return errors.New("reconnecting: reads are served from the local copy and may be stale")
}

// Run runs the view until ctx ends, rebuilding it after a failure.
func (v *tableView) Run(ctx context.Context) error {
	return supervise.Restart(ctx, v.name, supervise.Policy{MaxBackoff: 5 * time.Second}, &v.status, v.log, func(ctx context.Context) error {
		view, closeClients, err := v.open()
		if err != nil {
			return err
		}
		defer func() {
			if err := closeClients(); err != nil {
				v.log.Debug("close the clients of a view", "view", v.name, "err", err)
			}
		}()
		v.cur.Store(view)
		defer v.cur.Store(nil)
		if v.onRunning != nil {
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				select {
				case <-view.WaitRunning():
					v.onRunning(view)
				case <-rctx.Done():
				}
			}()
			defer func() { cancel(); <-done }()
		}
		if err := view.Run(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		return nil
	})
}

// doubt is the edge's breaker, per partition of a topic. A partition is
// closed to new records, which then get 503 at once without being
// produced, while
//   - it has a record in doubt: written to a broker that has not answered
//     within ProduceTimeout. franz-go keeps a partition's records in order
//     and cannot fail one queued behind it, so a new one would be in doubt
//     too;
//   - or a record for it failed and no broker has answered a ping since.
//     franz-go fails a record when it has an answer for it, but an answer
//     to a retry does not prove an earlier, unanswered write of the same
//     batch did not land: across a broker restart such records were stored
//     after franz-go had failed them (seen in the broker-restart scenario).
//     So a failed record is answered 504, and the breaker makes sure that
//     only the first few of an outage are: everything after it is refused
//     without producing, which is a 503 that is certain.
//
// Safe for concurrent use.
type doubt struct {
	mu     sync.Mutex
	counts map[string]map[int32]int  // topic -> partition -> records in doubt
	failed map[string]map[int32]bool // topic -> partitions with a failure and no ping since
}

func newDoubt() *doubt {
	return &doubt{counts: map[string]map[int32]int{}, failed: map[string]map[int32]bool{}}
}

func (d *doubt) add(topic string, p int32, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := partitions(d.counts, topic)
	if m[p] += n; m[p] <= 0 {
		delete(m, p)
	}
}

// partitions returns topic's map in m, made on first use.
func partitions[V any](m map[string]map[int32]V, topic string) map[int32]V {
	pm := m[topic]
	if pm == nil {
		pm = map[int32]V{}
		m[topic] = pm
	}
	return pm
}

// fail closes partition p of topic until clearFailed.
func (d *doubt) fail(topic string, p int32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	partitions(d.failed, topic)[p] = true
}

// anyFailed reports whether a partition is closed by a failure.
func (d *doubt) anyFailed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.failed {
		if len(m) > 0 {
			return true
		}
	}
	return false
}

// clearFailed opens the partitions closed by failures: a broker answered.
func (d *doubt) clearFailed() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.failed)
}

// blocked reports whether partition p of topic is closed.
func (d *doubt) blocked(topic string, p int32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counts[topic][p] > 0 || d.failed[topic][p]
}

// total is the number of records in doubt.
func (d *doubt) total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range d.counts {
		for _, c := range m {
			n += c
		}
	}
	return n
}

// pingWhileFailed pings the brokers every interval while a partition is
// closed by a failure, and opens the partitions once one answers; and,
// every healthEvery otherwise, so that /readyz's broker check notices an
// unreachable broker before a produce has timed out. It returns when ctx
// ends.
func (e *Edge) pingWhileFailed(ctx context.Context, interval time.Duration) error {
	const healthEvery = 4 // ticks: one ping a second at 250ms
	t := time.NewTicker(interval)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		failed := e.doubt.anyFailed()
		if !failed && tick%healthEvery != 0 {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := e.producer.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		e.pinged(err)
		if err == nil && failed {
			e.doubt.clearFailed()
			e.log.Info("a broker answers again: orders are produced again")
		}
	}
}

// pinged records the outcome of a ping for the broker check: the last
// error and since when pings have failed, or nothing once one answered.
func (e *Edge) pinged(err error) {
	if err == nil {
		e.pingFailing.Store(nil)
		return
	}
	since := time.Now()
	if prev := e.pingFailing.Load(); prev != nil {
		since = prev.since
	}
	e.pingFailing.Store(&pingFailure{err: err, since: since})
}

// pingFailure is a ping that failed, and since when they have.
type pingFailure struct {
	err   error
	since time.Time
}

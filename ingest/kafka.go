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
	"github.com/orderpipe/orderpipe/internal/supervise"
	"github.com/orderpipe/orderpipe/processors"
	"github.com/orderpipe/orderpipe/topology"
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
// record's fate in time when it can be learnt.
func newProducer(cfg Config) (*kgo.Client, error) {
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

// check is the view's readiness: why it is not serving.
func (v *tableView) check() error {
	if v.Recovered() {
		v.status.Recovered()
		return nil
	}
	if err := v.status.Recovering(); err != nil {
		return err
	}
	return errors.New("recovering")
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
		if err := view.Run(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		return nil
	})
}

// doubt counts, per partition, the records written to a broker that has
// not answered by their ProduceTimeout. franz-go keeps the records of a
// partition in order and cannot fail one queued behind a record in doubt,
// so a new order for such a partition would be in doubt too: it gets 503 at
// once instead, without being produced. Safe for concurrent use.
type doubt struct {
	mu     sync.Mutex
	counts map[string]map[int32]int // topic -> partition -> records in doubt
}

func newDoubt() *doubt { return &doubt{counts: map[string]map[int32]int{}} }

func (d *doubt) add(topic string, p int32, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.counts[topic]
	if m == nil {
		m = map[int32]int{}
		d.counts[topic] = m
	}
	if m[p] += n; m[p] <= 0 {
		delete(m, p)
	}
}

// blocked reports whether partition p of topic has a record in doubt.
func (d *doubt) blocked(topic string, p int32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counts[topic][p] > 0
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

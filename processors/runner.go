package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/internal/supervise"
	"github.com/orderpipe/orderpipe/processors/inventory"
	"github.com/orderpipe/orderpipe/processors/orders"
	"github.com/orderpipe/orderpipe/processors/producer"
	"github.com/prometheus/client_golang/prometheus"
	gometrics "github.com/rcrowley/go-metrics"
)

// Deps are what the processors use but do not own.
type Deps struct {
	// Registerer receives the processors' metrics. Optional.
	Registerer prometheus.Registerer
	// Logger receives Goka's and the callbacks' messages. Default
	// slog.Default().
	Logger *slog.Logger
}

// Processors are the orders and the inventory group of one process, each a
// role of its own (Group), and the producer both write through. Several
// processes share the partitions of each group through its consumer
// group.
type Processors struct {
	Orders, Inventory *Group
	producer          *producer.Client
}

// New checks cfg and builds both groups and their producer; it connects to
// nothing yet. Close it once neither group runs.
func New(cfg Config, deps Deps) (*Processors, error) {
	if deps.Logger != nil {
		cfg.Logger = deps.Logger
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register processor metrics: %w", err)
	}
	if cfg.Regressions, err = NewRegressions(deps.Registerer, cfg.Logger); err != nil {
		return nil, err
	}
	prod, err := producer.New(producer.Config{
		Brokers: cfg.Brokers, ClientID: cfg.ClientID + "-processors",
		Linger: cfg.FlushFrequency, DeliveryTimeout: cfg.BrokerRetry,
	}, producer.Deps{Registerer: deps.Registerer, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	op := orders.New(cfg.Logger.With("group", "orders"), ordersMetrics{m}, nil, orders.Limits{})
	ip := inventory.New(cfg.Logger.With("group", "inventory"), inventoryMetrics{m}, nil)
	ps := &Processors{
		Orders:    &Group{cfg: cfg, graph: op.Graph(), producers: prod.Builder(string(op.Graph().Group()))},
		Inventory: &Group{cfg: cfg, graph: ip.Graph(), producers: prod.Builder(string(ip.Graph().Group()))},
		producer:  prod,
	}
	if deps.Registerer != nil {
		// A Sarama registry per group: Sarama unregisters a client's
		// metrics from a shared registry when that client closes, even
		// those that other clients still update.
		cs := []prometheus.Collector{newGokaCollector(ps.Groups()...)}
		for _, g := range ps.Groups() {
			if g.cfg.MetricRegistry == nil {
				g.cfg.MetricRegistry = gometrics.NewRegistry()
			}
			cs = append(cs, SaramaCollector(g.Name(), g.cfg.MetricRegistry))
		}
		for _, c := range cs {
			if err := deps.Registerer.Register(c); err != nil {
				prod.Close()
				return nil, fmt.Errorf("register goka and sarama metrics: %w", err)
			}
		}
	}
	return ps, nil
}

// Close flushes and closes the producer; call it after both groups' Run
// returned.
func (p *Processors) Close() { p.producer.Close() }

// Groups returns both groups, orders first.
func (p *Processors) Groups() []*Group { return []*Group{p.Orders, p.Inventory} }

// Group runs one Goka processor group. A Goka processor can run only once
// and ends on errors Sarama gave up on, so every Run builds a new one: a
// supervisor that calls Run again after a failure restarts the group in
// this process, on the table state in DataDir.
type Group struct {
	cfg       Config
	graph     *goka.GroupGraph
	producers goka.ProducerBuilder
	// current is the processor of the running Run, nil between runs.
	current atomic.Pointer[goka.Processor]
	// storageErr is set when table storage could not be opened or rebuilt,
	// which no restart cures. Goka flattens the errors of storage builders
	// into strings, so the builder reports it here.
	storageErr atomic.Pointer[error]
}

// Name is the group's name ("orders" or "inventory").
func (g *Group) Name() string { return string(g.graph.Group()) }

// Run builds a processor and runs it until ctx ends (it then returns nil,
// after Goka committed what it processed) or the processor fails. A failure
// of table storage that cannot be rebuilt is supervise.Permanent. Run must
// not be called again while it runs.
func (g *Group) Run(ctx context.Context) error {
	opts, err := g.cfg.processorOptions(g.graph.Group(), g.producers, g.storageFailed)
	if err != nil {
		return supervise.Permanent(err)
	}
	p, err := goka.NewProcessor(g.cfg.Brokers, g.graph, opts...)
	if err != nil {
		return fmt.Errorf("new %s processor: %w", g.Name(), err)
	}
	g.current.Store(p)
	defer g.current.Store(nil)
	pctx, stopProgress := context.WithCancel(ctx)
	progress := make(chan struct{})
	go func() { defer close(progress); g.logRecovery(pctx, p, recoveryProgressEvery) }()
	defer func() { stopProgress(); <-progress }()
	err = p.Run(ctx)
	if se := g.storageErr.Load(); se != nil {
		return supervise.Permanent(fmt.Errorf("%s processor: %w", g.Name(), *se))
	}
	if err != nil && !(errors.Is(err, context.Canceled) && ctx.Err() != nil) {
		return fmt.Errorf("%s processor: %w", g.Name(), err)
	}
	return nil
}

func (g *Group) storageFailed(err error) { g.storageErr.Store(&err) }

// recoveryProgressEvery spaces the progress lines of a table recovery.
const recoveryProgressEvery = 5 * time.Second

// logRecovery says every interval, until p has recovered its table or ctx
// ends, how far the recovery is.
func (g *Group) logRecovery(ctx context.Context, p *goka.Processor, every time.Duration) {
	table := string(goka.GroupTable(g.graph.Group()))
	logRecovery(ctx, g.cfg.Logger.With("group", g.Name()), table, every, p.Recovered, func() []*goka.TableStats {
		var out []*goka.TableStats
		for _, pp := range p.StatsWithContext(ctx).Group {
			out = append(out, pp.TableStats)
		}
		return out
	})
}

// logRecovery logs progress lines every interval until recovered or ctx
// ends: partitions done of those held, and records still to read. A
// recovery shorter than interval says nothing, not even its end.
func logRecovery(ctx context.Context, log *slog.Logger, table string, every time.Duration, recovered func() bool, tables func() []*goka.TableStats) {
	start := time.Now()
	t := time.NewTicker(every)
	defer t.Stop()
	logged := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if recovered() {
			if logged {
				log.Info(fmt.Sprintf("recovered table %s", table), "took", time.Since(start).Round(time.Millisecond))
			}
			return
		}
		done, total, left := recoveryProgress(tables())
		if total == 0 {
			continue // no partitions assigned yet
		}
		logged = true
		log.Info(fmt.Sprintf("recovering table %s: %d/%d partitions", table, done, total), "records_left", left, "elapsed", time.Since(start).Round(time.Second))
	}
}

// recoveryProgress counts the partitions of tables that have recovered, of
// all, and the records the others still have to read.
func recoveryProgress(tables []*goka.TableStats) (done, total int, left int64) {
	for _, ts := range tables {
		if ts == nil {
			continue
		}
		total++
		if ts.Status == goka.PartitionRunning || (ts.Recovery != nil && !ts.Recovery.RecoveryTime.IsZero()) {
			done++
			continue
		}
		if ts.Recovery != nil && ts.Recovery.Hwm > ts.Recovery.Offset {
			left += ts.Recovery.Hwm - ts.Recovery.Offset
		}
	}
	return done, total, left
}

// Ready reports nil once the running processor has recovered its table and
// consumes; until then its answers would come from stale state.
func (g *Group) Ready() error {
	p := g.current.Load()
	switch {
	case p == nil:
		return fmt.Errorf("%s processor is not running", g.Name())
	case !p.Recovered():
		return fmt.Errorf("%s processor is recovering its table", g.Name())
	}
	return nil
}

// Processor returns the running Goka processor, or nil between runs, for
// tests and tools that read its state (Processor.Get serves locally owned
// partitions).
func (g *Group) Processor() *goka.Processor { return g.current.Load() }

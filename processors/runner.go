package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/internal/supervise"
	"github.com/orderpipe/orderpipe/processors/inventory"
	"github.com/orderpipe/orderpipe/processors/orders"
	"github.com/prometheus/client_golang/prometheus"
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
// role of its own (Group). Several processes share the partitions of each
// group through its consumer group.
type Processors struct {
	Orders, Inventory *Group
}

// New checks cfg and builds both groups; it connects to nothing yet.
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
	op := orders.New(cfg.Logger.With("group", "orders"), ordersMetrics{m}, nil, orders.Limits{})
	ip := inventory.New(cfg.Logger.With("group", "inventory"), inventoryMetrics{m}, nil)
	return &Processors{
		Orders:    &Group{cfg: cfg, graph: op.Graph()},
		Inventory: &Group{cfg: cfg, graph: ip.Graph()},
	}, nil
}

// Groups returns both groups, orders first.
func (p *Processors) Groups() []*Group { return []*Group{p.Orders, p.Inventory} }

// Group runs one Goka processor group. A Goka processor can run only once
// and ends on errors Sarama gave up on, so every Run builds a new one: a
// supervisor that calls Run again after a failure restarts the group in
// this process, on the table state in DataDir.
type Group struct {
	cfg   Config
	graph *goka.GroupGraph
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
	opts, err := g.cfg.processorOptions(g.graph.Group(), g.storageFailed)
	if err != nil {
		return supervise.Permanent(err)
	}
	p, err := goka.NewProcessor(g.cfg.Brokers, g.graph, opts...)
	if err != nil {
		return fmt.Errorf("new %s processor: %w", g.Name(), err)
	}
	g.current.Store(p)
	defer g.current.Store(nil)
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

package processors

import (
	"context"
	"errors"
	"fmt"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/processors/inventory"
	"github.com/orderpipe/orderpipe/processors/orders"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// Runner runs the orders and the inventory processor of one process. Several
// processes running a Runner share the partitions through the consumer
// groups.
type Runner struct {
	cfg       Config
	orders    *goka.Processor
	inventory *goka.Processor
}

// NewRunner builds both processors. It connects to the brokers and fails if
// the group tables do not exist or do not match the topology (Goka's topic
// manager runs with NoCreate and MismatchBehavior=Fail). reg may be nil.
func NewRunner(cfg Config, reg prometheus.Registerer) (*Runner, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register processor metrics: %w", err)
	}
	r := &Runner{cfg: cfg}
	op := orders.New(cfg.Logger.With("group", "orders"), ordersMetrics{m}, nil, orders.Limits{})
	if r.orders, err = r.newProcessor(op.Graph()); err != nil {
		return nil, err
	}
	ip := inventory.New(cfg.Logger.With("group", "inventory"), inventoryMetrics{m}, nil)
	if r.inventory, err = r.newProcessor(ip.Graph()); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Runner) newProcessor(g *goka.GroupGraph) (*goka.Processor, error) {
	opts, err := r.cfg.processorOptions(g.Group())
	if err != nil {
		return nil, err
	}
	p, err := goka.NewProcessor(r.cfg.Brokers, g, opts...)
	if err != nil {
		return nil, fmt.Errorf("new %s processor: %w", g.Group(), err)
	}
	return p, nil
}

// Run runs both processors until ctx ends or one fails; it returns nil after
// a clean stop. Goka commits the offsets of everything processed before it
// returns.
func (r *Runner) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range []*goka.Processor{r.orders, r.inventory} {
		g.Go(func() error {
			if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s processor: %w", p.Graph().Group(), err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Ready reports nil once both processors have recovered their tables and
// are consuming; until then their answers would come from stale state.
func (r *Runner) Ready() error {
	for _, p := range []*goka.Processor{r.orders, r.inventory} {
		if !p.Recovered() {
			return fmt.Errorf("%s processor is recovering its table", p.Graph().Group())
		}
	}
	return nil
}

// Processors returns the Goka processors, for tests and tools that read
// their state (Processor.Get serves locally owned partitions).
func (r *Runner) Processors() (ordersProcessor, inventoryProcessor *goka.Processor) {
	return r.orders, r.inventory
}

package processors

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/lovoo/goka"
	"github.com/lovoo/goka/storage"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus"
)

// Regressions is the detector every table reader (a processor recovering
// its table, a view) runs on each record it applies: a record whose state
// is older than the one stored — a lower Version for an order, a lower
// LastOffset for a SKU — is counted in orderpipe_table_regressions_total,
// logged as an error, and not applied, so the newer state stays. In a
// sound log it never happens (one writer per key, acknowledged in order);
// it is a detector, not a filter: a changelog that went back has already
// lost what the newer state recorded for anyone who rebuilds from it.
// Equal positions are fine: replays rewrite a state unchanged. Safe for
// concurrent use.
type Regressions struct {
	count *prometheus.CounterVec
	log   *slog.Logger
}

// NewRegressions registers the counter in reg (optional). Several
// components of one process share it: a counter already registered there
// is reused.
func NewRegressions(reg prometheus.Registerer, log *slog.Logger) (*Regressions, error) {
	if log == nil {
		log = slog.Default()
	}
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "orderpipe_table_regressions_total",
		Help: "Table records older than the state already applied (orders: Version, inventory: LastOffset), kept out, by table. Must stay 0.",
	}, []string{"table"})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("register table regressions: %w", err)
			}
			existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				return nil, fmt.Errorf("register table regressions: %w", err)
			}
			c = existing
		}
	}
	return &Regressions{count: c, log: log}, nil
}

// position reads the order of a table's values: Version for orders,
// LastOffset for stock. ok is false for a table without one.
func position(table goka.Table, data []byte) (pos int64, ok bool, err error) {
	switch table {
	case topology.OrdersTable():
		v, err := saga.OrderStateVersion(data)
		return int64(v), true, err
	case topology.InventoryTable():
		v, err := saga.StockStateLastOffset(data)
		return v, true, err
	}
	return 0, false, nil
}

// Update is the goka.UpdateCallback of table: goka.DefaultUpdate unless
// the record goes back. applied reports which value the storage holds
// after the call (the record's, or the newer one kept); it may be nil.
func (r *Regressions) Update(table goka.Table, applied func(ctx goka.UpdateContext, key string, value []byte)) goka.UpdateCallback {
	return func(ctx goka.UpdateContext, s storage.Storage, key string, value []byte) error {
		kept, err := r.check(table, ctx, s, key, value)
		if err != nil {
			return err
		}
		if kept != nil {
			value = kept
		} else if err := goka.DefaultUpdate(ctx, s, key, value); err != nil {
			return err
		}
		if applied != nil {
			applied(ctx, key, value)
		}
		return nil
	}
}

// check returns the stored value when value must not replace it.
func (r *Regressions) check(table goka.Table, ctx goka.UpdateContext, s storage.Storage, key string, value []byte) ([]byte, error) {
	if value == nil {
		return nil, nil // a deletion has no position
	}
	newPos, ok, err := position(table, value)
	if !ok || err != nil {
		// An undecodable record is stored as it is: the readers report it.
		return nil, nil
	}
	old, err := s.Get(key)
	if err != nil {
		return nil, fmt.Errorf("read %s/%s before applying: %w", table, key, err)
	}
	if old == nil {
		return nil, nil
	}
	oldPos, _, err := position(table, old)
	if err != nil || newPos >= oldPos {
		return nil, nil
	}
	r.count.WithLabelValues(string(table)).Inc()
	r.log.Error("table record goes back: kept the newer state", "table", string(table), "key", key,
		"partition", ctx.Partition(), "offset", ctx.Offset(), "record_position", newPos, "kept_position", oldPos)
	return old, nil
}

package pgsink

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// orderRow is the newest state of one order in a batch, with the record it
// came from (for the dead-letter topic, should Postgres refuse it).
type orderRow struct {
	state *saga.OrderState
	rec   *kgo.Record
}

// stockRow is the newest state of one SKU in a batch.
type stockRow struct {
	sku   string
	state *saga.StockState
	rec   *kgo.Record
}

// deadLetter is a record the sink gives up on, with the reason.
type deadLetter struct {
	rec    *kgo.Record
	reason error
}

// batch is what one transaction writes: the newest version of every key in
// the polled records, sorted by primary key so that concurrent writers take
// row locks in the same order.
type batch struct {
	orders []orderRow
	stock  []stockRow
	// dead are records that cannot be decoded or stored at all.
	dead []deadLetter
	// offsets are, per partition polled, the offset of the next record
	// to read: written with the rows, in the same transaction.
	offsets []partitionOffset
}

// partitionOffset is the sink's position in one partition.
type partitionOffset struct {
	topic     string
	partition int32
	next      int64
}

// newBatch decodes recs and keeps the highest version of each key. Among
// equal versions the later record wins. Tombstones (nil values) are skipped:
// the tables never delete a row, and neither does the sink.
func newBatch(recs []*kgo.Record) *batch {
	b := &batch{}
	orders := make(map[saga.OrderID]orderRow)
	stock := make(map[string]stockRow)
	type tp struct {
		topic     string
		partition int32
	}
	next := make(map[tp]int64)
	for _, rec := range recs {
		// Every record counts, tombstones and dead letters too: they are
		// done with once the transaction commits.
		if k := (tp{rec.Topic, rec.Partition}); rec.Offset+1 > next[k] {
			next[k] = rec.Offset + 1
		}
		if rec.Value == nil {
			continue
		}
		switch rec.Topic {
		case string(topology.OrdersTable()):
			o, err := decodeOrder(rec)
			if err != nil {
				b.dead = append(b.dead, deadLetter{rec, err})
				continue
			}
			if old, ok := orders[o.OrderID]; !ok || o.Version >= old.state.Version {
				orders[o.OrderID] = orderRow{o, rec}
			}
		case string(topology.InventoryTable()):
			st, err := decodeStock(rec)
			if err != nil {
				b.dead = append(b.dead, deadLetter{rec, err})
				continue
			}
			sku := string(rec.Key)
			if old, ok := stock[sku]; !ok || st.Version >= old.state.Version {
				stock[sku] = stockRow{sku, st, rec}
			}
		default:
			b.dead = append(b.dead, deadLetter{rec, fmt.Errorf("pgsink does not consume topic %s", rec.Topic)})
		}
	}
	for _, r := range orders {
		b.orders = append(b.orders, r)
	}
	slices.SortFunc(b.orders, func(x, y orderRow) int {
		return bytes.Compare(x.state.OrderID[:], y.state.OrderID[:])
	})
	for _, r := range stock {
		b.stock = append(b.stock, r)
	}
	slices.SortFunc(b.stock, func(x, y stockRow) int { return cmp.Compare(x.sku, y.sku) })
	for k, n := range next {
		b.offsets = append(b.offsets, partitionOffset{k.topic, k.partition, n})
	}
	slices.SortFunc(b.offsets, func(x, y partitionOffset) int {
		return cmp.Or(cmp.Compare(x.topic, y.topic), cmp.Compare(x.partition, y.partition))
	})
	return b
}

// decodeOrder decodes an orders-table record and refuses what the orders
// table could never hold.
func decodeOrder(rec *kgo.Record) (*saga.OrderState, error) {
	o, err := saga.DecodeOrderState(rec.Value)
	if err != nil {
		return nil, fmt.Errorf("decode order state: %w", err)
	}
	if string(rec.Key) != o.OrderID.String() {
		return nil, fmt.Errorf("decode order state: %w: key %q is not the order id %s", saga.ErrMalformed, rec.Key, o.OrderID)
	}
	if o.Version > math.MaxInt64 {
		return nil, fmt.Errorf("decode order state: %w: version %d does not fit a bigint", saga.ErrMalformed, o.Version)
	}
	return o, nil
}

// decodeStock decodes an inventory-table record, whose key is the SKU.
func decodeStock(rec *kgo.Record) (*saga.StockState, error) {
	st, err := saga.DecodeStockState(rec.Value)
	if err != nil {
		return nil, fmt.Errorf("decode stock state: %w", err)
	}
	if len(rec.Key) == 0 {
		return nil, fmt.Errorf("decode stock state: %w: empty key (the SKU)", saga.ErrMalformed)
	}
	if st.Version > math.MaxInt64 {
		return nil, fmt.Errorf("decode stock state: %w: version %d does not fit a bigint", saga.ErrMalformed, st.Version)
	}
	return st, nil
}

// itemCount is the number of order_items rows of the batch.
func (b *batch) itemCount() int {
	n := 0
	for _, r := range b.orders {
		n += len(r.state.Lines)
	}
	return n
}

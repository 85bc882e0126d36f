package faults

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// readTopic reads topic from its start to its current end offsets, every
// partition in offset order.
func (c *cluster) readTopic(ctx context.Context, topic string) ([]*kgo.Record, error) {
	ends, err := c.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	want := map[int32]int64{}
	offsets := map[string]map[int32]kgo.Offset{topic: {}}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			offsets[topic][o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.seeds...), kgo.ConsumePartitions(offsets), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w (%d partitions short)", topic, err, len(want))
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return nil, fmt.Errorf("read %s: %w", topic, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := want[r.Partition]; ok && r.Offset < end {
				out = append(out, r)
				if r.Offset == end-1 {
					delete(want, r.Partition)
				}
			}
		})
	}
	return out, nil
}

// tables is what the group tables' changelogs hold: every order's
// states in the order they were written, and every SKU's last state.
type tables struct {
	orders map[string][]*saga.OrderState
	stock  map[string]*saga.StockState
}

func (o tables) last(id string) *saga.OrderState {
	s := o.orders[id]
	if len(s) == 0 {
		return nil
	}
	return s[len(s)-1]
}

func (c *cluster) readTables(ctx context.Context) (tables, error) {
	t := tables{orders: map[string][]*saga.OrderState{}, stock: map[string]*saga.StockState{}}
	recs, err := c.readTopic(ctx, string(topology.OrdersTable()))
	if err != nil {
		return t, err
	}
	for _, r := range recs {
		if r.Value == nil {
			continue
		}
		st, err := saga.DecodeOrderState(r.Value)
		if err != nil {
			return t, fmt.Errorf("orders table, offset %d/%d: %w", r.Partition, r.Offset, err)
		}
		t.orders[string(r.Key)] = append(t.orders[string(r.Key)], st)
	}
	if recs, err = c.readTopic(ctx, string(topology.InventoryTable())); err != nil {
		return t, err
	}
	for _, r := range recs {
		if r.Value == nil {
			continue
		}
		st, err := saga.DecodeStockState(r.Value)
		if err != nil {
			return t, fmt.Errorf("inventory table, offset %d/%d: %w", r.Partition, r.Offset, err)
		}
		t.stock[string(r.Key)] = st
	}
	return t, nil
}

// pgOrder and pgStock are Postgres's rows.
type pgOrder struct {
	status string
	total  int64
}

type pgStock struct{ available, reserved, sold int64 }

func (c *cluster) readPostgres(ctx context.Context) (map[string]pgOrder, map[string]pgStock, error) {
	conn, err := pgx.Connect(ctx, c.pgURL)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	orders := map[string]pgOrder{}
	rows, err := conn.Query(ctx, "select order_id::text, status, total_cents from orders")
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var id string
		var o pgOrder
		if err := rows.Scan(&id, &o.status, &o.total); err != nil {
			return nil, nil, err
		}
		orders[id] = o
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	stock := map[string]pgStock{}
	rows, err = conn.Query(ctx, "select sku, available, reserved, sold from inventory")
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var sku string
		var s pgStock
		if err := rows.Scan(&sku, &s.available, &s.reserved, &s.sold); err != nil {
			return nil, nil, err
		}
		stock[sku] = s
	}
	return orders, stock, rows.Err()
}

// pgFinal counts how many of ids Postgres holds as final.
func (c *cluster) pgFinal(ctx context.Context, ids []string) (int, error) {
	conn, err := pgx.Connect(ctx, c.pgURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	err = conn.QueryRow(ctx, "select count(*) from orders where order_id = any($1::uuid[]) and status <> 'pending'", ids).Scan(&n)
	return n, err
}

// mirrors compares Postgres with the group tables (I5) and returns the
// first differences, at most 5, and how many there are.
func mirrors(t tables, orders map[string]pgOrder, stock map[string]pgStock) (int, []string) {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	for id, states := range t.orders {
		st := states[len(states)-1]
		got, ok := orders[id]
		if !ok || got.status != st.Status.String() || got.total != st.TotalCents() {
			add("order %s: table %s/%d, postgres %+v (present %v)", id, st.Status, st.TotalCents(), got, ok)
		}
	}
	for id := range orders {
		if _, ok := t.orders[id]; !ok {
			add("order %s in postgres but in no table", id)
		}
	}
	for sku, st := range t.stock {
		got, ok := stock[sku]
		if !ok || got.available != st.Available || got.reserved != st.Reserved || got.sold != st.Sold {
			add("sku %s: table %d/%d/%d, postgres %+v (present %v)", sku, st.Available, st.Reserved, st.Sold, got, ok)
		}
	}
	slices.Sort(diffs)
	return len(diffs), diffs[:min(5, len(diffs))]
}

package pgsink

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/orderpipe/orderpipe/saga"
)

// The SQL of the two write paths. Both upsert with the same ON CONFLICT
// clauses, so a row only ever moves to a higher version (a replay, or a
// batch that lost a race with a newer one, changes nothing), and order lines,
// which never change once submitted, are inserted once.
//
// The staging tables and the parameters of the row path are typed wide
// (bigint, text) rather than like the target columns, so that a value the
// target refuses (a quantity above int4, a NUL byte in a string) fails in
// Postgres with a data SQLSTATE, which the sink knows how to handle, instead
// of failing while pgx encodes it.
const (
	ordersCols   = "order_id, customer_id, status, reason, total_cents, currency, created_at, updated_at, version"
	ordersStage  = "pgsink_orders"
	ordersCreate = `CREATE TEMP TABLE pgsink_orders (order_id uuid, customer_id text, status text, reason text,
	total_cents bigint, currency text, created_at timestamptz, updated_at timestamptz, version bigint) ON COMMIT DROP`
	ordersConflict = ` ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id,
	status = excluded.status, reason = excluded.reason, total_cents = excluded.total_cents,
	currency = excluded.currency, created_at = excluded.created_at, updated_at = excluded.updated_at,
	version = excluded.version
	WHERE t.version < excluded.version`
	ordersFromStage = "INSERT INTO orders AS t (" + ordersCols + ") SELECT " + ordersCols +
		" FROM pgsink_orders ORDER BY order_id" + ordersConflict
	ordersOne = "INSERT INTO orders AS t (" + ordersCols + `) VALUES ($1::uuid, $2::text, $3::text, $4::text,
	$5::bigint, $6::text, $7::timestamptz, $8::timestamptz, $9::bigint)` + ordersConflict

	itemsCols      = "order_id, line_no, sku, quantity, unit_price_cents"
	itemsStage     = "pgsink_order_items"
	itemsCreate    = `CREATE TEMP TABLE pgsink_order_items (order_id uuid, line_no bigint, sku text, quantity bigint, unit_price_cents bigint) ON COMMIT DROP`
	itemsConflict  = " ON CONFLICT (order_id, line_no) DO NOTHING"
	itemsFromStage = "INSERT INTO order_items (" + itemsCols + ") SELECT " + itemsCols +
		" FROM pgsink_order_items ORDER BY order_id, line_no" + itemsConflict
	itemsOne = "INSERT INTO order_items (" + itemsCols + ") VALUES ($1::uuid, $2::bigint, $3::text, $4::bigint, $5::bigint)" + itemsConflict

	stockCols   = "sku, available, reserved, sold, updated_at, version"
	stockStage  = "pgsink_inventory"
	stockCreate = `CREATE TEMP TABLE pgsink_inventory (sku text, available bigint, reserved bigint, sold bigint,
	updated_at timestamptz, version bigint) ON COMMIT DROP`
	stockConflict = ` ON CONFLICT (sku) DO UPDATE SET available = excluded.available,
	reserved = excluded.reserved, sold = excluded.sold, updated_at = excluded.updated_at,
	version = excluded.version
	WHERE t.version < excluded.version`
	stockFromStage = "INSERT INTO inventory AS t (" + stockCols + ") SELECT " + stockCols +
		" FROM pgsink_inventory ORDER BY sku" + stockConflict
	stockOne = "INSERT INTO inventory AS t (" + stockCols + `) VALUES ($1::text, $2::bigint, $3::bigint,
	$4::bigint, $5::timestamptz, $6::bigint)` + stockConflict
)

// written counts the rows a write inserted or moved to a newer version;
// rows left alone because they already had that version are not counted.
type written struct {
	orders, items, inventory int64
}

func (w *written) add(o written) {
	w.orders += o.orders
	w.items += o.items
	w.inventory += o.inventory
}

// orderValues are the ordersCols of o.
func orderValues(o *saga.OrderState) []any {
	var reason any // NULL when there is none
	if o.Reason != "" {
		reason = o.Reason
	}
	return []any{[16]byte(o.OrderID), o.CustomerID, o.Status.String(), reason,
		o.TotalCents(), o.Currency, o.CreatedAt, o.UpdatedAt, int64(o.Version)}
}

// itemValues are the itemsCols of every line of o; line_no is the index.
func itemValues(o *saga.OrderState) [][]any {
	rows := make([][]any, len(o.Lines))
	for i, l := range o.Lines {
		rows[i] = []any{[16]byte(o.OrderID), int64(i), l.SKU, int64(l.Quantity), l.UnitPriceCents}
	}
	return rows
}

// stockValues are the stockCols of r.
func stockValues(r stockRow) []any {
	return []any{r.sku, r.state.Available, r.state.Reserved, r.state.Sold, r.state.UpdatedAt, int64(r.state.Version)}
}

// writeBatch writes b in one transaction: COPY into temporary staging
// tables, then one INSERT ... SELECT ... ON CONFLICT per table. It is the
// fast path: a handful of round trips whatever the size of the batch.
func writeBatch(ctx context.Context, pool *pgxpool.Pool, b *batch, fin finish) (written, error) {
	var w written
	orders, items, stock := copyRows(b)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		if w.orders, err = stageAndUpsert(ctx, tx, "orders", ordersCreate, ordersStage, ordersCols, ordersFromStage, orders); err != nil {
			return err
		}
		// After orders: order_items references them.
		if w.items, err = stageAndUpsert(ctx, tx, "order_items", itemsCreate, itemsStage, itemsCols, itemsFromStage, items); err != nil {
			return err
		}
		if w.inventory, err = stageAndUpsert(ctx, tx, "inventory", stockCreate, stockStage, stockCols, stockFromStage, stock); err != nil {
			return err
		}
		return fin.run(ctx, tx, nil)
	})
	if err != nil {
		return written{}, err
	}
	return w, nil
}

// copyRows are the rows COPY writes for b: orders, their lines, and stock.
func copyRows(b *batch) (orders, items, stock [][]any) {
	orders = make([][]any, len(b.orders))
	items = make([][]any, 0, b.itemCount())
	for i, r := range b.orders {
		orders[i] = orderValues(r.state)
		items = append(items, itemValues(r.state)...)
	}
	stock = make([][]any, len(b.stock))
	for i, r := range b.stock {
		stock[i] = stockValues(r)
	}
	return orders, items, stock
}

// stageAndUpsert copies rows into a fresh staging table and upserts them
// into table, returning the rows changed.
func stageAndUpsert(ctx context.Context, tx pgx.Tx, table, create, stage, cols, upsert string, rows [][]any) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	if _, err := tx.Exec(ctx, create); err != nil {
		return 0, fmt.Errorf("create staging table for %s: %w", table, err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{stage}, strings.Split(cols, ", "), pgx.CopyFromRows(rows)); err != nil {
		return 0, fmt.Errorf("copy %d rows into staging table for %s: %w", len(rows), table, err)
	}
	tag, err := tx.Exec(ctx, upsert)
	if err != nil {
		return 0, fmt.Errorf("upsert %d rows into %s: %w", len(rows), table, err)
	}
	return tag.RowsAffected(), nil
}

// writeRows writes b row by row in one transaction, each order (with its
// lines) and each SKU under its own savepoint, so that a row Postgres
// refuses with a data error is rolled back alone and returned as a dead
// letter while the others commit. Any other error aborts the whole
// transaction and is returned. It is the slow path, taken only for a batch
// that writeBatch could not write because of its data.
func writeRows(ctx context.Context, pool *pgxpool.Pool, b *batch, fin finish) (written, []deadLetter, error) {
	var (
		w    written
		dead []deadLetter
	)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, r := range b.orders {
			var one written
			err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
				var err error
				one, err = upsertOrder(ctx, sp, r.state)
				return err
			})
			switch {
			case err == nil:
				w.add(one)
			case classify(err) == errData:
				dead = append(dead, deadLetter{r.rec, err})
			default:
				return err
			}
		}
		for _, r := range b.stock {
			var n int64
			err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
				var err error
				n, err = upsertStock(ctx, sp, r)
				return err
			})
			switch {
			case err == nil:
				w.inventory += n
			case classify(err) == errData:
				dead = append(dead, deadLetter{r.rec, err})
			default:
				return err
			}
		}
		return fin.run(ctx, tx, dead)
	})
	if err != nil {
		return written{}, nil, err
	}
	return w, dead, nil
}

// finish is what a batch's transaction does last, before it commits: the
// sink writes its offsets there and has the batch's dead letters
// acknowledged, so that a committed batch never leaves a record neither in
// Postgres nor in the dead-letter topic. refused are the rows Postgres
// refused on their own. Nil does nothing.
type finish func(ctx context.Context, tx pgx.Tx, refused []deadLetter) error

func (f finish) run(ctx context.Context, tx pgx.Tx, refused []deadLetter) error {
	if f == nil {
		return nil
	}
	return f(ctx, tx, refused)
}

// offsetsUpsert moves the group's positions forward, never back: a member
// that lost its partitions and writes a stale batch cannot rewind them.
const offsetsUpsert = `INSERT INTO sink_offsets AS o (sink_group, topic, partition, next_offset, updated_at)
SELECT $1, t, p, n, now() FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x(t, p, n)
ON CONFLICT (sink_group, topic, partition) DO UPDATE
SET next_offset = excluded.next_offset, updated_at = excluded.updated_at
WHERE o.next_offset < excluded.next_offset`

// writeOffsets records the batch's positions for group, in tx.
func writeOffsets(ctx context.Context, tx pgx.Tx, group string, offs []partitionOffset) error {
	if len(offs) == 0 {
		return nil
	}
	topics, parts, next := make([]string, len(offs)), make([]int32, len(offs)), make([]int64, len(offs))
	for i, o := range offs {
		topics[i], parts[i], next[i] = o.topic, o.partition, o.next
	}
	if _, err := tx.Exec(ctx, offsetsUpsert, group, topics, parts, next); err != nil {
		return fmt.Errorf("write the sink's offsets: %w", err)
	}
	return nil
}

// readOffsets is where group stands in Postgres: per partition, the
// offset of the next record to read. In a transaction, forUpdate locks the
// group's rows until it ends.
func readOffsets(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, group string, forUpdate bool) (map[tp]int64, error) {
	sql := `SELECT topic, partition, next_offset FROM sink_offsets WHERE sink_group = $1`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	rows, err := q.Query(ctx, sql, group)
	if err != nil {
		return nil, fmt.Errorf("read the sink's offsets: %w", err)
	}
	defer rows.Close()
	out := map[tp]int64{}
	for rows.Next() {
		var k tp
		var n int64
		if err := rows.Scan(&k.topic, &k.partition, &n); err != nil {
			return nil, fmt.Errorf("read the sink's offsets: %w", err)
		}
		out[k] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the sink's offsets: %w", err)
	}
	return out, nil
}

// upsertOrder writes one order and its lines with one statement each.
func upsertOrder(ctx context.Context, tx pgx.Tx, o *saga.OrderState) (written, error) {
	var w written
	tag, err := tx.Exec(ctx, ordersOne, orderValues(o)...)
	if err != nil {
		return written{}, fmt.Errorf("upsert order %s: %w", o.OrderID, err)
	}
	w.orders = tag.RowsAffected()
	for i, line := range itemValues(o) {
		tag, err := tx.Exec(ctx, itemsOne, line...)
		if err != nil {
			return written{}, fmt.Errorf("insert line %d of order %s: %w", i, o.OrderID, err)
		}
		w.items += tag.RowsAffected()
	}
	return w, nil
}

// upsertStock writes one SKU with one statement.
func upsertStock(ctx context.Context, tx pgx.Tx, r stockRow) (int64, error) {
	tag, err := tx.Exec(ctx, stockOne, stockValues(r)...)
	if err != nil {
		return 0, fmt.Errorf("upsert inventory %q: %w", r.sku, err)
	}
	return tag.RowsAffected(), nil
}

package pgsink

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/orderpipe/orderpipe/saga"
)

// The SQL of the two write paths. Both upsert with the same ON CONFLICT
// clauses, so a row only ever moves to a higher version (a replay, or a
// batch that lost a race with a newer one, changes nothing), and order lines,
// which never change once submitted, are inserted once.
//
// The batch path sends each column as one array parameter and unnests them:
// one statement per table whatever the batch size. It replaced COPY into
// temporary staging tables, whose CREATE and DROP (catalog writes) cost
// ~15ms per batch: at the batch sizes a sink sees under a steady load (tens
// to hundreds of orders) unnest wrote 1.6-6x as many orders per second
// (BenchmarkSinkBatch).
//
// The arrays and the parameters of the row path are typed wide (bigint,
// text) rather than like the target columns, so that a value the target
// refuses (a quantity above int4, a NUL byte in a string) fails in Postgres
// with a data SQLSTATE, which the sink knows how to handle, instead of
// failing while pgx encodes it.
const (
	ordersCols = "order_id, customer_id, status, reason, total_cents, currency, created_at, updated_at, version"
	// stored_at is the statement's start time (Postgres's clock) for a
	// final version, NULL for a pending one. A final version is written
	// once: a row never moves to the same or a lower version, so a replay
	// leaves its stored_at alone.
	storedAtOfU     = "CASE WHEN u.status IN ('confirmed', 'rejected') THEN statement_timestamp() END"
	storedAtOfParam = "CASE WHEN $3::text IN ('confirmed', 'rejected') THEN statement_timestamp() END"
	ordersConflict  = ` ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id,
	status = excluded.status, reason = excluded.reason, total_cents = excluded.total_cents,
	currency = excluded.currency, created_at = excluded.created_at, updated_at = excluded.updated_at,
	version = excluded.version, stored_at = excluded.stored_at
	WHERE t.version < excluded.version`
	// ORDER BY: rows are locked in key order, so that two writers (a sink
	// and its successor during a rebalance) cannot deadlock.
	ordersMany = "INSERT INTO orders AS t (" + ordersCols + `, stored_at) SELECT u.*, ` + storedAtOfU + ` FROM unnest($1::uuid[], $2::text[],
	$3::text[], $4::text[], $5::bigint[], $6::text[], $7::timestamptz[], $8::timestamptz[], $9::bigint[])
	AS u(order_id, customer_id, status, reason, total_cents, currency, created_at, updated_at, version) ORDER BY 1` + ordersConflict
	ordersOne = "INSERT INTO orders AS t (" + ordersCols + `, stored_at) VALUES ($1::uuid, $2::text, $3::text, $4::text,
	$5::bigint, $6::text, $7::timestamptz, $8::timestamptz, $9::bigint, ` + storedAtOfParam + `)` + ordersConflict

	itemsCols     = "order_id, line_no, sku, quantity, unit_price_cents"
	itemsConflict = " ON CONFLICT (order_id, line_no) DO NOTHING"
	itemsMany     = "INSERT INTO order_items (" + itemsCols + `) SELECT * FROM unnest($1::uuid[], $2::bigint[],
	$3::text[], $4::bigint[], $5::bigint[]) ORDER BY 1, 2` + itemsConflict
	itemsOne = "INSERT INTO order_items (" + itemsCols + ") VALUES ($1::uuid, $2::bigint, $3::text, $4::bigint, $5::bigint)" + itemsConflict

	stockCols     = "sku, available, reserved, sold, updated_at, version"
	stockConflict = ` ON CONFLICT (sku) DO UPDATE SET available = excluded.available,
	reserved = excluded.reserved, sold = excluded.sold, updated_at = excluded.updated_at,
	version = excluded.version
	WHERE t.version < excluded.version`
	stockMany = "INSERT INTO inventory AS t (" + stockCols + `) SELECT * FROM unnest($1::text[], $2::bigint[],
	$3::bigint[], $4::bigint[], $5::timestamptz[], $6::bigint[]) ORDER BY 1` + stockConflict
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

// writeBatch writes b in one transaction: one INSERT ... SELECT FROM
// unnest(...) ... ON CONFLICT per table. It is the fast path: a handful of
// round trips whatever the size of the batch.
func writeBatch(ctx context.Context, pool *pgxpool.Pool, b *batch, fin finish) (written, error) {
	var w written
	c := columnsOf(b)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		if w.orders, err = upsertMany(ctx, tx, "orders", ordersMany, c.orders()); err != nil {
			return err
		}
		// After orders: order_items references them.
		if w.items, err = upsertMany(ctx, tx, "order_items", itemsMany, c.items()); err != nil {
			return err
		}
		if w.inventory, err = upsertMany(ctx, tx, "inventory", stockMany, c.stock()); err != nil {
			return err
		}
		return fin.run(ctx, tx, nil)
	})
	if err != nil {
		return written{}, err
	}
	return w, nil
}

// columns are a batch's rows as one slice per column, the parameters of
// the unnest statements.
type columns struct {
	// orders
	orderID          [][16]byte
	customer, status []string
	reason           []*string // nil: NULL
	total            []int64
	currency         []string
	created, updated []time.Time
	version          []int64
	// order_items
	itemOrder  [][16]byte
	lineNo     []int64
	sku        []string
	qty, price []int64
	// inventory
	stockSKU                  []string
	available, reserved, sold []int64
	stockUpdated              []time.Time
	stockVersion              []int64
}

// columnsOf lays b out by column.
func columnsOf(b *batch) *columns {
	n, items := len(b.orders), b.itemCount()
	c := &columns{
		orderID: make([][16]byte, 0, n), customer: make([]string, 0, n), status: make([]string, 0, n),
		reason: make([]*string, 0, n), total: make([]int64, 0, n), currency: make([]string, 0, n),
		created: make([]time.Time, 0, n), updated: make([]time.Time, 0, n), version: make([]int64, 0, n),
		itemOrder: make([][16]byte, 0, items), lineNo: make([]int64, 0, items), sku: make([]string, 0, items),
		qty: make([]int64, 0, items), price: make([]int64, 0, items),
	}
	for _, r := range b.orders {
		o := r.state
		var reason *string
		if o.Reason != "" {
			reason = &o.Reason
		}
		c.orderID = append(c.orderID, [16]byte(o.OrderID))
		c.customer = append(c.customer, o.CustomerID)
		c.status = append(c.status, o.Status.String())
		c.reason = append(c.reason, reason)
		c.total = append(c.total, o.TotalCents())
		c.currency = append(c.currency, o.Currency)
		c.created = append(c.created, o.CreatedAt)
		c.updated = append(c.updated, o.UpdatedAt)
		c.version = append(c.version, int64(o.Version))
		for i, l := range o.Lines {
			c.itemOrder = append(c.itemOrder, [16]byte(o.OrderID))
			c.lineNo = append(c.lineNo, int64(i))
			c.sku = append(c.sku, l.SKU)
			c.qty = append(c.qty, int64(l.Quantity))
			c.price = append(c.price, l.UnitPriceCents)
		}
	}
	for _, r := range b.stock {
		c.stockSKU = append(c.stockSKU, r.sku)
		c.available = append(c.available, r.state.Available)
		c.reserved = append(c.reserved, r.state.Reserved)
		c.sold = append(c.sold, r.state.Sold)
		c.stockUpdated = append(c.stockUpdated, r.state.UpdatedAt)
		c.stockVersion = append(c.stockVersion, int64(r.state.Version))
	}
	return c
}

func (c *columns) orders() []any {
	if len(c.orderID) == 0 {
		return nil
	}
	return []any{c.orderID, c.customer, c.status, c.reason, c.total, c.currency, c.created, c.updated, c.version}
}

func (c *columns) items() []any {
	if len(c.itemOrder) == 0 {
		return nil
	}
	return []any{c.itemOrder, c.lineNo, c.sku, c.qty, c.price}
}

func (c *columns) stock() []any {
	if len(c.stockSKU) == 0 {
		return nil
	}
	return []any{c.stockSKU, c.available, c.reserved, c.sold, c.stockUpdated, c.stockVersion}
}

// upsertMany runs one unnest upsert into table, returning the rows
// changed; no columns is nothing to write.
func upsertMany(ctx context.Context, tx pgx.Tx, table, sql string, cols []any) (int64, error) {
	if cols == nil {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, sql, cols...)
	if err != nil {
		return 0, fmt.Errorf("upsert into %s: %w", table, err)
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

package pgsink

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// Readers and checkers of the sink's tables.

// orderRowDB is an orders row as read back.
type orderRowDB struct {
	CustomerID, Status, Currency string
	Reason                       *string
	TotalCents, Version          int64
	CreatedAt, UpdatedAt         time.Time
}

func readOrder(t *testing.T, pool *pgxpool.Pool, id saga.OrderID) orderRowDB {
	t.Helper()
	var r orderRowDB
	err := pool.QueryRow(t.Context(), `SELECT customer_id, status, currency, reason, total_cents, version, created_at, updated_at
		FROM orders WHERE order_id = $1`, id.String()).Scan(&r.CustomerID, &r.Status, &r.Currency, &r.Reason, &r.TotalCents, &r.Version, &r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		t.Fatalf("read order %s: %v", id, err)
	}
	return r
}

func wantOrder(o *saga.OrderState) orderRowDB {
	r := orderRowDB{CustomerID: o.CustomerID, Status: o.Status.String(), Currency: o.Currency,
		TotalCents: o.TotalCents(), Version: int64(o.Version), CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
	if o.Reason != "" {
		r.Reason = &o.Reason
	}
	return r
}

func checkOrder(t *testing.T, pool *pgxpool.Pool, o *saga.OrderState) {
	t.Helper()
	got, want := readOrder(t, pool, o.OrderID), wantOrder(o)
	same := got.CustomerID == want.CustomerID && got.Status == want.Status && got.Currency == want.Currency &&
		got.TotalCents == want.TotalCents && got.Version == want.Version &&
		got.CreatedAt.Equal(want.CreatedAt) && got.UpdatedAt.Equal(want.UpdatedAt) &&
		(got.Reason == nil) == (want.Reason == nil) && (got.Reason == nil || *got.Reason == *want.Reason)
	if !same {
		t.Fatalf("order %s: got %+v (reason %v), want %+v (reason %v)", o.OrderID, got, deref(got.Reason), want, deref(want.Reason))
	}
}

func deref(s *string) string {
	if s == nil {
		return "<NULL>"
	}
	return fmt.Sprintf("%q", *s)
}

type stockRowDB struct {
	Available, Reserved, Sold, Version int64
	UpdatedAt                          time.Time
}

func checkStock(t *testing.T, pool *pgxpool.Pool, sku string, s *saga.StockState) {
	t.Helper()
	var got stockRowDB
	err := pool.QueryRow(t.Context(), "SELECT available, reserved, sold, version, updated_at FROM inventory WHERE sku = $1", sku).
		Scan(&got.Available, &got.Reserved, &got.Sold, &got.Version, &got.UpdatedAt)
	if err != nil {
		t.Fatalf("read inventory %q: %v", sku, err)
	}
	want := stockRowDB{s.Available, s.Reserved, s.Sold, int64(s.Version), s.UpdatedAt}
	if got.Available != want.Available || got.Reserved != want.Reserved || got.Sold != want.Sold ||
		got.Version != want.Version || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("inventory %q: got %+v, want %+v", sku, got, want)
	}
}

func checkItems(t *testing.T, pool *pgxpool.Pool, o *saga.OrderState) {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT line_no, sku, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY line_no", o.OrderID.String())
	if err != nil {
		t.Fatalf("read items of %s: %v", o.OrderID, err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var (
			lineNo, qty int
			sku         string
			price       int64
		)
		if err := rows.Scan(&lineNo, &sku, &qty, &price); err != nil {
			t.Fatalf("scan item: %v", err)
		}
		got = append(got, fmt.Sprintf("%d:%s×%d@%d", lineNo, sku, qty, price))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read items of %s: %v", o.OrderID, err)
	}
	var want []string
	for i, l := range o.Lines {
		want = append(want, fmt.Sprintf("%d:%s×%d@%d", i, l.SKU, l.Quantity, l.UnitPriceCents))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("items of %s: got %v, want %v", o.OrderID, got, want)
	}
}

// rowVersion reads the version of the row that key of topic lands in.
func rowVersion(t testing.TB, pool *pgxpool.Pool, topic, key string) (uint64, bool) {
	t.Helper()
	q := "SELECT version FROM orders WHERE order_id = $1::uuid"
	if topic == string(topology.InventoryTable()) {
		q = "SELECT version FROM inventory WHERE sku = $1"
	}
	var v int64
	err := pool.QueryRow(t.Context(), q, key).Scan(&v)
	if err != nil {
		return 0, false
	}
	return uint64(v), true
}

// dump returns every row of the sink's tables as JSON, to compare states.
// Orders leave out stored_at: it is when a row was written, which a
// rewrite after a lost transaction changes (TestStoredAt checks it).
func dump(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		"SELECT coalesce(json_agg(to_jsonb(t) - 'stored_at' ORDER BY t.order_id)::text, '[]') FROM orders t",
		"SELECT coalesce(json_agg(t ORDER BY t.order_id, t.line_no)::text, '[]') FROM order_items t",
		"SELECT coalesce(json_agg(t ORDER BY t.sku)::text, '[]') FROM inventory t",
	} {
		var s string
		if err := pool.QueryRow(t.Context(), q).Scan(&s); err != nil {
			t.Fatalf("dump: %s: %v", q, err)
		}
		b.WriteString(s)
		b.WriteByte('\n')
	}
	return b.String()
}

// count returns the number of rows of a table.
func count(t testing.TB, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

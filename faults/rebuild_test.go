package faults

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/internal/await"
)

// notRebuilt says what "rebuilt byte for byte" leaves out: what a rebuilt
// database may hold differently from the first, with why, whole tables by
// name and columns as table.column. The sink's database is a function of
// the changelogs except for what records when, and for which sink group,
// a row was stored: a rebuild stores every row again, later, so those
// values differ by design and are checked on their own terms instead.
// Every other column of every table is compared. Listing the exceptions
// rather than the compared columns makes a column added by a later
// migration compared by default (if it too records the storing, the
// scenario fails until it is named here); an exception the schema no
// longer has fails the scenario too, so that the list cannot outlive its
// columns unnoticed.
func notRebuilt() map[string]string {
	return map[string]string{
		"sink_offsets": "each sink group's own position in the changelogs: the rebuilt database holds the rebuilding group's",
		"orders.stored_at": "when this database stored the order's final version, by Postgres's clock (migration 003): " +
			"a rebuild stores it again, later; checked apart: set on every final order and on no pending one, " +
			"not before the order was decided, in the rebuilt database not before the rebuild began",
	}
}

// rebuild starts a fresh sink, in a group of its own, on an empty
// database; compareRebuild then checks it ends equal to the first.
func (r *run) rebuild() {
	c, ctx := r.c, r.c.t.Context()
	url, err := c.pg.CreateDatabase(ctx, "faults_rebuild")
	if err != nil {
		c.t.Fatal(err)
	}
	// Postgres's clock, the one stored_at is written by, not the test's.
	if r.rebuiltSince, err = pgNow(ctx, url); err != nil {
		c.t.Fatal(err)
	}
	c.oneShot("migrate", "--postgres-url", url)
	r.rebuilt = c.member("sink-rebuild", "sink", "--postgres-url", url, "--sink-group", "orderpipe-sink-rebuild")
	r.rebuiltURL = url
	c.start(r.rebuilt)
	r.healed()
}

// compareRebuild waits until the rebuilt database hashes like the first
// one, table by table, with the pipeline quiet, then checks the columns
// left out of the hashes on their own terms.
func (r *run) compareRebuild() {
	c, ctx := r.c, r.c.t.Context()
	var first, second map[string]tableHash
	await.Until(c.t, "the rebuilt database equal to the first (every column but those of notRebuilt)", 3*time.Minute, func() error {
		var err error
		if first, err = tableHashes(ctx, c.pgURL); err != nil {
			return fmt.Errorf("first database: %w", err)
		}
		if second, err = tableHashes(ctx, r.rebuiltURL); err != nil {
			return fmt.Errorf("rebuilt database: %w", err)
		}
		for _, t := range slices.Sorted(maps.Keys(first)) {
			if got, ok := second[t]; !ok || got != first[t] {
				return fmt.Errorf("%s: %s, rebuilt %s", t, first[t], got)
			}
		}
		for t := range second {
			if _, ok := first[t]; !ok {
				return fmt.Errorf("%s: only in the rebuilt database", t)
			}
		}
		return nil
	})
	for name, url := range map[string]string{"first": c.pgURL, "rebuilt": r.rebuiltURL} {
		since := time.Time{}
		if name == "rebuilt" {
			since = r.rebuiltSince
		}
		if err := checkStoredAt(ctx, url, since); err != nil {
			r.breach("%s database: %v", name, err)
		}
	}
	var hashes []string
	for _, t := range slices.Sorted(maps.Keys(first)) {
		hashes = append(hashes, fmt.Sprintf("%s %s", t, first[t]))
	}
	r.evidenced("a fresh sink group on an empty database rebuilt it byte for byte in every column of every table but %s; "+
		"stored_at set on every final order, by the rebuild (not before %s): %s",
		strings.Join(slices.Sorted(maps.Keys(notRebuilt())), " and "), r.rebuiltSince.Format(time.RFC3339Nano), strings.Join(hashes, "; "))
	c.stop(r.rebuilt)
}

// tableHash is a table's row count, the md5 of its rows and the columns
// they were made of.
type tableHash struct {
	rows    int64
	md5     string
	columns string
}

func (h tableHash) String() string {
	return fmt.Sprintf("%d rows %s (%s)", h.rows, h.md5[:min(12, len(h.md5))], h.columns)
}

// tableHashes hashes every table of the database's schema but those
// notRebuilt names, each over every column but those notRebuilt names,
// its rows sorted by their text (a table's key need not be known). The
// tables and columns come from information_schema, so a new table or
// column is compared without changing this; an exception that names
// nothing in the schema is an error.
func tableHashes(ctx context.Context, url string) (map[string]tableHash, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT c.table_name, c.column_name
		FROM information_schema.columns c
		JOIN information_schema.tables t USING (table_catalog, table_schema, table_name)
		WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
		ORDER BY c.table_name, c.ordinal_position`)
	if err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	skip := notRebuilt()
	unused := map[string]bool{}
	for k := range skip {
		unused[k] = true
	}
	columns := map[string][]string{}
	for rows.Next() {
		var table, column string
		if err := rows.Scan(&table, &column); err != nil {
			return nil, fmt.Errorf("list columns: %w", err)
		}
		delete(unused, table)
		delete(unused, table+"."+column)
		if _, ok := skip[table]; ok {
			continue
		}
		if _, ok := skip[table+"."+column]; ok {
			continue
		}
		columns[table] = append(columns[table], column)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	if len(unused) > 0 {
		return nil, fmt.Errorf("notRebuilt names %v, which the schema does not have: remove it, or name what replaced it", slices.Sorted(maps.Keys(unused)))
	}
	if len(columns) == 0 {
		return nil, errors.New("no tables to compare in the current schema")
	}
	out := map[string]tableHash{}
	for table, cols := range columns {
		quoted := make([]string, len(cols))
		for i, col := range cols {
			quoted[i] = pgx.Identifier{col}.Sanitize()
		}
		q := fmt.Sprintf(`SELECT count(*), md5(coalesce(string_agg(r, E'\n' ORDER BY r), ''))
			FROM (SELECT ROW(%s)::text AS r FROM %s) s`, strings.Join(quoted, ", "), pgx.Identifier{table}.Sanitize())
		h := tableHash{columns: strings.Join(cols, ", ")}
		if err := conn.QueryRow(ctx, q).Scan(&h.rows, &h.md5); err != nil {
			return nil, fmt.Errorf("hash %s: %w", table, err)
		}
		out[table] = h
	}
	return out, nil
}

// checkStoredAt checks orders.stored_at, which tableHashes leaves out: a
// final order has one and a pending order none; it is not before the
// order was decided (updated_at: the processors and Postgres read the
// same host's clock here), not in the future, and not before since (the
// rebuild's start; zero for the first database).
func checkStoredAt(ctx context.Context, url string, since time.Time) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var final, missing, onPending, beforeDecided, future, beforeSince int64
	err = conn.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE status <> 'pending'),
			count(*) FILTER (WHERE status <> 'pending' AND stored_at IS NULL),
			count(*) FILTER (WHERE status = 'pending' AND stored_at IS NOT NULL),
			count(*) FILTER (WHERE stored_at < updated_at),
			count(*) FILTER (WHERE stored_at > now()),
			count(*) FILTER (WHERE stored_at < $1)
		FROM orders`, since).Scan(&final, &missing, &onPending, &beforeDecided, &future, &beforeSince)
	if err != nil {
		return fmt.Errorf("read stored_at: %w", err)
	}
	var problems []string
	add := func(n int64, what string) {
		if n > 0 {
			problems = append(problems, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(missing, "final orders without stored_at")
	add(onPending, "pending orders with a stored_at")
	add(beforeDecided, "orders stored before they were decided (stored_at < updated_at)")
	add(future, "orders stored in the future")
	add(beforeSince, fmt.Sprintf("orders stored before %s", since.Format(time.RFC3339Nano)))
	if final == 0 {
		problems = append(problems, "no final order to check")
	}
	if len(problems) > 0 {
		return fmt.Errorf("orders.stored_at over %d final orders: got %s, want none", final, strings.Join(problems, ", "))
	}
	return nil
}

// pgNow is the clock of the Postgres at url.
func pgNow(ctx context.Context, url string) (time.Time, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return time.Time{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var now time.Time
	if err := conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return time.Time{}, fmt.Errorf("read postgres's clock: %w", err)
	}
	return now, nil
}

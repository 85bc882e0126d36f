package pgsink

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/tern/v2/migrate"
)

// checkViolation is SQLSTATE check_violation.
const checkViolation = "23514"

// emptyDB creates an unmigrated database on the package's server and
// returns its URL. The random suffix keeps names unique under -count.
func emptyDB(t *testing.T, prefix string) string {
	t.Helper()
	name := prefix + "_" + strings.ToLower(rand.Text())
	url, err := pg.CreateDatabase(t.Context(), name)
	if err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return url
}

func connectDB(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// newestVersion is the version Migrate must reach: the number of embedded
// migrations.
func newestVersion(t *testing.T) int32 {
	t.Helper()
	files, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		t.Fatalf("sub: %v", err)
	}
	names, err := migrate.FindMigrations(files)
	if err != nil {
		t.Fatalf("find migrations: %v", err)
	}
	return int32(len(names))
}

// schemaState is what a migration that ran again would change: the version
// row's transaction id and the identities of the tables.
func schemaState(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var version int32
	var xmin, oids string
	err := conn.QueryRow(t.Context(), `SELECT version, xmin::text,
		(SELECT string_agg(relname || '=' || oid::text, ',' ORDER BY relname) FROM pg_class
		 WHERE relname IN ('orders', 'order_items', 'inventory') AND relkind = 'r')
		FROM `+versionTable).Scan(&version, &xmin, &oids)
	if err != nil {
		t.Fatalf("read schema state: %v", err)
	}
	return fmt.Sprintf("version=%d xmin=%s tables=%s", version, xmin, oids)
}

func TestMigrateTwiceIsNoop(t *testing.T) {
	t.Parallel()
	conn := connectDB(t, emptyDB(t, "migrate_twice"))

	if err := Migrate(t.Context(), conn); err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	var version int32
	if err := conn.QueryRow(t.Context(), "SELECT version FROM "+versionTable).Scan(&version); err != nil {
		t.Fatalf("read version: %v", err)
	}
	if want := newestVersion(t); version != want {
		t.Fatalf("version after Migrate: got %d, want %d", version, want)
	}
	if _, err := conn.Exec(t.Context(), `INSERT INTO inventory (sku, available, reserved, updated_at, version)
		VALUES ('sku-1', 5, 1, now(), 1)`); err != nil {
		t.Fatalf("insert inventory: %v", err)
	}
	before := schemaState(t, conn)

	if err := Migrate(t.Context(), conn); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if after := schemaState(t, conn); after != before {
		t.Errorf("second Migrate changed the schema: got %s, want %s", after, before)
	}
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM inventory").Scan(&n); err != nil {
		t.Fatalf("count inventory: %v", err)
	}
	if n != 1 {
		t.Errorf("inventory rows after second Migrate: got %d, want 1", n)
	}
}

func TestMigrateSchema(t *testing.T) {
	t.Parallel()
	url := emptyDB(t, "migrate_schema")
	if err := MigrateURL(t.Context(), url, nil); err != nil {
		t.Fatalf("MigrateURL: %v", err)
	}
	conn := connectDB(t, url)
	exec := func(sql string) error {
		_, err := conn.Exec(t.Context(), sql)
		return err
	}

	const order = `INSERT INTO orders (order_id, customer_id, status, reason, total_cents, currency,
		created_at, updated_at, version) VALUES ('6f1c0d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f', 'c-1', 'pending', NULL,
		1000, 'EUR', now(), now(), 1)`
	if err := exec(order); err != nil {
		t.Fatalf("insert valid order: %v", err)
	}
	if err := exec(`INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_cents)
		VALUES ('6f1c0d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f', 0, 'sku-1', 2, 500)`); err != nil {
		t.Fatalf("insert valid order item: %v", err)
	}
	var sold int64
	if err := conn.QueryRow(t.Context(), `INSERT INTO inventory (sku, available, reserved, updated_at, version)
		VALUES ('sku-1', 5, 0, now(), 1) RETURNING sold`).Scan(&sold); err != nil {
		t.Fatalf("insert valid inventory: %v", err)
	}
	if sold != 0 {
		t.Errorf("inventory.sold default: got %d, want 0", sold)
	}

	for _, tc := range []struct {
		name, table, sql string
	}{
		{"unknown status", "orders", `INSERT INTO orders VALUES (gen_random_uuid(), 'c', 'shipped', NULL, 1, 'EUR', now(), now(), 1)`},
		{"order version 0", "orders", `INSERT INTO orders VALUES (gen_random_uuid(), 'c', 'confirmed', NULL, 1, 'EUR', now(), now(), 0)`},
		{"quantity 0", "order_items", `INSERT INTO order_items VALUES ('6f1c0d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f', 1, 's', 0, 1)`},
		{"negative unit price", "order_items", `INSERT INTO order_items VALUES ('6f1c0d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f', 1, 's', 1, -1)`},
		{"negative available", "inventory", `INSERT INTO inventory VALUES ('s', -1, 0, 0, now(), 1)`},
		{"negative reserved", "inventory", `INSERT INTO inventory VALUES ('s', 0, -1, 0, now(), 1)`},
		{"negative sold", "inventory", `INSERT INTO inventory VALUES ('s', 0, 0, -1, now(), 1)`},
		{"inventory version 0", "inventory", `INSERT INTO inventory VALUES ('s', 0, 0, 0, now(), 0)`},
	} {
		err := exec(tc.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Errorf("%s: got error %v, want a *pgconn.PgError", tc.name, err)
			continue
		}
		if pgErr.Code != checkViolation || pgErr.TableName != tc.table {
			t.Errorf("%s: got SQLSTATE %s on table %q, want %s on %q", tc.name, pgErr.Code, pgErr.TableName, checkViolation, tc.table)
		}
	}

	// Lines go with their order.
	if err := exec(`DELETE FROM orders`); err != nil {
		t.Fatalf("delete orders: %v", err)
	}
	var items int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM order_items").Scan(&items); err != nil {
		t.Fatalf("count order_items: %v", err)
	}
	if items != 0 {
		t.Errorf("order_items after deleting their order: got %d, want 0", items)
	}

	for _, idx := range []struct{ table, def string }{
		{"orders", "(status)"},
		{"orders", "(customer_id, created_at)"},
		{"order_items", "(sku)"},
	} {
		var n int
		err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_indexes
			WHERE tablename = $1 AND indexdef LIKE '%USING btree ' || $2`, idx.table, idx.def).Scan(&n)
		if err != nil {
			t.Fatalf("look up index on %s%s: %v", idx.table, idx.def, err)
		}
		if n != 1 {
			t.Errorf("indexes on %s%s: got %d, want 1", idx.table, idx.def, n)
		}
	}
}

func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	url := emptyDB(t, "migrate_concurrent")

	const migrators = 4
	errs := make([]error, migrators)
	var wg sync.WaitGroup
	for i := range migrators {
		wg.Go(func() { errs[i] = MigrateURL(t.Context(), url, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d: %v", i, err)
		}
	}

	conn := connectDB(t, url)
	var version int32
	if err := conn.QueryRow(t.Context(), "SELECT version FROM "+versionTable).Scan(&version); err != nil {
		t.Fatalf("read version: %v", err)
	}
	if want := newestVersion(t); version != want {
		t.Errorf("version after concurrent Migrate: got %d, want %d", version, want)
	}
}

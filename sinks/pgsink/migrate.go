package pgsink

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

// migrationFiles holds the schema migrations, numbered NNN_name.sql in tern's
// format. It is package-level only because go:embed requires it; it is
// read-only.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

const (
	// versionTable is tern's bookkeeping table: one row, the version
	// reached. Unqualified, like the tables, so both follow search_path.
	versionTable = "orderpipe_schema_version"
	// migrateLockKey is the pg_advisory_lock key held for a whole Migrate
	// (an arbitrary constant: the ASCII of "orderpip"). Tern takes its own,
	// shorter locks; this one makes creating the version table, reading the
	// version and applying the migrations one step for concurrent callers.
	migrateLockKey = int64(0x6f72646572706970)
	// unlockTimeout bounds releasing the lock after ctx has ended.
	unlockTimeout = 5 * time.Second
)

// Migrate applies the embedded schema migrations to the database conn is
// connected to, up to the newest. It is idempotent, and safe to call
// concurrently from several processes: callers queue on a session-level
// advisory lock, and whoever comes later finds the work done. conn must not
// be inside a transaction. A database migrated by a newer build, with more
// migrations than this one knows, is an error.
func Migrate(ctx context.Context, conn *pgx.Conn) (err error) {
	return migrateSchema(ctx, conn, nil)
}

// migrateSchema is Migrate, saying on log (if not nil) which migration it
// applies, n of m, so that a long one shows in the log while it runs.
func migrateSchema(ctx context.Context, conn *pgx.Conn, log *slog.Logger) (err error) {
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("migrate schema: take advisory lock: %w", err)
	}
	defer func() {
		// Unlock even when ctx has ended, or a conn that outlives this call
		// would block every later migrator. If the session is gone, so is
		// the lock, and the error says nothing new.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrateLockKey); uerr != nil && err == nil {
			err = fmt.Errorf("migrate schema: release advisory lock: %w", uerr)
		}
	}()

	files, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("migrate schema: open embedded migrations: %w", err)
	}
	m, err := migrate.NewMigrator(ctx, conn, versionTable)
	if err != nil {
		return fmt.Errorf("migrate schema: prepare version table %s: %w", versionTable, err)
	}
	if err := m.LoadMigrations(files); err != nil {
		return fmt.Errorf("migrate schema: load embedded migrations: %w", err)
	}
	if log != nil {
		m.OnStart = func(seq int32, name, direction, _ string) {
			log.Info(fmt.Sprintf("applying schema migration %d/%d: %s", seq, len(m.Migrations), name), "direction", direction)
		}
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	return nil
}

// MigrateURL connects to the database at url, runs Migrate on it and closes
// the connection. With log set, it says which migration it applies, n of
// m; nil is quiet.
func MigrateURL(ctx context.Context, url string, log *slog.Logger) error {
	return migrateURL(ctx, url, log)
}

// migrateURL is MigrateURL with migrateSchema's progress lines on log.
func migrateURL(ctx context.Context, url string, log *slog.Logger) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		// pgx's error names host and database but not the password.
		return fmt.Errorf("migrate schema: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		conn.Close(cctx)
	}()
	return migrateSchema(ctx, conn, log)
}

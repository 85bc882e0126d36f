package pgsink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/orderpipe/orderpipe/saga"
)

// StoredAtReader reads when the sink stored orders' final versions (the
// orders.stored_at column), for the edge's order journey
// (GET /v1/orders/{id}?trace=1). It is the edge's only read of Postgres:
// one indexed row per traced order, never on the path of a plain GET. Its
// methods are safe for concurrent use.
type StoredAtReader struct {
	pool *pgxpool.Pool
}

// storedAtMaxConns caps the reader's pool: traces are looked up by people
// (and the dashboard), one row each.
const storedAtMaxConns = 2

// NewStoredAtReader returns a reader on the database at url. It connects
// lazily, at the first lookup, so a Postgres that is down does not keep the
// edge from starting; Close releases its connections.
func NewStoredAtReader(url string) (*StoredAtReader, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors do not repeat the password.
		return nil, fmt.Errorf("stored-at reader: parse postgres url: %w", err)
	}
	cfg.MaxConns = storedAtMaxConns
	cfg.MinConns = 0
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("stored-at reader: %w", err)
	}
	return &StoredAtReader{pool: pool}, nil
}

// StoredAt reports when the sink stored the final version of order id;
// ok is false while Postgres has no final version of it (the sink has not
// caught up, or the order is pending).
func (r *StoredAtReader) StoredAt(ctx context.Context, id saga.OrderID) (at time.Time, ok bool, err error) {
	var v *time.Time
	err = r.pool.QueryRow(ctx, "SELECT stored_at FROM orders WHERE order_id = $1", [16]byte(id)).Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return time.Time{}, false, nil
	case err != nil:
		return time.Time{}, false, fmt.Errorf("read stored_at of order %s: %w", id, err)
	case v == nil:
		return time.Time{}, false, nil
	}
	return v.UTC(), true, nil
}

// Close closes the reader's connections; lookups after it fail.
func (r *StoredAtReader) Close() { r.pool.Close() }

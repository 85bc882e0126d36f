package pgsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := Config{Brokers: []string{"localhost:9092"}}
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"zero values mean defaults", func(*Config) {}, ""},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "no brokers"},
		{"negative max batch", func(c *Config) { c.MaxBatch = -1 }, "max batch"},
		{"negative backoff", func(c *Config) { c.MinBackoff = -time.Second }, "backoff"},
		{"min above max", func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }, "above max backoff"},
		{"min above the default max", func(c *Config) { c.MinBackoff = time.Minute }, "above max backoff"},
		{"max below the default min", func(c *Config) { c.MaxBackoff = time.Millisecond }, "above max backoff"},
		{"negative write timeout", func(c *Config) { c.WriteTimeout = -1 }, "timeouts"},
	} {
		c := ok
		tc.mutate(&c)
		err := c.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: got %v, want nil", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: got %v, want an error about %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestNewAppliesDefaults(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Brokers: []string{"localhost:9092"}}, Deps{Pool: &pgxpool.Pool{}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	got := s.cfg
	if got.Group != "orderpipe-sink" || got.MaxBatch != 5000 || got.MinBackoff != 100*time.Millisecond ||
		got.MaxBackoff != 30*time.Second || got.WriteTimeout != 30*time.Second || got.ShutdownTimeout != 5*time.Second || got.ClientID != "orderpipe-sink" || s.log == nil {
		t.Fatalf("defaults: got %+v", got)
	}
	if _, err := New(Config{Brokers: []string{"x"}}, Deps{}); err == nil {
		t.Fatalf("New with neither a pool nor a URL: got nil error, want one")
	}
	if _, err := New(Config{Brokers: []string{"x"}, PostgresURL: "postgres://%zz"}, Deps{}); err == nil {
		t.Fatalf("New with a malformed URL: got nil error, want one")
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want errKind
	}{
		{&pgconn.PgError{Code: "22021"}, errData}, // invalid byte sequence
		{&pgconn.PgError{Code: "22003"}, errData}, // numeric value out of range
		{&pgconn.PgError{Code: "23514"}, errData}, // check violation
		{&pgconn.PgError{Code: "23503"}, errData}, // foreign key violation
		{&pgconn.PgError{Code: "54000"}, errData}, // index row too large
		{fmt.Errorf("upsert: %w", &pgconn.PgError{Code: "23505"}), errData},
		{&pgconn.PgError{Code: "08006"}, errTransient}, // connection failure
		{&pgconn.PgError{Code: "57P01"}, errTransient}, // admin shutdown
		{&pgconn.PgError{Code: "53300"}, errTransient}, // too many connections
		{&pgconn.PgError{Code: "40001"}, errTransient}, // serialization failure
		{&pgconn.PgError{Code: "42P01"}, errTransient}, // undefined table: wait for a migration
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, errTransient},
		{context.DeadlineExceeded, errTransient},
		{io.ErrUnexpectedEOF, errTransient},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v): got %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	for i, ceiling := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		ceiling *= time.Millisecond
		got := b.next()
		if got < ceiling/2 || got > ceiling {
			t.Errorf("wait %d: got %s, want within [%s, %s]", i, got, ceiling/2, ceiling)
		}
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	var h health
	if err := h.err(); err != nil {
		t.Fatalf("fresh: got %v, want nil", err)
	}
	cause := errors.New("dial tcp: connection refused")
	since := h.down(cause)
	h.down(errors.New("again"))
	err := h.err()
	want := "postgres unavailable since " + since.UTC().Format(time.RFC3339) + ", retrying"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("down: got %v, want prefix %q", err, want)
	}
	if d := h.up(); d <= 0 {
		t.Fatalf("up: got outage of %s, want > 0", d)
	}
	if err := h.err(); err != nil {
		t.Fatalf("after up: got %v, want nil", err)
	}
}

func TestNewBatch(t *testing.T) {
	t.Parallel()
	rec := func(topic, key string, value []byte, offset int64) *kgo.Record {
		return &kgo.Record{Topic: topic, Key: []byte(key), Value: value, Offset: offset}
	}
	orders, inventory := string(topology.OrdersTable()), string(topology.InventoryTable())
	a3, a7, a5 := order(1, 3, saga.StatusPending), order(1, 7, saga.StatusConfirmed), order(1, 5, saga.StatusPending)
	b1 := order(2, 1, saga.StatusPending)
	recs := []*kgo.Record{
		rec(orders, a3.OrderID.String(), a3.Encode(), 0),
		rec(orders, a7.OrderID.String(), a7.Encode(), 1),
		rec(orders, a5.OrderID.String(), a5.Encode(), 2),
		rec(orders, b1.OrderID.String(), nil, 3), // tombstone
		rec(orders, b1.OrderID.String(), b1.Encode(), 4),
		rec(inventory, "sku-b", stock(9, 1, 0, 0).Encode(), 0),
		rec(inventory, "sku-a", stock(2, 2, 0, 0).Encode(), 1),
		rec(inventory, "sku-b", stock(4, 4, 0, 0).Encode(), 2),
		rec(inventory, "sku-c", []byte{1, 5}, 3),                        // truncated
		rec(inventory, "", stock(1, 1, 0, 0).Encode(), 4),               // no SKU
		rec(orders, "someone-else", a3.Encode(), 5),                     // key is not the order id
		rec(orders, a3.OrderID.String(), stock(1, 1, 0, 0).Encode(), 6), // wrong type
		rec("elsewhere", "k", []byte("v"), 0),
	}
	b := newBatch(recs)

	var gotOrders []string
	for _, r := range b.orders {
		gotOrders = append(gotOrders, fmt.Sprintf("%s@%d/%d", r.state.OrderID, r.state.Version, r.rec.Offset))
	}
	wantOrders := []string{fmt.Sprintf("%s@7/1", a7.OrderID), fmt.Sprintf("%s@1/4", b1.OrderID)}
	if a7.OrderID.String() > b1.OrderID.String() {
		wantOrders[0], wantOrders[1] = wantOrders[1], wantOrders[0]
	}
	if strings.Join(gotOrders, " ") != strings.Join(wantOrders, " ") {
		t.Errorf("orders: got %v, want %v (newest per key, sorted by id)", gotOrders, wantOrders)
	}
	var gotStock []string
	for _, r := range b.stock {
		gotStock = append(gotStock, fmt.Sprintf("%s@%d", r.sku, r.state.Version))
	}
	if got, want := strings.Join(gotStock, " "), "sku-a@2 sku-b@9"; got != want {
		t.Errorf("stock: got %q, want %q", got, want)
	}
	var dead []string
	for _, d := range b.dead {
		dead = append(dead, fmt.Sprintf("%s/%d", d.rec.Topic, d.rec.Offset))
		if d.rec.Topic != "elsewhere" && !errors.Is(d.reason, saga.ErrMalformed) {
			t.Errorf("dead letter %s/%d: got reason %v, want one wrapping ErrMalformed", d.rec.Topic, d.rec.Offset, d.reason)
		}
	}
	want := fmt.Sprintf("%s/3 %s/4 %s/5 %s/6 elsewhere/0", inventory, inventory, orders, orders)
	if got := strings.Join(dead, " "); got != want {
		t.Errorf("dead letters: got %q, want %q", got, want)
	}
}

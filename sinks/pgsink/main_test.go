package pgsink

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/pglocal"
)

// pg is the one PostgreSQL server of this test package; every test gets its
// own database on it (see newDB). Tests that halt it do not run in parallel,
// and Go runs them before every parallel test starts.
var pg *pglocal.Server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	pg, err = pglocal.Start(ctx, pglocal.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgsink tests need a PostgreSQL server:", err)
		return 1
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.Close(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "stop PostgreSQL:", err)
		}
	}()
	return m.Run()
}

package integration_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/pglocal"
)

// pg is shared by every test of the package: one PostgreSQL server, each
// scenario gets a database of its own.
var pg *pglocal.Server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	var err error
	pg, err = pglocal.Start(ctx, pglocal.Config{Logger: logger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = pg.Close(cctx)
	}()
	return m.Run()
}

func logger() *slog.Logger {
	if os.Getenv("ORDERPIPE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

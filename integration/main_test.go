package integration_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/orderpipe/orderpipe/internal/testlog"
)

// Shared by every test of the package: one PostgreSQL server (each scenario
// gets a database of its own) and the orderpipe binary, for scenarios that
// run roles as separate processes.
var (
	pg     *pglocal.Server
	binary string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "orderpipe-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "orderpipe")
	build := exec.Command("go", "build", "-race", "-o", binary, "../cmd/orderpipe")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build orderpipe:", err)
		return 1
	}
	pg, err = pglocal.Start(ctx, pglocal.Config{Logger: testlog.New()})
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

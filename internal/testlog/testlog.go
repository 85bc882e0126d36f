// Package testlog is the logger of every test and benchmark: quiet unless
// ORDERPIPE_TEST_LOG is set. It imports nothing of orderpipe's, so that any
// package's own tests can use it.
package testlog

import (
	"io"
	"log/slog"
	"os"
)

// New discards everything unless ORDERPIPE_TEST_LOG is set, then writes
// text to stderr at that level (debug, info, warn, error; anything else is
// debug).
func New() *slog.Logger {
	v := os.Getenv("ORDERPIPE_TEST_LOG")
	if v == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var level slog.Level
	if level.UnmarshalText([]byte(v)) != nil {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

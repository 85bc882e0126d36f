// Package testlog is the logger of every test and benchmark: quiet unless
// ORDERPIPE_TEST_LOG is set. It imports nothing of orderpipe's, so that any
// package's own tests can use it.
package testlog

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"sync"
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

// Capture is a logger at info level that keeps what it writes, for tests
// that check a log line; text returns everything written so far.
func Capture() (log *slog.Logger, text func() string) {
	b := &lockedBuffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b.String
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

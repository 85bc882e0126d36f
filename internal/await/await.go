// Package await lets tests wait for a condition with a deadline instead of
// sleeping for a guessed time.
package await

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Poll is how often a condition is checked.
const Poll = 10 * time.Millisecond

// Until calls cond every Poll until it returns nil, and fails t with cond's
// last error, naming what was awaited, when d passes first.
func Until(t testing.TB, what string, d time.Duration, cond func() error) {
	t.Helper()
	if err := Within(context.Background(), d, Poll, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Within is Until for callers that go on after a timeout (a benchmark step
// that did not drain is a figure, not a failure): it returns cond's last
// error once d passes, or ctx's error, polling every every (Poll if 0).
func Within(ctx context.Context, d, every time.Duration, cond func() error) error {
	if every == 0 {
		every = Poll
	}
	deadline := time.Now().Add(d)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached within %s: %w", d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

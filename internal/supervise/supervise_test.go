package supervise

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/testlog"
)

var fast = Policy{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}

func TestRestartRetriesUntilPermanent(t *testing.T) {
	var st Status
	runs := 0
	boom := errors.New("boom")
	err := Restart(t.Context(), "role", fast, &st, testlog.New(), func(context.Context) error {
		runs++
		switch {
		case runs < 3:
			return fmt.Errorf("transient %d", runs)
		case runs == 3:
			return nil // stopped on its own: restarted too
		}
		return Permanent(boom)
	})
	if !errors.Is(err, boom) || !IsPermanent(err) {
		t.Fatalf("got %v, want the permanent error", err)
	}
	if runs != 4 || st.Restarts() != 3 {
		t.Errorf("got %d runs and %d restarts, want 4 and 3", runs, st.Restarts())
	}
	if st.Recovering() == nil {
		t.Errorf("status after failures: got nil, want recovering")
	}
	st.Recovered()
	if err := st.Recovering(); err != nil {
		t.Errorf("status after Recovered: got %v, want nil", err)
	}
}

func TestRestartEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	runs := 0
	err := Restart(ctx, "role", Policy{MinBackoff: time.Hour}, nil, testlog.New(), func(context.Context) error {
		runs++
		cancel() // the role fails as the process stops: no restart, no error
		return errors.New("failed while stopping")
	})
	if err != nil || runs != 1 {
		t.Fatalf("got %v after %d runs, want nil after 1", err, runs)
	}
}

func TestPermanent(t *testing.T) {
	if Permanent(nil) != nil {
		t.Errorf("Permanent(nil): got non-nil")
	}
	if IsPermanent(errors.New("x")) {
		t.Errorf("a plain error: got permanent")
	}
	if !IsPermanent(fmt.Errorf("wrapped: %w", Permanent(errors.New("x")))) {
		t.Errorf("a wrapped permanent error: got not permanent")
	}
}

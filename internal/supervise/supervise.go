// Package supervise restarts a role that failed for a reason that may pass
// (a broker away, a rebalance that went wrong) and stops on one that will
// not (bad configuration, topics that do not match, state that cannot be
// rebuilt). It is what lets a process ride out a broker restart without a
// person: Goka processors end on errors their library does not retry, and a
// Goka processor can run only once, so the role builds new ones on each Run.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// permanent marks an error that restarting cannot cure.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as one that restarting cannot cure: Restart returns it
// instead of trying again. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// Policy is how Restart spaces its attempts. The zero value means the
// documented defaults.
type Policy struct {
	// MinBackoff is the wait before the first restart. Default 500ms.
	MinBackoff time.Duration
	// MaxBackoff caps the wait, which doubles per failure, with jitter.
	// Default 10s: a broker restart of ~15s costs at most one wait of it.
	MaxBackoff time.Duration
	// Healthy is how long a run must last for the next failure to count as
	// the first again. Default 1 minute.
	Healthy time.Duration
}

func (p Policy) withDefaults() Policy {
	if p.MinBackoff <= 0 {
		p.MinBackoff = 500 * time.Millisecond
	}
	if p.MaxBackoff < p.MinBackoff {
		p.MaxBackoff = max(10*time.Second, p.MinBackoff)
	}
	if p.Healthy <= 0 {
		p.Healthy = time.Minute
	}
	return p
}

// Status is what a supervised role last went through, for readiness. The
// zero value is a role that has not failed. It is safe for concurrent use.
type Status struct {
	mu       sync.Mutex
	restarts int
	lastErr  error
	since    time.Time
}

// Recovering returns an error naming the last failure while the role is
// restarting or has not proved healthy since, and nil otherwise.
func (s *Status) Recovering() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr == nil {
		return nil
	}
	return fmt.Errorf("recovering since %s (restart %d) after: %w", s.since.Format(time.RFC3339), s.restarts, s.lastErr)
}

// Restarts is how many times the role was restarted.
func (s *Status) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Recovered clears the failure once the role is ready again.
func (s *Status) Recovered() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = nil
}

func (s *Status) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr == nil {
		s.since = time.Now()
	}
	s.restarts++
	s.lastErr = err
}

// Restart calls run until ctx ends (it then returns nil) or run fails with a
// Permanent error (it returns that error, wrapped with name). Any other
// failure, and a run that returns nil while ctx is still live, is logged and
// followed by another run after a backoff. status, if not nil, records the
// failures. Restart runs on the calling goroutine and starts none.
func Restart(ctx context.Context, name string, p Policy, status *Status, log *slog.Logger, run func(context.Context) error) error {
	p = p.withDefaults()
	wait := p.MinBackoff
	for {
		start := time.Now()
		err := run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if IsPermanent(err) {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err == nil {
			err = errors.New("stopped on its own")
		}
		if time.Since(start) >= p.Healthy {
			wait = p.MinBackoff
		}
		if status != nil {
			status.failed(err)
		}
		d := wait/2 + rand.N(wait/2+1)
		log.Warn("role failed, restarting it", "role", name, "in", d.Round(time.Millisecond), "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, p.MaxBackoff)
	}
}

// WaitWithin waits for g, or returns an error after d. After that error
// the caller is about to give up on what g runs (the process exits), and
// the goroutine waiting for g goes with it.
func WaitWithin(g *errgroup.Group, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("not stopped within %s", d)
	}
}

package pgsink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"
)

// errKind sorts database errors by what the sink does about them.
type errKind int

const (
	// errTransient: Postgres is unavailable or failed for a reason that has
	// nothing to do with the rows (connection lost, shutting down, out of
	// resources, serialization failure, timeout, even a missing table that an
	// operator must migrate). The same batch is retried after a backoff,
	// forever: skipping it would lose data.
	errTransient errKind = iota
	// errData: Postgres refused the data of some row (SQLSTATE class 22 data
	// exception, 23 integrity constraint violation, 54 program limit exceeded,
	// e.g. a key too large for its index). Retrying the batch would fail
	// forever, so the batch is written row by row and the rows that still
	// fail go to the dead-letter topic.
	errData
)

func (k errKind) String() string {
	if k == errData {
		return "data"
	}
	return "transient"
}

// classify sorts err by its SQLSTATE, never by its text. Errors without a
// SQLSTATE (network, TLS, timeouts, a closed pool) are transient.
func classify(err error) errKind {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code[:2] {
		case "22", "23", "54":
			return errData
		}
	}
	return errTransient
}

// backoff yields the waits between attempts: exponential from min to max,
// with equal jitter (half fixed, half random) so that sinks that lost
// Postgres together do not retry in lockstep. Not safe for concurrent use.
type backoff struct {
	min, max time.Duration
	attempt  int
}

func (b *backoff) next() time.Duration {
	d := b.max
	if b.attempt < 62 && b.min<<b.attempt > 0 && b.min<<b.attempt < b.max {
		d = b.min << b.attempt
		b.attempt++
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// reset starts the waits over from min.
func (b *backoff) reset() { b.attempt = 0 }

// sleep waits for d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// health is the state Health reports. Safe for concurrent use.
type health struct {
	mu        sync.Mutex
	downSince time.Time // zero while Postgres is fine
	lastErr   error
}

// down records a failed attempt and returns the start of the outage.
func (h *health) down(err error) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.downSince.IsZero() {
		h.downSince = time.Now()
	}
	h.lastErr = err
	return h.downSince
}

// up records a successful attempt and returns how long Postgres was down,
// zero if it was not.
func (h *health) up() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.downSince.IsZero() {
		return 0
	}
	d := time.Since(h.downSince)
	h.downSince, h.lastErr = time.Time{}, nil
	return d
}

func (h *health) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.downSince.IsZero() {
		return nil
	}
	return fmt.Errorf("postgres unavailable since %s, retrying: %w", h.downSince.UTC().Format(time.RFC3339), h.lastErr)
}

func (h *health) backingOff() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.downSince.IsZero()
}

// lostConnection reports whether the sink backs off because it lost
// Postgres (an error without a SQLSTATE: network, timeout; or class 08
// connection exception, 57P admin or crash shutdown), rather than because
// Postgres answered with an error.
func (h *health) lostConnection() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.downSince.IsZero() {
		return false
	}
	var pgErr *pgconn.PgError
	if !errors.As(h.lastErr, &pgErr) {
		return true
	}
	return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")
}

// write writes b to Postgres with its offsets, its dead letters
// acknowledged before the transaction commits, retrying with backoff until
// it succeeds or ctx ends. It returns the rows Postgres refused on their
// own (dead lettered), and an error only when ctx ended, and then nothing
// of b was committed, or a *rewindError when the database lost what this
// process wrote before b.
func (s *Sink) write(ctx context.Context, cl *kgo.Client, b *batch) ([]deadLetter, error) {
	fin := func(ctx context.Context, tx pgx.Tx, refused []deadLetter) error {
		if err := s.checkPositions(ctx, tx); err != nil {
			return err
		}
		if err := writeOffsets(ctx, tx, s.cfg.Group, b.offsets); err != nil {
			return err
		}
		// A transaction that fails after this is retried and sends them
		// again: a dead letter may be in the topic twice, never missing.
		return s.sendDeadLetters(ctx, cl, append(append([]deadLetter(nil), b.dead...), refused...))
	}
	bo := backoff{min: s.cfg.MinBackoff, max: s.cfg.MaxBackoff}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		w, dead, err := s.attempt(ctx, b, fin)
		if re := (*rewindError)(nil); errors.As(err, &re) {
			return nil, re
		}
		if err == nil {
			s.reachable()
			s.batchDur.Observe(time.Since(start).Seconds())
			s.stats.wrote(w)
			if was := s.health.up(); was > 0 {
				s.log.Info("postgres is back", "down_for", was.Round(time.Millisecond), "attempts", attempt)
			}
			s.log.Debug("batch written", "orders", len(b.orders), "inventory", len(b.stock), "changed_orders", w.orders, "changed_items", w.items, "changed_inventory", w.inventory, "refused", len(dead), "took", time.Since(start))
			return dead, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.stats.dbErrors.Add(1)
		since := s.health.down(err)
		wait := bo.next()
		s.log.Warn("postgres write failed; retrying the same batch", "attempt", attempt, "down_since", since, "retry_in", wait.Round(time.Millisecond), "err", err)
		if err := s.retryWait(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// attempt makes one attempt at b, each path bounded by WriteTimeout: the
// batch path, then, when Postgres refused its data, the row path.
func (s *Sink) attempt(ctx context.Context, b *batch, fin finish) (written, []deadLetter, error) {
	bctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	w, err := writeBatch(bctx, s.pool, b, fin)
	cancel()
	if err == nil || classify(err) != errData {
		return w, nil, err
	}
	s.stats.refusedBatches.Add(1)
	s.log.Warn("postgres refused a row of the batch; writing it row by row", "orders", len(b.orders), "inventory", len(b.stock), "err", err)
	rctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	return writeRows(rctx, s.pool, b, fin)
}

// retryWait waits for d, until ctx ends (it then returns ctx's error), or
// until the pinger saw Postgres come back: a write that backs off for up
// to MaxBackoff retries within a ping of Postgres's return instead.
func (s *Sink) retryWait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	case <-s.back:
	}
	return nil
}

// reach is what the pinger knows: whether Postgres answers a ping. Safe
// for concurrent use.
type reach struct {
	mu        sync.Mutex
	downSince time.Time // zero while Postgres answers
	lastErr   error
}

// set records a ping's result; it reports whether Postgres just came back.
func (r *reach) set(err error) (back bool, since time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	since = r.downSince
	if err == nil {
		r.downSince, r.lastErr = time.Time{}, nil
		return !since.IsZero(), since
	}
	if r.downSince.IsZero() {
		r.downSince = time.Now()
	}
	r.lastErr = err
	return false, r.downSince
}

func (r *reach) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.downSince.IsZero() {
		return nil
	}
	return fmt.Errorf("postgres unreachable: %w (since %s)", r.lastErr, r.downSince.UTC().Format(time.RFC3339))
}

// reachable records that Postgres answered something other than a ping.
func (s *Sink) reachable() { s.reach.set(nil) }

// ping pings Postgres every PingInterval, each ping bounded by
// PingTimeout, until ctx ends, so that readiness follows Postgres even
// while the sink has nothing to write. A ping that Postgres answers wakes a
// write or position read that backs off because it lost Postgres, so that
// it retries within a ping of Postgres's return instead of after up to
// MaxBackoff (an outage may be shorter than the pings' interval, and go
// unseen by them). Run owns its goroutine.
func (s *Sink) ping(ctx context.Context) {
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, s.cfg.PingTimeout)
		err := s.pool.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		wasUp := s.reach.err() == nil
		back, since := s.reach.set(err)
		switch {
		case err != nil && wasUp:
			s.log.Warn("postgres does not answer a ping: the sink is degraded", "err", err)
		case back:
			s.log.Info("postgres answers pings again", "down_for", time.Since(since).Round(time.Millisecond))
		}
		if err == nil && s.health.lostConnection() {
			select {
			case s.back <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

package ingest

import (
	"context"
	"sync"
	"sync/atomic"
)

// viewProgress is how far the orders view has applied each partition of the
// orders table: next(p) is an offset below which every record of partition
// p is in the view's storage. It only grows, and it is per Edge, not per
// goka.View, so it stays right while a view reconnects or is rebuilt on the
// same data dir (which then holds at least as much).
//
// It learns from two sources: applied, for every record the view applies
// (the view's update callback, on Goka's goroutines), and floor, with the
// high watermarks a view recovered to (a partition that was up to date in
// local storage applies nothing at start, so it has no callback to tell).
//
// Updating costs one atomic operation per record while nobody waits; a
// waiter makes each advance wake the waiters. Safe for concurrent use.
type viewProgress struct {
	next    []atomic.Int64
	waiting atomic.Int32

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when a partition advances while waiting > 0
}

func newViewProgress(partitions int32) *viewProgress {
	return &viewProgress{next: make([]atomic.Int64, partitions), changed: make(chan struct{})}
}

// applied records that the view applied the record at offset of partition p.
func (vp *viewProgress) applied(p int32, offset int64) { vp.advance(p, offset+1) }

// floor records that every record below m[p] of partition p is applied.
func (vp *viewProgress) floor(m map[int32]int64) {
	for p, off := range m {
		vp.advance(p, off)
	}
}

func (vp *viewProgress) advance(p int32, to int64) {
	if p < 0 || int(p) >= len(vp.next) {
		return
	}
	n := &vp.next[p]
	for {
		cur := n.Load()
		if to <= cur {
			return
		}
		if n.CompareAndSwap(cur, to) {
			break
		}
	}
	// A waiter counts itself before it reads next, and this reads the
	// count after the store: one of the two sees the other.
	if vp.waiting.Load() > 0 {
		vp.mu.Lock()
		close(vp.changed)
		vp.changed = make(chan struct{})
		vp.mu.Unlock()
	}
}

// nextOf is the offset below which partition p is applied; 0 for a
// partition out of range.
func (vp *viewProgress) nextOf(p int32) int64 {
	if p < 0 || int(p) >= len(vp.next) {
		return 0
	}
	return vp.next[p].Load()
}

// waitFor blocks until partition p is applied below want, or ctx ends (its
// error is returned then).
func (vp *viewProgress) waitFor(ctx context.Context, p int32, want int64) error {
	if vp.nextOf(p) >= want {
		return nil
	}
	vp.waiting.Add(1)
	defer vp.waiting.Add(-1)
	for {
		vp.mu.Lock()
		ch := vp.changed
		vp.mu.Unlock()
		if vp.nextOf(p) >= want {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

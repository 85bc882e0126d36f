package processors

import "testing"

// TestPendingCommitsInOrder: a partition's commit never passes an offset
// delivered and not yet done, whatever order offsets are done in.
func TestPendingCommitsInOrder(t *testing.T) {
	type step struct {
		done       int64
		wantCommit int64
		wantOK     bool
	}
	for _, c := range []struct {
		name      string
		delivered []int64
		steps     []step
	}{
		{"in order", []int64{0, 1, 2}, []step{{0, 1, true}, {1, 2, true}, {2, 3, true}}},
		{"later first", []int64{5, 6, 7}, []step{{6, 5, true}, {7, 5, true}, {5, 8, true}}},
		{"middle last", []int64{0, 1, 2}, []step{{0, 1, true}, {2, 1, true}, {1, 3, true}}},
		{"undelivered mark while open", []int64{3}, []step{{1, 0, false}, {3, 4, true}}},
		{"undelivered mark when idle", nil, []step{{9, 10, true}}},
	} {
		p := newPending()
		for _, o := range c.delivered {
			p.deliver(o)
		}
		for i, s := range c.steps {
			got, ok := p.done(s.done)
			if ok != s.wantOK || (ok && got != s.wantCommit) {
				t.Errorf("%s, step %d (done %d): got commit %d ok %v, want %d ok %v", c.name, i, s.done, got, ok, s.wantCommit, s.wantOK)
			}
		}
	}
}

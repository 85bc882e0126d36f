package ingest

import "sync"

// idempotency remembers the requests with an Idempotency-Key that this
// process is producing, or has had acked while the orders view does not
// show their order yet. Requests with the same key map to the same order id
// (saga.OrderIDForKey) and meet here: the first one produces, the
// others with the same body wait for its answer and repeat it, and a
// different body is refused. Once the view shows the order, the view
// answers instead and the entry goes.
//
// Across replicas and restarts there is no such coordination: two edges may
// both produce the same order id, and the orders processor keeps the first
// submission of an id and ignores the others.
//
// Entries are bounded by limit; it is safe for concurrent use.
type idempotency struct {
	limit int

	mu      sync.Mutex
	entries map[string]*idemEntry // by order id
}

type idemEntry struct {
	hash [16]byte
	sub  *submission
	// settled: sub has its answer; accepted ones stay until visible.
	settled bool
	// visible: the orders view has shown the order.
	visible bool
}

func newIdempotency(limit int) *idempotency {
	return &idempotency{limit: limit, entries: make(map[string]*idemEntry)}
}

// claim looks up order id for a request whose body hashes to hash. It
// returns the submission to wait for and whether the caller owns it: an
// owner must look at the view, produce if needed and call settle; others
// just wait. The problem is set when the request must be refused: the key
// is in use with another body (422), or too many keys are in flight (503).
//
// The caller claims before it looks at the view. An entry goes only after
// the view shows its order, so a request that found no entry will find the
// order in the view: no request can miss both.
func (m *idempotency) claim(id string, hash [16]byte) (sub *submission, owner bool, prob *problem) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[id]; ok {
		if e.hash != hash {
			return nil, false, idempotencyKeyReuse()
		}
		return e.sub, false, nil
	}
	if len(m.entries) >= m.limit {
		return nil, false, overloaded("too many requests with an Idempotency-Key are in flight")
	}
	sub = newSubmission(id)
	m.entries[id] = &idemEntry{hash: hash, sub: sub}
	return sub, true, nil
}

// settle is called by the owner of sub once the broker's verdict is known
// (after sub has its answer). An accepted
// order's entry stays until the view shows it, so that a retry in between
// still finds it; otherwise it goes at once, so that a retry tries again.
func (m *idempotency) settle(id string, sub *submission, accepted bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[id]
	if !ok || e.sub != sub {
		return
	}
	e.settled = true
	if accepted && sub.wait().prob != nil {
		// The order was in doubt when its request was answered (504) and
		// turned out stored: retries are told so from now on.
		e.sub = finishedSubmission(id, outcome{replayed: true})
	}
	if !accepted || e.visible {
		delete(m.entries, id)
	}
}

// visible is called when the orders view shows order id: from now on the
// view answers its retries.
func (m *idempotency) visible(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[id]
	if !ok {
		return
	}
	if e.settled {
		delete(m.entries, id)
		return
	}
	e.visible = true
}

// size is the number of entries.
func (m *idempotency) size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

package ingest

import "sync"

// waiters lets GET /v1/orders/{id}?wait= sleep until the orders view
// reports the order final, without polling: each waited-on order id has a
// channel that orderUpdated closes. Waiters register before they read the
// view, so an update between their read and their sleep still wakes them.
// Entries live only while someone waits, so the map is bounded by the
// requests in flight. It is safe for concurrent use.
type waiters struct {
	mu sync.Mutex
	m  map[string]*waitList
}

type waitList struct {
	ch chan struct{}
	n  int // waiters holding ch
}

func newWaiters() *waiters { return &waiters{m: make(map[string]*waitList)} }

// add registers a waiter for order id. It returns a channel closed when the
// order turns final, and a func the waiter must call when it stops waiting.
func (w *waiters) add(id string) (<-chan struct{}, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l, ok := w.m[id]
	if !ok {
		l = &waitList{ch: make(chan struct{})}
		w.m[id] = l
	}
	l.n++
	return l.ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		l.n--
		// wake may have replaced the list already; remove only our own.
		if l.n == 0 && w.m[id] == l {
			delete(w.m, id)
		}
	}
}

// wake wakes every waiter of order id.
func (w *waiters) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l, ok := w.m[id]; ok {
		close(l.ch)
		delete(w.m, id)
	}
}

// waiting is the number of orders waited on.
func (w *waiters) waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m)
}

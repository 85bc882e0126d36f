package ingest

import (
	"sync"

	"github.com/orderpipe/orderpipe/saga"
)

// admission bounds the orders of this edge that may still become holds in
// the inventory table: those it is producing, or whose record may have
// landed, and that are not final yet in the orders view. Capping them caps
// the holds per SKU (see package topology), so the cost of one inventory
// update stays bounded however much load is offered: above the cap the edge
// sheds new orders with 503 instead of queueing them.
//
// A slot is taken before an order is produced and given back when the order
// turns final in the view, or when the broker refused every record of it. A
// record whose produce timed out keeps its slot until the broker's verdict
// arrives, since it may still land. It is safe for concurrent use.
//
// Besides the number of orders, it caps the lines in flight per SKU: holds
// live in the SKU's value, so a hot SKU is where the cost of an update would
// grow; the per-SKU cap bounds it however the load is skewed.
type admission struct {
	limit, perSKU int

	mu    sync.Mutex
	slots map[string]*slot // by order id
	skus  map[string]int   // lines in flight by SKU
}

// slot is one admitted order.
type slot struct {
	// producing counts the records of the order not yet acked or refused:
	// a retry with the same Idempotency-Key shares the slot of its order.
	producing int
	// landed is set once the broker acked a record of the order.
	landed bool
	// skus are the order's SKUs, counted in admission.skus.
	skus []string
	// order is what was produced: once it landed, this edge answers a GET
	// from it until its view shows the order (read-your-writes).
	order *saga.OrderSubmitted
}

func newAdmission(limit, perSKU int) *admission {
	return &admission{limit: limit, perSKU: perSKU, slots: make(map[string]*slot), skus: make(map[string]int)}
}

// acquire takes a slot for order id, whose lines are for skus, before one of
// its records is produced; it reports false when the edge is full or one of
// the SKUs has perSKU lines in flight. An order that already holds a slot is
// always admitted again, without taking a second one. order is kept with the
// slot for read-your-writes (see accepted); nil keeps nothing.
func (a *admission) acquire(id string, skus []string, order *saga.OrderSubmitted) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.slots[id]; ok {
		s.producing++
		return true
	}
	if len(a.slots) >= a.limit {
		return false
	}
	for _, sku := range skus {
		if a.skus[sku] >= a.perSKU {
			return false
		}
	}
	for _, sku := range skus {
		a.skus[sku]++
	}
	a.slots[id] = &slot{producing: 1, skus: skus, order: order}
	return true
}

// accepted returns order id as this edge produced it, once the broker acked
// it and until the order is final in the view; nil otherwise.
func (a *admission) accepted(id string) *saga.OrderSubmitted {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.slots[id]; ok && s.landed {
		return s.order
	}
	return nil
}

// landed records that the broker acked a record of order id, before its
// 202 is sent, so that a GET right after the 202 finds it (accepted);
// produced, with the same verdict, follows.
func (a *admission) landed(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.slots[id]; ok {
		s.landed = true
	}
}

// releaseLocked frees the slot of id. a.mu must be held.
func (a *admission) releaseLocked(id string) {
	s, ok := a.slots[id]
	if !ok {
		return
	}
	for _, sku := range s.skus {
		if a.skus[sku]--; a.skus[sku] <= 0 {
			delete(a.skus, sku)
		}
	}
	delete(a.slots, id)
}

// produced records the broker's verdict on one record of order id. The slot
// goes back when no record of the order is pending and none landed.
func (a *admission) produced(id string, landed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.slots[id]
	if !ok {
		return // the order turned final first
	}
	s.producing--
	s.landed = s.landed || landed
	if s.producing == 0 && !s.landed {
		a.releaseLocked(id)
	}
}

// final gives back the slot of an order that the view shows final (or
// deleted): it will not take or hold any stock any more. A record of it
// still in flight is ignored by the orders processor, which keeps a final
// order final.
func (a *admission) final(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.releaseLocked(id)
}

// inFlight is the number of slots taken.
func (a *admission) inFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.slots)
}

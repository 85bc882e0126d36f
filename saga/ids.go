package saga

import (
	"fmt"

	"github.com/google/uuid"
)

// OrderID identifies an order. It is a UUID: version 7 (time-ordered) for
// orders without an Idempotency-Key, version 5 of (client, key) for orders
// with one, so every edge replica maps a retried request to the same order
// and the same partition without asking anyone.
type OrderID [16]byte

// idempotencyNamespace is the UUIDv5 namespace of order ids derived from
// idempotency keys. Changing it would give retried requests new ids.
var idempotencyNamespace = uuid.MustParse("8f6a3c52-7c1e-4d59-9a0e-4b1f0c2d7e11")

// NewOrderID returns a fresh time-ordered order id.
func NewOrderID() (OrderID, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return OrderID{}, fmt.Errorf("new order id: %w", err)
	}
	return OrderID(u), nil
}

// OrderIDForKey derives the order id of a request that carries an
// Idempotency-Key, scoped by the client that sent it.
func OrderIDForKey(clientID, key string) OrderID {
	return OrderID(uuid.NewSHA1(idempotencyNamespace, []byte(clientID+"\x00"+key)))
}

// ParseOrderID parses the canonical text form.
func ParseOrderID(s string) (OrderID, error) {
	if len(s) != 36 {
		return OrderID{}, fmt.Errorf("order id %q: want 36 characters", s)
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return OrderID{}, fmt.Errorf("order id %q: %w", s, err)
	}
	return OrderID(u), nil
}

// String returns the canonical text form, also used as the record key.
func (id OrderID) String() string { return uuid.UUID(id).String() }

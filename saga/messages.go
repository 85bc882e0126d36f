package saga

import (
	"time"
)

// Item is one order line as submitted.
type Item struct {
	SKU            string
	Quantity       uint32
	UnitPriceCents int64
}

// OrderSubmitted is what the edge writes to OrdersSubmitted once a request
// has passed validation.
type OrderSubmitted struct {
	OrderID     OrderID
	CustomerID  string
	Currency    string
	Items       []Item
	SubmittedAt time.Time
	// ClientID is the authenticated client; empty when auth is off.
	ClientID string
	// IdempotencyKey as sent by the client; empty without one.
	IdempotencyKey string
	// RequestHash is a digest of the canonical request, kept in the order
	// state so that a retry with the same key and another body is refused.
	RequestHash [16]byte
}

// CommandKind says what an InventoryCommand does.
type CommandKind byte

// The inventory commands.
const (
	// CmdReserve holds Quantity units of the key's SKU for OrderID, or records
	// a refusal when there are not enough.
	CmdReserve CommandKind = 1
	// CmdCommit turns the order's hold named by HoldOffset into sold units.
	CmdCommit CommandKind = 2
	// CmdRelease gives the reserved hold named by HoldOffset back to
	// available, or forgets a refusal.
	CmdRelease CommandKind = 3
	// CmdSetStock sets the available units (admin PUT).
	CmdSetStock CommandKind = 4
)

func (k CommandKind) String() string {
	switch k {
	case CmdReserve:
		return "reserve"
	case CmdCommit:
		return "commit"
	case CmdRelease:
		return "release"
	case CmdSetStock:
		return "set-stock"
	}
	return "unknown"
}

// InventoryCommand is a record of InventoryCommands, keyed by SKU.
type InventoryCommand struct {
	Kind    CommandKind
	OrderID OrderID // Reserve, Commit, Release
	// Quantity to reserve (Reserve only).
	Quantity uint32
	// Available is the new stock level (SetStock only).
	Available int64
	// HoldOffset names the hold to settle (Commit, Release): the offset of
	// the Reserve that made it, as reported in its ReservationResult.
	HoldOffset int64
}

// Outcome is the inventory's answer to a Reserve.
type Outcome byte

// The outcomes of a reservation.
const (
	OutcomeReserved     Outcome = 1
	OutcomeInsufficient Outcome = 2
)

// ReservationResult is a record of InventoryResults, keyed by order id.
type ReservationResult struct {
	OrderID  OrderID
	SKU      string
	Outcome  Outcome
	Quantity uint32
	// Available is the SKU's available stock when the decision was made;
	// it goes into the reason of a rejected order.
	Available int64
	// HoldOffset identifies the hold that records this outcome (see Hold).
	HoldOffset int64
}

// Status is an order's place in its life. The strings are the API's words.
type Status byte

// The order statuses.
const (
	StatusPending   Status = 1
	StatusConfirmed Status = 2
	StatusRejected  Status = 3
)

func (s Status) String() string {
	switch s {
	case StatusPending:
		return "pending"
	case StatusConfirmed:
		return "confirmed"
	case StatusRejected:
		return "rejected"
	}
	return "unknown"
}

// Final reports whether the status can never change again.
func (s Status) Final() bool { return s == StatusConfirmed || s == StatusRejected }

// LineResult is what the orders processor knows about one line.
type LineResult byte

// The line results.
const (
	LineAwaiting     LineResult = 0
	LineReserved     LineResult = 1
	LineInsufficient LineResult = 2
)

// Line is an order line with its reservation result.
type Line struct {
	Item
	Result LineResult
	// HoldOffset is the identity of the inventory hold behind Result.
	HoldOffset int64
	// RequestedAt is when the orders processor first emitted the line's
	// Reserve (its clock, which also stamps the record); zero if it never
	// did (an order rejected as invalid) or the state predates step times.
	RequestedAt time.Time
	// AnsweredAt is the timestamp of the inventory.results record that
	// gave Result; zero while awaiting, or if the state predates step times.
	AnsweredAt time.Time
}

// OrderState is the value of the orders table: the order and where it is.
type OrderState struct {
	// Version grows by one with every write; the sink never lets a row go back
	// to a lower version.
	Version    uint64
	OrderID    OrderID
	CustomerID string
	Currency   string
	Status     Status
	Reason     string
	// CreatedAt is when the edge accepted the order (OrderSubmitted's
	// SubmittedAt).
	CreatedAt time.Time
	// UpdatedAt is when the orders processor wrote this version. A final
	// order never changes again, so for one it is when it became final.
	UpdatedAt      time.Time
	ClientID       string
	IdempotencyKey string
	RequestHash    [16]byte
	Lines          []Line
}

// TotalCents is the order's total.
func (o *OrderState) TotalCents() int64 {
	var t int64
	for _, l := range o.Lines {
		t += int64(l.Quantity) * l.UnitPriceCents
	}
	return t
}

// StockState is the value of the inventory table: one SKU's stock and the
// holds of the orders in flight on it. Conservation: units set by the last
// SetStock plus those released equal Available + Reserved + Sold.
type StockState struct {
	Version   uint64
	Available int64
	Reserved  int64
	Sold      int64
	// LastOffset is the inventory.commands offset last applied to this SKU,
	// -1 before any; records at or below it are replays.
	LastOffset int64
	UpdatedAt  time.Time
	// holds are fixed-size records sorted by order id; see holds.go.
	holds []byte
}

// NewStockState returns the state of a SKU never seen before.
func NewStockState() *StockState { return &StockState{LastOffset: -1} }

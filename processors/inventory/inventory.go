// Package inventory is the inventory processor: the stock of every SKU in
// the inventory group table, changed only by commands on
// inventory.commands. Its idempotency argument is in package topology.
package inventory

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/processors/dlq"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// Metrics are the counters the processor updates; nil fields are skipped.
type Metrics interface {
	// Command counts an applied command of kind, or a replayed one.
	Command(kind saga.CommandKind, replay bool)
	// DeadLetter counts a record sent to the dead-letter topic.
	DeadLetter()
	// StateBehind counts a Commit naming a hold above the state's
	// LastOffset: the state is older than a Reserve whose hold was
	// acknowledged, so it lost writes. It must stay 0.
	StateBehind()
}

// Processor holds the callbacks of the inventory group. It has no state of
// its own: everything lives in the group table, so one value serves all
// partitions concurrently.
type Processor struct {
	now     func() time.Time
	log     *slog.Logger
	metrics Metrics
}

// New returns the processor. now defaults to time.Now, log to slog.Default;
// metrics may be nil.
func New(log *slog.Logger, metrics Metrics, now func() time.Time) *Processor {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Processor{now: now, log: log, metrics: metrics}
}

// Graph is the group graph with this processor's callback.
func (p *Processor) Graph() *goka.GroupGraph { return topology.InventoryGraph(p.OnCommand) }

// OnCommand applies one inventory command to the stock of the key's SKU.
func (p *Processor) OnCommand(ctx goka.Context, msg any) {
	raw, _ := msg.([]byte)
	cmd, err := saga.DecodeInventoryCommand(raw)
	if err == nil && ctx.Key() == "" {
		err = errors.New("inventory command without a SKU key")
	}
	if err != nil {
		p.deadLetter(ctx, raw, err)
		return
	}
	st := p.current(ctx)
	if ctx.Offset() <= st.LastOffset {
		p.replay(ctx, st, cmd)
		return
	}
	changed := p.apply(ctx, st, cmd)
	if p.metrics != nil {
		p.metrics.Command(cmd.Kind, false)
	}
	if !changed {
		// A no-op (Commit or Release of an order without a hold) writes
		// nothing: replaying it is a no-op as well.
		return
	}
	st.LastOffset = ctx.Offset()
	st.Version++
	st.UpdatedAt = p.now()
	ctx.SetValue(st)
}

// current returns the SKU's state, a fresh one if it has none.
func (p *Processor) current(ctx goka.Context) *saga.StockState {
	if v := ctx.Value(); v != nil {
		return v.(*saga.StockState)
	}
	return saga.NewStockState()
}

// replay handles a command at or below LastOffset: its effect is in the
// table already. Only a Reserve needs an answer, since the first one may
// have been lost with the crash that caused the replay. If this Reserve
// made the order's hold, the hold has the answer. Otherwise the Reserve was
// refused (refusals leave no hold), or its hold was settled, which happens
// only after the order is final, when the orders processor ignores answers:
// either way "insufficient" for this offset is the right answer.
func (p *Processor) replay(ctx goka.Context, st *saga.StockState, cmd *saga.InventoryCommand) {
	if p.metrics != nil {
		p.metrics.Command(cmd.Kind, true)
	}
	// Write the state again: after a failed changelog write the local
	// state may be ahead of the changelog (see orders.Processor.replay).
	ctx.SetValue(st)
	if cmd.Kind != saga.CmdReserve {
		return
	}
	if h, ok := st.Hold(cmd.OrderID); ok && h.Offset == ctx.Offset() {
		p.answer(ctx, st, h)
		return
	}
	p.refuse(ctx, st, cmd)
}

// apply changes st for cmd and reports whether it changed.
func (p *Processor) apply(ctx goka.Context, st *saga.StockState, cmd *saga.InventoryCommand) bool {
	switch cmd.Kind {
	case saga.CmdSetStock:
		st.Available = cmd.Available
		return true
	case saga.CmdReserve:
		if h, ok := st.Hold(cmd.OrderID); ok {
			// The orders processor re-sent a Reserve after its own replay:
			// answer as before, so a line's answer never flips.
			p.answer(ctx, st, h)
			return false
		}
		if st.Available < int64(cmd.Quantity) {
			// A refusal keeps no hold: the state stays as small as the
			// reservations in flight. Should the orders processor re-send
			// this Reserve and stock have come back meanwhile, the second
			// answer is a hold its line does not know, which it releases.
			p.refuse(ctx, st, cmd)
			return false
		}
		h := saga.Hold{OrderID: cmd.OrderID, Quantity: cmd.Quantity, Outcome: saga.HoldReserved, Offset: ctx.Offset()}
		st.Available -= int64(cmd.Quantity)
		st.Reserved += int64(cmd.Quantity)
		st.PutHold(h)
		p.answer(ctx, st, h)
		return true
	case saga.CmdCommit, saga.CmdRelease:
		h, ok := st.Hold(cmd.OrderID)
		if !ok && cmd.Kind == saga.CmdCommit && cmd.HoldOffset > st.LastOffset {
			// A Commit always names a hold that a state-changing Reserve
			// made, and that Reserve set LastOffset to the hold's offset:
			// in a sound lineage the hold is here or LastOffset is past
			// it. Neither means the state lost acknowledged writes (a
			// changelog that went back). Only a detector: a Release may
			// name a refused Reserve, which never moved LastOffset.
			p.log.Error("inventory state is behind an acknowledged hold: the table lost writes", "sku", ctx.Key(), "order_id", cmd.OrderID.String(), "hold_offset", cmd.HoldOffset, "last_offset", st.LastOffset, "version", st.Version)
			if p.metrics != nil {
				p.metrics.StateBehind()
			}
		}
		if !ok || h.Offset != cmd.HoldOffset {
			// Nothing to settle, or not the hold the orders processor
			// recorded (a stray hold is settled by its own Release).
			return false
		}
		if h.Outcome == saga.HoldReserved {
			st.Reserved -= int64(h.Quantity)
			if cmd.Kind == saga.CmdCommit {
				st.Sold += int64(h.Quantity)
			} else {
				st.Available += int64(h.Quantity)
			}
		}
		st.DeleteHold(cmd.OrderID)
		return true
	}
	// DecodeInventoryCommand refuses unknown kinds, so this is only reached
	// if a kind is added there and not here.
	p.deadLetter(ctx, cmd.Encode(), fmt.Errorf("unhandled command kind %s", cmd.Kind))
	return false
}

// refuse answers a Reserve that this command's offset did not turn into a hold.
func (p *Processor) refuse(ctx goka.Context, st *saga.StockState, cmd *saga.InventoryCommand) {
	ctx.Emit(topology.InventoryResults, cmd.OrderID.String(), &saga.ReservationResult{
		OrderID:    cmd.OrderID,
		SKU:        ctx.Key(),
		Outcome:    saga.OutcomeInsufficient,
		Quantity:   cmd.Quantity,
		Available:  st.Available,
		HoldOffset: ctx.Offset(),
	})
}

// answer emits the result that hold h records, keyed by its order.
func (p *Processor) answer(ctx goka.Context, st *saga.StockState, h saga.Hold) {
	outcome := saga.OutcomeReserved
	if h.Outcome == saga.HoldRefused {
		outcome = saga.OutcomeInsufficient
	}
	ctx.Emit(topology.InventoryResults, h.OrderID.String(), &saga.ReservationResult{
		OrderID:    h.OrderID,
		SKU:        ctx.Key(),
		Outcome:    outcome,
		Quantity:   h.Quantity,
		Available:  st.Available,
		HoldOffset: h.Offset,
	})
}

func (p *Processor) deadLetter(ctx goka.Context, raw []byte, err error) {
	p.log.Warn("inventory command sent to the dead-letter topic", "key", ctx.Key(), "partition", ctx.Partition(), "offset", ctx.Offset(), "err", err)
	if p.metrics != nil {
		p.metrics.DeadLetter()
	}
	dlq.Send(ctx, raw, err)
}

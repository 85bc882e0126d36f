// Package orders is the orders processor: each order's state in the orders
// group table, one Reserve per line to the inventory, and the decision to
// confirm or reject once every line has its answer. Its idempotency argument
// is in package topology.
package orders

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/processors/dlq"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// Metrics are the counters the processor updates.
type Metrics interface {
	// Final counts an order that reached a final status, once, when the
	// processor writes its final state st.
	Final(st *saga.OrderState)
	// Replay counts an input for an order that already had its effect.
	Replay()
	// DeadLetter counts a record sent to the dead-letter topic.
	DeadLetter()
}

// Limits bound what a submission may contain. The edge enforces stricter
// limits first; these protect the processor from records written around it.
type Limits struct {
	MaxItems    int    // default 1000
	MaxQuantity uint32 // default 1,000,000
}

// Processor holds the callbacks of the orders group. Its only state is the
// group table, so one value serves all partitions concurrently.
type Processor struct {
	now     func() time.Time
	log     *slog.Logger
	metrics Metrics
	limits  Limits
}

// New returns the processor. log defaults to slog.Default, now to time.Now;
// metrics may be nil.
func New(log *slog.Logger, metrics Metrics, now func() time.Time, limits Limits) *Processor {
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	if limits.MaxItems == 0 {
		limits.MaxItems = 1000
	}
	if limits.MaxQuantity == 0 {
		limits.MaxQuantity = 1_000_000
	}
	return &Processor{now: now, log: log, metrics: metrics, limits: limits}
}

// Graph is the group graph with this processor's callbacks.
func (p *Processor) Graph() *goka.GroupGraph {
	return topology.OrdersGraph(p.OnSubmitted, p.OnResult)
}

// OnSubmitted starts an order, or replays what a repeated submission needs.
func (p *Processor) OnSubmitted(ctx goka.Context, msg any) {
	raw, _ := msg.([]byte)
	sub, err := saga.DecodeOrderSubmitted(raw)
	if err == nil && sub.OrderID.String() != ctx.Key() {
		err = fmt.Errorf("key %q is not the order id %s", ctx.Key(), sub.OrderID)
	}
	if err != nil {
		p.deadLetter(ctx, raw, err)
		return
	}
	if st := current(ctx); st != nil {
		if st.RequestHash != sub.RequestHash {
			// Two edges accepted the same Idempotency-Key with different
			// bodies at the same moment; the first one to get here won.
			p.log.Warn("submission conflicts with an existing order; ignored", "order_id", ctx.Key())
		}
		p.replay(ctx, st)
		return
	}
	now := p.now()
	st := &saga.OrderState{
		Version:        1,
		OrderID:        sub.OrderID,
		CustomerID:     sub.CustomerID,
		Currency:       sub.Currency,
		Status:         saga.StatusPending,
		CreatedAt:      sub.SubmittedAt,
		UpdatedAt:      now,
		ClientID:       sub.ClientID,
		IdempotencyKey: sub.IdempotencyKey,
		RequestHash:    sub.RequestHash,
		Lines:          make([]saga.Line, len(sub.Items)),
	}
	if st.CreatedAt.IsZero() {
		st.CreatedAt = now
	}
	for i, it := range sub.Items {
		st.Lines[i] = saga.Line{Item: it}
	}
	if err := p.validate(sub); err != nil {
		st.Status, st.Reason = saga.StatusRejected, "invalid order: "+err.Error()
		ctx.SetValue(st)
		p.final(st)
		return
	}
	for i := range st.Lines {
		st.Lines[i].RequestedAt = now // the Reserves go out below
	}
	ctx.SetValue(st)
	p.reserveAwaiting(ctx, st)
}

// OnResult records the inventory's answer for one line and decides the
// order once every line has one.
func (p *Processor) OnResult(ctx goka.Context, msg any) {
	raw, _ := msg.([]byte)
	res, err := saga.DecodeReservationResult(raw)
	if err == nil && res.OrderID.String() != ctx.Key() {
		err = fmt.Errorf("key %q is not the order id %s", ctx.Key(), res.OrderID)
	}
	if err != nil {
		p.deadLetter(ctx, raw, err)
		return
	}
	st := current(ctx)
	if st == nil {
		// The Reserve reached the inventory but the state write that
		// preceded it did not reach the changelog before a crash. The
		// submission is replayed (its offset was not committed), re-sends
		// the Reserve, and the inventory answers again from its hold.
		p.log.Debug("result for an unknown order; waiting for its submission to replay", "order_id", ctx.Key())
		p.replayed()
		return
	}
	i := lineOf(st, res.SKU)
	if i < 0 {
		p.deadLetter(ctx, raw, fmt.Errorf("order %s has no line for sku %q", st.OrderID, res.SKU))
		return
	}
	line := &st.Lines[i]
	if line.Result != saga.LineAwaiting || st.Status.Final() {
		p.answered(ctx, st, line, res)
		return
	}
	now := p.now()
	line.Result, line.HoldOffset = saga.LineReserved, res.HoldOffset
	if res.Outcome == saga.OutcomeInsufficient {
		line.Result = saga.LineInsufficient
	}
	line.AnsweredAt = recordTime(ctx, now)
	st.Version++
	st.UpdatedAt = now
	if !decided(st) {
		ctx.SetValue(st)
		return
	}
	st.Status, st.Reason = saga.StatusConfirmed, ""
	if reason := rejection(st, res); reason != "" {
		st.Status, st.Reason = saga.StatusRejected, reason
	}
	ctx.SetValue(st)
	p.final(st)
	p.settle(ctx, st)
}

// answered handles a result for a line that has one already, or for a final
// order. The same hold again is a duplicate answer (the inventory answered a
// re-sent Reserve, or replayed its input): for a final order it re-sends the
// settlement, in case that was lost; for a pending one it changes nothing. A
// different hold is a stray, made by a Reserve that arrived after this line
// was answered (a zombie instance re-sent it after a rebalance): it is
// released at once, so it neither leaks stock nor gets committed.
func (p *Processor) answered(ctx goka.Context, st *saga.OrderState, line *saga.Line, res *saga.ReservationResult) {
	p.replayed()
	if line.Result == saga.LineAwaiting || line.HoldOffset != res.HoldOffset {
		p.log.Warn("releasing a stray inventory hold", "order_id", ctx.Key(), "sku", res.SKU, "hold_offset", res.HoldOffset, "line_hold_offset", line.HoldOffset)
		ctx.Emit(topology.InventoryCommands, res.SKU, &saga.InventoryCommand{
			Kind: saga.CmdRelease, OrderID: st.OrderID, HoldOffset: res.HoldOffset,
		})
		return
	}
	// Write the state again: if the table write of the first answer
	// reached only local storage (its changelog write failed, and so did
	// the processor), this makes it real.
	ctx.SetValue(st)
	if st.Status.Final() {
		p.settle(ctx, st)
	}
}

// replay handles an input for an order whose effects may be partly lost:
// re-send the Reserve of lines still awaiting an answer, or the Commit or
// Release of a final order. Every one of them is idempotent in the inventory.
// A re-sent Reserve keeps its line's RequestedAt: the journey shows the
// first request.
//
// The state is written again as it is. Goka writes local storage before
// the changelog, so after a failed changelog write (the processor then
// fails, and the input is replayed: commits never pass it) the local state
// can be ahead of the changelog, which views, the sink and other instances
// read; this is what brings the changelog up to it. Readers see the same
// version again, which changes nothing.
func (p *Processor) replay(ctx goka.Context, st *saga.OrderState) {
	p.replayed()
	ctx.SetValue(st)
	if st.Status.Final() {
		p.settle(ctx, st)
		return
	}
	p.reserveAwaiting(ctx, st)
}

// reserveAwaiting emits a Reserve for each line without an answer.
func (p *Processor) reserveAwaiting(ctx goka.Context, st *saga.OrderState) {
	for _, l := range st.Lines {
		if l.Result == saga.LineAwaiting {
			ctx.Emit(topology.InventoryCommands, l.SKU, &saga.InventoryCommand{
				Kind: saga.CmdReserve, OrderID: st.OrderID, Quantity: l.Quantity,
			})
		}
	}
}

// settle emits what a final order owes the inventory: Commit of every line
// of a confirmed order, Release of every reserved line of a rejected one.
func (p *Processor) settle(ctx goka.Context, st *saga.OrderState) {
	kind := saga.CmdRelease
	if st.Status == saga.StatusConfirmed {
		kind = saga.CmdCommit
	}
	for _, l := range st.Lines {
		if l.Result != saga.LineReserved {
			continue // refused (no hold), or never sent to the inventory
		}
		ctx.Emit(topology.InventoryCommands, l.SKU, &saga.InventoryCommand{Kind: kind, OrderID: st.OrderID, HoldOffset: l.HoldOffset})
	}
}

// validate re-checks what the edge checks, for records written around it.
func (p *Processor) validate(sub *saga.OrderSubmitted) error {
	if len(sub.Items) == 0 {
		return errors.New("no items")
	}
	if len(sub.Items) > p.limits.MaxItems {
		return fmt.Errorf("%d items, more than %d", len(sub.Items), p.limits.MaxItems)
	}
	seen := make(map[string]struct{}, len(sub.Items))
	for _, it := range sub.Items {
		switch {
		case it.SKU == "":
			return errors.New("empty sku")
		case it.Quantity == 0 || it.Quantity > p.limits.MaxQuantity:
			return fmt.Errorf("sku %s: quantity %d out of range", it.SKU, it.Quantity)
		case it.UnitPriceCents < 0:
			return fmt.Errorf("sku %s: negative price", it.SKU)
		}
		if _, dup := seen[it.SKU]; dup {
			return fmt.Errorf("sku %s appears twice", it.SKU)
		}
		seen[it.SKU] = struct{}{}
	}
	return nil
}

// recordTime is the timestamp of the record ctx handles (the producer's
// clock when it wrote it), or now for a record without one.
func recordTime(ctx goka.Context, now time.Time) time.Time {
	if ts := ctx.Timestamp(); !ts.IsZero() && ts.Unix() > 0 {
		return ts
	}
	return now
}

func current(ctx goka.Context) *saga.OrderState {
	if v := ctx.Value(); v != nil {
		return v.(*saga.OrderState)
	}
	return nil
}

func lineOf(st *saga.OrderState, sku string) int {
	for i, l := range st.Lines {
		if l.SKU == sku {
			return i
		}
	}
	return -1
}

func decided(st *saga.OrderState) bool {
	for _, l := range st.Lines {
		if l.Result == saga.LineAwaiting {
			return false
		}
	}
	return true
}

// rejection is the reason a decided order is rejected, "" if it is not.
// last is the result that decided it, whose Available is the freshest.
func rejection(st *saga.OrderState, last *saga.ReservationResult) string {
	var short []string
	for _, l := range st.Lines {
		if l.Result != saga.LineInsufficient {
			continue
		}
		s := fmt.Sprintf("%s (requested %d)", l.SKU, l.Quantity)
		if l.SKU == last.SKU {
			s = fmt.Sprintf("%s (requested %d, available %d)", l.SKU, l.Quantity, last.Available)
		}
		short = append(short, s)
	}
	if len(short) == 0 {
		return ""
	}
	return "insufficient stock: " + strings.Join(short, ", ")
}

func (p *Processor) final(st *saga.OrderState) {
	if p.metrics != nil {
		p.metrics.Final(st)
	}
}

func (p *Processor) replayed() {
	if p.metrics != nil {
		p.metrics.Replay()
	}
}

func (p *Processor) deadLetter(ctx goka.Context, raw []byte, err error) {
	p.log.Warn("orders record sent to the dead-letter topic", "topic", ctx.Topic(), "order_id", ctx.Key(), "partition", ctx.Partition(), "offset", ctx.Offset(), "err", err)
	if p.metrics != nil {
		p.metrics.DeadLetter()
	}
	dlq.Send(ctx, raw, err)
}

package sagaaudit

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// commands reads inventory.commands from its start to its current end and
// runs the two audits that need them: lost commands and the replay.
//
// Lost commands: the inventory processor (processors/inventory) applies a
// command at offset o to its SKU's state only if o > LastOffset, and then,
// if the command changed the state, writes it with LastOffset = o; a
// command that changes nothing writes nothing. So in a sound log every
// command between a SKU's recovered LastOffset and the committed offset
// changed nothing when it was applied, and the state it met is the
// recovered one (any change would have moved LastOffset). Evaluated against
// the recovered state, it must still change nothing; one that would is a
// command whose effect the changelog lost, and that no replay will bring
// back, since its input offset is committed.
//
// That sees a loss only while it is the last thing that happened to its
// SKU. The replay sees it for good: the processor's rules are a function of
// the state and the command, so folding each SKU's commands in offset order
// gives the one state the SKU may have after the command at any offset L,
// and every changelog record with LastOffset L must be that state (its
// timestamp aside). A state rebuilt from a changelog that lost a write, and
// everything written on top of it, differs from the fold.
func (r *Report) commands(ctx context.Context, cl *kgo.Client) error {
	topic := string(topology.InventoryCommands)
	upTo, err := endOffsets(ctx, kadm.NewClient(cl), topic)
	if err != nil {
		return err
	}
	fold := map[partKey]*saga.StockState{}
	folded := map[partKey]map[int64]foldedState{} // by the offset of the command that made it
	err = scan(ctx, cl, upTo, func(rec *kgo.Record) {
		r.Records[topic]++
		cmd, err := saga.DecodeInventoryCommand(rec.Value)
		if err != nil || len(rec.Key) == 0 {
			return // dead-lettered: it changes no state
		}
		pk := partKey{rec.Partition, string(rec.Key)}
		if committed, ok := r.Committed[rec.Partition]; ok && rec.Offset < committed {
			r.lostCommand(rec, pk, cmd, committed)
		}
		st := fold[pk]
		if st == nil {
			st = saga.NewStockState()
			fold[pk] = st
		}
		if apply(st, cmd, rec.Offset) {
			st.LastOffset = rec.Offset
			st.Version++
			if folded[pk] == nil {
				folded[pk] = map[int64]foldedState{}
			}
			folded[pk][rec.Offset] = foldedState{digest: stockDigest(st), summary: summary(st)}
		}
	})
	if err != nil {
		return err
	}
	r.checkReplay(folded)
	return nil
}

// foldedState is the state the fold of a SKU's commands gives after one.
type foldedState struct {
	digest  [sha256.Size]byte
	summary string
}

func summary(st *saga.StockState) string {
	return fmt.Sprintf("version %d, available %d, reserved %d, sold %d, last offset %d, %d holds",
		st.Version, st.Available, st.Reserved, st.Sold, st.LastOffset, st.HoldCount())
}

func (r *Report) lostCommand(rec *kgo.Record, pk partKey, cmd *saga.InventoryCommand, committed int64) {
	rs, ok := r.recovered[pk]
	st := rs.st
	if !ok {
		st, rs.at = saga.NewStockState(), -1
	}
	probe := *st // apply never writes into the holds it was given
	if rec.Offset <= st.LastOffset || !apply(&probe, cmd, rec.Offset) {
		return
	}
	where := "no record in the changelog"
	if ok {
		where = "its last record in the changelog"
	}
	r.add(LostCommand, rec, "%s %s would change the recovered state (%s: version %d, last offset %d, at offset %d), and the group committed offset %d",
		cmd.Kind, describe(cmd), where, st.Version, st.LastOffset, rs.at, committed)
}

// checkReplay compares every stock record of the changelog with the fold
// of its SKU's commands, and reports the first difference of each SKU:
// everything written after it differs as well.
func (r *Report) checkReplay(folded map[partKey]map[int64]foldedState) {
	table := string(topology.InventoryTable())
	for _, pk := range sortedKeys(r.stockHistory) {
		for _, h := range r.stockHistory[pk] {
			f, ok := folded[pk][h.lastOffset]
			if ok && f.digest == h.digest {
				continue
			}
			want := "no command at that offset changes the state"
			if ok {
				want = "the commands make " + f.summary
			}
			r.Findings = append(r.Findings, Finding{
				Rule: Diverged, Topic: table, Partition: pk.partition, Offset: h.at, Key: pk.key,
				Detail: fmt.Sprintf("the changelog has %s; up to offset %d %s", h.summary, h.lastOffset, want),
			})
			break
		}
	}
}

// apply applies cmd, at offset, to st as the inventory processor does and
// reports whether it changed st; it leaves Version and LastOffset to the
// caller. It mirrors inventory.Processor.apply, which is the point of the
// replay; should the two drift apart, the saga tests that run the real
// processor and this audit (processors.TestSagaUnderFaults) find sound
// lineages diverged.
func apply(st *saga.StockState, cmd *saga.InventoryCommand, offset int64) bool {
	switch cmd.Kind {
	case saga.CmdSetStock:
		st.Available = cmd.Available
		return true
	case saga.CmdReserve:
		if _, held := st.Hold(cmd.OrderID); held {
			return false // answered from the hold
		}
		if st.Available < int64(cmd.Quantity) {
			return false // refused, keeping no hold
		}
		st.Available -= int64(cmd.Quantity)
		st.Reserved += int64(cmd.Quantity)
		st.PutHold(saga.Hold{OrderID: cmd.OrderID, Quantity: cmd.Quantity, Outcome: saga.HoldReserved, Offset: offset})
		return true
	case saga.CmdCommit, saga.CmdRelease:
		h, ok := st.Hold(cmd.OrderID)
		if !ok || h.Offset != cmd.HoldOffset {
			return false // holds are identified by offset
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
	return false
}

func describe(cmd *saga.InventoryCommand) string {
	switch cmd.Kind {
	case saga.CmdSetStock:
		return fmt.Sprintf("to %d", cmd.Available)
	case saga.CmdReserve:
		return fmt.Sprintf("of %d for order %s", cmd.Quantity, cmd.OrderID)
	}
	return fmt.Sprintf("of hold %d for order %s", cmd.HoldOffset, cmd.OrderID)
}

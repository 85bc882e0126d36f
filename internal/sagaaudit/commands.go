package sagaaudit

import (
	"context"
	"fmt"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kgo"
)

// lostCommands reads inventory.commands below the committed offsets and
// reports every command the recovered states have lost.
//
// The inventory processor (processors/inventory) applies a command at
// offset o to its SKU's state only if o > LastOffset, and then, if the
// command changed the state, writes it with LastOffset = o; a command that
// changes nothing writes nothing. So in a sound log every command between a
// SKU's recovered LastOffset and the committed offset changed nothing when
// it was applied, and the state it met is the recovered one (any change
// would have moved LastOffset). Evaluated against the recovered state, it
// must still change nothing; one that would is a command whose effect the
// changelog lost, and that no replay will bring back, since its input
// offset is committed.
func (r *Report) lostCommands(ctx context.Context, cl *kgo.Client) error {
	topic := string(topology.InventoryCommands)
	upTo := map[string]map[int32]int64{topic: {}}
	for p, at := range r.Committed {
		upTo[topic][p] = at
	}
	return scan(ctx, cl, upTo, func(rec *kgo.Record) {
		r.Records[topic]++
		cmd, err := saga.DecodeInventoryCommand(rec.Value)
		if err != nil || len(rec.Key) == 0 {
			return // dead-lettered: it changes no state
		}
		rs, ok := r.recovered[partKey{rec.Partition, string(rec.Key)}]
		st := rs.st
		if !ok {
			st, rs.at = saga.NewStockState(), -1
		}
		if rec.Offset <= st.LastOffset || !changes(st, cmd) {
			return
		}
		where := "no record in the changelog"
		if ok {
			where = "its last record in the changelog"
		}
		r.add(LostCommand, rec, "%s %s would change the recovered state (%s: version %d, last offset %d, at offset %d), and the group committed offset %d",
			cmd.Kind, describe(cmd), where, st.Version, st.LastOffset, rs.at, r.Committed[rec.Partition])
	})
}

// changes reports whether the inventory processor would change st by
// applying cmd; it mirrors inventory.Processor.apply.
func changes(st *saga.StockState, cmd *saga.InventoryCommand) bool {
	switch cmd.Kind {
	case saga.CmdSetStock:
		return true
	case saga.CmdReserve:
		if _, held := st.Hold(cmd.OrderID); held {
			return false // answered from the hold
		}
		return st.Available >= int64(cmd.Quantity) // else refused, keeping no hold
	case saga.CmdCommit, saga.CmdRelease:
		h, ok := st.Hold(cmd.OrderID)
		return ok && h.Offset == cmd.HoldOffset // holds are identified by offset
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

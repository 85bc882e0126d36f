package topology

import (
	"fmt"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/saga"
)

// OrdersGraph is the orders processor: it reads submissions and reservation
// results (both keyed by order id), keeps order state in its table and emits
// inventory commands and dead letters.
func OrdersGraph(onSubmitted, onResult goka.ProcessCallback) *goka.GroupGraph {
	return goka.DefineGroup(OrdersGroup,
		goka.Input(OrdersSubmitted, saga.RawCodec{}, onSubmitted),
		goka.Input(InventoryResults, saga.RawCodec{}, onResult),
		goka.Output(InventoryCommands, saga.InventoryCommandCodec()),
		goka.Output(DeadLetter, saga.RawCodec{}),
		goka.Persist(saga.OrderStateCodec()),
	)
}

// InventoryGraph is the inventory processor: it reads commands keyed by SKU,
// keeps stock in its table and emits reservation results and dead letters.
func InventoryGraph(onCommand goka.ProcessCallback) *goka.GroupGraph {
	return goka.DefineGroup(InventoryGroup,
		goka.Input(InventoryCommands, saga.RawCodec{}, onCommand),
		goka.Output(InventoryResults, saga.ReservationResultCodec()),
		goka.Output(DeadLetter, saga.RawCodec{}),
		goka.Persist(saga.StockStateCodec()),
	)
}

// CheckCopartitioning verifies that, with partition counts as given by
// partitions (topic name to count), every group's inputs and table share one
// count. Goka checks the inputs itself but not the group table (goka#378), and
// a table with another count silently reads state from the wrong partition.
func CheckCopartitioning(partitions map[string]int32, graphs ...*goka.GroupGraph) error {
	for _, g := range graphs {
		var want int32
		var first string
		topics := append(g.InputStreams().Topics(), g.GroupTable().Topic())
		for _, t := range topics {
			n, ok := partitions[t]
			if !ok {
				return fmt.Errorf("group %s: topic %s has no partition count", g.Group(), t)
			}
			if first == "" {
				want, first = n, t
				continue
			}
			if n != want {
				return fmt.Errorf("group %s: topic %s has %d partitions but %s has %d; inputs and table must be co-partitioned", g.Group(), t, n, first, want)
			}
		}
	}
	return nil
}

// GroupInputs maps each group to the topics it consumes, as its graph
// declares them: what a replay rewinds and what consumer lag counts.
func GroupInputs() map[goka.Group][]string {
	noop := func(goka.Context, any) {}
	out := map[goka.Group][]string{}
	for _, g := range []*goka.GroupGraph{OrdersGraph(noop, noop), InventoryGraph(noop)} {
		out[g.Group()] = g.InputStreams().Topics()
	}
	return out
}

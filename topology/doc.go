// Package topology declares every topic, Goka group and table of orderpipe
// and the one partitioner that every producer shares; the values that travel
// on them and their codecs are package saga's. Nobody else spells a topic
// name.
//
// # The flow
//
//	edge ──► orders.submitted ──► group "orders" (table orders-table)
//	                                  │ Reserve/Commit/Release, keyed by SKU
//	edge ──► inventory.commands ◄─────┘ (SetStock from PUT /v1/inventory)
//	              │
//	              ▼
//	        group "inventory" (table inventory-table)
//	              │ ReservationResult, keyed by order id
//	              ▼
//	        inventory.results ──► group "orders"
//
// orders.submitted and inventory.results are both inputs of the orders group
// and keyed by order id, so they must have the same partition count (Goka's
// co-partitioning); the group tables follow their group's inputs.
//
// # Why exactly-once effects hold on at-least-once Goka
//
// Goka commits an input offset only after the table write and every emit of
// that message were acknowledged, so a crash or rebalance replays input whose
// effects may already be in the table (or may be half there: the table write
// landed, an emit did not). Two holes in that promise are closed by
// package processors and the handlers:
//
//   - Goka marks messages as they complete, in any order, and Sarama's marks
//     only move forward: a later message acknowledged before an earlier one
//     failed would commit past it, and the earlier one would never be
//     replayed (seen on a broker restart: orders pending for good). The
//     consumer groups are wrapped so that a commit never passes a message
//     delivered and not yet completed.
//   - Goka writes local storage before the changelog. When the changelog
//     write fails, the local state is ahead of what views, the sink and other
//     instances read. Every replay path writes the state again as it is,
//     which brings the changelog up to it (readers see the same version
//     again, a no-op).
//
// Every handler is therefore idempotent:
//
//   - Inventory keeps, per SKU, LastOffset: the offset of the last
//     inventory.commands record it applied. All commands for a SKU live in one
//     partition, so offsets are monotonic per key, and a record at or below
//     LastOffset is a replay: it changes nothing. A replayed Reserve answers
//     again (the first answer may have been lost in the crash): from the hold
//     it made, or "insufficient" if it made none — it was refused, or its hold
//     was settled, which happens only after the order is final and no longer
//     listens.
//   - Inventory also keeps, per SKU, one hold per order with units reserved.
//     A Reserve for an order that already has a hold (the orders processor
//     re-sent it after its own replay) answers from the hold and changes
//     nothing. Commit and Release of an order without that hold change
//     nothing. Refusals keep no hold, so the state is as small as the
//     reservations in flight.
//   - Orders keeps each order's state with one result per line. A replayed
//     submission of an order that is still reserving re-sends Reserve only for
//     lines without a result (the first emit may have been lost); a duplicate
//     result for a line that has one is ignored; any input for a final order
//     re-sends the final Commit or Release commands, which are idempotent,
//     because the table write that made it final may have landed without them.
//   - The processors produce with franz-go (package processors/producer), not
//     with Goka's Sarama producer, which reorders and drops acknowledged
//     records after a connection loss. franz-go's idempotent producer writes a
//     partition's records in order, fails a record only when it was never sent
//     or its request was answered, and fails every later record of the
//     partition with it, so an acknowledged emit is in the log at its offset
//     and nothing follows a failed one. The orders processor emits an order's
//     Reserve commands before its Commit/Release into the same SKU partition,
//     and stops emitting Reserve once the order is final. Only a broker that
//     lost acknowledged records (OUT_OF_ORDER_SEQUENCE_NUMBER) makes franz-go
//     renumber and resend, which can write a batch twice; that is counted in
//     orderpipe_producer_data_loss_total, and a table record that goes back in
//     orderpipe_table_regressions_total (docs/producer.md).
//   - A stale Reserve can still arrive after its order was settled: a zombie
//     instance that lost its partitions in a rebalance but has not noticed yet
//     may re-send one. It would make a second hold. So every hold carries its
//     identity, the offset of the Reserve that made it; results report it, the
//     order line records it, and Commit and Release name it. A result whose
//     hold is not the one its line recorded is a stray: the orders processor
//     releases exactly that hold. A Commit or Release whose hold is gone or
//     another one changes nothing. The stray holds stock until its Release is
//     applied, but it is never sold and never leaks.
//
// # Why one update stays cheap under overload
//
// A hold is a fixed 29-byte record (order id, quantity, outcome, offset) kept sorted in
// one byte slice inside the SKU's value: decoding does not build a map, lookup
// is a binary search, and an update is one memmove, with no per-entry work and
// no JSON. The number of holds is the number of lines in flight on that SKU,
// which the edge bounds with admission control (a cap on the orders it accepted
// that are not final yet), so the cost of one update is bounded by that cap and
// not by the backlog offered to the system.
package topology

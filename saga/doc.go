// Package saga is orderpipe's domain model: the messages of the order saga
// (a submitted order, the inventory commands, the reservation results), the
// states the group tables keep (an order, a SKU's stock and its holds), order
// ids, and the compact binary codec of all of them.
//
// It depends on nothing else in orderpipe; package topology, which names the
// topics and tables these values travel on, imports it, never the reverse.
// Why the saga stays correct on at-least-once processing is argued in
// package topology's documentation.
package saga

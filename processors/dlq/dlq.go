// Package dlq routes records that a processor cannot handle to the
// dead-letter topic.
package dlq

import (
	"strconv"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/topology"
)

// Send sends the record being processed to the dead-letter topic with
// the reason and its origin in headers, so the partition goes on instead of
// failing on a record it can never process. Both groups declare the
// dead-letter topic as an output (see topology).
func Send(ctx goka.Context, raw []byte, reason error) {
	ctx.Emit(topology.DeadLetter, ctx.Key(), raw, goka.WithCtxEmitHeaders(goka.Headers{
		topology.HeaderDLQReason:    []byte(reason.Error()),
		topology.HeaderDLQTopic:     []byte(ctx.Topic()),
		topology.HeaderDLQPartition: []byte(strconv.FormatInt(int64(ctx.Partition()), 10)),
		topology.HeaderDLQOffset:    []byte(strconv.FormatInt(ctx.Offset(), 10)),
	}))
}

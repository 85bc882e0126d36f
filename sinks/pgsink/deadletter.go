package pgsink

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/orderpipe/orderpipe/topology"
)

// deadLetterRecord is what goes to the dead-letter topic for d: the original
// key and value, with the reason and origin in headers.
func deadLetterRecord(d deadLetter) *kgo.Record {
	return &kgo.Record{
		Topic: string(topology.DeadLetter),
		Key:   d.rec.Key,
		Value: d.rec.Value,
		Headers: []kgo.RecordHeader{
			{Key: topology.HeaderDLQReason, Value: []byte(d.reason.Error())},
			{Key: topology.HeaderDLQTopic, Value: []byte(d.rec.Topic)},
			{Key: topology.HeaderDLQPartition, Value: strconv.AppendInt(nil, int64(d.rec.Partition), 10)},
			{Key: topology.HeaderDLQOffset, Value: strconv.AppendInt(nil, d.rec.Offset, 10)},
		},
	}
}

// sendDeadLetters produces dead and waits until the broker acknowledged
// every record, retrying with backoff the ones that failed, so that the
// offsets of a batch are never committed past a record that is neither in
// Postgres nor in the dead-letter topic. It returns an error only when ctx
// ended. A record may reach the dead-letter topic twice if the sink crashes
// between the acknowledgement and the offset commit.
func (s *Sink) sendDeadLetters(ctx context.Context, cl *kgo.Client, dead []deadLetter) error {
	bo := backoff{min: s.cfg.MinBackoff, max: s.cfg.MaxBackoff}
	for attempt := 1; len(dead) > 0; attempt++ {
		recs := make([]*kgo.Record, len(dead))
		origin := make(map[*kgo.Record]deadLetter, len(dead))
		for i, d := range dead {
			recs[i] = deadLetterRecord(d)
			origin[recs[i]] = d
		}
		// Results come in the order of acknowledgement, not of recs.
		var failed []deadLetter
		var firstErr error
		for _, r := range cl.ProduceSync(ctx, recs...) {
			d := origin[r.Record]
			if r.Err != nil {
				failed = append(failed, d)
				firstErr = r.Err
				continue
			}
			s.stats.deadLetters.Add(1)
			s.log.Warn("record sent to the dead-letter topic", "topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset, keyAttr(d.rec), "reason", d.reason)
		}
		if len(failed) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := bo.next()
		s.log.Warn("produce to the dead-letter topic failed; retrying", "records", len(failed), "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "err", firstErr)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		dead = failed
	}
	return nil
}

// keyAttr names a changelog record's key for a log line: order_id for the
// orders table, so that every line about an order carries it, else sku.
func keyAttr(r *kgo.Record) slog.Attr {
	if r.Topic == string(topology.OrdersTable()) {
		return slog.String("order_id", string(r.Key))
	}
	return slog.String("sku", string(r.Key))
}

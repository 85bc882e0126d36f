package sagaaudit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// endOffsets are the end offsets of every partition of topics, by topic.
func endOffsets(ctx context.Context, adm *kadm.Client, topics ...string) (map[string]map[int32]int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list the end offsets of %v: %w", topics, err)
	}
	out := map[string]map[int32]int64{}
	for _, t := range topics {
		out[t] = map[int32]int64{}
	}
	ends.Each(func(o kadm.ListedOffset) { out[o.Topic][o.Partition] = o.Offset })
	return out, nil
}

type topicPartition struct {
	topic     string
	partition int32
}

// scan calls fn with every record of the partitions in upTo, from each
// partition's start up to (not including) its offset there, in offset order
// within each partition, on the calling goroutine. It reads through a client
// of its own, made from cl's options.
func scan(ctx context.Context, cl *kgo.Client, upTo map[string]map[int32]int64, fn func(*kgo.Record)) error {
	var topics []string
	for t := range upTo {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	starts, err := kadm.NewClient(cl).ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("list the start offsets of %v: %w", topics, err)
	}
	offsets := map[string]map[int32]kgo.Offset{}
	left := map[topicPartition]int64{}
	for t, ps := range upTo {
		for p, end := range ps {
			start, ok := starts.Lookup(t, p)
			if !ok || end <= start.Offset {
				continue // nothing, or nothing left after retention
			}
			if offsets[t] == nil {
				offsets[t] = map[int32]kgo.Offset{}
			}
			offsets[t][p] = kgo.NewOffset().At(start.Offset)
			left[topicPartition{t, p}] = end
		}
	}
	if len(left) == 0 {
		return nil
	}
	opts := append(slices.Clone(cl.Opts()),
		kgo.ConsumerGroup(""), kgo.ConsumeTopics(), kgo.ConsumePartitions(offsets),
		kgo.FetchMaxWait(100*time.Millisecond))
	rd, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("reader client: %w", err)
	}
	defer rd.Close()
	for len(left) > 0 {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %v: %w (%d partitions not read to their end, e.g. %v)", topics, err, len(left), anyKey(left))
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = errors.Join(ferr, fmt.Errorf("%s/%d: %w", t, p, err)) })
		if ferr != nil {
			return fmt.Errorf("read %v: %w", topics, ferr)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			tp := topicPartition{rec.Topic, rec.Partition}
			end, ok := left[tp]
			if !ok {
				return
			}
			if rec.Offset < end {
				fn(rec)
			}
			// Done at end-1 or past it: the record at end-1 may be gone,
			// cleaned by compaction once a newer record of its key was
			// written after the end offsets were read.
			if rec.Offset >= end-1 {
				delete(left, tp)
				rd.PauseFetchPartitions(map[string][]int32{rec.Topic: {rec.Partition}})
			}
		})
	}
	return nil
}

func anyKey(m map[topicPartition]int64) string {
	for tp, end := range m {
		return fmt.Sprintf("%s/%d up to %d", tp.topic, tp.partition, end)
	}
	return ""
}

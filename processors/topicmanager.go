package processors

import (
	"fmt"
	"sync"
	"time"

	"github.com/lovoo/goka"
)

// offsetRetryWindow bounds how long a processor's topic manager retries
// reading a partition's offsets.
const offsetRetryWindow = 15 * time.Second

// retryingOffsets wraps a goka.TopicManager so that GetOffset retries, with
// backoff (100ms doubling to 1s), for up to window. Goka reads a table
// partition's oldest and newest offsets when it sets up a partition, and
// Sarama's client retries that once, after one metadata refresh: a broker
// that has just come back and is still loading its partitions answers
// NOT_LEADER or UNKNOWN_TOPIC_OR_PARTITION for a few seconds, and the
// processor failed on it and rebuilt its tables (seen in broker-kill-run
// 11s after the broker returned). Close stops a retry loop at once.
type retryingOffsets struct {
	goka.TopicManager
	window time.Duration

	once   sync.Once
	closed chan struct{}
}

func withOffsetRetries(b goka.TopicManagerBuilder, window time.Duration) goka.TopicManagerBuilder {
	return func(brokers []string) (goka.TopicManager, error) {
		tm, err := b(brokers)
		if err != nil {
			return nil, err
		}
		return &retryingOffsets{TopicManager: tm, window: window, closed: make(chan struct{})}, nil
	}
}

func (r *retryingOffsets) GetOffset(topic string, partition int32, at int64) (int64, error) {
	deadline := time.Now().Add(r.window)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		off, err := r.TopicManager.GetOffset(topic, partition, at)
		if err == nil || time.Now().Add(wait).After(deadline) {
			if err != nil {
				err = fmt.Errorf("offsets of %s/%d, retried for %s: %w", topic, partition, r.window, err)
			}
			return off, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.closed:
			t.Stop()
			return off, err
		}
	}
}

func (r *retryingOffsets) Close() error {
	r.once.Do(func() { close(r.closed) })
	return r.TopicManager.Close()
}

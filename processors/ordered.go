package processors

import (
	"context"
	"sync"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
)

// orderedCommits wraps the consumer groups that build builds so that a
// partition's committed offset never passes a message still being
// processed.
//
// Goka marks a message's offset once that message's table write and emits
// are acknowledged, message by message, and Sarama's MarkOffset only moves
// forward (IBM/sarama#1287). Emits go to other topics and partitions and
// are acknowledged out of order: when message N's emit is still retrying
// and N+1's was acknowledged, N+1 is marked, the commit covers N, and if N's
// emit then fails (a broker away for longer than the producer retries) the
// restarted processor resumes after N: N's reservations are never sent and
// its order stays pending for good. That happened in the broker-restart
// scenario. Here a mark only commits up to the oldest message delivered
// and not yet marked, so a failure replays it, which the saga's callbacks
// make harmless (see package topology).
func orderedCommits(build goka.ConsumerGroupBuilder) goka.ConsumerGroupBuilder {
	return func(brokers []string, group, clientID string) (sarama.ConsumerGroup, error) {
		cg, err := build(brokers, group, clientID)
		if err != nil {
			return nil, err
		}
		return orderedGroup{cg}, nil
	}
}

type orderedGroup struct{ sarama.ConsumerGroup }

func (g orderedGroup) Consume(ctx context.Context, topics []string, h sarama.ConsumerGroupHandler) error {
	return g.ConsumerGroup.Consume(ctx, topics, &orderedHandler{h: h})
}

// orderedHandler hands the inner handler a session whose marks are ordered
// and claims whose deliveries it records. One per Consume call; Sarama
// calls Setup, then ConsumeClaim once per claim concurrently, then Cleanup.
type orderedHandler struct {
	h    sarama.ConsumerGroupHandler
	sess *orderedSession
}

func (o *orderedHandler) Setup(s sarama.ConsumerGroupSession) error {
	o.sess = &orderedSession{ConsumerGroupSession: s, parts: map[topicPartition]*pending{}}
	return o.h.Setup(o.sess)
}

func (o *orderedHandler) Cleanup(sarama.ConsumerGroupSession) error { return o.h.Cleanup(o.sess) }

// ConsumeClaim forwards the claim's messages to the inner handler through a
// channel of its own, recording each offset as delivered first. The
// forwarding goroutine ends with the claim or with this call.
func (o *orderedHandler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	// Buffered like Sarama's own claim channel, so the hop costs no
	// goroutine switch per message; a message waiting here counts as
	// delivered, which only holds commits back a little.
	c := &orderedClaim{ConsumerGroupClaim: claim, msgs: make(chan *sarama.ConsumerMessage, 256)}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(c.msgs)
		for {
			select {
			case m, ok := <-claim.Messages():
				if !ok {
					return
				}
				o.sess.delivered(m.Topic, m.Partition, m.Offset)
				select {
				case c.msgs <- m:
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	}()
	err := o.h.ConsumeClaim(o.sess, c)
	close(done)
	wg.Wait()
	return err
}

type orderedClaim struct {
	sarama.ConsumerGroupClaim
	msgs chan *sarama.ConsumerMessage
}

func (c *orderedClaim) Messages() <-chan *sarama.ConsumerMessage { return c.msgs }

type topicPartition struct {
	topic     string
	partition int32
}

// orderedSession passes a mark on only as far as every message before it
// is marked too.
type orderedSession struct {
	sarama.ConsumerGroupSession
	mu    sync.RWMutex // guards parts; each pending has its own lock
	parts map[topicPartition]*pending
}

func (s *orderedSession) part(topic string, partition int32) *pending {
	tp := topicPartition{topic, partition}
	s.mu.RLock()
	p := s.parts[tp]
	s.mu.RUnlock()
	if p != nil {
		return p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p = s.parts[tp]; p == nil {
		p = newPending()
		s.parts[tp] = p
	}
	return p
}

func (s *orderedSession) delivered(topic string, partition int32, offset int64) {
	p := s.part(topic, partition)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deliver(offset)
}

// MarkOffset is called with offset+1 of a processed message.
func (s *orderedSession) MarkOffset(topic string, partition int32, offset int64, metadata string) {
	p := s.part(topic, partition)
	p.mu.Lock()
	commit, ok := p.done(offset - 1)
	p.mu.Unlock()
	if ok {
		s.ConsumerGroupSession.MarkOffset(topic, partition, commit, metadata)
	}
}

// MarkMessage is MarkOffset of msg.Offset+1.
func (s *orderedSession) MarkMessage(msg *sarama.ConsumerMessage, metadata string) {
	s.MarkOffset(msg.Topic, msg.Partition, msg.Offset+1, metadata)
}

// pending tracks one partition's offsets delivered and not yet done.
// Offsets are delivered in increasing order and done in any order.
type pending struct {
	mu       sync.Mutex
	open     map[int64]bool // delivered, not done
	order    []int64        // delivered offsets, oldest first (done ones pruned from the front)
	highDone int64          // highest offset done, -1 for none
}

func newPending() *pending { return &pending{open: map[int64]bool{}, highDone: -1} }

func (p *pending) deliver(offset int64) {
	p.open[offset] = true
	p.order = append(p.order, offset)
}

// done records offset as processed and returns the offset to commit: the
// oldest still open, or one past the highest done when none is open. ok is
// false when nothing new may be committed.
func (p *pending) done(offset int64) (commit int64, ok bool) {
	if !p.open[offset] {
		// Not delivered through this session (a mark Goka makes for a
		// message it skipped before delivery): commit only if nothing
		// is open, as Sarama would.
		if len(p.open) == 0 {
			p.highDone = max(p.highDone, offset)
			return p.highDone + 1, true
		}
		return 0, false
	}
	delete(p.open, offset)
	p.highDone = max(p.highDone, offset)
	for len(p.order) > 0 && !p.open[p.order[0]] {
		p.order = p.order[1:]
	}
	if len(p.order) > 0 {
		return p.order[0], true
	}
	return p.highDone + 1, true
}

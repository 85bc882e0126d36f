package ingest

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kgo"
)

// errOutcomeUnknown is the answer of a record written to a broker that
// did not answer within ProduceTimeout: it may have been stored.
var errOutcomeUnknown = errors.New("ingest: no answer from the broker within the produce timeout")

// errPartitionInDoubt refuses a record without producing it: its partition
// has a record in doubt (see doubt).
var errPartitionInDoubt = errors.New("ingest: the partition has a record in doubt")

// submission is one order on its way to the broker. It finishes exactly
// once, within ProduceTimeout of its start, and may be shared by several
// requests with the same Idempotency-Key that all give its answer.
type submission struct {
	id       string
	done     chan struct{}
	finished atomic.Bool
	out      outcome // written once, before done is closed
}

// outcome is the answer to a submitted order.
type outcome struct {
	// prob refuses the order; nil accepts it (202).
	prob *problem
	// replayed marks an order accepted by an earlier request with the same
	// Idempotency-Key and body: nothing was produced this time.
	replayed bool
}

func newSubmission(id string) *submission {
	return &submission{id: id, done: make(chan struct{})}
}

// finish sets the outcome; only the first call counts.
func (s *submission) finish(o outcome) {
	if s.finished.CompareAndSwap(false, true) {
		s.out = o
		close(s.done)
	}
}

// wait blocks until s finishes and returns its outcome.
func (s *submission) wait() outcome {
	<-s.done
	return s.out
}

func finishedSubmission(id string, o outcome) *submission {
	s := newSubmission(id)
	s.finish(o)
	return s
}

// submit starts order in of client c on its way to the orders.submitted
// topic and returns its submission. It never blocks. key is the request's
// Idempotency-Key, "" for none; with a key, the orders view must have
// recovered. joined reports that the submission belongs to an earlier
// request with the same key and body, whose answer this one repeats.
func (e *Edge) submit(c *client, key string, in *orderInput, now time.Time) (sub *submission, joined bool) {
	msg := &saga.OrderSubmitted{
		CustomerID:     in.CustomerID,
		Currency:       in.Currency,
		Items:          in.Items,
		SubmittedAt:    now,
		ClientID:       c.id,
		IdempotencyKey: key,
		RequestHash:    requestHash(in),
	}
	if key == "" {
		id, err := saga.NewOrderID()
		if err != nil {
			e.log.Error("cannot make an order id", "err", err)
			return finishedSubmission("", outcome{prob: internalError()}), false
		}
		msg.OrderID = id
		sub = newSubmission(id.String())
		e.produceOrder(sub, msg, func(bool) {})
		return sub, false
	}
	msg.OrderID = saga.OrderIDForKey(c.id, key)
	id := msg.OrderID.String()
	sub, owner, prob := e.idem.claim(id, msg.RequestHash)
	switch {
	case prob != nil:
		return finishedSubmission(id, outcome{prob: prob}), false
	case !owner:
		return sub, true
	}
	settle := func(accepted bool) { e.idem.settle(id, sub, accepted) }
	if o, known := e.replay(id, msg.RequestHash); known {
		sub.finish(o)
		settle(false) // the view answers from now on
		return sub, false
	}
	e.produceOrder(sub, msg, settle)
	return sub, false
}

// replay answers a request whose order the view already shows: the same
// body is accepted again without producing anything, another is refused.
func (e *Edge) replay(id string, hash [16]byte) (o outcome, known bool) {
	st, err := e.orderState(id)
	switch {
	case err != nil:
		e.log.Warn("orders view lookup failed", "order_id", id, "err", err)
		return outcome{prob: notReady("the orders view cannot be read")}, true
	case st == nil:
		return outcome{}, false
	case st.RequestHash != hash:
		return outcome{prob: idempotencyKeyReuse()}, true
	}
	return outcome{replayed: true}, true
}

// produceOrder takes an admission slot for msg and produces it. settle is
// told whether the order was accepted once the broker's verdict is known,
// which for an order in doubt is after its answer.
func (e *Edge) produceOrder(sub *submission, msg *saga.OrderSubmitted, settle func(accepted bool)) {
	skus := make([]string, len(msg.Items))
	for i, it := range msg.Items {
		skus[i] = it.SKU
	}
	if !e.adm.acquire(sub.id, skus, msg) {
		e.metrics.admissionRejected.Inc()
		sub.finish(outcome{prob: overloaded("too many orders are in flight; retry later")})
		settle(false)
		return
	}
	rec := &kgo.Record{
		Topic: string(topology.OrdersSubmitted),
		Key:   []byte(sub.id),
		Value: msg.Encode(), // a fresh slice: nothing aliases the request
	}
	e.produce(rec, func(err error) {
		if err != nil {
			sub.finish(outcome{prob: produceProblem(err)})
		} else {
			e.adm.landed(sub.id) // before the 202: read-your-writes
			sub.finish(outcome{})
		}
	}, func(err error) {
		e.adm.produced(sub.id, err == nil)
		settle(err == nil)
	})
}

// Record states in produce.
const (
	recPending int32 = iota
	recDone          // the verdict came first
	recOverdue       // ProduceTimeout came first: the record is in doubt
)

// produce writes rec with TryProduce, which never blocks: with the
// producer's buffer full it fails at once with kgo.ErrMaxBuffered (a
// blocking Produce would queue requests without end, and ProduceSync would
// defeat batching). answer is called once, within ProduceTimeout: with nil
// once the broker acked, with kgo.ErrMaxBuffered or errPartitionInDoubt
// when nothing was produced, or with another error when the outcome is
// unknown: franz-go failed the record (which does not prove an earlier
// write of it did not land, see doubt) or did not answer in time. verdict, if not nil, is
// called with the broker's final verdict whenever it comes, which for a
// record in doubt is after answer. Both may run on franz-go's promise
// goroutine or a timer's, and must not block.
//
// The record's context ends at recordDeadline, before ProduceTimeout, so
// that a record not written yet is failed, not written after its client was
// answered. A record that is written cannot be withdrawn (idempotent
// producing would lose its sequence numbers), and one queued behind it on
// the same partition cannot be failed either: while a partition has a
// record in doubt, produce refuses new records for it at once.
func (e *Edge) produce(rec *kgo.Record, answer, verdict func(error)) {
	part := topology.PartitionFor(rec.Key, e.cfg.Topology.Partitions)
	if e.doubt.blocked(rec.Topic, part) {
		e.metrics.observeProduce(rec.Topic, errPartitionInDoubt, 0)
		answer(errPartitionInDoubt)
		if verdict != nil {
			verdict(errPartitionInDoubt)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), recordDeadline(e.cfg.ProduceTimeout))
	var state atomic.Int32
	start := time.Now()
	overdue := time.AfterFunc(e.cfg.ProduceTimeout, func() {
		if state.CompareAndSwap(recPending, recOverdue) {
			e.doubt.add(rec.Topic, part, 1)
			e.log.Warn("no answer from the broker within the produce timeout: outcome unknown", "topic", rec.Topic, "partition", part, keyAttr(rec))
			answer(errOutcomeUnknown)
		}
	})
	e.producer.TryProduce(ctx, rec, func(r *kgo.Record, err error) {
		overdue.Stop()
		cancel()
		if err != nil && !errors.Is(err, kgo.ErrMaxBuffered) {
			// Nothing but a full buffer proves the record was not written
			// (see doubt); the partition stays closed until a ping.
			e.doubt.fail(rec.Topic, part)
		}
		e.metrics.observeProduce(r.Topic, err, time.Since(start))
		if err != nil {
			e.log.Debug("produce failed", "topic", r.Topic, keyAttr(r), "err", err)
		}
		if state.CompareAndSwap(recPending, recDone) {
			answer(err)
		} else {
			e.doubt.add(rec.Topic, part, -1)
			e.log.Info("the broker answered for a record in doubt", "topic", r.Topic, keyAttr(r), "stored", err == nil, "after", time.Since(start).Round(time.Millisecond))
		}
		if verdict != nil {
			verdict(err)
		}
	})
}

// produceProblem is the answer to a record the broker did not take. Only
// the two errors that mean nothing was produced are a 503; a record that
// franz-go failed or did not answer for may still be stored (see doubt).
func produceProblem(err error) *problem {
	switch {
	case errors.Is(err, errPartitionInDoubt):
		return partitionInDoubt()
	case errors.Is(err, kgo.ErrMaxBuffered):
		return overloaded("the broker is not keeping up; retry later")
	}
	return outcomeUnknown()
}

// keyAttr names a produced record's key for a log line: the order id of an
// order (orders.submitted), so that every line about an order carries
// order_id, else the SKU (inventory.commands).
func keyAttr(r *kgo.Record) slog.Attr {
	if r.Topic == string(topology.OrdersSubmitted) {
		return slog.String("order_id", string(r.Key))
	}
	return slog.String("sku", string(r.Key))
}

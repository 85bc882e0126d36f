// Package producertest checks a goka.Producer against the promise the saga
// rests on: every acknowledged emit is in the log, at its acknowledged
// offset, in emit order per partition, once; a failed emit is not in the
// log, and nothing follows it unannounced. It drives the producer through
// the goka.Producer interface against franz-go's in-process cluster (kfake)
// while injecting the faults that broke Sarama's idempotent producer:
// connections reset with produce requests in flight, OUT_OF_ORDER_SEQUENCE
// on one partition, NOT_ENOUGH_REPLICAS_AFTER_APPEND (written, answered as
// an error) on another. It imports no testing, so the unit suite and the
// fault suite run the same schedules, short and long.
package producertest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Topic is the topic the schedules write; Partitions its partition count.
const (
	Topic      = "producer-property"
	Partitions = 12
)

// Factory builds the producer under test on brokers; every connection it
// opens must go through dial (that is how connections are reset). The
// producer is closed by the schedule.
type Factory func(brokers []string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (goka.Producer, error)

// Schedule is one seeded run.
type Schedule struct {
	Seed uint64
	// Keys and Values: each key gets the counters 0..Values-1, in order.
	Keys, Values int
	// Resets is how many connections are reset with a produce request in
	// flight (at most; each needs a second produce request to be written
	// while one is on the wire). Default 3.
	Resets int
	// Timeout bounds the schedule. Default 60s.
	Timeout time.Duration
	// NoOutOfOrder leaves out the injected OUT_OF_ORDER_SEQUENCE_NUMBER.
	NoOutOfOrder bool
}

// Report is what a schedule did and what it found.
type Report struct {
	Seed                            uint64
	Emitted, Acked, Failed, Written int
	// Faults that happened: connections reset with produce in flight, and
	// the broker errors injected and hit.
	Resets, OutOfOrder, AfterAppend int
	// Duplicates are values written again after their first copy; allowed
	// (not violations) only after an OUT_OF_ORDER_SEQUENCE_NUMBER.
	Duplicates int
	// The partitions the broker errors were injected on.
	OutOfOrderPartition, AfterAppendPartition int32
	// Violations, empty when the producer kept its promise.
	Violations []string
}

// Kinds counts the violations by kind: reordered, written twice, acked
// record not at its offset, failed but written, gap after a failure.
func (r Report) Kinds() map[string]int {
	out := map[string]int{}
	for _, v := range r.Violations {
		switch {
		case strings.Contains(v, "reordered"):
			out["reordered"]++
		case strings.Contains(v, "written twice"):
			out["written twice"]++
		case strings.Contains(v, "acknowledged at"):
			out["acknowledged, not at its offset"]++
		case strings.Contains(v, "but is in the log"):
			out["failed, but written"]++
		case strings.Contains(v, "was written after it"):
			out["gap after a failure"]++
		default:
			out["other"]++
		}
	}
	return out
}

// Err is nil when the report has no violations.
func (r Report) Err() error {
	if len(r.Violations) == 0 {
		return nil
	}
	v := r.Violations
	if len(v) > 10 {
		v = append(slices.Clone(v[:10]), fmt.Sprintf("… and %d more", len(r.Violations)-10))
	}
	return fmt.Errorf("seed %d: %d violations:\n  %s", r.Seed, len(r.Violations), strings.Join(v, "\n  "))
}

func (r Report) String() string {
	return fmt.Sprintf("seed %d: emitted %d, acked %d, failed %d, written %d; resets with produce in flight %d, OUT_OF_ORDER_SEQUENCE_NUMBER %d, NOT_ENOUGH_REPLICAS_AFTER_APPEND %d (partitions %d and %d); duplicates %d; violations %d",
		r.Seed, r.Emitted, r.Acked, r.Failed, r.Written, r.Resets, r.OutOfOrder, r.AfterAppend, r.OutOfOrderPartition, r.AfterAppendPartition, r.Duplicates, len(r.Violations))
}

type outcome struct {
	acked     bool
	err       error
	partition int32
	offset    int64
}

// Run runs one schedule against a fresh three-broker kfake cluster.
func Run(ctx context.Context, s Schedule, newProducer Factory) (Report, error) {
	if s.Resets == 0 {
		s.Resets = 3
	}
	if s.Timeout == 0 {
		s.Timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	rep := Report{Seed: s.Seed}
	rng := rand.New(rand.NewPCG(s.Seed, 0x5eed))

	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(Partitions, Topic))
	if err != nil {
		return rep, fmt.Errorf("start kfake: %w", err)
	}
	defer c.Close()
	// A few milliseconds per produce request, so that a steady producer
	// has a second request on the wire while the first waits: the moment
	// the resets below wait for.
	var delayRNG sync.Mutex
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		delayRNG.Lock()
		d := time.Duration(1+rng.IntN(4)) * time.Millisecond
		delayRNG.Unlock()
		c.SleepControl(func() { time.Sleep(d) })
		return nil, nil, false
	})

	d := &dialer{rng: rand.New(rand.NewPCG(s.Seed, 0xd1a1)), budget: int64(s.Resets)}
	p, err := newProducer(c.ListenAddrs(), d.dial)
	if err != nil {
		return rep, fmt.Errorf("new producer: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = p.Close()
		}
	}()

	keys := make([]string, s.Keys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	outcomes := make([][]outcome, s.Keys)
	for i := range outcomes {
		outcomes[i] = make([]outcome, s.Values)
	}
	var (
		mu       sync.Mutex
		resolved = make([]int, s.Values) // per round
		cond     = sync.NewCond(&mu)
	)
	// The broker errors land at seeded rounds, on seeded partitions.
	ooRound, aaRound := rng.IntN(max(s.Values, 1)), rng.IntN(max(s.Values, 1))
	ooPart, aaPart := rng.Int32N(Partitions), rng.Int32N(Partitions)
	var ooFault, aaFault *kfake.FaultHandle
	rep.OutOfOrderPartition, rep.AfterAppendPartition = ooPart, aaPart

	const window = 16
	pace := time.NewTicker(500 * time.Microsecond)
	defer pace.Stop()
	for v := 0; v < s.Values; v++ {
		if v == ooRound && !s.NoOutOfOrder {
			ooFault = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: Topic, Partitions: []int32{ooPart}, Err: kerr.OutOfOrderSequenceNumber})
		}
		if v == aaRound {
			aaFault = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: Topic, Partitions: []int32{aaPart}, Err: kerr.NotEnoughReplicasAfterAppend})
		}
		for k := range keys {
			prom := p.Emit(Topic, keys[k], []byte(strconv.Itoa(v)))
			rep.Emitted++
			prom.ThenWithMessage(func(msg *sarama.ProducerMessage, err error) {
				mu.Lock()
				defer mu.Unlock()
				o := outcome{err: err}
				if err == nil {
					o = outcome{acked: true, partition: msg.Partition, offset: msg.Offset}
				}
				outcomes[k][v] = o
				resolved[v]++
				cond.Broadcast()
			})
		}
		// A steady stream, as a processor emits, rather than one burst that
		// fits in a single request: a round per pace tick, at most window
		// rounds unanswered.
		select {
		case <-pace.C:
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		if err := waitRound(ctx, &mu, cond, resolved, v-window, s.Keys); err != nil {
			return rep, fmt.Errorf("round %d: %w", v-window, err)
		}
	}
	for v := max(0, s.Values-window); v < s.Values; v++ {
		if err := waitRound(ctx, &mu, cond, resolved, v, s.Keys); err != nil {
			return rep, fmt.Errorf("round %d: %w (emits never answered)", v, err)
		}
	}
	closed = true
	if err := p.Close(); err != nil {
		return rep, fmt.Errorf("close producer: %w", err)
	}
	rep.Resets = int(d.resets.Load())
	if ooFault != nil {
		rep.OutOfOrder = ooFault.Hits()
	}
	if aaFault != nil {
		rep.AfterAppend = aaFault.Hits()
	}

	log, err := readAll(ctx, c.ListenAddrs())
	if err != nil {
		return rep, err
	}
	rep.Written = len(log)
	rep.Violations, rep.Duplicates = check(keys, outcomes, log, rep.OutOfOrder > 0)
	for _, os := range outcomes {
		for _, o := range os {
			if o.acked {
				rep.Acked++
			} else {
				rep.Failed++
			}
		}
	}
	return rep, nil
}

// waitRound waits until every emit of round v is answered.
func waitRound(ctx context.Context, mu *sync.Mutex, cond *sync.Cond, resolved []int, v, n int) error {
	if v < 0 {
		return nil
	}
	stop := context.AfterFunc(ctx, func() { mu.Lock(); cond.Broadcast(); mu.Unlock() })
	defer stop()
	mu.Lock()
	defer mu.Unlock()
	for resolved[v] < n {
		if ctx.Err() != nil {
			return fmt.Errorf("%d of %d emits answered: %w", resolved[v], n, ctx.Err())
		}
		cond.Wait()
	}
	return nil
}

type logRecord struct {
	key, value string
	partition  int32
	offset     int64
}

// readAll reads every partition of Topic from the start to its end.
func readAll(ctx context.Context, brokers []string) ([]logRecord, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, fmt.Errorf("reader: %w", err)
	}
	defer cl.Close()
	ends := map[int32]int64{}
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = Topic
	for p := int32(0); p < Partitions; p++ {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = p, -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	shards := cl.RequestSharded(ctx, req)
	for _, sh := range shards {
		if sh.Err != nil {
			return nil, fmt.Errorf("list end offsets: %w", sh.Err)
		}
		for _, t := range sh.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return nil, fmt.Errorf("list end offset of partition %d: %w", p.Partition, err)
				}
				ends[p.Partition] = p.Offset
			}
		}
	}
	var out []logRecord
	next := map[int32]int64{}
	done := func() bool {
		for p, end := range ends {
			if next[p] < end {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read the log: %w", err)
		}
		if errs := fs.Errors(); len(errs) > 0 {
			return nil, fmt.Errorf("read the log: %w", errs[0].Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, logRecord{key: string(r.Key), value: string(r.Value), partition: r.Partition, offset: r.Offset})
			next[r.Partition] = r.Offset + 1
		})
	}
	return out, nil
}

// check compares what the producer said with what the log holds. With
// dupsAllowed (the broker answered OUT_OF_ORDER_SEQUENCE_NUMBER, which
// Kafka sends only when it lost records: the producer must then renumber
// its batches, and one whose earlier attempt was written is written again),
// a value may appear again after its first copy; everything else holds:
// first copies in order, every acknowledged value at its offset, nothing
// failed in the log, no gap. It returns the violations and the duplicates.
func check(keys []string, outcomes [][]outcome, log []logRecord, dupsAllowed bool) (v []string, dups int) {
	at := map[[2]int64]logRecord{}
	perKey := map[string][]logRecord{}
	for _, r := range log {
		at[[2]int64{int64(r.partition), r.offset}] = r
		perKey[r.key] = append(perKey[r.key], r)
	}
	for k, key := range keys {
		rs := perKey[key]
		sort.Slice(rs, func(i, j int) bool { return rs[i].offset < rs[j].offset })
		first := map[int]int64{} // value -> offset of its first copy
		last := -1
		for _, r := range rs {
			n, err := strconv.Atoi(r.value)
			if err != nil {
				v = append(v, fmt.Sprintf("%s: value %q at %d/%d is not a counter", key, r.value, r.partition, r.offset))
				continue
			}
			if off, dup := first[n]; dup {
				dups++
				if !dupsAllowed {
					v = append(v, fmt.Sprintf("%s: value %d written twice (offsets %d and %d of partition %d)", key, n, off, r.offset, r.partition))
				}
				continue
			}
			if n < last {
				v = append(v, fmt.Sprintf("%s: value %d at offset %d of partition %d follows %d: reordered", key, n, r.offset, r.partition, last))
			}
			first[n] = r.offset
			last = max(last, n)
		}
		for n, o := range outcomes[k] {
			off, in := first[n]
			switch {
			case o.acked:
				got, ok := at[[2]int64{int64(o.partition), o.offset}]
				if !ok || got.key != key || got.value != strconv.Itoa(n) {
					v = append(v, fmt.Sprintf("%s: value %d acknowledged at offset %d of partition %d, which holds %q=%q (present %t); the value's first copy is at %d (present %t)", key, n, o.offset, o.partition, got.key, got.value, ok, off, in))
				}
			case in:
				v = append(v, fmt.Sprintf("%s: value %d failed (%v) but is in the log at offset %d", key, n, o.err, off))
			case n < last:
				// A failed emit followed by a written one: the only gap
				// allowed is one the producer reported, and Goka fails
				// the partition on it; kgo fails the rest of the
				// partition's buffer with it, so a later value of the
				// same key written after the gap is a violation.
				v = append(v, fmt.Sprintf("%s: value %d failed (%v) yet later value %d was written after it", key, n, o.err, last))
			}
		}
	}
	return v, dups
}

// dialer wraps every connection of the producer under test so that it can
// be reset while a produce request is on the wire.
type dialer struct {
	mu     sync.Mutex
	rng    *rand.Rand
	budget int64
	resets atomic.Int64
}

func (d *dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, d: d}, nil
}

// decide says whether to reset now and whether to forward the request
// first (the broker may then have applied it: an ambiguous outcome).
func (d *dialer) decide() (reset, forward bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.budget <= 0 || d.rng.IntN(3) != 0 {
		return false, false
	}
	d.budget--
	d.resets.Add(1)
	return true, d.rng.IntN(2) == 0
}

// conn tracks the requests on a connection by their framing (int32 size,
// int16 api key, …) and the responses by theirs (int32 size, …): the
// responses come back in request order.
type conn struct {
	net.Conn
	d *dialer

	mu       sync.Mutex
	inflight []int16 // api keys of requests written and not answered
	wr, rd   framer
	dead     bool
}

var errReset = errors.New("producertest: connection reset by the test")

func (c *conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return 0, errReset
	}
	keys := c.wr.feed(b, true)
	produceInFlight := slices.Contains(c.inflight, int16(kmsg.Produce))
	startsProduce := slices.Contains(keys, int16(kmsg.Produce))
	c.inflight = append(c.inflight, keys...)
	c.mu.Unlock()
	if produceInFlight && startsProduce {
		if reset, forward := c.d.decide(); reset {
			if forward {
				_, _ = c.Conn.Write(b)
			}
			c.kill()
			return 0, errReset
		}
	}
	return c.Conn.Write(b)
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		done := len(c.rd.feed(b[:n], false))
		c.inflight = c.inflight[min(done, len(c.inflight)):]
		c.mu.Unlock()
	}
	if err == nil {
		c.mu.Lock()
		dead := c.dead
		c.mu.Unlock()
		if dead {
			return n, io.EOF
		}
	}
	return n, err
}

func (c *conn) kill() {
	c.mu.Lock()
	c.dead = true
	c.mu.Unlock()
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // RST, as a broker crash or a network fault gives
	}
	_ = c.Conn.Close()
}

// framer follows size-prefixed frames across writes or reads.
type framer struct {
	hdr  []byte // the frame's first bytes while fewer than 6 are known
	left int64  // bytes of the current frame still to come, after hdr
}

// feed consumes b and returns, for requests (keys true), the api key of
// each frame that b completes the header of, or, for responses, one entry
// per frame that b completes.
func (f *framer) feed(b []byte, keys bool) []int16 {
	var out []int16
	for len(b) > 0 {
		if f.left > 0 {
			n := min(int64(len(b)), f.left)
			f.left -= n
			b = b[n:]
			if f.left == 0 && !keys {
				out = append(out, 0)
			}
			continue
		}
		need := 6 - len(f.hdr)
		n := min(need, len(b))
		f.hdr = append(f.hdr, b[:n]...)
		b = b[n:]
		if len(f.hdr) < 6 {
			break
		}
		size := int64(int32(binary.BigEndian.Uint32(f.hdr)))
		if keys {
			out = append(out, int16(binary.BigEndian.Uint16(f.hdr[4:])))
		}
		f.left = size - 2
		f.hdr = f.hdr[:0]
		if f.left <= 0 {
			f.left = 0
			if !keys {
				out = append(out, 0)
			}
		}
	}
	return out
}

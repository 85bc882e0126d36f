package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Read-your-writes on any edge (docs/read-your-writes.md). An order answered
// 202 has its record r in orders.submitted partition p below E, the end of
// p read after the GET arrived. The orders processor commits an input offset
// only once the state writes of the records below it are acked, so if r < C,
// the group's committed offset read before T, the order's state is in
// orders-table p below T, its end: the view shows it once it applied p up to
// T. If C <= r < E, a scan of [C, E) finds the record. Neither case waits
// for a commit, and an id that is in neither does not exist.

// scanFetchBytes is what one Fetch of a scan asks for.
const scanFetchBytes = 1 << 20

// partProbe is what one probe learnt about partition p of orders.submitted.
type partProbe struct {
	// committed is the orders group's committed offset C (0 without a
	// commit), end the partition's end E, and tableEnd the end T of
	// orders-table p, read after committed.
	committed, end, tableEnd int64
	// found holds the records of [max(C, E-MaxScan), E) whose key the
	// probe's requests asked for, by id.
	found map[string][]byte
	// truncated: C < E-MaxScan, so records below the scan were not read.
	truncated bool
	// scanned is the number of records read.
	scanned int
	err     error
}

// prober probes partitions of orders.submitted for the edge's lookups,
// coalescing them: at most one probe runs at a time, and the requests that
// arrive meanwhile join the next one, which starts once the running one is
// done and so after all of them arrived. One OffsetFetch, two ListOffsets
// per leader and one Fetch per partition to scan then serve any number of
// requests, so that a flood of unknown ids cannot multiply broker requests.
//
// The first request of a probe runs it, on the request's goroutine (the
// prober starts none), under a deadline of the probe's own
// (Config.LookupTimeout), so that the others of the probe do not depend on
// that request. Safe for concurrent use.
type prober struct {
	cl      *kgo.Client
	maxScan int64
	timeout time.Duration
	metrics *lookupMetrics
	decomp  kgo.Decompressor

	mu sync.Mutex
	// running is the probe under way, nil if none; open is the next one,
	// which new requests join, nil if none waits.
	running, open *probeRound
}

// probeRound is one probe: the ids it looks for, by partition, and, once
// done is closed, what it found.
type probeRound struct {
	want map[int32]map[string]struct{}
	done chan struct{}
	res  map[int32]partProbe
}

func newProber(cl *kgo.Client, cfg Config, m *lookupMetrics) *prober {
	return &prober{cl: cl, maxScan: int64(cfg.LookupMaxScan), timeout: cfg.LookupTimeout, metrics: m, decomp: kgo.DefaultDecompressor()}
}

func newProbeRound() *probeRound {
	return &probeRound{want: map[int32]map[string]struct{}{}, done: make(chan struct{})}
}

func (r *probeRound) add(p int32, id string) {
	ids := r.want[p]
	if ids == nil {
		ids = map[string]struct{}{}
		r.want[p] = ids
	}
	ids[id] = struct{}{}
}

// probe returns what a probe that started after this call learnt about
// partition p and id, or ctx's error if it ends first.
func (pr *prober) probe(ctx context.Context, p int32, id string) (partProbe, error) {
	pr.mu.Lock()
	r := pr.open
	switch {
	case r != nil:
		// Not started yet: it reads its offsets after this request arrived.
		r.add(p, id)
		pr.mu.Unlock()
	case pr.running == nil:
		r = newProbeRound()
		r.add(p, id)
		pr.running = r
		pr.mu.Unlock()
		pr.run(r)
	default:
		r = newProbeRound()
		r.add(p, id)
		pr.open = r
		prev := pr.running
		pr.mu.Unlock()
		<-prev.done // bounded by its deadline
		pr.mu.Lock()
		pr.open, pr.running = nil, r
		pr.mu.Unlock()
		pr.run(r)
	}
	select {
	case <-r.done:
		return r.res[p], nil
	case <-ctx.Done():
		return partProbe{}, ctx.Err()
	}
}

// run runs probe r under its own deadline and publishes its result.
func (pr *prober) run(r *probeRound) {
	ctx, cancel := context.WithTimeout(context.Background(), pr.timeout)
	defer cancel()
	pr.metrics.probes.Inc()
	r.res = pr.do(ctx, r.want)
	close(r.done)
	pr.mu.Lock()
	if pr.running == r {
		pr.running = nil
	}
	pr.mu.Unlock()
}

// do probes the partitions of want, in two rounds of requests sent
// together: C and E, then T and the scans. T must be read after C (every
// state below C is acked before T is read), E after the requests arrived
// (it is, since the probe starts after them), and the scans need C and E.
func (pr *prober) do(ctx context.Context, want map[int32]map[string]struct{}) map[int32]partProbe {
	parts := make([]int32, 0, len(want))
	for p := range want {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	res := make(map[int32]partProbe, len(parts))
	fail := func(err error) map[int32]partProbe {
		for _, p := range parts {
			res[p] = partProbe{err: err}
		}
		return res
	}
	var (
		committed, ends map[int32]int64
		errC, errE      error
		wg              sync.WaitGroup
	)
	wg.Go(func() { committed, errC = pr.committed(ctx, parts) })
	wg.Go(func() { ends, errE = pr.ends(ctx, string(topology.OrdersSubmitted), parts) })
	wg.Wait()
	if err := errors.Join(errC, errE); err != nil {
		return fail(err)
	}

	var (
		tableEnds map[int32]int64
		errT      error
		mu        sync.Mutex
	)
	wg.Go(func() { tableEnds, errT = pr.ends(ctx, string(topology.OrdersTable()), parts) })
	for _, p := range parts {
		pp := partProbe{committed: committed[p], end: ends[p]}
		from := pp.committed
		if pp.end-from > pr.maxScan {
			from, pp.truncated = pp.end-pr.maxScan, true
		}
		if from >= pp.end {
			mu.Lock()
			res[p] = pp
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			pp.found, pp.scanned, pp.err = pr.scan(ctx, p, from, pp.end, want[p])
			pr.metrics.scanned.Add(float64(pp.scanned))
			mu.Lock()
			res[p] = pp
			mu.Unlock()
		})
	}
	wg.Wait()
	if errT != nil {
		return fail(errT)
	}
	for p, pp := range res {
		pp.tableEnd = tableEnds[p]
		res[p] = pp
	}
	return res
}

// retryable reports whether a request that failed with err may succeed if
// sent again (after a metadata refresh, for a moved leader).
func retryable(err error) bool {
	return kerr.IsRetriable(err) || errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID)
}

// retry calls fn until it succeeds, fails with an error that is not
// retryable, or ctx ends; fn is told how many times it failed before.
func retry(ctx context.Context, fn func(attempt int) error) error {
	for attempt := 0; ; attempt++ {
		err := fn(attempt)
		if err == nil || !retryable(err) {
			return err
		}
		t := time.NewTimer(min(10*time.Millisecond<<min(attempt, 4), 100*time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
	}
}

// committed returns the orders group's committed offsets of orders.submitted
// partitions parts; 0 for a partition without a commit.
func (pr *prober) committed(ctx context.Context, parts []int32) (map[int32]int64, error) {
	out := make(map[int32]int64, len(parts))
	err := retry(ctx, func(int) error {
		req := kmsg.NewPtrOffsetFetchRequest()
		g := kmsg.NewOffsetFetchRequestGroup()
		g.Group = string(topology.OrdersGroup)
		t := kmsg.NewOffsetFetchRequestGroupTopic()
		t.Topic = string(topology.OrdersSubmitted)
		t.Partitions = parts
		g.Topics = []kmsg.OffsetFetchRequestGroupTopic{t}
		req.Groups = []kmsg.OffsetFetchRequestGroup{g}
		resp, err := req.RequestWith(ctx, pr.cl)
		if err != nil {
			return err
		}
		clear(out)
		var ps []kmsg.OffsetFetchResponseGroupTopicPartition
		switch {
		case len(resp.Groups) > 0:
			switch err := kerr.ErrorForCode(resp.Groups[0].ErrorCode); {
			case errors.Is(err, kerr.GroupIDNotFound):
				return nil // no group yet (kfake says so): nothing committed
			case err != nil:
				return err
			}
			for _, t := range resp.Groups[0].Topics {
				ps = append(ps, t.Partitions...) // only orders.submitted was asked for
			}
		default: // below v8
			if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
				return err
			}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					ps = append(ps, kmsg.OffsetFetchResponseGroupTopicPartition{Partition: p.Partition, Offset: p.Offset, ErrorCode: p.ErrorCode})
				}
			}
		}
		for _, p := range ps {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return err
			}
			out[p.Partition] = max(p.Offset, 0) // -1: no commit yet
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fetch the committed offsets of %s: %w", topology.OrdersGroup, err)
	}
	return out, nil
}

// ends returns the end offsets (high watermarks) of partitions parts of
// topic, in one request per leader.
func (pr *prober) ends(ctx context.Context, topic string, parts []int32) (map[int32]int64, error) {
	out := make(map[int32]int64, len(parts))
	err := retry(ctx, func(int) error {
		req := kmsg.NewPtrListOffsetsRequest()
		t := kmsg.NewListOffsetsRequestTopic()
		t.Topic = topic
		for _, p := range parts {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp = p, -1 // latest: the high watermark
			t.Partitions = append(t.Partitions, rp)
		}
		req.Topics = []kmsg.ListOffsetsRequestTopic{t}
		resp, err := req.RequestWith(ctx, pr.cl)
		if err != nil {
			return err
		}
		clear(out)
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return err
				}
				out[p.Partition] = p.Offset
			}
		}
		for _, p := range parts {
			if _, ok := out[p]; !ok {
				return fmt.Errorf("no end offset for partition %d: %w", p, kerr.UnknownTopicOrPartition)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the end offsets of %s: %w", topic, err)
	}
	return out, nil
}

// scan reads [from, to) of orders.submitted partition p from its leader
// and returns the values of the records keyed by an id of want, and how
// many records it read.
func (pr *prober) scan(ctx context.Context, p int32, from, to int64, want map[string]struct{}) (map[string][]byte, int, error) {
	topic := string(topology.OrdersSubmitted)
	found := map[string][]byte{}
	scanned := 0
	at := from
	err := retry(ctx, func(attempt int) error {
		// A retry follows a moved leader or a recreated topic: refresh.
		limit := time.Minute
		if attempt > 0 {
			limit = time.Nanosecond
		}
		leader, id, err := pr.leader(ctx, topic, p, limit)
		if err != nil {
			return err
		}
		for at < to {
			req := kmsg.NewPtrFetchRequest()
			req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 0, 1, scanFetchBytes
			t := kmsg.NewFetchRequestTopic()
			t.Topic, t.TopicID = topic, id // kgo picks the broker's newest version: v13+ needs the id
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, at, scanFetchBytes
			t.Partitions = []kmsg.FetchRequestTopicPartition{rp}
			req.Topics = []kmsg.FetchRequestTopic{t}
			kresp, err := pr.cl.Broker(int(leader)).Request(ctx, req)
			if err != nil {
				return err
			}
			resp := kresp.(*kmsg.FetchResponse)
			if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
				return err
			}
			var part *kmsg.FetchResponseTopicPartition
			for i := range resp.Topics {
				for j := range resp.Topics[i].Partitions {
					if resp.Topics[i].Partitions[j].Partition == p {
						part = &resp.Topics[i].Partitions[j]
					}
				}
			}
			if part == nil {
				return fmt.Errorf("the fetch answer has no partition %d: %w", p, kerr.UnknownTopicOrPartition)
			}
			fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: at, Topic: topic, Partition: p}, part, pr.decomp, nil)
			switch {
			case errors.Is(fp.Err, kerr.OffsetOutOfRange) && part.LogStartOffset > at:
				// Deleted by retention: those records can have no state now.
				at = part.LogStartOffset
				continue
			case fp.Err != nil:
				return fp.Err
			case len(fp.Records) == 0:
				if part.HighWatermark <= at {
					return nil // the log ends before to: nothing more to read
				}
				return fmt.Errorf("fetch of %s/%d at %d returned no records below the high watermark %d", topic, p, at, part.HighWatermark)
			}
			for _, r := range fp.Records {
				if r.Offset >= to {
					at = to
					break
				}
				scanned++
				if _, ok := want[string(r.Key)]; ok {
					if _, dup := found[string(r.Key)]; !dup {
						found[string(r.Key)] = r.Value // the response is ours: nothing aliases it
					}
				}
				at = r.Offset + 1
			}
		}
		return nil
	})
	if err != nil {
		return nil, scanned, fmt.Errorf("scan %s/%d from %d to %d: %w", topic, p, from, to, err)
	}
	return found, scanned, nil
}

// leader returns the leader of partition p of topic and the topic's id, from
// metadata at most limit old.
func (pr *prober) leader(ctx context.Context, topic string, p int32, limit time.Duration) (int32, [16]byte, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = []kmsg.MetadataRequestTopic{rt}
	meta, err := pr.cl.RequestCachedMetadata(ctx, req, limit)
	if err != nil {
		return -1, [16]byte{}, err
	}
	for _, t := range meta.Topics {
		if t.Topic == nil || *t.Topic != topic {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return -1, [16]byte{}, err
		}
		for _, mp := range t.Partitions {
			if mp.Partition != p {
				continue
			}
			if err := kerr.ErrorForCode(mp.ErrorCode); err != nil {
				return -1, [16]byte{}, err
			}
			if mp.Leader < 0 {
				return -1, [16]byte{}, kerr.LeaderNotAvailable
			}
			return mp.Leader, t.TopicID, nil
		}
	}
	return -1, [16]byte{}, fmt.Errorf("no metadata for %s/%d: %w", topic, p, kerr.UnknownTopicOrPartition)
}

// Results of a lookup, the label of orderpipe_ingest_lookups_total.
const (
	lookupOwn       = "own"       // this edge's own order, not in its view yet
	lookupFound     = "found"     // 200: found by the scan, or in the view once caught up
	lookupAbsent    = "absent"    // 404: the order does not exist (for this client)
	lookupTruncated = "truncated" // 503: the processor is behind by more than LookupMaxScan
	lookupTimeout   = "timeout"   // 503: the budget ran out
	lookupError     = "error"     // 503: a broker error
	lookupNotReady  = "not_ready" // 503: the view is reconnecting and cannot prove absence
)

// resolveUnseen decides for order id, which client c asked for, that the
// orders view does not show and that this edge does not have in flight:
// the order as its record says (200 pending) if it exists and the view does
// not show it yet, or 404 if it does not exist, proven by the probe. It
// never guesses a 404: when it cannot prove either within LookupTimeout,
// it answers 503 with Retry-After.
func (e *Edge) resolveUnseen(id string, c *client) (*saga.OrderState, *problem) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.LookupTimeout)
	defer cancel()
	st, prob, result := e.lookUp(ctx, id, c)
	e.lookups.observe(result, time.Since(start))
	return st, prob
}

func (e *Edge) lookUp(ctx context.Context, id string, c *client) (*saga.OrderState, *problem, string) {
	p := topology.PartitionFor([]byte(id), e.cfg.Topology.Partitions)
	pp, err := e.probes.probe(ctx, p, id)
	if err == nil {
		err = pp.err
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, notReady("the broker did not tell within the lookup timeout whether order " + id + " exists"), lookupTimeout
		}
		e.log.Warn("order lookup failed", "order_id", id, "err", err)
		return nil, unavailable("broker-unavailable", "Broker unavailable", "the broker could not tell whether order "+id+" exists; retry"), lookupError
	}
	if raw, ok := pp.found[id]; ok {
		// The view may have it by now, more recent: it wins.
		if st, err := e.visibleOrder(id, c); err == nil && st != nil {
			return st, nil, lookupFound
		}
		m, err := saga.DecodeOrderSubmitted(raw)
		if err != nil {
			// The processor dead-letters it: it never gets a state.
			e.log.Warn("undecodable record of an order", "order_id", id, "err", err)
			return nil, notFound("there is no order " + id), lookupAbsent
		}
		if !c.anyScope && m.ClientID != c.id {
			return nil, notFound("there is no order " + id), lookupAbsent
		}
		return pendingState(m), nil, lookupFound
	}
	if pp.truncated {
		return nil, notReady("the orders processor is behind on the partition of order " + id + ": it cannot be looked up yet"), lookupTruncated
	}
	// Not among the records the processor has not committed: if it exists,
	// its state is in the table below tableEnd.
	if !e.orders.Recovered() {
		return nil, notReady("the orders view is reconnecting to the broker: it cannot tell yet whether order " + id + " exists"), lookupNotReady
	}
	if err := e.progress.waitFor(ctx, p, pp.tableEnd); err != nil {
		return nil, notReady("the orders view has not caught up within the lookup timeout: it cannot tell yet whether order " + id + " exists"), lookupTimeout
	}
	st, err := e.visibleOrder(id, c)
	switch {
	case err != nil:
		e.log.Warn("orders view lookup failed", "order_id", id, "err", err)
		return nil, notReady("the orders view cannot be read"), lookupError
	case st != nil:
		return st, nil, lookupFound
	case !e.orders.Recovered():
		// A view that reconnects may lack an order accepted meanwhile:
		// only a caught-up view can say an order does not exist.
		return nil, notReady("the orders view is reconnecting to the broker: it cannot tell yet whether order " + id + " exists"), lookupNotReady
	}
	return nil, notFound("there is no order " + id), lookupAbsent
}

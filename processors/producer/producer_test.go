package producer_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/processors/producer"
	"github.com/orderpipe/orderpipe/processors/producer/producertest"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// schedules is how many seeded schedules the property tests run:
// ORDERPIPE_FAULTS=full (make faults) runs a few hundred.
func schedules() int {
	if os.Getenv("ORDERPIPE_FAULTS") == "full" {
		return 300
	}
	return 25
}

// kgoFactory is the producer the processors use, on a client of its own.
func kgoFactory(brokers []string, dial func(context.Context, string, string) (net.Conn, error)) (goka.Producer, error) {
	c, err := producer.New(producer.Config{Brokers: brokers, DeliveryTimeout: 30 * time.Second}, producer.Deps{}, kgo.Dialer(dial))
	if err != nil {
		return nil, err
	}
	p, err := c.NewProducer("property")
	if err != nil {
		c.Close()
		return nil, err
	}
	return closing{p, c.Close}, nil
}

// closing closes the client after the producer.
type closing struct {
	goka.Producer
	after func()
}

func (c closing) Close() error {
	err := c.Producer.Close()
	c.after()
	return err
}

// TestProducerKeepsOrderUnderFaults is the property the saga rests on, for
// the processors' producer, over many seeded fault schedules.
func TestProducerKeepsOrderUnderFaults(t *testing.T) {
	var resets, oo, aa, dups int
	for seed := range uint64(schedules()) {
		rep, err := producertest.Run(context.Background(), producertest.Schedule{Seed: seed, Keys: 50, Values: 40, NoOutOfOrder: seed%2 == 0}, kgoFactory)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if err := rep.Err(); err != nil {
			t.Fatalf("%v\n%s", err, rep)
		}
		if rep.Acked != rep.Emitted {
			t.Errorf("seed %d: %d of %d emits acknowledged, want all (the faults are all retriable): %s", seed, rep.Acked, rep.Emitted, rep)
		}
		resets += rep.Resets
		oo += rep.OutOfOrder
		aa += rep.AfterAppend
		dups += rep.Duplicates
	}
	t.Logf("%d schedules: %d resets with produce in flight, %d OUT_OF_ORDER_SEQUENCE_NUMBER, %d NOT_ENOUGH_REPLICAS_AFTER_APPEND injected; %d records written twice, all after an OUT_OF_ORDER_SEQUENCE_NUMBER", schedules(), resets, oo, aa, dups)
	// The faults must have happened, or the property proved nothing.
	if resets == 0 || oo == 0 || aa == 0 {
		t.Fatalf("faults injected: resets %d, out of order %d, after append %d; want each > 0", resets, oo, aa)
	}
}

// TestPropertyCatchesBrokenProducers proves the property test can fail: a
// producer that reorders a partition's records, and one that acknowledges
// a record it never wrote, are caught on the first schedule.
func TestPropertyCatchesBrokenProducers(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(goka.Producer) goka.Producer
	}{
		{"reorders", func(p goka.Producer) goka.Producer { return &reordering{Producer: p} }},
		{"acks without writing", func(p goka.Producer) goka.Producer { return &dropping{Producer: p} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := func(brokers []string, dial func(context.Context, string, string) (net.Conn, error)) (goka.Producer, error) {
				p, err := kgoFactory(brokers, dial)
				if err != nil {
					return nil, err
				}
				return tc.wrap(p), nil
			}
			rep, err := producertest.Run(context.Background(), producertest.Schedule{Seed: 1, Keys: 10, Values: 20, Resets: -1}, f)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Err() == nil {
				t.Fatalf("no violation found: %s", rep)
			}
			t.Logf("caught: %v", rep.Err())
		})
	}
}

// reordering swaps the 7th and 8th emit of key k3 (the same partition).
type reordering struct {
	goka.Producer
	mu   sync.Mutex
	n    int
	held func()
}

func (r *reordering) Emit(topic, key string, value []byte) *goka.Promise {
	if key != "k3" {
		return r.Producer.Emit(topic, key, value)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	switch r.n {
	case 7:
		prom, finish := goka.NewPromiseWithFinisher()
		r.held = func() {
			r.Producer.Emit(topic, key, value).ThenWithMessage(func(m *sarama.ProducerMessage, err error) { finish(m, err) })
		}
		return prom
	case 8:
		p := r.Producer.Emit(topic, key, value)
		r.held()
		return p
	}
	return r.Producer.Emit(topic, key, value)
}

// dropping acknowledges the 5th emit of key k2 with the offset of the 4th.
type dropping struct {
	goka.Producer
	mu   sync.Mutex
	n    int
	last *goka.Promise
}

func (d *dropping) Emit(topic, key string, value []byte) *goka.Promise {
	if key != "k2" {
		return d.Producer.Emit(topic, key, value)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	if d.n == 5 {
		prom, finish := goka.NewPromiseWithFinisher()
		d.last.ThenWithMessage(func(m *sarama.ProducerMessage, err error) { finish(m, err) })
		return prom
	}
	d.last = d.Producer.Emit(topic, key, value)
	return d.last
}

// TestSameSpotAsGoka: the client puts a key where Goka's hasher (Sarama's
// hash partitioner over FNV-1a) does, and answers with the offset the
// record got, which Goka stores as its table's offset.
func TestSameSpotAsGoka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(12, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := prometheus.NewRegistry()
	cl, err := producer.New(producer.Config{Brokers: c.ListenAddrs()}, producer.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p, err := cl.Builder("orders")(nil, "", fnv.New32a)
	if err != nil {
		t.Fatal(err)
	}
	type ack struct {
		p   int32
		off int64
	}
	next := map[int32]int64{}
	for i := range 200 {
		key := "order-" + strconv.Itoa(i)
		done := make(chan ack, 1)
		p.Emit("t", key, []byte("v")).ThenWithMessage(func(m *sarama.ProducerMessage, err error) {
			if err != nil {
				t.Errorf("emit %s: %v", key, err)
				done <- ack{-1, -1}
				return
			}
			done <- ack{m.Partition, m.Offset}
		})
		a := <-done
		if want := topology.PartitionFor([]byte(key), 12); a.p != want {
			t.Fatalf("%s went to partition %d, want %d (Goka's)", key, a.p, want)
		}
		if a.off != next[a.p] {
			t.Fatalf("%s acknowledged at offset %d of partition %d, want %d", key, a.off, a.p, next[a.p])
		}
		next[a.p]++
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait(p.Emit("t", "x", nil)); err == nil {
		t.Fatal("emit after close succeeded, want an error")
	}
	if got := testutil.ToFloat64(dataLoss(t, reg)); got != 0 {
		t.Fatalf("data loss counter %v, want 0", got)
	}
}

func dataLoss(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "orderpipe_producer_data_loss_total" {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 {
				var s float64
				for _, m := range mf.GetMetric() {
					s += m.GetCounter().GetValue()
				}
				return s
			})
		}
	}
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return 0 })
}

// TestNextRunWaitsForThePrevious: a run's producer is refused while the
// previous run of the same group still has records no broker answered, so
// that they cannot land after the next run recovered its table.
func TestNextRunWaitsForThePrevious(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	cl, err := producer.New(producer.Config{Brokers: c.ListenAddrs(), CloseTimeout: 100 * time.Millisecond}, producer.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	first, err := cl.NewProducer("inventory")
	if err != nil {
		t.Fatal(err)
	}
	prom := first.Emit("t", "k", []byte("v"))
	if err := first.Close(); err == nil {
		t.Fatal("close with a record unanswered returned nil, want the bound's error")
	}
	if _, err := cl.NewProducer("inventory"); err == nil {
		t.Fatal("a new run's producer was built while the previous run had a record in flight")
	}
	if _, err := cl.NewProducer("orders"); err != nil {
		t.Fatalf("another group's producer: %v", err)
	}
	close(release)
	if err := wait(prom); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.NewProducer("inventory"); err != nil {
		t.Fatalf("after the record was answered: %v", err)
	}
}

// wait returns the promise's error once it is finished.
func wait(p *goka.Promise) error {
	done := make(chan error, 1)
	p.Then(func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("promise not finished after 30s")
	}
}

// saramaFactory is Goka's own producer with the Sarama settings the
// processors used before this package: idempotent, acks=all, one request
// in flight, retries for a minute.
func saramaFactory(brokers []string, dial func(context.Context, string, string) (net.Conn, error)) (goka.Producer, error) {
	cfg := goka.DefaultConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Retry.Max = 80
	cfg.Producer.Retry.BackoffFunc = func(n, _ int) time.Duration { return min(50*time.Millisecond<<min(n, 5), time.Second) }
	cfg.Producer.Flush.Frequency = 2 * time.Millisecond
	cfg.Producer.Compression = sarama.CompressionLZ4
	cfg.Producer.Partitioner = sarama.NewCustomHashPartitioner(fnv.New32a)
	cfg.Net.Proxy.Enable = true
	cfg.Net.Proxy.Dialer = dialFunc(dial)
	return goka.NewProducer(brokers, cfg)
}

type dialFunc func(context.Context, string, string) (net.Conn, error)

func (d dialFunc) Dial(network, addr string) (net.Conn, error) {
	return d(context.Background(), network, addr)
}

// TestSaramaProducerReport runs the property against Goka's Sarama
// producer and reports what it finds (ORDERPIPE_SARAMA_PROPERTY=1): the
// record of why the processors no longer use it.
func TestSaramaProducerReport(t *testing.T) {
	if os.Getenv("ORDERPIPE_SARAMA_PROPERTY") == "" {
		return
	}
	bad := 0
	for seed := range uint64(schedules()) {
		rep, err := producertest.Run(context.Background(), producertest.Schedule{Seed: seed, Keys: 50, Values: 40, NoOutOfOrder: seed%2 == 0, Timeout: 90 * time.Second}, saramaFactory)
		if err != nil {
			t.Logf("seed %d: %v", seed, err)
			bad++
			continue
		}
		t.Log(rep, rep.Kinds())
		if err := rep.Err(); err != nil {
			t.Log(err)
			bad++
		}
	}
	t.Logf("sarama: %d of %d schedules broke the promise", bad, schedules())
}

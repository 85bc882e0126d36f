// Package producer is Goka's producer on franz-go: the processors write
// their table changelogs and their commands and results through one kgo
// client per process, shared by both groups.
//
// Why not Goka's own (Sarama's AsyncProducer): after a connection loss,
// Sarama v1.46's idempotent producer can reorder the records of a partition
// (a second request is pipelined despite MaxOpenRequests=1, and retries are
// re-queued out of order) and can resend records under a new epoch with
// old sequence numbers, which the broker may take for a duplicate and
// acknowledge without writing (IBM/sarama#2619, #2803, #2943). The saga's
// guarantees rest on "an acknowledged emit is in the log, in order".
// franz-go promises exactly that: records of a partition are produced in
// order; with idempotence (on by default) a record is failed only when it
// was never sent or its request was answered, and when one record fails,
// every record buffered after it in that partition fails too, so that no
// later record is written after a gap (kgo's RecordRetries and
// RecordDeliveryTimeout docs). In-flight records are never cancelled here
// (no AllowIdempotentProduceCancellation, no record contexts).
package producer

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/internal/kafkaobs"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures the shared client.
type Config struct {
	// Brokers are the seed brokers. Required.
	Brokers []string
	// ClientID names the client to the brokers. Default "orderpipe-processors".
	ClientID string
	// Linger is how long a partition's batch waits for more records.
	// Default 2ms: every hop of the saga pays it once.
	Linger time.Duration
	// DeliveryTimeout is how long a record may wait for a broker before it
	// is failed, when failing it is safe (never sent, or answered): the
	// time the processors ride out a broker restart before a group fails
	// and its supervisor rebuilds it. Default 60s.
	DeliveryTimeout time.Duration
	// CloseTimeout bounds how long a processor run's producer waits at
	// Close for its records to be answered, and the client's final flush.
	// Default DeliveryTimeout + 30s (a request on the wire when a broker
	// dies is answered or times out within kgo's request timeout).
	CloseTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = "orderpipe-processors"
	}
	if c.Linger == 0 {
		c.Linger = 2 * time.Millisecond
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 60 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = c.DeliveryTimeout + 30*time.Second
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("producer: no brokers")
	case c.DeliveryTimeout < time.Second:
		// kgo's floor: below it the option is ignored.
		return fmt.Errorf("producer: delivery timeout must be >= 1s, got %s", c.DeliveryTimeout)
	case c.Linger < 0 || c.CloseTimeout < 0:
		return errors.New("producer: linger and close timeout must be >= 0")
	}
	return nil
}

// Deps are what the client uses but does not own.
type Deps struct {
	// Registerer receives kprom's metrics (client="processors") and
	// orderpipe_producer_data_loss_total. Optional.
	Registerer prometheus.Registerer
	// Logger receives franz-go's logs and data-loss errors. Default slog.Default().
	Logger *slog.Logger
}

// Client is the kgo client every processor run of a process produces
// through. Sharing it puts both groups' records for a broker into the same
// produce requests. Close it after every run has ended.
type Client struct {
	cfg      Config
	cl       *kgo.Client
	log      *slog.Logger
	dataLoss *prometheus.CounterVec
	unreg    func()

	mu sync.Mutex
	// last is, per name, the producer of the latest run: a new run waits
	// for it (see Builder).
	last map[string]*Producer
}

// New builds the client; it connects on first use. extra options come last
// and win (tests pass a kgo.Dialer that injects faults).
func New(cfg Config, deps Deps, extra ...kgo.Opt) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Client{
		cfg: cfg, log: log, unreg: func() {}, last: map[string]*Producer{},
		dataLoss: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderpipe_producer_data_loss_total",
			Help: "Times the processors' producer found records missing from a partition (OUT_OF_ORDER_SEQUENCE_NUMBER, or a log truncated under it), by topic. Must stay 0.",
		}, []string{"topic"}),
	}
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(c.dataLoss); err != nil {
			return nil, fmt.Errorf("producer: register metrics: %w", err)
		}
		c.unreg = func() { deps.Registerer.Unregister(c.dataLoss) }
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		// Where Goka's views and the edge's lookups read a key.
		kgo.RecordPartitioner(topology.Partitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		// Goka's callbacks emit while they process; a full buffer blocks
		// them, which is the backpressure wanted, but 10k (the default) is
		// ~0.3 s of the saga at full speed.
		kgo.MaxBufferedRecords(100_000),
		// The one bound on a record's life (unlimited retries, kgo's
		// default): topics are checked at start, so an unknown topic is a
		// broker still loading its metadata after a restart.
		kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout),
		kgo.UnknownTopicRetries(-1),
		// A partition whose leader moved is retried after the next metadata
		// refresh: kgo's 5s minimum age would stall it that long.
		kgo.MetadataMinAge(500 * time.Millisecond),
		kgo.ProducerOnDataLossDetected(c.onDataLoss),
	}
	opts = append(opts, kafkaobs.Opts(deps.Registerer, "processors", log)...)
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		c.unreg()
		return nil, fmt.Errorf("producer: new client: %w", err)
	}
	c.cl = cl
	return c, nil
}

// onDataLoss is told by kgo when a broker answered
// OUT_OF_ORDER_SEQUENCE_NUMBER or its log lost records kgo had been told
// were written: kgo resets its producer id and goes on, in order, but the
// saga's premise is broken for what was lost, so it is counted and logged.
func (c *Client) onDataLoss(topic string, partition int32) {
	c.dataLoss.WithLabelValues(topic).Inc()
	c.log.Error("producer: data loss detected: the broker lost or refused records it had acknowledged, or answered out of order sequence", "topic", topic, "partition", partition)
}

// Builder returns the goka.ProducerBuilder of the runs of name (a group):
// each processor run gets a Producer of its own over the shared client.
// A run's producer is refused (Goka's processor fails and its supervisor
// retries) while the producer of name's previous run still has records
// that no broker answered: records of a run that gave up must not land
// after the next run has recovered its table from the changelog.
func (c *Client) Builder(name string) goka.ProducerBuilder {
	// Goka's hasher is not used: topology.Partitioner computes the same
	// partitions (a test checks both against each other).
	return func([]string, string, func() hash.Hash32) (goka.Producer, error) {
		return c.NewProducer(name)
	}
}

// NewProducer returns a Producer for a run of name; see Builder.
func (c *Client) NewProducer(name string) (*Producer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev := c.last[name]; prev != nil {
		if n := prev.Pending(); n > 0 {
			return nil, fmt.Errorf("producer: the previous %s run still has %d records in flight", name, n)
		}
	}
	p := &Producer{c: c, name: name, done: make(chan struct{})}
	c.last[name] = p
	return p, nil
}

// Close flushes what is buffered (bounded by CloseTimeout) and closes the
// client; records still buffered then fail with kgo.ErrClientClosed.
func (c *Client) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CloseTimeout)
	defer cancel()
	if err := c.cl.Flush(ctx); err != nil {
		c.log.Error("producer: flush at close", "err", err, "buffered", c.cl.BufferedProduceRecords())
	}
	c.cl.Close()
	c.unreg()
}

// ErrClosed fails an emit after the run's producer was closed.
var ErrClosed = errors.New("producer: closed")

// Producer is one processor run's goka.Producer. Emits are safe from any
// goroutine; their promises are finished on kgo's promise goroutine, in
// the order of each partition, and carry the acknowledged offset (Goka
// stores it as the table's offset).
type Producer struct {
	c    *Client
	name string

	mu      sync.Mutex
	closed  bool
	pending int
	done    chan struct{} // closed when closed and pending is 0
}

// Emit produces value (nil: a tombstone) under key to topic.
func (p *Producer) Emit(topic, key string, value []byte) *goka.Promise {
	return p.EmitWithHeaders(topic, key, value, nil)
}

// EmitWithHeaders is Emit with record headers.
func (p *Producer) EmitWithHeaders(topic, key string, value []byte, headers goka.Headers) *goka.Promise {
	prom, finish := goka.NewPromiseWithFinisher()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return finish(nil, fmt.Errorf("emit to %s: %w", topic, ErrClosed))
	}
	p.pending++
	p.mu.Unlock()
	r := &kgo.Record{Topic: topic, Key: []byte(key), Value: value}
	for k, v := range headers {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: v})
	}
	// context.Background: a record on its way is never cancelled, only
	// failed by kgo when that is safe (see the package comment).
	p.c.cl.Produce(context.Background(), r, func(r *kgo.Record, err error) {
		defer p.resolved()
		if err != nil {
			finish(nil, fmt.Errorf("emit to %s: %w", topic, err))
			return
		}
		finish(&sarama.ProducerMessage{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp}, nil)
	})
	return prom
}

func (p *Producer) resolved() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending--
	if p.closed && p.pending == 0 {
		close(p.done)
	}
}

// Pending is the number of records emitted and not yet answered.
func (p *Producer) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// Close refuses further emits and waits, at most the client's
// CloseTimeout, until every record emitted is answered: Goka's processor
// calls it when a run ends, and a run whose records are still on their
// way has not ended. The shared client stays open.
func (p *Producer) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		if p.pending == 0 {
			close(p.done)
		}
	}
	p.mu.Unlock()
	t := time.NewTimer(p.c.cfg.CloseTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("producer: %s run closed with %d records unanswered after %s", p.name, p.Pending(), p.c.cfg.CloseTimeout)
	}
}

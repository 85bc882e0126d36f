// Package processors runs orderpipe's Goka processors and views. They
// consume with Sarama, configured on purpose (Goka's defaults lose or delay
// orders, see docs/), and produce with franz-go (package producer: Sarama's
// idempotent producer reorders and drops acknowledged records after a
// connection loss). The callbacks live in the orders and inventory
// subpackages; the graphs are declared in topology.
package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/lovoo/goka/storage"
	"github.com/orderpipe/orderpipe/processors/batchstore"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	gometrics "github.com/rcrowley/go-metrics"
	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/opt"
)

// Config configures the Goka side of orderpipe: processors and views.
type Config struct {
	// Brokers are the seed brokers. Required.
	Brokers []string
	// DataDir is where table partitions are stored (LevelDB). Required: the
	// caller decides where state lives, never the OS temp dir by accident.
	DataDir string
	// ClientID names this process to the brokers. Default "orderpipe".
	ClientID string
	// Topology sizes the topics; it must match the cluster.
	Topology topology.Config
	// Replication is the replication factor the table topics must have (the
	// resolved value, see topology.Config.ResolveReplication). Goka checks
	// its group table against it and fails on a mismatch.
	Replication int16
	// FlushFrequency is how long the producer lingers to batch records.
	// Default 2ms: Goka's 100ms default would add 100ms to every hop of
	// the saga, franz-go's 10ms 10ms.
	FlushFrequency time.Duration
	// FetchWait trades latency for broker load. 0 (the default): the
	// broker answers a fetch as soon as one record is there, so a hop of
	// the saga costs a few milliseconds, but under load every consumer
	// sends many small fetches, and on a real broker that request rate,
	// not orderpipe, is what runs out of CPU first. Above 0: a fetch waits
	// up to FetchWait for 256 KiB, which fills at once under load and adds
	// up to FetchWait to each hop when idle (see the README's figures).
	FetchWait time.Duration
	// KafkaVersion is the protocol version Sarama speaks. Default 3.6.0: Kafka 4
	// refuses requests older than 2.1 (KIP-896), Sarama's default is 2.0.
	KafkaVersion sarama.KafkaVersion
	// InventoryOnDisk keeps the inventory table (in the processor and in
	// views) in LevelDB like the orders table. Default false: it is kept in
	// memory. It has one key per SKU, rewritten by every reservation, and in
	// the overload profile LevelDB's journal writes and compactions of those
	// few hot keys cost more CPU than the saga itself; in memory it costs a
	// map write, and a restart recovers it from its compacted changelog,
	// which holds one record per SKU.
	InventoryOnDisk bool
	// BrokerRetry is how long the processors' producer keeps a record
	// while no broker answers before it fails it (kgo's
	// RecordDeliveryTimeout; then the group fails and its supervisor
	// rebuilds it). Default 60s: a broker restart (stop, JVM start, log
	// recovery) takes 10-30s here, and franz-go's idempotent producer
	// retries without reordering or duplicating, so waiting it out is
	// cheaper than rebuilding a processor and recovering its tables.
	BrokerRetry time.Duration
	// Logger receives Goka's and Sarama's messages. Default slog.Default().
	Logger *slog.Logger
	// MetricRegistry receives the Sarama metrics of every client built from
	// this Config (sarama.Config.MetricRegistry); SaramaCollector exports
	// it. Default nil: each client gets a registry of its own that nobody
	// reads (Sarama's default).
	MetricRegistry gometrics.Registry
	// Regressions is the detector the processors' table recovery and the
	// views run on every record they apply. Default: one that only logs
	// (processors.New registers one in Deps.Registerer).
	Regressions *Regressions
}

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = "orderpipe"
	}
	if c.FlushFrequency == 0 {
		c.FlushFrequency = 2 * time.Millisecond
	}
	if c.KafkaVersion == (sarama.KafkaVersion{}) {
		c.KafkaVersion = sarama.V3_6_0_0
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.BrokerRetry == 0 {
		c.BrokerRetry = DefaultBrokerRetry
	}
	if c.Replication == 0 {
		c.Replication = c.Topology.ReplicationFor(len(c.Brokers))
	}
	if c.Regressions == nil {
		c.Regressions, _ = NewRegressions(nil, c.Logger) // no registry: cannot fail
	}
}

// DefaultBrokerRetry is Config.BrokerRetry's default.
const DefaultBrokerRetry = 60 * time.Second

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("processors: no brokers")
	case c.DataDir == "":
		return errors.New("processors: no data dir")
	case c.BrokerRetry < 0:
		return fmt.Errorf("processors: broker retry must be >= 0 (0 = default), got %s", c.BrokerRetry)
	case !c.KafkaVersion.IsAtLeast(sarama.V2_1_0_0):
		return fmt.Errorf("processors: kafka version %s is older than 2.1, which Kafka 4 refuses", c.KafkaVersion)
	}
	return c.Topology.Validate()
}

// SaramaConfig is the Sarama configuration every Goka component here uses.
func (c Config) SaramaConfig() *sarama.Config {
	cfg := goka.DefaultConfig()
	cfg.ClientID = c.ClientID
	cfg.Version = c.KafkaVersion
	// No producer settings: the processors produce with franz-go (package
	// producer), never with Sarama.
	// A group that joins for the first time must see the orders that were
	// sent before it existed; Goka's default (newest) would skip them.
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Commit often: everything after the last commit is replayed on a
	// crash or rebalance (harmless, but slow).
	cfg.Consumer.Offsets.AutoCommit.Interval = 250 * time.Millisecond
	// A rebalance reaches the members at their next heartbeat: every
	// second instead of Sarama's three makes scaling out or in (and the
	// takeover after a crash) that much quicker, for one small request a
	// second per member.
	cfg.Consumer.Group.Heartbeat.Interval = time.Second
	cfg.Consumer.Fetch.Default = 1 << 20
	cfg.Consumer.MaxWaitTime = 50 * time.Millisecond
	if c.FetchWait > 0 {
		cfg.Consumer.MaxWaitTime = c.FetchWait
		cfg.Consumer.Fetch.Min = 256 << 10
	}
	cfg.Metadata.RefreshFrequency = time.Minute
	if c.MetricRegistry != nil {
		cfg.MetricRegistry = c.MetricRegistry
	}
	return cfg
}

func (c Config) topicManagerConfig() *goka.TopicManagerConfig {
	tm := goka.NewTopicManagerConfig()
	tm.NoCreate = true // topics are created by topology.Config.Ensure, with explicit settings
	tm.MismatchBehavior = goka.TMConfigMismatchBehaviorFail
	tm.Table.Replication = int(c.Replication)
	tm.Stream.Replication = int(c.Replication)
	tm.Stream.Retention = c.Topology.StreamRetention
	tm.CreateTopicTimeout = 0
	return tm
}

// backoff spaces Goka's reconnects of a view and restarts of a failed
// partition. Goka's default waits in 10s steps up to 2 minutes: after a
// broker restart, reads and orders would stall that long (measured: the
// first order accepted 13.7s after the broker was back).
func backoff() (goka.Backoff, error) {
	return goka.NewSimpleBackoff(250*time.Millisecond, 2*time.Second), nil
}

// gokaLogger sends Goka's printf-style logs to slog at debug level: Goka
// logs every partition state change, which is noise at info level.
type gokaLogger struct{ l *slog.Logger }

func (g gokaLogger) Print(v ...any)                 { g.l.Debug(fmt.Sprint(v...)) }
func (g gokaLogger) Println(v ...any)               { g.l.Debug(fmt.Sprint(v...)) }
func (g gokaLogger) Printf(format string, v ...any) { g.l.Debug(fmt.Sprintf(format, v...)) }

// storageBuilder returns LevelDB storage under DataDir/sub, one database per
// partition, written in batches (package batchstore). Block compression is off: values are compact binary already,
// and snappy over them was a tenth of the CPU in the overload profile.
// Buffers are smaller than LevelDB's defaults because a process opens one
// database per partition of each table and view (48 with the defaults), and
// memory must stay bounded.
//
// A partition whose database is corrupt (a disk fault, or a crash in the
// middle of a write LevelDB could not repair) is repaired with
// leveldb.RecoverFile, or else removed: Goka then rebuilds it from the
// table's changelog. Only if that fails too is failed told: a data dir no
// restart can cure.
func (c Config) storageBuilder(table goka.Table, sub string, failed func(error)) (storage.Builder, error) {
	if table == topology.InventoryTable() && !c.InventoryOnDisk {
		return storage.MemoryBuilder(), nil
	}
	dir := filepath.Join(c.DataDir, sub)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create table dir: %w", err)
	}
	opts := &opt.Options{
		Compression:            opt.NoCompression,
		WriteBuffer:            2 << 20,
		BlockCacheCapacity:     2 << 20,
		OpenFilesCacheCapacity: 64,
	}
	return func(topic string, partition int32) (storage.Storage, error) {
		// The path Goka's own storage.BuilderWithOptions uses.
		path := filepath.Join(dir, fmt.Sprintf("%s.%d", topic, partition))
		db, err := leveldb.OpenFile(path, opts)
		if lerrors.IsCorrupted(err) {
			c.Logger.Warn("table partition is corrupt, repairing it", "path", path, "err", err)
			if db, err = leveldb.RecoverFile(path, opts); err != nil {
				c.Logger.Warn("cannot repair the table partition, rebuilding it from its changelog", "path", path, "err", err)
				if err = os.RemoveAll(path); err == nil {
					db, err = leveldb.OpenFile(path, opts)
				}
				if err != nil {
					err = fmt.Errorf("table partition %s is corrupt and cannot be rebuilt: %w", path, err)
					if failed != nil {
						failed(err)
					}
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("open table partition %s: %w", path, err)
		}
		return batchstore.New(db, batchstore.Options{}), nil
	}, nil
}

// processorOptions are the options of every processor of group, which
// produces through producers. storageFailed is told when table storage
// cannot be rebuilt.
func (c Config) processorOptions(group goka.Group, producers goka.ProducerBuilder, storageFailed func(error)) ([]goka.ProcessorOption, error) {
	sc := c.SaramaConfig()
	sb, err := c.storageBuilder(goka.GroupTable(group), filepath.Join("processor", string(group)), storageFailed)
	if err != nil {
		return nil, err
	}
	tm := c.topicManagerConfig()
	log := gokaLogger{c.Logger.With("group", string(group))}
	return []goka.ProcessorOption{
		goka.WithClientID(c.ClientID),
		goka.WithLogger(log),
		goka.WithHasher(topology.Hasher()),
		goka.WithStorageBuilder(sb),
		goka.WithTopicManagerBuilder(withOffsetRetries(goka.TopicManagerBuilderWithConfig(sc, tm), offsetRetryWindow)),
		goka.WithConsumerGroupBuilder(orderedCommits(goka.ConsumerGroupBuilderWithConfig(sc))),
		goka.WithConsumerSaramaBuilder(goka.SaramaConsumerBuilderWithConfig(sc)),
		goka.WithProducerBuilder(producers),
		goka.WithUpdateCallback(c.Regressions.Update(goka.GroupTable(group), nil)),
		goka.WithBackoffBuilder(backoff),
	}, nil
}

// UpdateFunc is told about every record a view applies, after the view's
// storage holds it: its partition and offset in the table topic, its key,
// and its value, which is nil for a deletion and is only valid during the
// call. It is called during recovery as well as afterwards, on the goroutine
// of the record's partition, and must not block.
type UpdateFunc func(partition int32, offset int64, key string, value []byte)

// RecoveredOffsets returns, by partition, the offset of v's table up to which
// v had applied every record when the partition finished recovering: the
// partition's high watermark as recovery read it. It is the only trace of a
// partition that was up to date in local storage at start, for which the
// view applies nothing and so calls no UpdateFunc. Partitions that have not
// finished recovering are left out; once v is running (View.WaitRunning),
// every partition is there.
func RecoveredOffsets(v *goka.View) map[int32]int64 {
	out := map[int32]int64{}
	for p, st := range v.Stats(context.Background()).Partitions {
		// RecoveryTime is set once recovery applied everything below Hwm;
		// Status may already say Connecting again, as a view moves on from
		// recovery to catching up.
		if st != nil && st.Recovery != nil && !st.Recovery.RecoveryTime.IsZero() {
			out[p] = st.Recovery.Hwm
		}
	}
	return out
}

// OpenView builds a view of table that calls onUpdate (may be nil) after
// every applied record. Views hold every partition, so they serve reads for
// any key; they answer before they have recovered, so callers must gate on
// View.Recovered. Goka never closes the Sarama consumer and topic manager it
// opens for a view: the returned func does, once View.Run has returned.
func (c Config) OpenView(table goka.Table, codec goka.Codec, onUpdate UpdateFunc) (*goka.View, func() error, error) {
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	sc := c.SaramaConfig()
	sb, err := c.storageBuilder(table, filepath.Join("view", string(table)), nil)
	if err != nil {
		return nil, nil, err
	}
	var (
		consumer sarama.Consumer
		tmgr     goka.TopicManager
	)
	consumers := goka.SaramaConsumerBuilderWithConfig(sc)
	tmgrs := goka.TopicManagerBuilderWithConfig(sc, c.topicManagerConfig())
	opts := []goka.ViewOption{
		goka.WithViewClientID(c.ClientID),
		goka.WithViewLogger(gokaLogger{c.Logger.With("view", string(table))}),
		goka.WithViewHasher(topology.Hasher()),
		goka.WithViewStorageBuilder(sb),
		goka.WithViewTopicManagerBuilder(func(brokers []string) (goka.TopicManager, error) {
			t, err := tmgrs(brokers)
			tmgr = t
			return t, err
		}),
		goka.WithViewConsumerSaramaBuilder(func(brokers []string, clientID string) (sarama.Consumer, error) {
			cons, err := consumers(brokers, clientID)
			consumer = cons
			return cons, err
		}),
		goka.WithViewAutoReconnect(),
		goka.WithViewBackoffBuilder(backoff),
		goka.WithViewBackoffResetTimeout(time.Minute),
	}
	var applied func(goka.UpdateContext, string, []byte)
	if onUpdate != nil {
		applied = func(ctx goka.UpdateContext, key string, value []byte) {
			onUpdate(ctx.Partition(), ctx.Offset(), key, value)
		}
	}
	opts = append(opts, goka.WithViewCallback(c.Regressions.Update(table, applied)))
	v, err := goka.NewView(c.Brokers, table, codec, opts...)
	closeClients := func() error {
		var errs []error
		if consumer != nil {
			errs = append(errs, consumer.Close())
		}
		if tmgr != nil {
			errs = append(errs, tmgr.Close())
		}
		// Sarama v1.62 answers a second Close of a client (Goka closes
		// some of what it opened itself) with ErrClosedClient: the wanted
		// state, not a failure.
		for i, err := range errs {
			if errors.Is(err, sarama.ErrClosedClient) {
				errs[i] = nil
			}
		}
		return errors.Join(errs...)
	}
	if err != nil {
		_ = closeClients()
		return nil, nil, fmt.Errorf("new view of %s: %w", table, err)
	}
	return v, closeClients, nil
}

// OpenOrdersView is OpenView of the orders table; values are *saga.OrderState.
func (c Config) OpenOrdersView(onUpdate UpdateFunc) (*goka.View, func() error, error) {
	return c.OpenView(topology.OrdersTable(), saga.OrderStateCodec(), onUpdate)
}

// OpenInventoryView is OpenView of the inventory table; values are *saga.StockState.
func (c Config) OpenInventoryView(onUpdate UpdateFunc) (*goka.View, func() error, error) {
	return c.OpenView(topology.InventoryTable(), saga.StockStateCodec(), onUpdate)
}

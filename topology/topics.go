package topology

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/lovoo/goka"
)

// Topic, group and table names. They are the only place these names are spelt.
const (
	// OrdersSubmitted carries OrderSubmitted records from the edge, keyed by order id.
	OrdersSubmitted goka.Stream = "orders.submitted"
	// InventoryCommands carries InventoryCommand records keyed by SKU: Reserve,
	// Commit and Release from the orders processor, SetStock from the edge.
	InventoryCommands goka.Stream = "inventory.commands"
	// InventoryResults carries ReservationResult records keyed by order id.
	InventoryResults goka.Stream = "inventory.results"
	// DeadLetter receives records that could not be decoded, with the reason
	// and origin in their headers.
	DeadLetter goka.Stream = "orders.dlq"

	// OrdersGroup is the Goka group of the orders processor; its table is the
	// order state and the cache that GET /v1/orders reads.
	OrdersGroup goka.Group = "orders"
	// InventoryGroup is the Goka group of the inventory processor; its table
	// holds the stock of every SKU.
	InventoryGroup goka.Group = "inventory"
)

// OrdersTable is the changelog topic of the orders group ("orders-table").
func OrdersTable() goka.Table { return goka.GroupTable(OrdersGroup) }

// InventoryTable is the changelog topic of the inventory group ("inventory-table").
func InventoryTable() goka.Table { return goka.GroupTable(InventoryGroup) }

// Header names set on dead-letter records.
const (
	HeaderDLQReason    = "orderpipe-dlq-reason"
	HeaderDLQTopic     = "orderpipe-dlq-topic"
	HeaderDLQPartition = "orderpipe-dlq-partition"
	HeaderDLQOffset    = "orderpipe-dlq-offset"
)

// Config sizes the topics. The zero value is not valid; start from
// DefaultConfig.
type Config struct {
	// Partitions of every topic. Default 12. Inputs of one group must share it
	// (co-partitioning), so one number is used for all.
	Partitions int32
	// ReplicationFactor of every topic. Default 0, which means
	// min(3, number of brokers) at creation time.
	ReplicationFactor int16
	// StreamRetention of the stream topics and the dead-letter topic.
	// Default 7 days: far longer than any processor or sink outage we expect
	// to survive, since a record deleted before it is consumed is lost.
	StreamRetention time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Partitions: 12, StreamRetention: 7 * 24 * time.Hour}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Partitions < 1 || c.Partitions > 10000:
		return fmt.Errorf("topology: partitions must be in 1..10000, got %d", c.Partitions)
	case c.ReplicationFactor < 0:
		return fmt.Errorf("topology: replication factor must be >= 0 (0 = auto), got %d", c.ReplicationFactor)
	case c.StreamRetention < time.Hour:
		return fmt.Errorf("topology: stream retention must be at least 1h, got %s", c.StreamRetention)
	}
	return nil
}

// ReplicationFor resolves the replication factor for a cluster of n brokers.
func (c Config) ReplicationFor(brokers int) int16 {
	if c.ReplicationFactor > 0 {
		return c.ReplicationFactor
	}
	return int16(min(3, max(brokers, 1)))
}

// TopicKind tells streams from tables.
type TopicKind int

const (
	// Stream topics are deleted by retention.
	Stream TopicKind = iota
	// Table topics are compacted changelogs of Goka group tables.
	Table
)

// TopicSpec is one topic the topology needs.
type TopicSpec struct {
	Name       string
	Kind       TopicKind
	Partitions int32
	// Configs are the topic configs set at creation and checked afterwards.
	Configs map[string]string
}

// Topics lists every topic with its partitions and configs, for a cluster
// whose topics are replicated rf times.
func (c Config) Topics(rf int16) []TopicSpec {
	stream := func(name goka.Stream) TopicSpec {
		return TopicSpec{Name: string(name), Kind: Stream, Partitions: c.Partitions, Configs: map[string]string{
			"cleanup.policy": "delete",
			"retention.ms":   strconv.FormatInt(c.StreamRetention.Milliseconds(), 10),
		}}
	}
	table := func(name goka.Table) TopicSpec {
		return TopicSpec{Name: string(name), Kind: Table, Partitions: c.Partitions, Configs: map[string]string{
			"cleanup.policy": "compact",
		}}
	}
	specs := []TopicSpec{
		stream(OrdersSubmitted), stream(InventoryCommands), stream(InventoryResults), stream(DeadLetter),
		table(OrdersTable()), table(InventoryTable()),
	}
	if rf >= 3 {
		// With three replicas, acks=all must mean at least two copies.
		for _, s := range specs {
			s.Configs["min.insync.replicas"] = "2"
		}
	}
	return specs
}

// ExistingTopic describes a topic as the broker reports it.
type ExistingTopic struct {
	Partitions        int32
	ReplicationFactor int16
	CleanupPolicy     string
}

// CheckExisting compares the topics on the broker with the topology and
// returns every mismatch that would break a guarantee: a missing topic, a table
// that is not compacted (its history would be deleted), a stream that is
// compacted (orders with equal keys would vanish), partition counts that break
// co-partitioning, or fewer replicas than asked for.
func (c Config) CheckExisting(rf int16, existing map[string]ExistingTopic) error {
	var errs []error
	for _, spec := range c.Topics(rf) {
		got, ok := existing[spec.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("topic %s is missing (run `orderpipe topics`)", spec.Name))
			continue
		}
		if got.Partitions != spec.Partitions {
			errs = append(errs, fmt.Errorf("topic %s has %d partitions, want %d (co-partitioning of group inputs and tables needs one count)", spec.Name, got.Partitions, spec.Partitions))
		}
		if got.ReplicationFactor < rf {
			errs = append(errs, fmt.Errorf("topic %s has replication factor %d, want %d", spec.Name, got.ReplicationFactor, rf))
		}
		want := spec.Configs["cleanup.policy"]
		if got.CleanupPolicy != want {
			errs = append(errs, fmt.Errorf("topic %s has cleanup.policy=%q, want %q", spec.Name, got.CleanupPolicy, want))
		}
	}
	return errors.Join(errs...)
}

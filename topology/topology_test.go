package topology_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kgo"
)

func noop(goka.Context, any) {}

func TestGraphsValidate(t *testing.T) {
	for _, g := range []*goka.GroupGraph{
		topology.OrdersGraph(noop, noop),
		topology.InventoryGraph(noop),
	} {
		if err := g.Validate(); err != nil {
			t.Errorf("group %s: Validate() = %v", g.Group(), err)
		}
	}
}

func partitionCounts(cfg topology.Config) map[string]int32 {
	m := map[string]int32{}
	for _, s := range cfg.Topics(1) {
		m[s.Name] = s.Partitions
	}
	return m
}

func TestCopartitioning(t *testing.T) {
	cfg := topology.DefaultConfig()
	graphs := []*goka.GroupGraph{topology.OrdersGraph(noop, noop), topology.InventoryGraph(noop)}
	if err := topology.CheckCopartitioning(partitionCounts(cfg), graphs...); err != nil {
		t.Fatalf("default topology: %v", err)
	}
	// Every topic that feeds a group (input or table) must break the check
	// when its count differs; outputs may differ freely.
	for _, topic := range []string{
		string(topology.OrdersSubmitted), string(topology.InventoryResults), string(topology.OrdersTable()),
		string(topology.InventoryCommands), string(topology.InventoryTable()),
	} {
		counts := partitionCounts(cfg)
		counts[topic] = 7
		if err := topology.CheckCopartitioning(counts, graphs...); err == nil {
			t.Errorf("%s with 7 partitions: got no error, want a co-partitioning error", topic)
		}
	}
	counts := partitionCounts(cfg)
	counts[string(topology.DeadLetter)] = 1
	if err := topology.CheckCopartitioning(counts, graphs...); err != nil {
		t.Errorf("dead-letter topic with 1 partition: got %v, want nil (outputs are free)", err)
	}
}

func TestTopicsConfig(t *testing.T) {
	cfg := topology.DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	specs := cfg.Topics(3)
	if len(specs) != 6 {
		t.Fatalf("got %d topics, want 6", len(specs))
	}
	for _, s := range specs {
		want := "delete"
		if s.Kind == topology.Table {
			want = "compact"
		}
		if got := s.Configs["cleanup.policy"]; got != want {
			t.Errorf("%s: cleanup.policy = %q, want %q", s.Name, got, want)
		}
		if s.Kind == topology.Stream && s.Configs["retention.ms"] != "604800000" {
			t.Errorf("%s: retention.ms = %q, want 7 days", s.Name, s.Configs["retention.ms"])
		}
		if s.Configs["min.insync.replicas"] != "2" {
			t.Errorf("%s: min.insync.replicas = %q with rf 3, want 2", s.Name, s.Configs["min.insync.replicas"])
		}
		if s.Partitions != 12 {
			t.Errorf("%s: %d partitions, want 12", s.Name, s.Partitions)
		}
	}
	if got := cfg.ReplicationFor(1); got != 1 {
		t.Errorf("ReplicationFor(1) = %d, want 1", got)
	}
	if got := cfg.ReplicationFor(5); got != 3 {
		t.Errorf("ReplicationFor(5) = %d, want 3", got)
	}
}

func TestCheckExisting(t *testing.T) {
	cfg := topology.DefaultConfig()
	good := map[string]topology.ExistingTopic{}
	for _, s := range cfg.Topics(1) {
		good[s.Name] = topology.ExistingTopic{Partitions: s.Partitions, ReplicationFactor: 1, CleanupPolicy: s.Configs["cleanup.policy"]}
	}
	if err := cfg.CheckExisting(1, good); err != nil {
		t.Fatalf("matching topics: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(m map[string]topology.ExistingTopic)
		want   string
	}{
		{"table not compacted", func(m map[string]topology.ExistingTopic) {
			e := m["orders-table"]
			e.CleanupPolicy = "delete"
			m["orders-table"] = e
		}, "cleanup.policy"},
		{"stream compacted", func(m map[string]topology.ExistingTopic) {
			e := m["orders.submitted"]
			e.CleanupPolicy = "compact"
			m["orders.submitted"] = e
		}, "cleanup.policy"},
		{"partition count", func(m map[string]topology.ExistingTopic) {
			e := m["inventory.results"]
			e.Partitions = 6
			m["inventory.results"] = e
		}, "co-partitioning"},
		{"missing", func(m map[string]topology.ExistingTopic) { delete(m, "inventory-table") }, "missing"},
	}
	for _, c := range cases {
		m := map[string]topology.ExistingTopic{}
		for k, v := range good {
			m[k] = v
		}
		c.mutate(m)
		err := cfg.CheckExisting(1, m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
}

// TestPartitionerAgreement checks that the franz-go partitioner used by the
// edge and the sink puts every key where Sarama (Goka's producer) and Goka's
// views look for it.
func TestPartitionerAgreement(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int32{1, 3, 12, 64, 1000} {
		kp := topology.Partitioner().ForTopic("t")
		sp := sarama.NewCustomHashPartitioner(topology.Hasher())("t")
		for i := 0; i < 5000; i++ {
			key := make([]byte, 1+rng.IntN(40))
			for j := range key {
				key[j] = byte(rng.Uint32())
			}
			if i%2 == 0 {
				key = []byte(fmt.Sprintf("SKU-%d", i))
			}
			want, err := sp.Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder(key)}, n)
			if err != nil {
				t.Fatal(err)
			}
			if got := kp.Partition(&kgo.Record{Key: key}, int(n)); int32(got) != want {
				t.Fatalf("key %q n=%d: franz-go partition %d, sarama %d", key, n, got, want)
			}
			if got := topology.PartitionFor(key, n); got != want {
				t.Fatalf("key %q n=%d: PartitionFor %d, sarama %d", key, n, got, want)
			}
		}
	}
}

func TestGroupInputs(t *testing.T) {
	got := topology.GroupInputs()
	want := map[goka.Group][]string{
		topology.OrdersGroup:    {string(topology.OrdersSubmitted), string(topology.InventoryResults)},
		topology.InventoryGroup: {string(topology.InventoryCommands)},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GroupInputs() = %v, want %v", got, want)
	}
}

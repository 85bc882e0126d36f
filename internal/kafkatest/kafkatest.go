// Package kafkatest starts the in-process Kafka cluster (franz-go's kfake)
// that `orderpipe run` uses by default and that the fast test suites run on.
package kafkatest

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Cluster is an in-process, in-memory Kafka cluster. Nothing it stores
// survives Close.
type Cluster struct {
	c *kfake.Cluster
}

// Start starts a one-broker cluster listening on a free loopback port. It
// only speaks the protocol versions Kafka 4.0 speaks: kfake also accepts
// versions that real brokers refuse, which would hide a misconfigured client.
func Start(opts ...kfake.Opt) (*Cluster, error) {
	base := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.MaxVersions(kversion.V4_0_0()),
	}
	c, err := kfake.NewCluster(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("start in-process kafka: %w", err)
	}
	return &Cluster{c: c}, nil
}

// Brokers returns the seed addresses.
func (c *Cluster) Brokers() []string { return c.c.ListenAddrs() }

// Kfake exposes the cluster for fault injection in tests.
func (c *Cluster) Kfake() *kfake.Cluster { return c.c }

// Close stops the cluster.
func (c *Cluster) Close() { c.c.Close() }

// EnsureTopics creates the topology's topics on brokers.
func EnsureTopics(ctx context.Context, brokers []string, cfg topology.Config, log *slog.Logger) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return cfg.Ensure(ctx, kadm.NewClient(cl), log)
}

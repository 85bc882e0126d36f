// Package membroker starts the in-process Kafka cluster (franz-go's
// kfake) that `orderpipe run` uses when no --brokers are given, and that
// the fast test suites run on. It keeps its data in memory, or, started
// with kfake.DataDir (`run --data-dir`), in a directory it reloads at the
// next start. It is in the binary; the helpers that
// only tests need live in internal/kafkatest.
package membroker

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Cluster is an in-process Kafka cluster. Nothing it stores survives Close,
// unless it was started with kfake.DataDir: then its topics (with their
// ids), logs and group offsets are written to that directory as they
// change, and Close writes the rest.
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

// Kfake exposes the cluster, for fault injection.
func (c *Cluster) Kfake() *kfake.Cluster { return c.c }

// Close stops the cluster.
func (c *Cluster) Close() { c.c.Close() }

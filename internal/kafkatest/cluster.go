package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Cluster is a KRaft cluster of real brokers on loopback, started by
// scripts/kafka.sh: every node is broker and controller, and the
// controllers are one static quorum, so that any one node can be killed and
// the others still elect a controller and partition leaders. With three
// nodes, topics created without a replication factor and the internal
// topics have 3 replicas and min.insync.replicas 2.
type Cluster struct {
	// Nodes are the brokers; Nodes[i] has node id i+1.
	Nodes []*Kafka
}

// StartCluster starts n nodes with their data under dir/node-<id>, on free
// loopback ports, all at once (a node serves only once a majority of the
// quorum runs), and waits until every one serves. The jars are shared with
// every other broker of the repository. On an error, the nodes that started
// are stopped and their data deleted.
func StartCluster(ctx context.Context, dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("start a cluster of %d nodes: want at least 1", n)
	}
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	id, err := clusterID()
	if err != nil {
		return nil, err
	}
	voters := make([]string, n)
	for i := range n {
		voters[i] = fmt.Sprintf("%d@127.0.0.1:%d", i+1, ports[3*i+1])
	}
	c := &Cluster{}
	for i := range n {
		k, err := newKafka(filepath.Join(dir, fmt.Sprintf("node-%d", i+1)), ports[3*i], ports[3*i+1], ports[3*i+2],
			"KAFKA_NODE_ID="+strconv.Itoa(i+1), "KAFKA_VOTERS="+strings.Join(voters, ","), "KAFKA_CLUSTER_ID="+id)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, k)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := c.each(func(k *Kafka) error { return k.Start(ctx) }); err != nil {
		return nil, errors.Join(fmt.Errorf("start a cluster of %d: %w", n, err), c.Close())
	}
	return c, nil
}

// clusterID is a fresh KRaft cluster id: 16 random bytes in url-safe
// base64, never starting with '-' (Kafka's own ids do not: they would read
// as an option on a command line).
func clusterID() (string, error) {
	for {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("cluster id: %w", err)
		}
		if id := base64.RawURLEncoding.EncodeToString(b); id[0] != '-' {
			return id, nil
		}
	}
}

// Brokers returns every node's address, for seed brokers.
func (c *Cluster) Brokers() []string {
	var out []string
	for _, k := range c.Nodes {
		out = append(out, k.Brokers()...)
	}
	return out
}

// Node returns the node with the given node id (as kadm reports leaders
// and replicas), or nil.
func (c *Cluster) Node(id int32) *Kafka {
	if id < 1 || int(id) > len(c.Nodes) {
		return nil
	}
	return c.Nodes[id-1]
}

// Close stops every node at once and deletes their data. At once: stopped
// one by one, the last nodes would have no quorum for their controlled
// shutdown.
func (c *Cluster) Close() error {
	return c.each((*Kafka).Close)
}

// each runs f on every node concurrently and joins the errors.
func (c *Cluster) each(f func(*Kafka) error) error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, k := range c.Nodes {
		wg.Go(func() {
			if err := f(k); err != nil {
				errs[i] = fmt.Errorf("node %d: %w", i+1, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ClusterFor starts a fresh cluster of n nodes for tb, its data in tb's
// temporary directory, and stops it when tb ends.
func ClusterFor(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c, err := StartCluster(tb.Context(), tb.TempDir(), n)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Error(err)
		}
	})
	return c
}

// ServerLog is the path of the broker's own log, which scripts/kafka.sh
// keeps under its KAFKA_HOME_DIR (the previous start's in ServerLog()+".prev").
func (k *Kafka) ServerLog() string { return filepath.Join(k.dir, "run", "server.log") }

package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ResolveReplication asks the cluster how many brokers it has and resolves
// the configured replication factor.
func (c Config) ResolveReplication(ctx context.Context, adm *kadm.Client) (int16, error) {
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return 0, fmt.Errorf("list brokers: %w", err)
	}
	return c.ReplicationFor(len(brokers)), nil
}

// Ensure creates the topics that are missing, with their partitions,
// replication and configs, then checks every topic against the topology (see
// CheckExisting). It is what `orderpipe topics` runs, and what every role
// runs before it starts, so a role never runs on topics that would break a
// guarantee. Existing topics are never altered: a mismatch is an error for an
// operator to resolve.
func (c Config) Ensure(ctx context.Context, adm *kadm.Client, log *slog.Logger) error {
	if err := c.Validate(); err != nil {
		return err
	}
	rf, err := c.ResolveReplication(ctx, adm)
	if err != nil {
		return err
	}
	// Create first and ask second: franz-go caches metadata (including "unknown
	// topic") for MetadataMinAge, so a describe before the create would make
	// the describe after it stale.
	for _, spec := range c.Topics(rf) {
		configs := make(map[string]*string, len(spec.Configs))
		for k, v := range spec.Configs {
			configs[k] = kadm.StringPtr(v)
		}
		_, err := adm.CreateTopic(ctx, spec.Partitions, rf, configs, spec.Name)
		switch {
		case errors.Is(err, kerr.TopicAlreadyExists):
			continue
		case err != nil:
			return fmt.Errorf("create topic %s: %w", spec.Name, err)
		}
		log.Info("created topic", "topic", spec.Name, "partitions", spec.Partitions, "replication", rf, "cleanup.policy", spec.Configs["cleanup.policy"])
	}
	// A real broker may answer metadata before a new topic reached it, and
	// franz-go caches metadata for a few seconds: retry until every topic
	// shows up or the deadline passes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		existing, err := c.Describe(ctx, adm)
		if err != nil {
			return err
		}
		err = c.CheckExisting(rf, existing)
		if err == nil {
			return nil
		}
		if len(existing) == len(c.Topics(rf)) || time.Now().After(deadline) {
			return fmt.Errorf("topics do not match the topology: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Describe reads partitions, replication and cleanup policy of the
// topology's topics that exist on the cluster.
func (c Config) Describe(ctx context.Context, adm *kadm.Client) (map[string]ExistingTopic, error) {
	names := make([]string, 0, 6)
	for _, s := range c.Topics(1) {
		names = append(names, s.Name)
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	out := make(map[string]ExistingTopic, len(names))
	var present []string
	for _, name := range names {
		d, ok := details[name]
		if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			continue
		}
		if d.Err != nil {
			return nil, fmt.Errorf("describe topic %s: %w", name, d.Err)
		}
		rf := int16(0)
		for _, p := range d.Partitions {
			if n := int16(len(p.Replicas)); rf == 0 || n < rf {
				rf = n
			}
		}
		out[name] = ExistingTopic{Partitions: int32(len(d.Partitions)), ReplicationFactor: rf}
		present = append(present, name)
	}
	if len(present) == 0 {
		return out, nil
	}
	configs, err := adm.DescribeTopicConfigs(ctx, present...)
	if err != nil {
		return nil, fmt.Errorf("describe topic configs: %w", err)
	}
	for _, rc := range configs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describe configs of %s: %w", rc.Name, rc.Err)
		}
		t := out[rc.Name]
		for _, cfg := range rc.Configs {
			if cfg.Key == "cleanup.policy" && cfg.Value != nil {
				t.CleanupPolicy = *cfg.Value
			}
		}
		out[rc.Name] = t
	}
	return out, nil
}

// Check verifies that the topology's topics exist with the right
// partitions, replication and cleanup policies, without creating anything.
// Roles run it at start-up and refuse to start on a mismatch.
func (c Config) Check(ctx context.Context, adm *kadm.Client) error {
	if err := c.Validate(); err != nil {
		return err
	}
	rf, err := c.ResolveReplication(ctx, adm)
	if err != nil {
		return err
	}
	existing, err := c.Describe(ctx, adm)
	if err != nil {
		return err
	}
	if err := c.CheckExisting(rf, existing); err != nil {
		return fmt.Errorf("topics do not match the topology: %w", err)
	}
	return nil
}

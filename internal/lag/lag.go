// Package lag measures how far orderpipe's consumers are behind their
// topics, with kadm: the committed-offset lag of every consumer group
// (orderpipe_consumer_lag_records{group,topic,partition}) and the lag of
// the edge's views (orderpipe_view_lag_records{view,partition}). A
// Collector refreshes both on an interval in Run and serves the last
// reading as Prometheus metrics and as a readiness check, so that neither
// a scrape nor a /readyz request waits for the brokers.
package lag

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// View is a table view whose lag is measured: Topic is the table topic it
// reads, Next the offset of the next record it will apply, per partition
// (a partition it does not hold is left out).
type View struct {
	Name  string
	Topic string
	Next  func(ctx context.Context) map[int32]int64
}

// Config configures a Collector.
type Config struct {
	// Groups are the consumer groups whose lag is measured. Required
	// unless Views are set.
	Groups []string
	// Views are the views whose lag is measured. Optional.
	Views []View
	// Interval between two readings. Default 2s.
	Interval time.Duration
	// Timeout bounds one reading. Default Interval.
	Timeout time.Duration
}

// DefaultInterval is Config.Interval's default.
const DefaultInterval = 2 * time.Second

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case len(c.Groups) == 0 && len(c.Views) == 0:
		return errors.New("lag: no groups and no views")
	case c.Interval < 0 || c.Timeout < 0:
		return fmt.Errorf("lag: interval and timeout must be >= 0 (0 = default), got %s, %s", c.Interval, c.Timeout)
	}
	for _, v := range c.Views {
		if v.Name == "" || v.Topic == "" || v.Next == nil {
			return fmt.Errorf("lag: view %q: want a name, a topic and a Next func", v.Name)
		}
	}
	return nil
}

// Collector is a prometheus.Collector of the lags, refreshed by Run. Its
// methods are safe for concurrent use; Run is its only goroutine.
type Collector struct {
	cfg      Config
	adm      *kadm.Client
	log      *slog.Logger
	groupLag *prometheus.Desc
	viewLag  *prometheus.Desc
	readOK   *prometheus.Desc

	mu       sync.Mutex
	groups   map[string]map[string]map[int32]int64 // group -> topic -> partition -> lag
	views    map[string]map[int32]int64            // view -> partition -> lag
	viewsErr error                                 // why the last view reading failed
	readErr  bool                                  // the last reading failed, in part or whole
}

// New returns a collector that reads through adm, which stays the
// caller's: it must stay open while Run runs.
func New(cfg Config, adm *kadm.Client, log *slog.Logger) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if adm == nil {
		return nil, errors.New("lag: no admin client")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = cfg.Interval
	}
	if log == nil {
		log = slog.Default()
	}
	return &Collector{
		cfg: cfg, adm: adm, log: log,
		groupLag: prometheus.NewDesc("orderpipe_consumer_lag_records",
			"Records between a consumer group's committed offset and the end of the partition, read with kadm every few seconds.",
			[]string{"group", "topic", "partition"}, nil),
		viewLag: prometheus.NewDesc("orderpipe_view_lag_records",
			"Records of its table topic a view of this process has not applied yet, by view and partition.",
			[]string{"view", "partition"}, nil),
		readOK: prometheus.NewDesc("orderpipe_lag_reading_ok",
			"1 when the last lag reading succeeded; 0 when it failed (a broker away), and the lag series it could not read are left out rather than shown stale.",
			nil, nil),
	}, nil
}

// Run reads the lags every Interval until ctx ends, then returns nil. A
// failed reading is logged once per outage at warn level and leaves the
// previous values in place.
func (c *Collector) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		err := c.Refresh(rctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			c.log.Warn("cannot read consumer lag", "err", err)
		case err == nil && failing:
			c.log.Info("consumer lag is read again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh takes one reading now. Run calls it; tests may too.
func (c *Collector) Refresh(ctx context.Context) error {
	var errs []error
	groups, err := c.readGroups(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	views, verr := c.readViews(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	// A reading that failed drops the old values: a lag frozen at its
	// last value while the broker is away would read as "caught up".
	c.groups = groups
	c.views = views
	if verr != nil {
		c.views = nil
		errs = append(errs, verr)
	}
	c.viewsErr = verr
	c.readErr = len(errs) > 0
	return errors.Join(errs...)
}

func (c *Collector) readGroups(ctx context.Context) (map[string]map[string]map[int32]int64, error) {
	if len(c.cfg.Groups) == 0 {
		return nil, nil
	}
	lags, err := c.adm.Lag(ctx, c.cfg.Groups...)
	if err != nil {
		return nil, fmt.Errorf("lag of groups %v: %w", c.cfg.Groups, err)
	}
	out := map[string]map[string]map[int32]int64{}
	var errs []error
	for _, l := range lags {
		if errors.Is(l.Error(), kerr.GroupIDNotFound) {
			continue // it has not committed yet: no lag to report
		}
		if err := l.Error(); err != nil {
			errs = append(errs, fmt.Errorf("lag of group %s: %w", l.Group, err))
			continue
		}
		topics := map[string]map[int32]int64{}
		for topic, parts := range l.Lag {
			for p, ml := range parts {
				if ml.Err != nil || ml.Lag < 0 {
					continue // no commit or no end offset for it yet
				}
				if topics[topic] == nil {
					topics[topic] = map[int32]int64{}
				}
				topics[topic][p] = ml.Lag
			}
		}
		out[l.Group] = topics
	}
	return out, errors.Join(errs...)
}

func (c *Collector) readViews(ctx context.Context) (map[string]map[int32]int64, error) {
	if len(c.cfg.Views) == 0 {
		return nil, nil
	}
	topics := make([]string, 0, len(c.cfg.Views))
	for _, v := range c.cfg.Views {
		topics = append(topics, v.Topic)
	}
	ends, err := c.adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets of %v: %w", topics, err)
	}
	out := map[string]map[int32]int64{}
	for _, v := range c.cfg.Views {
		next := v.Next(ctx)
		parts := map[int32]int64{}
		for p, n := range next {
			end, ok := ends.Lookup(v.Topic, p)
			if !ok {
				continue
			}
			parts[p] = max(0, end.Offset-n)
		}
		out[v.Name] = parts
	}
	return out, nil
}

// GroupLag returns the last reading of group's lag: topic -> partition ->
// records.
func (c *Collector) GroupLag(group string) map[string]map[int32]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[int32]int64{}
	for t, parts := range c.groups[group] {
		out[t] = maps.Clone(parts)
	}
	return out
}

// ViewLag returns the last reading of view's lag: partition -> records.
func (c *Collector) ViewLag(view string) map[int32]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.views[view])
}

// ViewsCheck returns a readiness check that fails while a view is more
// than limit records behind on a partition, or its lag cannot be read.
// Before the first reading it passes: the views' own checks say whether
// they have recovered.
func (c *Collector) ViewsCheck(limit int64) func() error {
	return func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.viewsErr != nil {
			return fmt.Errorf("view lag unknown: %w", c.viewsErr)
		}
		var behind []string
		for _, name := range slices.Sorted(maps.Keys(c.views)) {
			parts := c.views[name]
			var worst int64 = -1
			var at int32
			for p, n := range parts {
				if n > worst || (n == worst && p < at) {
					worst, at = n, p
				}
			}
			if worst > limit {
				behind = append(behind, fmt.Sprintf("%s view is %d records behind on partition %d", name, worst, at))
			}
		}
		if behind != nil {
			return fmt.Errorf("%s (limit %d): reads may be stale", strings.Join(behind, "; "), limit)
		}
		return nil
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.groupLag
	ch <- c.viewLag
	ch <- c.readOK
}

// Collect implements prometheus.Collector with the last reading.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for g, topics := range c.groups {
		for t, parts := range topics {
			for p, n := range parts {
				ch <- prometheus.MustNewConstMetric(c.groupLag, prometheus.GaugeValue, float64(n), g, t, strconv.Itoa(int(p)))
			}
		}
	}
	for v, parts := range c.views {
		for p, n := range parts {
			ch <- prometheus.MustNewConstMetric(c.viewLag, prometheus.GaugeValue, float64(n), v, strconv.Itoa(int(p)))
		}
	}
	ok := 1.0
	if c.readErr {
		ok = 0
	}
	ch <- prometheus.MustNewConstMetric(c.readOK, prometheus.GaugeValue, ok)
}

package processors

import (
	"context"
	"regexp"
	"strings"
	"time"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/internal/stages"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/prometheus/client_golang/prometheus"
	gometrics "github.com/rcrowley/go-metrics"
)

// metrics implements the Metrics interfaces of both processors.
type metrics struct {
	final         *prometheus.CounterVec
	replays       prometheus.Counter
	commands      *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	stateBehind   prometheus.Counter
	acceptToFinal prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		final: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderpipe_orders_final_total", Help: "Orders that reached a final status.",
		}, []string{"status"}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderpipe_orders_replays_total", Help: "Orders inputs whose effect was already applied (replays, duplicates).",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderpipe_inventory_commands_total", Help: "Inventory commands by kind; replay=true when skipped as already applied.",
		}, []string{"kind", "replay"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderpipe_processor_dead_letters_total", Help: "Records a processor sent to the dead-letter topic.",
		}, []string{"group"}),
		stateBehind: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderpipe_inventory_state_behind_total",
			Help: "Commits that named a hold above the SKU state's LastOffset: the inventory state lost acknowledged writes. Must stay 0.",
		}),
		acceptToFinal: stages.Histogram(stages.AcceptToFinal),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.final, m.replays, m.commands, m.deadLetters, m.stateBehind, m.acceptToFinal} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

type ordersMetrics struct{ *metrics }

// Final counts st's final status and observes its accept-to-final time
// from its own timestamps (the edge's accept, the processor's final write),
// so that a replay, which reaches Final no more, observes nothing twice.
func (m ordersMetrics) Final(st *saga.OrderState) {
	m.final.WithLabelValues(st.Status.String()).Inc()
	if !st.CreatedAt.IsZero() && !st.UpdatedAt.IsZero() {
		m.acceptToFinal.Observe(max(0, st.UpdatedAt.Sub(st.CreatedAt)).Seconds())
	}
}
func (m ordersMetrics) Replay()     { m.replays.Inc() }
func (m ordersMetrics) DeadLetter() { m.deadLetters.WithLabelValues("orders").Inc() }

type inventoryMetrics struct{ *metrics }

func (m inventoryMetrics) Command(kind saga.CommandKind, replay bool) {
	r := "false"
	if replay {
		r = "true"
	}
	m.commands.WithLabelValues(kind.String(), r).Inc()
}
func (m inventoryMetrics) DeadLetter()  { m.deadLetters.WithLabelValues("inventory").Inc() }
func (m inventoryMetrics) StateBehind() { m.stateBehind.Inc() }

// SaramaCollector exports a Sarama go-metrics registry (what
// sarama.Config.MetricRegistry collects: Config.MetricRegistry here) as
// Prometheus metrics named orderpipe_sarama_*, walked at scrape time, with
// the labels client (the given name), broker and topic (from Sarama's
// "-for-broker-N" and "-for-topic-T" suffixes, empty on the aggregates):
// meters are counters (record-send-rate: orderpipe_sarama_record_send_total),
// histograms summaries with quantiles, counters and gauges gauges.
//
// Written here because no go-metrics bridge resolves from the module proxy
// (github.com/deathowl/go-metrics-prometheus is refused, and it copies the
// registry into Prometheus gauges from a goroutine on a timer instead of
// reading it when scraped); it is one walk of the registry per scrape.
func SaramaCollector(client string, reg gometrics.Registry) prometheus.Collector {
	return &saramaCollector{client: client, reg: reg}
}

type saramaCollector struct {
	client string
	reg    gometrics.Registry
}

// saramaName splits Sarama's metric names: base, broker, topic.
var saramaName = regexp.MustCompile(`^(.*?)(?:-for-broker-(-?\d+))?(?:-for-topic-(.+))?$`)

var saramaQuantiles = []float64{0.5, 0.75, 0.95, 0.99}

// Describe sends nothing: the metrics come and go with Sarama's brokers
// and topics, so the collector is unchecked.
func (c *saramaCollector) Describe(chan<- *prometheus.Desc) {}

func (c *saramaCollector) Collect(ch chan<- prometheus.Metric) {
	labels := []string{"client", "broker", "topic"}
	c.reg.Each(func(name string, v any) {
		m := saramaName.FindStringSubmatch(name)
		if m == nil {
			return
		}
		base := "orderpipe_sarama_" + strings.NewReplacer("-", "_", ".", "_").Replace(m[1])
		lv := []string{c.client, m[2], m[3]}
		help := "Sarama metric " + m[1] + "."
		switch s := v.(type) {
		case gometrics.Meter:
			d := prometheus.NewDesc(strings.TrimSuffix(base, "_rate")+"_total", help+" (the meter's count)", labels, nil)
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(s.Snapshot().Count()), lv...)
		case gometrics.Histogram:
			snap := s.Snapshot()
			qs := map[float64]float64{}
			for i, v := range snap.Percentiles(saramaQuantiles) {
				qs[saramaQuantiles[i]] = v
			}
			d := prometheus.NewDesc(base, help+" (a sampled histogram)", labels, nil)
			ch <- prometheus.MustNewConstSummary(d, uint64(snap.Count()), float64(snap.Sum()), qs, lv...)
		case gometrics.Counter:
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(base, help, labels, nil), prometheus.GaugeValue, float64(s.Snapshot().Count()), lv...)
		case gometrics.Gauge:
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(base, help, labels, nil), prometheus.GaugeValue, float64(s.Snapshot().Value()), lv...)
		case gometrics.GaugeFloat64:
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(base, help, labels, nil), prometheus.GaugeValue, s.Snapshot().Value(), lv...)
		}
	})
}

// statsTimeout bounds reading Goka's stats at scrape time.
const statsTimeout = time.Second

// partitionStates are Goka's partition states as label values.
var partitionStates = map[goka.PartitionStatus]string{
	goka.PartitionStopped:      "stopped",
	goka.PartitionInitializing: "initializing",
	goka.PartitionConnecting:   "connecting",
	goka.PartitionRecovering:   "recovering",
	goka.PartitionPreparing:    "preparing",
	goka.PartitionRunning:      "running",
}

// gokaCollector exports the stats of the groups' running processors
// (Processor.Stats), read at scrape time: records consumed and emitted by
// topic, table writes, and partitions by state, summed over the partitions
// this process holds. A processor rebuilt after a failure starts from 0.
type gokaCollector struct {
	groups                         []*Group
	input, output, writes, partsBy *prometheus.Desc
}

func newGokaCollector(groups ...*Group) *gokaCollector {
	return &gokaCollector{
		groups: groups,
		input: prometheus.NewDesc("orderpipe_goka_input_records_total",
			"Records a Goka processor of this process consumed, by group and topic (Goka's processor stats).", []string{"group", "topic"}, nil),
		output: prometheus.NewDesc("orderpipe_goka_output_records_total",
			"Records a Goka processor of this process emitted, by group and topic (Goka's processor stats).", []string{"group", "topic"}, nil),
		writes: prometheus.NewDesc("orderpipe_goka_table_writes_total",
			"Writes of a Goka processor of this process to its group table (Goka's processor stats).", []string{"group"}, nil),
		partsBy: prometheus.NewDesc("orderpipe_goka_partitions",
			"Partitions of a Goka group's table held by this process, by state (recovering, running, ...).", []string{"group", "state"}, nil),
	}
}

func (c *gokaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.input, c.output, c.writes, c.partsBy} {
		ch <- d
	}
}

func (c *gokaCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.groups {
		p := g.current.Load()
		if p == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
		st := p.StatsWithContext(ctx)
		cancel()
		in, out := map[string]uint{}, map[string]uint{}
		var writes uint
		states := map[goka.PartitionStatus]int{}
		for _, pp := range st.Group {
			for t, s := range pp.Input {
				in[t] += s.Count
			}
			for t, s := range pp.Output {
				out[t] += s.Count
			}
			if pp.TableStats != nil {
				writes += pp.TableStats.Writes.Count
				states[pp.TableStats.Status]++
			}
		}
		name := g.Name()
		for t, n := range in {
			ch <- prometheus.MustNewConstMetric(c.input, prometheus.CounterValue, float64(n), name, t)
		}
		for t, n := range out {
			ch <- prometheus.MustNewConstMetric(c.output, prometheus.CounterValue, float64(n), name, t)
		}
		ch <- prometheus.MustNewConstMetric(c.writes, prometheus.CounterValue, float64(writes), name)
		for s, label := range partitionStates {
			ch <- prometheus.MustNewConstMetric(c.partsBy, prometheus.GaugeValue, float64(states[s]), name, label)
		}
	}
}

// ViewCollector exports the stats of a view (View.Stats), read at scrape
// time from current (nil while there is none): records applied and
// partitions by state, as orderpipe_goka_view_records_total{view} and
// orderpipe_goka_view_partitions{view,state}. name is the view label,
// distinct for each view of a registry.
func ViewCollector(name string, current func() *goka.View) prometheus.Collector {
	view := prometheus.Labels{"view": name}
	return &viewCollector{
		current: current,
		records: prometheus.NewDesc("orderpipe_goka_view_records_total",
			"Records a Goka view of this process applied since it started (Goka's view stats).", nil, view),
		partsBy: prometheus.NewDesc("orderpipe_goka_view_partitions",
			"Partitions of a Goka view of this process, by state (recovering, running, ...).", []string{"state"}, view),
	}
}

type viewCollector struct {
	current          func() *goka.View
	records, partsBy *prometheus.Desc
}

func (c *viewCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.records
	ch <- c.partsBy
}

func (c *viewCollector) Collect(ch chan<- prometheus.Metric) {
	v := c.current()
	if v == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	st := v.Stats(ctx)
	cancel()
	var n uint
	states := map[goka.PartitionStatus]int{}
	for _, ts := range st.Partitions {
		n += ts.Input.Count
		states[ts.Status]++
	}
	ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(n))
	for s, label := range partitionStates {
		ch <- prometheus.MustNewConstMetric(c.partsBy, prometheus.GaugeValue, float64(states[s]), label)
	}
}

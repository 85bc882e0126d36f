package processors

import (
	"github.com/orderpipe/orderpipe/saga"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics implements the Metrics interfaces of both processors.
type metrics struct {
	final       *prometheus.CounterVec
	replays     prometheus.Counter
	commands    *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
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
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.final, m.replays, m.commands, m.deadLetters} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

type ordersMetrics struct{ *metrics }

func (m ordersMetrics) Final(s saga.Status) { m.final.WithLabelValues(s.String()).Inc() }
func (m ordersMetrics) Replay()             { m.replays.Inc() }
func (m ordersMetrics) DeadLetter()         { m.deadLetters.WithLabelValues("orders").Inc() }

type inventoryMetrics struct{ *metrics }

func (m inventoryMetrics) Command(kind saga.CommandKind, replay bool) {
	r := "false"
	if replay {
		r = "true"
	}
	m.commands.WithLabelValues(kind.String(), r).Inc()
}
func (m inventoryMetrics) DeadLetter() { m.deadLetters.WithLabelValues("inventory").Inc() }

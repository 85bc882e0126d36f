// Package stages names the latency histogram of the pipeline's stages,
// orderpipe_stage_latency_seconds{stage}, which more than one role
// observes: each registers the series of its own stage, and they share one
// metric family in a process that runs several roles.
package stages

import "github.com/prometheus/client_golang/prometheus"

// The stages.
const (
	// AcceptToFinal is from the edge's accept (the order's CreatedAt) to
	// the final state (its UpdatedAt), observed by the orders processor
	// once per order, when it writes the final state.
	AcceptToFinal = "accept_to_final"
	// FinalToStored is from the final state's record timestamp in the
	// orders table to the sink's commit of the row to Postgres.
	FinalToStored = "final_to_stored"
)

// Histogram returns the histogram of stage, unregistered. From 1ms to
// ~65s: a stage takes milliseconds when idle and seconds under overload
// or while Postgres is away.
func Histogram(stage string) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "orderpipe_stage_latency_seconds",
		Help:        "Time an order spends in a stage of the pipeline, from record timestamps: accept_to_final (edge accept to the orders processor's final state), final_to_stored (final state record to its commit in Postgres).",
		ConstLabels: prometheus.Labels{"stage": stage},
		Buckets:     prometheus.ExponentialBuckets(0.001, 2, 17),
	})
}

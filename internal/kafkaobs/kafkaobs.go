// Package kafkaobs instruments orderpipe's franz-go clients through
// franz-go's own plugins: kprom for metrics and kslog for logs. Every
// client (the edge's producer, the sink, the admin clients) gets the same
// options, so their metrics share one set of names, told apart by the
// client label.
package kafkaobs

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Namespace prefixes the kprom metrics: orderpipe_produce_records_total,
// orderpipe_fetch_records_total, orderpipe_connects_total, ...
const Namespace = "orderpipe"

// Opts returns the options that instrument the franz-go client named
// client ("edge", "sink", "admin"):
//   - when reg is not nil, kprom's metrics under Namespace with the const
//     label client=<client>, by node and topic, with records, batches and
//     uncompressed bytes, and the end-to-end request duration histogram.
//     kprom registers them when the client is created and unregisters them
//     when it is closed, so two clients of one name must not be open in one
//     registry at once (kprom panics on the duplicate);
//   - kslog logging to log, with franz-go's info level (joins, assignments,
//     metadata: chatter) lowered to debug; warnings and errors keep theirs.
func Opts(reg prometheus.Registerer, client string, log *slog.Logger) []kgo.Opt {
	opts := []kgo.Opt{kgo.WithLogger(kslog.New(slog.New(quiet{log.With("source", "franz-go").Handler()})))}
	if reg != nil {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics(Namespace,
			kprom.Registerer(reg),
			kprom.WithStaticLabel(prometheus.Labels{"client": client}),
			kprom.FetchAndProduceDetail(kprom.ByNode, kprom.ByTopic, kprom.Records, kprom.Batches, kprom.UncompressedBytes),
			kprom.Histograms(kprom.RequestDurationE2E),
		)))
	}
	return opts
}

// quiet is a slog.Handler that lowers info records to debug.
type quiet struct{ slog.Handler }

func (q quiet) Enabled(ctx context.Context, l slog.Level) bool {
	return q.Handler.Enabled(ctx, lower(l))
}

func (q quiet) Handle(ctx context.Context, r slog.Record) error {
	r.Level = lower(r.Level)
	return q.Handler.Handle(ctx, r)
}

func (q quiet) WithAttrs(as []slog.Attr) slog.Handler { return quiet{q.Handler.WithAttrs(as)} }
func (q quiet) WithGroup(name string) slog.Handler    { return quiet{q.Handler.WithGroup(name)} }

func lower(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

package bench

import (
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// WriteAll writes every output of a run into dir, creating it: report.json
// (see Write), plot.svg (see Plot) and summary.md (see Summary). It stops at
// the first error.
func (r *Report) WriteAll(dir string) error {
	if _, err := r.Write(dir); err != nil {
		return fmt.Errorf("bench: results in %s: %w", dir, err)
	}
	if err := r.Plot(filepath.Join(dir, "plot.svg")); err != nil {
		return fmt.Errorf("bench: results in %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.md"), []byte(r.Summary()), 0o644); err != nil {
		return fmt.Errorf("bench: results in %s: write summary: %w", dir, err)
	}
	return nil
}

// Summary renders r as a short Markdown page: the machine and profile, the
// headline figures, then baselines, the ladder, cost per order, ratios and
// per-process usage. Rates are whole numbers with thousands separators,
// milliseconds and ratios have two decimals, and map-valued figures are
// listed in key order so that two runs diff cleanly.
func (r *Report) Summary() string {
	var b strings.Builder
	m := r.Machine

	fmt.Fprintf(&b, "# orderpipe bench: %s profile on %s\n\n", orUnknown(r.Profile), machineLine(m))
	fmt.Fprintf(&b, "Go %s, kernel %s; broker %s; Postgres %s.\n\n",
		orUnknown(m.Go), orUnknown(m.Kernel), orUnknown(m.Broker), orUnknown(m.Postgres))

	b.WriteString("## Headline\n\n")
	b.WriteString("| figure | value |\n|---|---:|\n")
	fmt.Fprintf(&b, "| max sustained edge rate | %s orders/s |\n", fmtRate(r.Edge.MaxSustainedRPS))
	fmt.Fprintf(&b, "| edge p50 / p99 / p99.9 | %s / %s / %s ms |\n", fmtMS(r.Edge.P50ms), fmtMS(r.Edge.P99ms), fmtMS(r.Edge.P999ms))
	fmt.Fprintf(&b, "| end-to-end final rate | %s orders/s |\n", fmtRate(r.E2E.OrdersPerS))
	fmt.Fprintf(&b, "| accept→final p50 / p99 | %s / %s ms |\n", fmtMS(r.E2E.P50ms), fmtMS(r.E2E.P99ms))
	fmt.Fprintf(&b, "| idle accept→final p50 / p99 | %s / %s ms |\n", fmtMS(r.E2E.IdleP50ms), fmtMS(r.E2E.IdleP99ms))
	fmt.Fprintf(&b, "| accept→stored p99 | %s ms |\n", fmtMS(r.E2E.StoredP99ms))
	fmt.Fprintf(&b, "| batch endpoint (50 orders a request) | %s orders/s accepted (%s of those sent), request p99 %s ms |\n", fmtRate(r.Edge.BatchOrdersPerS), fmtPercent(r.Edge.BatchAccepted), fmtMS(r.Edge.BatchP99ms))
	fmt.Fprintf(&b, "| sink rate | %s rows/s |\n\n", fmtRate(r.Sink.RowsPerS))

	bl := r.Baselines
	b.WriteString("## Baselines\n\n")
	b.WriteString("| baseline | rate |\n|---|---:|\n")
	fmt.Fprintf(&b, "| H_null: fasthttp 202, no produce | %s req/s |\n", fmtRate(bl.HNullRPS))
	fmt.Fprintf(&b, "| P_raw: franz-go produce | %s records/s |\n", fmtRate(bl.PRawRPS))
	fmt.Fprintf(&b, "| P_raw: franz-go consume | %s records/s |\n", fmtRate(bl.PRawConsumeRPS))
	fmt.Fprintf(&b, "| D_raw: pgx CopyFrom | %s rows/s |\n\n", fmtRate(bl.DRawRowsPerS))

	b.WriteString("## Ladder\n\n")
	if len(r.Steps) == 0 {
		b.WriteString("No steps recorded.\n\n")
	} else {
		b.WriteString("| offered/s | accepted/s | final/s | accepted | edge p50 ms | edge p99 ms | edge p99.9 ms | final p50 ms | final p99 ms | lag mid | lag end | CPU µs/order (broker) | fetch, produce /order | sustained |\n")
		b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|\n")
		for _, s := range r.Steps {
			var total float64
			for _, v := range s.CPUusPerOrder {
				total += v
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s, %s | %s |\n",
				fmtRate(s.OfferedRPS), fmtRate(s.AcceptedRPS), fmtRate(s.FinalRPS), fmtPercent(s.Accepted),
				fmtMS(s.EdgeP50ms), fmtMS(s.EdgeP99ms), fmtMS(s.EdgeP999ms), fmtMS(s.FinalP50ms), fmtMS(s.FinalP99ms),
				fmtCount(s.LagStart), fmtCount(s.LagEnd), fmtRate(total), fmtRate(s.CPUusPerOrder["broker"]),
				fmtRatio(s.FetchPerOrder), fmtRatio(s.ProducePerOrder), yesNo(s.Sustained))
		}
		b.WriteString("\n")
	}

	c := r.Cost
	b.WriteString("## Cost per order\n\n")
	fmt.Fprintf(&b, "- records per order: %s\n", fmtRatio(c.RecordsPerOrder))
	fmt.Fprintf(&b, "- broker requests per order: %s\n", fmtRatio(c.BrokerRequestsPerOrder))
	fmt.Fprintf(&b, "- records per produce request: %s\n", fmtRatio(c.RecordsPerProduce))
	fmt.Fprintf(&b, "- broker CPU per order: %s µs\n\n", fmtRatio(c.BrokerCPUusPerOrder))
	mapTable(&b, "topic", "records per order", c.RecordsByTopic, fmtRatio)
	mapTable(&b, "API", "requests per order", c.RequestsByAPI, fmtRatio)
	mapTable(&b, "process", "CPU µs per order", c.CPUusPerOrder, fmtRatio)

	x := r.Ratios
	b.WriteString("## Ratios\n\n")
	b.WriteString("| edge / H_null | e2e / broker bound | sink / D_raw |\n|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| %s | %s | %s |\n\n", fmtRatio(x.EdgeVsHNull), fmtRatio(x.E2EVsBrokerBound), fmtRatio(x.SinkVsDRaw))

	b.WriteString("## Processes\n\n")
	if len(r.Roles) == 0 {
		b.WriteString("No per-process figures recorded.\n\n")
	} else {
		b.WriteString("| role | CPU cores | max RSS MB |\n|---|---:|---:|\n")
		for _, u := range r.Roles {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", mdCell(u.Role), fmtRatio(u.CPUCores), fmtGrouped(u.MaxRSSMB, 1))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "Load generator: %s CPU cores over the ladder.\n", fmtRatio(r.LoadGenCPUCores))
	return b.String()
}

// mapTable writes m as a two-column table in key order, or says it is empty.
func mapTable(b *strings.Builder, key, value string, m map[string]float64, format func(float64) string) {
	if len(m) == 0 {
		fmt.Fprintf(b, "No %s by %s recorded.\n\n", value, key)
		return
	}
	fmt.Fprintf(b, "| %s | %s |\n|---|---:|\n", key, value)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(b, "| %s | %s |\n", mdCell(k), format(m[k]))
	}
	b.WriteString("\n")
}

func machineLine(m Machine) string {
	var parts []string
	if m.CPUs > 0 {
		parts = append(parts, fmt.Sprintf("%d CPUs", m.CPUs))
	}
	if m.CPUModel != "" {
		parts = append(parts, m.CPUModel)
	}
	if m.MemoryGiB > 0 {
		parts = append(parts, fmt.Sprintf("%d GiB", m.MemoryGiB))
	}
	if len(parts) == 0 {
		return "an unknown machine"
	}
	return strings.Join(parts, ", ")
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

// mdCell escapes the one character that would break a Markdown table row.
func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func fmtRate(v float64) string  { return fmtGrouped(v, 0) }
func fmtMS(v float64) string    { return fmtGrouped(v, 2) }
func fmtRatio(v float64) string { return fmtGrouped(v, 2) }
func fmtPercent(v float64) string {
	if !isFinite(v) {
		return "n/a"
	}
	return fmtGrouped(100*v, 1) + "%"
}
func fmtCount(v int64) string {
	s := strconv.FormatInt(v, 10)
	if v < 0 {
		return "-" + groupDigits(s[1:])
	}
	return groupDigits(s)
}

// fmtGrouped formats v with prec decimals and thousands separators, as
// 12,345.67; a value that rounds to zero has no minus sign, and NaN or ±Inf
// (a ratio over a zero baseline) is "n/a".
func fmtGrouped(v float64, prec int) string {
	if !isFinite(v) {
		return "n/a"
	}
	s := strconv.FormatFloat(math.Abs(v), 'f', prec, 64)
	whole, frac, hasFrac := strings.Cut(s, ".")
	out := groupDigits(whole)
	if hasFrac {
		out += "." + frac
	}
	if v < 0 && strings.Trim(s, "0.") != "" {
		out = "-" + out
	}
	return out
}

// groupDigits puts a comma between every three digits of an unsigned
// decimal integer, counting from the right.
func groupDigits(digits string) string {
	if len(digits) <= 3 {
		return digits
	}
	var b strings.Builder
	for i, d := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(d)
	}
	return b.String()
}

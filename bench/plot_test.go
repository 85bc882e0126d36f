package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeReport is a ladder that saturates at the third step, followed by a
// zero-valued step (a rung that produced nothing), so that the latency
// panel spans three decades and has zeros to leave out.
func fakeReport() *Report {
	return &Report{
		Machine: Machine{
			CPUs: 2, CPUModel: "Fake CPU @ 2.0GHz", MemoryGiB: 8,
			Go: "go1.26.8", Broker: "redpanda v25.1", Postgres: "17.4", Kernel: "6.8.0",
		},
		Profile: "quick",
		Baselines: Baselines{
			HNullRPS: 52340, PRawRPS: 181000, PRawConsumeRPS: 240500, DRawRowsPerS: 98000,
		},
		Edge: EdgeFig{MaxSustainedRPS: 1999, P50ms: 0.9, P99ms: 3.2, P999ms: 8.7},
		E2E:  E2EFig{OrdersPerS: 1994, P50ms: 14, P99ms: 48, IdleP50ms: 2.5, IdleP99ms: 6.25, StoredP99ms: 61.5},
		Sink: SinkFig{RowsPerS: 45678.9},
		Steps: []Step{
			{
				OfferedRPS: 1000, AcceptedRPS: 1000, FinalRPS: 998, Accepted: 1,
				EdgeP50ms: 0.8, EdgeP99ms: 2.1, EdgeP999ms: 4.5, FinalP50ms: 12, FinalP99ms: 35,
				LagStart: 10, LagEnd: 12, Sustained: true,
			},
			{
				OfferedRPS: 2000, AcceptedRPS: 1999, FinalRPS: 1994, Accepted: 0.999,
				EdgeP50ms: 0.9, EdgeP99ms: 3.2, EdgeP999ms: 8.7, FinalP50ms: 14, FinalP99ms: 48,
				LagStart: 40, LagEnd: 55, Sustained: true,
			},
			{
				OfferedRPS: 4000, AcceptedRPS: 3120, FinalRPS: 2875, Accepted: 0.78,
				EdgeP50ms: 45.5, EdgeP99ms: 950, EdgeP999ms: 2500, FinalP50ms: 1800, FinalP99ms: 4200,
				LagStart: 15000, LagEnd: 48210,
			},
			{},
		},
		Cost: Cost{
			RecordsPerOrder:        4,
			RecordsByTopic:         map[string]float64{"orders.placed": 1, "inventory.reserved": 1.5, "orders.final": 1.5},
			BrokerRequestsPerOrder: 0.42,
			RequestsByAPI:          map[string]float64{"Produce": 0.3, "Fetch": 0.1, "OffsetCommit": 0.02},
			RecordsPerProduce:      13.33,
			BrokerCPUusPerOrder:    85.2,
			CPUusPerOrder:          map[string]float64{"sink": 40, "ingest": 120.5, "broker": 85.2},
		},
		Ratios:          Ratios{EdgeVsHNull: 0.0382, E2EVsBrokerBound: 0.044, SinkVsDRaw: 0.466},
		Roles:           []RoleUsage{{Role: "ingest", CPUCores: 0.61, MaxRSSMB: 48.2}, {Role: "sink", CPUCores: 0.2, MaxRSSMB: 1536}},
		LoadGenCPUCores: 0.35,
	}
}

func TestWriteAll(t *testing.T) {
	dir := t.TempDir()
	if err := fakeReport().WriteAll(dir); err != nil {
		t.Fatalf("WriteAll: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "report.json")); err != nil {
		t.Errorf("report.json: %v", err)
	}

	svg := checkSVG(t, filepath.Join(dir, "plot.svg"))
	for _, want := range []string{
		"orderpipe ladder: redpanda v25.1, quick profile",
		"rates vs offered",
		"latency vs offered (log y, zeros omitted)", // 0.8 to 4,200 ms, and a zero step
	} {
		if !strings.Contains(svg, want) {
			t.Errorf("plot.svg: got no %q", want)
		}
	}

	b, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	if err != nil {
		t.Fatalf("summary.md: %v", err)
	}
	md := string(b)
	for _, tc := range []struct{ name, want string }{
		{"header", "# orderpipe bench: quick profile on 2 CPUs, Fake CPU @ 2.0GHz, 8 GiB\n"},
		{"step 1", "| 1,000 | 1,000 | 998 | 100.0% | 0.80 | 2.10 | 4.50 | 12.00 | 35.00 | 10 | 12 | 0 (0) | 0.00, 0.00 | yes |"},
		{"step 2", "| 2,000 | 1,999 | 1,994 | 99.9% | 0.90 | 3.20 | 8.70 | 14.00 | 48.00 | 40 | 55 | 0 (0) | 0.00, 0.00 | yes |"},
		{"step 3", "| 4,000 | 3,120 | 2,875 | 78.0% | 45.50 | 950.00 | 2,500.00 | 1,800.00 | 4,200.00 | 15,000 | 48,210 | 0 (0) | 0.00, 0.00 | no |"},
		{"zero step", "| 0 | 0 | 0 | 0.0% | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0 | 0 | 0 (0) | 0.00, 0.00 | no |"},
		{"max sustained", "| max sustained edge rate | 1,999 orders/s |"},
		{"edge percentiles", "| edge p50 / p99 / p99.9 | 0.90 / 3.20 / 8.70 ms |"},
		{"e2e rate", "| end-to-end final rate | 1,994 orders/s |"},
		{"e2e p99", "| accept→final p50 / p99 | 14.00 / 48.00 ms |"},
		{"idle p99", "| idle accept→final p50 / p99 | 2.50 / 6.25 ms |"},
		{"sink rate", "| sink rate | 45,679 rows/s |"},
		{"baseline", "| H_null: fasthttp 202, no produce | 52,340 req/s |"},
		{"records per produce", "- records per produce request: 13.33\n"},
		{"ratios", "| 0.04 | 0.04 | 0.47 |"},
		{"role", "| sink | 0.20 | 1,536.0 |"},
		{"load generator", "Load generator: 0.35 CPU cores"},
	} {
		if !strings.Contains(md, tc.want) {
			t.Errorf("summary.md %s: got no %q in\n%s", tc.name, tc.want, md)
		}
	}

	// Map-valued figures are listed in key order.
	order := []string{"| inventory.reserved |", "| orders.final |", "| orders.placed |"}
	last := -1
	for _, k := range order {
		i := strings.Index(md, k)
		if i < last {
			t.Errorf("summary.md: got %q at %d, before the previous topic at %d; want key order %q", k, i, last, order)
		}
		last = i
	}
}

func TestPlotEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []Step
		title string // the latency panel title the case should pick
	}{
		{"no steps", nil, "latency vs offered"},
		{"one step", []Step{{OfferedRPS: 500, AcceptedRPS: 500, FinalRPS: 499, EdgeP50ms: 1, EdgeP99ms: 3, EdgeP999ms: 5, FinalP50ms: 10, FinalP99ms: 20}}, "latency vs offered"},
		{"one zero step", []Step{{}}, "latency vs offered"},
		{"zeros with wide span", []Step{{OfferedRPS: 100, EdgeP50ms: 0.1, FinalP99ms: 900}, {OfferedRPS: 200}}, "latency vs offered (log y, zeros omitted)"},
		{"wide span without zeros", []Step{{OfferedRPS: 100, EdgeP50ms: 0.1, EdgeP99ms: 1, EdgeP999ms: 2, FinalP50ms: 50, FinalP99ms: 900}}, "latency vs offered (log y)"},
		{"wide span only at a NaN offered rate", []Step{{OfferedRPS: math.NaN(), EdgeP50ms: 0.1, FinalP99ms: 900}, {OfferedRPS: 100, EdgeP50ms: 2}}, "latency vs offered"},
		{"non-finite values", []Step{{OfferedRPS: 100, AcceptedRPS: math.NaN(), EdgeP99ms: math.Inf(1)}, {OfferedRPS: math.NaN(), EdgeP50ms: 2}}, "latency vs offered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "plot.svg")
			r := &Report{Steps: tc.steps}
			if err := r.Plot(path); err != nil {
				t.Fatalf("Plot: %v", err)
			}
			svg := checkSVG(t, path)
			if want := ">" + tc.title + "</text>"; !strings.Contains(svg, want) {
				t.Errorf("latency panel: got no %q", want)
			}
		})
	}
}

func TestPlotRejectsOtherFormats(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plot.png")
	if err := fakeReport().Plot(path); err == nil {
		t.Errorf("Plot(%s): got nil error, want one", path)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Plot(%s): got stat error %v, want no file", path, err)
	}
}

func TestSummaryNumberFormat(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		prec int
		want string
	}{
		{0, 0, "0"},
		{999, 0, "999"},
		{1000, 0, "1,000"},
		{1234567.891, 0, "1,234,568"},
		{1234.5678, 2, "1,234.57"},
		{0.125, 2, "0.12"}, // round half to even
		{-1234.5, 1, "-1,234.5"},
		{-0.001, 2, "0.00"},
		{math.NaN(), 2, "n/a"},
		{math.Inf(-1), 0, "n/a"},
	} {
		if got := fmtGrouped(tc.v, tc.prec); got != tc.want {
			t.Errorf("fmtGrouped(%v, %d): got %q, want %q", tc.v, tc.prec, got, tc.want)
		}
	}
	for _, tc := range []struct {
		v    int64
		want string
	}{
		{0, "0"}, {123, "123"}, {48210, "48,210"}, {-1234567, "-1,234,567"},
	} {
		if got := fmtCount(tc.v); got != tc.want {
			t.Errorf("fmtCount(%d): got %q, want %q", tc.v, got, tc.want)
		}
	}
}

// checkSVG fails t unless path holds a complete, well-formed SVG document of
// more than 1 KB, and returns its text.
func checkSVG(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read plot: %v", err)
	}
	if len(b) <= 1024 {
		t.Errorf("%s: got %d bytes, want more than 1024", path, len(b))
	}
	head := bytes.TrimSpace(b)
	if !bytes.HasPrefix(head, []byte("<?xml")) && !bytes.HasPrefix(head, []byte("<svg")) {
		t.Errorf("%s: got start %q, want <?xml or <svg", path, head[:min(len(head), 20)])
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: not well-formed XML: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("%s: got root element %q, want svg", path, root)
	}
	return string(b)
}

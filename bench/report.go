package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Report is what `make bench` writes to bench/out/report.json: every
// figure of one run, measured on the same machine in the same run, so that
// the ratios between them mean something on a noisy, shared machine.
type Report struct {
	Machine   Machine   `json:"machine"`
	Profile   string    `json:"profile"` // quick or long
	Baselines Baselines `json:"baselines"`
	Edge      EdgeFig   `json:"edge"`
	E2E       E2EFig    `json:"e2e"`
	Sink      SinkFig   `json:"sink"`
	Cost      Cost      `json:"cost"`
	Ratios    Ratios    `json:"ratios"`
	// Steps is the ladder of offered rates, in the order run.
	Steps []Step `json:"steps"`
	// Roles are CPU and memory per process over the sustained step.
	Roles []RoleUsage `json:"roles"`
	// LoadGen is the load generator's own CPU over the ladder: the machine
	// has two cores, and what it takes is not available to the pipeline.
	LoadGenCPUCores float64 `json:"loadgen_cpu_cores"`
}

// Machine names where the figures come from.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemoryGiB int    `json:"memory_gib"`
	Go        string `json:"go"`
	Broker    string `json:"broker"`
	Postgres  string `json:"postgres"`
	Kernel    string `json:"kernel"`
}

// Baselines are the parts alone, each doing the least the pipeline must do.
type Baselines struct {
	// HNullRPS is a fasthttp server that answers 202 without producing,
	// driven by the same load generator.
	HNullRPS float64 `json:"h_null_rps"`
	// PRawRPS is franz-go producing the orders' records (acks=all,
	// idempotent) to the same broker, in records/s.
	PRawRPS float64 `json:"p_raw_rps"`
	// PRawConsumeRPS is one franz-go consumer reading them back.
	PRawConsumeRPS float64 `json:"p_raw_consume_rps"`
	// DRawRowsPerS is pgx CopyFrom of the sink's rows (orders and lines).
	DRawRowsPerS float64 `json:"d_raw_rows_per_s"`
}

// EdgeFig is the edge at the highest sustained step.
type EdgeFig struct {
	MaxSustainedRPS float64 `json:"max_sustained_rps"`
	P50ms           float64 `json:"p50_ms"`
	P99ms           float64 `json:"p99_ms"`
	P999ms          float64 `json:"p999_ms"`
	// BurstRPS is the edge's rate closed loop (64 connections), the
	// figure set against H_null, which is driven the same way.
	BurstRPS float64 `json:"burst_rps"`
	// BatchOrdersPerS is orders accepted per second through POST
	// /v1/orders:batch (50 orders a request, closed loop, 8 connections),
	// BatchAccepted the share of the orders sent that were accepted (the
	// rest were shed with 503 in the answer), BatchP99ms a request's p99.
	BatchOrdersPerS float64 `json:"batch_orders_per_s"`
	BatchAccepted   float64 `json:"batch_accepted_fraction"`
	BatchP99ms      float64 `json:"batch_p99_ms"`
}

// E2EFig is accept→final at the highest sustained step, and when idle.
type E2EFig struct {
	OrdersPerS float64 `json:"orders_per_s"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	IdleP50ms  float64 `json:"idle_p50_ms"`
	IdleP99ms  float64 `json:"idle_p99_ms"`
	// StoredP99ms is accept→row in Postgres at that step.
	StoredP99ms float64 `json:"stored_p99_ms"`
}

// SinkFig is the sink's rate, rows (orders and lines) written per second
// while it caught up on a backlog.
type SinkFig struct {
	RowsPerS float64 `json:"rows_per_s"`
}

// Cost is what one order costs the broker and the processes.
type Cost struct {
	RecordsPerOrder float64            `json:"records_per_order"`
	RecordsByTopic  map[string]float64 `json:"records_per_order_by_topic"`
	// BrokerRequestsPerOrder counts every client's requests (franz-go's
	// hooks and Sarama's per-API meters), by API.
	BrokerRequestsPerOrder float64            `json:"broker_requests_per_order"`
	RequestsByAPI          map[string]float64 `json:"broker_requests_per_order_by_api"`
	RecordsPerProduce      float64            `json:"records_per_produce_request"`
	BrokerCPUusPerOrder    float64            `json:"broker_cpu_us_per_order"`
	// CPUusPerOrder is CPU µs per final order by process (ingest, process,
	// sink, broker, postgres).
	CPUusPerOrder map[string]float64 `json:"cpu_us_per_order"`
}

// Ratios compare the pipeline with its baselines.
type Ratios struct {
	EdgeVsHNull float64 `json:"edge_vs_h_null"`
	// E2EVsBrokerBound is final orders/s against P_raw's records/s divided
	// by records per order: the share of what the broker could carry.
	E2EVsBrokerBound float64 `json:"e2e_vs_broker_bound"`
	SinkVsDRaw       float64 `json:"sink_vs_d_raw"`
}

// Step is one rung of the ladder: a constant offered rate for a while.
type Step struct {
	OfferedRPS  float64 `json:"offered_rps"`
	AcceptedRPS float64 `json:"accepted_rps"`
	FinalRPS    float64 `json:"final_rps"`
	Accepted    float64 `json:"accepted_fraction"`
	// Edge latency (request → 202), from the intended send time.
	EdgeP50ms  float64 `json:"edge_p50_ms"`
	EdgeP99ms  float64 `json:"edge_p99_ms"`
	EdgeP999ms float64 `json:"edge_p999_ms"`
	// Accept→final, from the order table's timestamps.
	FinalP50ms float64 `json:"final_p50_ms"`
	FinalP99ms float64 `json:"final_p99_ms"`
	// LagGrowing: the saga's consumer lag at the end of the step exceeded
	// what it was midway by more than a second of orders.
	LagStart  int64       `json:"lag_mid"`
	LagEnd    int64       `json:"lag_end"`
	Sustained bool        `json:"sustained"`
	Codes     map[int]int `json:"codes"`
	// CPUusPerOrder is each process's CPU µs per final order of the step,
	// over the step and its drain: steps compare at the same rate, since
	// fixed costs (heartbeats, idle fetches) weigh more at low rates.
	CPUusPerOrder map[string]float64 `json:"cpu_us_per_order,omitempty"`
	// FetchPerOrder and ProducePerOrder are the broker's Fetch and Produce
	// requests per final order over the step.
	FetchPerOrder   float64 `json:"fetch_per_order"`
	ProducePerOrder float64 `json:"produce_per_order"`
	DurationMS      int64   `json:"duration_ms"`
}

// RoleUsage is one process's CPU and memory.
type RoleUsage struct {
	Role     string  `json:"role"`
	CPUCores float64 `json:"cpu_cores"`
	MaxRSSMB float64 `json:"max_rss_mb"`
}

// Write writes r as indented JSON to dir/report.json.
func (r *Report) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bench: report dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("bench: encode report: %w", err)
	}
	path := filepath.Join(dir, "report.json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("bench: write report: %w", err)
	}
	return path, nil
}

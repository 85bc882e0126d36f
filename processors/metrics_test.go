package processors

import (
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	gometrics "github.com/rcrowley/go-metrics"
)

// TestSaramaCollector: Sarama's metric names become orderpipe_sarama_*
// with broker and topic labels from their suffixes.
func TestSaramaCollector(t *testing.T) {
	r := gometrics.NewRegistry()
	gometrics.GetOrRegisterMeter("request-rate", r).Mark(5)
	gometrics.GetOrRegisterMeter("request-rate-for-broker-1", r).Mark(3)
	gometrics.GetOrRegisterMeter("record-send-rate-for-topic-orders_submitted", r).Mark(2)
	gometrics.GetOrRegisterCounter("requests-in-flight-for-broker-1", r).Inc(4)
	h := gometrics.GetOrRegisterHistogram("request-latency-in-ms", r, gometrics.NewUniformSample(10))
	h.Update(10)
	h.Update(30)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(SaramaCollector("orders", r))
	exp := `
# HELP orderpipe_sarama_request_total Sarama metric request-rate. (the meter's count)
# TYPE orderpipe_sarama_request_total counter
orderpipe_sarama_request_total{broker="",client="orders",topic=""} 5
orderpipe_sarama_request_total{broker="1",client="orders",topic=""} 3
# HELP orderpipe_sarama_record_send_total Sarama metric record-send-rate. (the meter's count)
# TYPE orderpipe_sarama_record_send_total counter
orderpipe_sarama_record_send_total{broker="",client="orders",topic="orders_submitted"} 2
# HELP orderpipe_sarama_requests_in_flight Sarama metric requests-in-flight.
# TYPE orderpipe_sarama_requests_in_flight gauge
orderpipe_sarama_requests_in_flight{broker="1",client="orders",topic=""} 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp),
		"orderpipe_sarama_request_total", "orderpipe_sarama_record_send_total", "orderpipe_sarama_requests_in_flight"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, mf := range mfs {
		if mf.GetName() == "orderpipe_sarama_request_latency_in_ms" {
			s := mf.GetMetric()[0].GetSummary()
			found = s.GetSampleCount() == 2 && s.GetSampleSum() == 40
		}
	}
	if !found {
		t.Errorf("orderpipe_sarama_request_latency_in_ms: want a summary of 2 samples summing to 40 in %v", mfs)
	}
}

// TestAcceptToFinal: a final order observes UpdatedAt - CreatedAt once,
// under stage="accept_to_final".
func TestAcceptToFinal(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ordersMetrics{m}.Final(&saga.OrderState{Status: saga.StatusConfirmed, CreatedAt: created, UpdatedAt: created.Add(1500 * time.Millisecond)})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "orderpipe_stage_latency_seconds" {
			continue
		}
		ms := mf.GetMetric()
		if len(ms) != 1 || ms[0].GetLabel()[0].GetValue() != "accept_to_final" {
			t.Fatalf("series: got %v, want one with stage=accept_to_final", ms)
		}
		if h := ms[0].GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() != 1.5 {
			t.Errorf("accept_to_final: got count %d sum %v, want 1 and 1.5", h.GetSampleCount(), h.GetSampleSum())
		}
		return
	}
	t.Fatal("no orderpipe_stage_latency_seconds")
}

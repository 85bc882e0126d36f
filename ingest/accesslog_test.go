package ingest

import (
	"strings"
	"testing"

	"github.com/orderpipe/orderpipe/internal/testlog"
)

// With --access-log every request is one line, naming the order an answer
// names; without it there are none.
func TestAccessLog(t *testing.T) {
	log, logged := testlog.Capture()
	h := newHarness(t, options{cfg: Config{AccessLog: true}, log: log})
	r := h.postOrder(orderBody("c1", "A:1"))
	if r.status != 202 {
		t.Fatalf("post: %s", r)
	}
	id := field(t, r.body, "order_id")
	h.do("GET", "/v1/orders/not-a-uuid", "", "")
	var post, bad string
	for line := range strings.Lines(logged()) {
		switch {
		case strings.Contains(line, "msg=request") && strings.Contains(line, "route=post_order"):
			post = line
		case strings.Contains(line, "msg=request") && strings.Contains(line, "path=/v1/orders/not-a-uuid"):
			bad = line
		}
	}
	for _, want := range []string{"method=POST", "path=/v1/orders", "status=202", "order_id=" + id, "took=", "remote=127.0.0.1"} {
		if !strings.Contains(post, want) {
			t.Errorf("access log line of the POST %q lacks %q", post, want)
		}
	}
	if !strings.Contains(bad, "status=400") {
		t.Errorf("access log line of the bad GET %q lacks status=400", bad)
	}

	quiet, quietLogged := testlog.Capture()
	h2 := newHarness(t, options{log: quiet})
	h2.postOrder(orderBody("c1", "A:1"))
	if strings.Contains(quietLogged(), "msg=request") {
		t.Errorf("access log lines without AccessLog:\n%s", quietLogged())
	}
}

// With AccessLogEvery the lines are sampled, except 5xx answers, which are
// all logged.
func TestAccessLogSampled(t *testing.T) {
	log, logged := testlog.Capture()
	h := newHarness(t, options{cfg: Config{AccessLog: true, AccessLogEvery: 10}, log: log})
	for range 50 {
		h.do("GET", "/v1/orders/not-a-uuid", "", "")
	}
	if n := strings.Count(logged(), "path=/v1/orders/not-a-uuid"); n != 5 {
		t.Errorf("50 requests sampled 1 in 10: %d lines, want 5", n)
	}
	rare := &Edge{cfg: Config{AccessLogEvery: 1 << 30}}
	if !rare.sampled(503) {
		t.Error("a 503 answer is not logged under sampling, want every 5xx logged")
	}
	if rare.sampled(200) {
		t.Error("a 200 answer logged at 1 in 2^30, want it sampled out")
	}
}

package lag_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/lag"
	"github.com/orderpipe/orderpipe/internal/membroker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const topic = "lag-test"

// cluster starts a kfake broker with topic (3 partitions) and returns an
// admin client on it and a producer that writes to chosen partitions.
func cluster(t *testing.T) (*kadm.Client, *kgo.Client) {
	t.Helper()
	c, err := membroker.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	return adm, cl
}

// produce writes n records to each partition, n[p] for partition p.
func produce(t *testing.T, cl *kgo.Client, n []int) {
	t.Helper()
	var recs []*kgo.Record
	for p, k := range n {
		for i := range k {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(p), Value: fmt.Appendf(nil, "%d", i)})
		}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func TestGroupLagIsEndMinusCommit(t *testing.T) {
	adm, cl := cluster(t)
	produce(t, cl, []int{10, 7, 3})
	const group = "g1"
	// Commit less than was produced: 4 of 10, 7 of 7, 0 of 3 (no commit).
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 4, LeaderEpoch: -1})
	offs.Add(kadm.Offset{Topic: topic, Partition: 1, At: 7, LeaderEpoch: -1})
	offs.Add(kadm.Offset{Topic: topic, Partition: 2, At: 0, LeaderEpoch: -1})
	if err := adm.CommitAllOffsets(context.Background(), group, offs); err != nil {
		t.Fatal(err)
	}
	// A group that never committed has no lag, and is no error.
	c, err := lag.New(lag.Config{Groups: []string{group, "never-committed"}}, adm, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{0: 6, 1: 0, 2: 3}
	got := c.GroupLag(group)[topic]
	for p, w := range want {
		if got[p] != w {
			t.Errorf("partition %d: got lag %d, want %d (all: %v)", p, got[p], w, got)
		}
	}
	exp := `
# HELP orderpipe_consumer_lag_records Records between a consumer group's committed offset and the end of the partition, read with kadm every few seconds.
# TYPE orderpipe_consumer_lag_records gauge
orderpipe_consumer_lag_records{group="g1",partition="0",topic="lag-test"} 6
orderpipe_consumer_lag_records{group="g1",partition="1",topic="lag-test"} 0
orderpipe_consumer_lag_records{group="g1",partition="2",topic="lag-test"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "orderpipe_consumer_lag_records"); err != nil {
		t.Error(err)
	}

	// Run refreshes on its own: more records raise the gauge.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c2, err := lag.New(lag.Config{Groups: []string{group}, Interval: 20 * time.Millisecond}, adm, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- c2.Run(ctx) }()
	produce(t, cl, []int{5, 0, 0})
	await.Until(t, "lag of partition 0 to reach 11", 5*time.Second, func() error {
		if n := c2.GroupLag(group)[topic][0]; n != 11 {
			return fmt.Errorf("got %d, want 11", n)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
}

func TestViewLagAndCheck(t *testing.T) {
	adm, cl := cluster(t)
	produce(t, cl, []int{10, 20, 0})
	next := map[int32]int64{0: 10, 1: 5, 2: 0}
	c, err := lag.New(lag.Config{Views: []lag.View{{
		Name: "orders", Topic: topic,
		Next: func(context.Context) map[int32]int64 { return next },
	}}}, adm, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := c.ViewsCheck(10)
	if err := check(); err != nil {
		t.Errorf("check before the first reading: got %v, want nil", err)
	}
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := c.ViewLag("orders")
	for p, w := range map[int32]int64{0: 0, 1: 15, 2: 0} {
		if got[p] != w {
			t.Errorf("partition %d: got view lag %d, want %d", p, got[p], w)
		}
	}
	err = check()
	if err == nil || !strings.Contains(err.Error(), "orders view is 15 records behind on partition 1") {
		t.Errorf("check with lag 15 > 10: got %v, want the view, lag and partition", err)
	}
	if err := c.ViewsCheck(15)(); err != nil {
		t.Errorf("check with lag 15 <= 15: got %v, want nil", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  lag.Config
		ok   bool
	}{
		{"empty", lag.Config{}, false},
		{"groups", lag.Config{Groups: []string{"g"}}, true},
		{"negative interval", lag.Config{Groups: []string{"g"}, Interval: -1}, false},
		{"view without next", lag.Config{Views: []lag.View{{Name: "v", Topic: "t"}}}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// A reading that fails (the broker is gone) drops the old values instead of
// showing them stale, and says so in orderpipe_lag_reading_ok.
func TestFailedReadingDropsStaleLag(t *testing.T) {
	c, err := membroker.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close) // closed below already; Close is idempotent
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RetryTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(context.Background(), 3, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	produce(t, cl, []int{5, 0, 0})
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 1, LeaderEpoch: -1})
	if err := adm.CommitAllOffsets(context.Background(), "g", offs); err != nil {
		t.Fatal(err)
	}
	col, err := lag.New(lag.Config{Groups: []string{"g"}, Timeout: 2 * time.Second}, adm, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	if err := col.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(col, "orderpipe_consumer_lag_records"); n != 3 {
		t.Fatalf("before the broker went: %d lag series, want 3 (one per partition)", n)
	}
	readingOK := func(v int) string {
		return fmt.Sprintf("# HELP orderpipe_lag_reading_ok 1 when the last lag reading succeeded; 0 when it failed (a broker away), and the lag series it could not read are left out rather than shown stale.\n# TYPE orderpipe_lag_reading_ok gauge\norderpipe_lag_reading_ok %d\n", v)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(readingOK(1)), "orderpipe_lag_reading_ok"); err != nil {
		t.Error(err)
	}

	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := col.Refresh(ctx); err == nil {
		t.Fatal("Refresh with the broker gone: nil error, want one")
	}
	if n := testutil.CollectAndCount(col, "orderpipe_consumer_lag_records"); n != 0 {
		t.Errorf("after a failed reading: %d lag series, want 0 (no stale values)", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(readingOK(0)), "orderpipe_lag_reading_ok"); err != nil {
		t.Errorf("after a failed reading: %v", err)
	}
}

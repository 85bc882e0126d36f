package pgsink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// waitTimeout bounds every wait for a condition in these tests.
const waitTimeout = 30 * time.Second

var dbNameUnsafe = regexp.MustCompile(`[^a-z0-9]+`)

// dbSeq makes database names unique within the package run.
var dbSeq atomic.Int64

// newDB creates a migrated database for this test on the package's server
// and returns a pool on it, closed when the test ends.
func newDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx := t.Context()
	name := dbNameUnsafe.ReplaceAllString(strings.ToLower(t.Name()), "_")
	name = fmt.Sprintf("%.40s_%d", name, dbSeq.Add(1))
	url, err := pg.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	if err := MigrateURL(ctx, url, nil); err != nil {
		t.Fatalf("migrate %s: %v", name, err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("pool on %s: %v", name, err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// kafka is an in-process broker with the topology's topics and a producer
// that partitions like every orderpipe producer.
type kafka struct {
	brokers []string
	cl      *kgo.Client
	adm     *kadm.Client

	mu       sync.Mutex
	produced []produced // valid table states, in produce order
}

// produced is one table state written to a changelog.
type produced struct {
	topic     string
	partition int32
	offset    int64
	key       string
	version   uint64
}

func newKafka(t testing.TB) *kafka {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.MaxVersions(kversion.V4_0_0()))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.RecordPartitioner(topology.Partitioner()),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	if err := topology.DefaultConfig().Ensure(t.Context(), adm, testlog.New()); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	return &kafka{brokers: c.ListenAddrs(), cl: cl, adm: adm}
}

// produce writes recs and waits for their acknowledgement.
func (k *kafka) produce(t testing.TB, recs ...*kgo.Record) {
	t.Helper()
	if err := k.cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce %d records: %v", len(recs), err)
	}
}

// orders writes order states to the orders table changelog.
func (k *kafka) orders(t testing.TB, states ...*saga.OrderState) {
	t.Helper()
	recs := make([]*kgo.Record, len(states))
	for i, o := range states {
		recs[i] = &kgo.Record{Topic: string(topology.OrdersTable()), Key: []byte(o.OrderID.String()), Value: o.Encode()}
	}
	k.produce(t, recs...)
	k.record(recs, func(i int) uint64 { return states[i].Version })
}

// stock writes the state of sku to the inventory table changelog.
func (k *kafka) stock(t testing.TB, sku string, states ...*saga.StockState) {
	t.Helper()
	recs := make([]*kgo.Record, len(states))
	for i, s := range states {
		recs[i] = &kgo.Record{Topic: string(topology.InventoryTable()), Key: []byte(sku), Value: s.Encode()}
	}
	k.produce(t, recs...)
	k.record(recs, func(i int) uint64 { return states[i].Version })
}

func (k *kafka) record(recs []*kgo.Record, version func(int) uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, r := range recs {
		k.produced = append(k.produced, produced{r.Topic, r.Partition, r.Offset, string(r.Key), version(i)})
	}
}

// offsets maps topic and partition to an offset.
type offsets map[string]map[int32]int64

// committed returns the offsets group committed on the table changelogs.
func (k *kafka) committed(t testing.TB, group string) offsets {
	t.Helper()
	resp, err := k.adm.FetchOffsets(t.Context(), group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return offsets{} // nothing committed yet
	}
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	out := offsets{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil {
			t.Fatalf("fetch offset of %s %s/%d: %v", group, o.Topic, o.Partition, o.Err)
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.At
	})
	return out
}

// allCommitted says whether group committed every record of the table
// changelogs, or what is missing.
func (k *kafka) allCommitted(t testing.TB, group string) error {
	t.Helper()
	ends, err := k.adm.ListEndOffsets(t.Context(), string(topology.OrdersTable()), string(topology.InventoryTable()))
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	got := k.committed(t, group)
	var missing []string
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 && got[o.Topic][o.Partition] != o.Offset {
			missing = append(missing, fmt.Sprintf("%s/%d committed %d, end %d", o.Topic, o.Partition, got[o.Topic][o.Partition], o.Offset))
		}
	})
	if len(missing) > 0 {
		return fmt.Errorf("group %s behind: %s", group, strings.Join(missing, "; "))
	}
	return nil
}

// checkCommittedInDB fails the test if group committed an offset past a
// table state whose row is not in Postgres at that version or a newer one.
// Rows never move backwards, so reading the rows after the offsets proves
// they were there when the offsets were committed.
func (k *kafka) checkCommittedInDB(t testing.TB, pool *pgxpool.Pool, group string) {
	t.Helper()
	got := k.committed(t, group)
	k.mu.Lock()
	states := append([]produced(nil), k.produced...)
	k.mu.Unlock()
	for _, p := range states {
		if p.offset >= got[p.topic][p.partition] {
			continue
		}
		v, ok := rowVersion(t, pool, p.topic, p.key)
		if !ok || v < p.version {
			t.Fatalf("%s/%d offset %d (key %s version %d) is committed but the row is at version %d (present: %v)", p.topic, p.partition, p.offset, p.key, p.version, v, ok)
		}
	}
}

// started is a sink running in its own goroutine.
type started struct {
	*Sink
	stop func() error // cancels Run and returns its result; idempotent
}

// startSink runs a sink on k and pool until the test ends or stop is
// called. Backoffs are short so that outages resolve quickly.
func startSink(t testing.TB, k *kafka, pool *pgxpool.Pool, cfg Config, reg ...prometheus.Registerer) started {
	t.Helper()
	cfg.Brokers = k.brokers
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	}
	deps := Deps{Pool: pool, Logger: testlog.New(), Registerer: prometheus.NewPedanticRegistry()}
	if len(reg) > 0 {
		deps.Registerer = reg[0]
	}
	cfg.ClientOpts = append(cfg.ClientOpts, kgo.FetchMaxWait(100*time.Millisecond))
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("new sink: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(waitTimeout):
			return fmt.Errorf("Run did not return within %s of its context ending", waitTimeout)
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("sink Run: got %v, want nil", err)
		}
	})
	return started{s, stop}
}

// base is the creation time of the test orders.
var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// order returns a test order state: n decides its id, customer and lines.
func order(n int, version uint64, status saga.Status) *saga.OrderState {
	o := &saga.OrderState{
		Version:    version,
		OrderID:    saga.OrderIDForKey("pgsink-test", strconv.Itoa(n)),
		CustomerID: fmt.Sprintf("customer-%d", n%7),
		Currency:   "EUR",
		Status:     status,
		CreatedAt:  base.Add(time.Duration(n) * time.Second),
		UpdatedAt:  base.Add(time.Duration(n)*time.Second + time.Duration(version)*time.Millisecond),
	}
	for i := range 1 + n%3 {
		o.Lines = append(o.Lines, saga.Line{
			Item:   saga.Item{SKU: fmt.Sprintf("sku-%d", (n+i)%5), Quantity: uint32(1 + i), UnitPriceCents: int64(100 * (n%4 + 1))},
			Result: saga.LineReserved,
		})
	}
	if status == saga.StatusRejected {
		o.Reason = "insufficient stock for " + o.Lines[0].SKU
	}
	return o
}

// stock returns a test stock state.
func stock(version uint64, available, reserved, sold int64) *saga.StockState {
	s := saga.NewStockState()
	s.Version, s.Available, s.Reserved, s.Sold = version, available, reserved, sold
	s.UpdatedAt = base.Add(time.Duration(version) * time.Minute)
	return s
}

package faults

import (
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/kafkatest"
	"github.com/orderpipe/orderpipe/internal/pgha"
)

// TestPostgresFailover runs the deployed shape on a replicated Postgres
// (two Patroni members on etcd, asynchronous streaming replication), the
// sink on the multi-host URL, and under load: a failover to a standby
// that missed the last transactions, a planned switchover, and the old
// primary rejoining as a standby. Nothing may be lost.
func TestPostgresFailover(t *testing.T) {
	kafkatest.RequireKafka(t, "the failover harness")
	bin := deployedBinary(t)
	began := time.Now()
	ha := pgha.Start(t, 2)
	leader := ha.AwaitStreaming(time.Minute)
	conn, err := pgx.Connect(t.Context(), leader.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), "CREATE DATABASE faults"); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	ha.AwaitStreaming(time.Minute)
	c := newCluster(t, bin, ha.URL("faults"))
	t.Logf("Patroni cluster and deployed shape up in %s; the sink writes to %s", time.Since(began).Round(time.Millisecond), c.pgURL)
	f := &failovers{ha: ha}
	rows := c.runAll([]scenario{
		{name: "postgres-failover", fault: f.failover},
		{name: "old-primary-rejoins", fault: f.rejoin},
		{name: "postgres-switchover", fault: f.switchover},
	}, func(scenario) bool { return true })
	t.Logf("failover scenarios on Patroni and Apache Kafka 4.3.1, in %s:\n%s", time.Since(began).Round(time.Second), table(rows))
	verdicts(t, rows)
}

// failovers are the faults of a replicated Postgres.
type failovers struct {
	ha *pgha.Cluster
	// killed is the primary the failover took down.
	killed *pgha.Member
}

func (f *failovers) replicaOf(leader *pgha.Member) *pgha.Member {
	for _, m := range f.ha.Members {
		if m != leader && m.P.Running() {
			return m
		}
	}
	return nil
}

// queryOn runs one query returning one row on member m's database db.
func queryOn(ctx context.Context, m *pgha.Member, db, q string, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.URL(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, q).Scan(dest...)
}

const offsetsSum = "SELECT coalesce(sum(next_offset), 0)::bigint FROM sink_offsets"

// failover cuts the standby off from the primary for 3s (the primary's
// WAL sender for it stopped with SIGSTOP: WAL already in the socket would
// still reach a stopped receiver), then SIGKILLs the primary's Patroni,
// postmaster and backends. Patroni promotes the standby, which lacks the primary's
// last transactions; the sink must write them again.
func (f *failovers) failover(r *run) {
	c, ctx := r.c, r.c.t.Context()
	leader := f.ha.AwaitStreaming(time.Minute)
	standby := f.replicaOf(leader)
	var sender int
	if err := queryOn(ctx, leader, "postgres", "SELECT pid FROM pg_stat_replication WHERE application_name = '"+standby.Name+"'", &sender); err != nil {
		c.t.Fatalf("the primary's WAL sender to %s: %v", standby.Name, err)
	}
	// A child of a postmaster this test started; Kill below ends it.
	if err := syscall.Kill(sender, syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
	r.hold(3 * time.Second)
	var primaryLSN, standbyLSN string
	var primaryOffsets int64
	if err := queryOn(ctx, leader, "faults", "SELECT pg_current_wal_lsn()::text, ("+offsetsSum+")", &primaryLSN, &primaryOffsets); err != nil {
		c.t.Fatal(err)
	}
	pm := leader.Kill()
	f.killed = leader
	killed := time.Now()
	await.Until(c.t, "Patroni promotes the standby", 2*time.Minute, func() error {
		if l := f.ha.Leader(); l != standby {
			return fmt.Errorf("leader %v", l)
		}
		return nil
	})
	promoted := time.Now()
	var promotedOffsets int64
	if err := queryOn(ctx, standby, "faults", "SELECT pg_last_wal_receive_lsn()::text, ("+offsetsSum+")", &standbyLSN, &promotedOffsets); err != nil {
		// Promoted: no receive position any more; read what it holds.
		if err := queryOn(ctx, standby, "faults", "SELECT pg_current_wal_lsn()::text, ("+offsetsSum+")", &standbyLSN, &promotedOffsets); err != nil {
			c.t.Fatal(err)
		}
	}
	r.healed()
	// The sink writes again on the new primary: its offsets move.
	var wroteAgain time.Duration
	await.Until(c.t, "the sink writes to the new primary", 2*time.Minute, func() error {
		var n int64
		if err := queryOn(ctx, standby, "faults", offsetsSum, &n); err != nil {
			return err
		}
		if n <= promotedOffsets {
			return fmt.Errorf("sink offsets %d, %d at promotion", n, promotedOffsets)
		}
		wroteAgain = time.Since(promoted)
		return nil
	})
	lacked := primaryOffsets - promotedOffsets
	r.evidenced("%s (postmaster %d) SIGKILLed 3s after its standby was cut off; %s promoted %s later, %d bytes of WAL behind (old primary at %s, the standby at %s); the new primary lacked the sink's transactions for at least %d changelog records (its sink offsets sum to %d, the old primary's to %d); the sink wrote again %s after the promotion",
		leader.Name, pm, standby.Name, promoted.Sub(killed).Round(time.Millisecond), lsn(primaryLSN)-lsn(standbyLSN), primaryLSN, standbyLSN, lacked, promotedOffsets, primaryOffsets, wroteAgain.Round(time.Millisecond))
	if lacked <= 0 {
		r.breach("the new primary lacked nothing (offsets %d against %d): the standby was not behind, the scenario proves nothing", promotedOffsets, primaryOffsets)
	}
	r.awaitRewind()
}

// lsn is a WAL position ("16/B374D848") as a byte offset.
func lsn(s string) int64 {
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		return 0
	}
	return int64(hi)<<32 | int64(lo)
}

// awaitRewind checks on the sink's metrics that it read records again.
func (r *run) awaitRewind() {
	c := r.c
	await.Until(c.t, "the sink counted a rewind", time.Minute, func() error {
		resp, err := c.http.Get("http://" + c.sink.addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "orderpipe_sink_rewinds_total ") && !strings.HasSuffix(l, " 0") {
				r.evidenced("the sink's %s", l)
				return nil
			}
		}
		return fmt.Errorf("no rewind on the sink's /metrics")
	})
}

// switchover is a planned switchover under load (patronictl).
func (f *failovers) switchover(r *run) {
	leader := f.ha.AwaitStreaming(2 * time.Minute)
	candidate := f.replicaOf(leader)
	if candidate == nil {
		r.c.t.Fatal("no replica to switch over to")
	}
	if err := f.ha.Switchover(leader, candidate); err != nil {
		r.c.t.Fatal(err)
	}
	began := time.Now()
	await.Until(r.c.t, "the candidate leads", 2*time.Minute, func() error {
		if l := f.ha.Leader(); l != candidate {
			return fmt.Errorf("leader %v", l)
		}
		return nil
	})
	r.healed()
	r.evidenced("patronictl switchover from %s to %s: %s leads %s later", leader.Name, candidate.Name, candidate.Name, time.Since(began).Round(time.Millisecond))
}

// rejoin restarts the primary the failover killed: Patroni brings it back
// as a standby of the new timeline (pg_rewind).
func (f *failovers) rejoin(r *run) {
	if f.killed == nil {
		r.c.t.Fatal("no killed primary to bring back")
	}
	f.killed.Restart()
	leader := f.ha.AwaitStreaming(3 * time.Minute)
	r.healed()
	if leader != f.killed {
		r.evidenced("%s, killed in the failover, rejoined as a streaming standby of %s", f.killed.Name, leader.Name)
	}
}

package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/kafkatest"
	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/orderpipe/orderpipe/internal/proctest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// readyWithin bounds every role's start, table recovery included.
const readyWithin = 3 * time.Minute

// produceTimeout is the edges' --produce-timeout: how long a client waits
// at most for a 202, a 503 or a 504.
const produceTimeout = 3 * time.Second

// cluster is the deployed shape: every role a process of its own, on one
// real broker (or a cluster of them) and one real PostgreSQL, the edges
// behind HAProxy.
type cluster struct {
	// root owns the processes and their files; t is the scenario running
	// now, which its checks fail.
	root *testing.T
	t    *testing.T
	// kafka is the one broker; nil when the roles run on a cluster of
	// brokers that the test holds itself.
	kafka *kafkatest.Kafka
	// seeds are the brokers every role and client is given.
	seeds []string
	pg    *pglocal.Server
	pgURL string
	bin   string
	lb    *proctest.LB
	edges []*member
	procs []*member
	sink  *member
	http  *http.Client
	kcl   *kgo.Client
	adm   *kadm.Client
}

// member is one role process. It keeps its name (its client id, which is
// how its group membership is recognised), its address and its data dir
// across restarts, as a process restarted by an orchestrator does.
type member struct {
	name, command string
	// addr is the edge's listen address, or the ops listener's.
	addr    string
	dataDir string
	args    []string
	p       *proctest.Proc
	// pids are the pids of every start, the evidence of a restart.
	pids []int
	// down: stopped or killed by the harness, and not started since.
	down bool
}

// newCluster starts the deployed shape on a fresh broker and a throwaway
// PostgreSQL, or on the database at pgURL when it is set.
func newCluster(t *testing.T, bin, pgURL string) *cluster {
	t.Helper()
	k := kafkatest.KafkaServerFor(t)
	c := deploy(t, bin, pgURL, k.Brokers())
	c.kafka = k
	return c
}

// deploy starts the deployed shape on the brokers at seeds and a throwaway
// PostgreSQL, or on the database at pgURL when it is set.
func deploy(t *testing.T, bin, pgURL string, seeds []string) *cluster {
	t.Helper()
	c := &cluster{root: t, t: t, bin: bin, seeds: seeds, http: &http.Client{
		Timeout: 30 * time.Second,
		// Enough connections that an open-loop load reaches HAProxy as
		// offered: with fewer, requests queue in the client and the load
		// turns closed-loop.
		Transport: &http.Transport{MaxIdleConnsPerHost: 4096, MaxConnsPerHost: 4096},
	}}
	var err error
	if c.pgURL = pgURL; pgURL == "" {
		c.pg = apptest.PostgresFor(t)
		if c.pgURL, err = c.pg.CreateDatabase(t.Context(), "faults"); err != nil {
			t.Fatal(err)
		}
	}
	if c.kcl, err = kgo.NewClient(kgo.SeedBrokers(c.seeds...)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.kcl.Close)
	c.adm = kadm.NewClient(c.kcl)

	c.oneShot("topics")
	c.oneShot("migrate", "--postgres-url", c.pgURL)
	for i := range 2 {
		c.edges = append(c.edges, c.member(fmt.Sprintf("ingest-%d", i+1), "ingest", append([]string{"--produce-timeout", produceTimeout.String()}, strings.Fields(os.Getenv("ORDERPIPE_FAULTS_EDGE_ARGS"))...)...))
	}
	for i := range 2 {
		c.procs = append(c.procs, c.member(fmt.Sprintf("process-%d", i+1), "process"))
	}
	c.sink = c.member("sink-1", "sink", "--postgres-url", c.pgURL)
	all := append(append(append([]*member(nil), c.edges...), c.procs...), c.sink)
	for _, m := range all {
		c.launch(m)
	}
	for _, m := range all {
		c.awaitReady(m)
	}
	c.lb = proctest.StartHAProxy(t, c.edges[0].addr, c.edges[1].addr)
	c.awaitLB("both edges UP behind HAProxy", func(st map[string]string) bool {
		return st["ingest-1"] == "UP" && st["ingest-2"] == "UP"
	})
	return c
}

// member describes a role process; launch starts it.
func (c *cluster) member(name, command string, args ...string) *member {
	m := &member{name: name, command: command, addr: proctest.FreeAddr(c.root), args: args}
	if command == "ingest" || command == "process" {
		m.dataDir = c.root.TempDir()
	}
	return m
}

// launch starts m on its address and data dir, without waiting.
func (c *cluster) launch(m *member) {
	c.t.Helper()
	args := append([]string{m.command, "--brokers", strings.Join(c.seeds, ","), "--client-id", m.name, "--log-level", "info"}, m.args...)
	if m.command == "ingest" {
		args = append(args, "--listen", m.addr)
	} else {
		args = append(args, "--ops-listen", m.addr)
	}
	if m.dataDir != "" {
		args = append(args, "--data-dir", m.dataDir)
	}
	m.p = proctest.Start(c.root, m.name, exec.Command(c.bin, args...), true)
	m.pids = append(m.pids, m.p.Pid())
	m.down = false
}

func (c *cluster) awaitReady(m *member) { m.p.Ready(c.t, readyWithin) }

// start launches m and waits until it is ready.
func (c *cluster) start(m *member) {
	c.t.Helper()
	c.launch(m)
	c.awaitReady(m)
}

// kill SIGKILLs m and returns its pid.
func (c *cluster) kill(m *member) int {
	c.t.Helper()
	pid := m.p.Pid()
	m.down = true
	if err := m.p.Kill(); err != nil {
		c.t.Fatal(err)
	}
	return pid
}

// stop stops m with SIGTERM; it must exit cleanly.
func (c *cluster) stop(m *member) {
	c.t.Helper()
	m.down = true
	if err := m.p.Stop(60 * time.Second); err != nil {
		c.t.Fatal(err)
	}
}

// oneShot runs a command that must finish by itself, successfully.
func (c *cluster) oneShot(command string, args ...string) {
	c.t.Helper()
	if command != "migrate" {
		args = append(args, "--brokers", strings.Join(c.seeds, ","))
	}
	ctx, cancel := context.WithTimeout(c.t.Context(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.bin, append([]string{command}, args...)...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("orderpipe %s: %v: %s", command, err, proctest.Tail(out, 2000))
	}
}

// awaitLB waits until HAProxy's view of the edges satisfies ok.
func (c *cluster) awaitLB(what string, ok func(map[string]string) bool) {
	c.t.Helper()
	await.Until(c.t, what, time.Minute, func() error {
		st, err := c.lb.Status()
		if err != nil || !ok(st) {
			return fmt.Errorf("HAProxy says %v (%v)", st, err)
		}
		return nil
	})
}

// members are every role process the harness has made.
func (c *cluster) members() []*member {
	return append(append(append([]*member(nil), c.edges...), c.procs...), c.sink)
}

// running checks that every role process is still up: a fault must be
// ridden out, not end a process.
func (c *cluster) running() error {
	for _, m := range c.members() {
		if m.p != nil && !m.down && !m.p.Running() {
			return fmt.Errorf("%s exited (%v): %s", m.name, m.p.Cmd.ProcessState, proctest.Tail(m.p.Output(), 3000))
		}
	}
	return nil
}

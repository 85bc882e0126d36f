package integration_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/proctest"
	"github.com/orderpipe/orderpipe/topology"
)

// proc is an `orderpipe` subprocess of the test.
type proc = proctest.Proc

// spawn runs `orderpipe <command> --brokers ... args...` as a separate
// process named name (also its client id, which is how its group
// membership is recognised). The process is stopped with SIGTERM at the end
// of the test and must exit cleanly; its log is shown when the test failed.
func (e *env) spawn(name, command string, args ...string) *proc {
	e.t.Helper()
	// migrate talks only to Postgres; the roles that stay up are told
	// apart in the consumer groups by their client id.
	switch command {
	case "migrate":
	case "topics":
		args = append(args, "--brokers", strings.Join(e.brokers, ","), "--log-level", "info")
	default:
		args = append(args, "--brokers", strings.Join(e.brokers, ","), "--log-level", "info", "--client-id", name)
	}
	return e.startProcess(name, exec.Command(binary, append([]string{command}, args...)...), true)
}

// startProcess starts cmd as the test's process name (see proctest.Start).
func (e *env) startProcess(name string, cmd *exec.Cmd, wantCleanExit bool) *proc {
	e.t.Helper()
	return proctest.Start(e.t, name, cmd, wantCleanExit)
}

// spawnRole runs a long-lived role; roles with table state get a data dir
// of their own unless args name one. ready waits until it says it is ready.
func (e *env) spawnRole(name, command string, args ...string) *proc {
	e.t.Helper()
	if (command == "ingest" || command == "process") && !slices.Contains(args, "--data-dir") {
		args = append(args, "--data-dir", e.t.TempDir())
	}
	return e.spawn(name, command, args...)
}

// ready waits until p logs that it is ready and returns the edge address it
// logged, if any.
func ready(e *env, p *proc) string {
	e.t.Helper()
	return p.Ready(e.t, 3*time.Minute).Listen
}

// oneShot runs a command that must finish by itself, successfully.
func (e *env) oneShot(command string, args ...string) {
	e.t.Helper()
	p := e.spawn(command, command, args...)
	select {
	case <-p.Exited():
	case <-time.After(3 * time.Minute):
		e.t.Fatalf("orderpipe %s did not finish within 3 minutes", command)
	}
	if !p.Cmd.ProcessState.Success() {
		e.t.Fatalf("orderpipe %s: %v: %s", command, p.Cmd.ProcessState, proctest.Tail(p.Output(), 2000))
	}
}

// ownership is, per processor group, how many input partitions each
// member (by client id) owns.
type ownership map[goka.Group]map[string]int

// owners asks the group coordinator who owns what, for every processor
// group.
func (e *env) owners() (ownership, error) {
	adm, done := e.admin()
	defer done()
	inputs := topology.GroupInputs()
	names := make([]string, 0, len(inputs))
	for g := range inputs {
		names = append(names, string(g))
	}
	groups, err := adm.DescribeGroups(e.t.Context(), names...)
	if err != nil {
		return nil, err
	}
	out := ownership{}
	for g := range inputs {
		d, ok := groups[string(g)]
		if !ok {
			return nil, fmt.Errorf("group %s not described", g)
		}
		if d.Err != nil {
			return nil, fmt.Errorf("group %s: %w", g, d.Err)
		}
		out[g] = map[string]int{}
		for _, m := range d.Members {
			a, ok := m.Assigned.AsConsumer()
			if !ok {
				return nil, fmt.Errorf("group %s, member %s: not a consumer assignment", g, m.ClientID)
			}
			for _, t := range a.Topics {
				out[g][m.ClientID] += len(t.Partitions)
			}
		}
	}
	return out, nil
}

// sharedBy checks that every group's input partitions, all of them, are
// spread over exactly the given members, each owning some.
func (o ownership) sharedBy(members ...string) error {
	for g, topics := range topology.GroupInputs() {
		want := len(topics) * int(topology.DefaultConfig().Partitions)
		total := 0
		for _, m := range members {
			if o[g][m] == 0 {
				return fmt.Errorf("group %s: %s owns nothing (%v)", g, m, o[g])
			}
			total += o[g][m]
		}
		if len(o[g]) != len(members) || total != want {
			return fmt.Errorf("group %s: owners %v, want %d partitions over %v", g, o[g], want, members)
		}
	}
	return nil
}

// awaitOwners waits until every group's partitions are spread over
// exactly members, and returns the ownership it saw.
func (e *env) awaitOwners(members ...string) ownership {
	e.t.Helper()
	var seen ownership
	await.Until(e.t, fmt.Sprintf("the partitions shared by %v", members), 2*time.Minute, func() error {
		o, err := e.owners()
		if err != nil {
			return err
		}
		seen = o
		return o.sharedBy(members...)
	})
	return seen
}

// testScaleOut: two `orderpipe process` processes share the partitions;
// one is killed with SIGKILL while orders flow; its partitions move to the
// other and every order still reaches one final state. Then the killed one
// restarts on its old data dir and takes its share back. Stock is
// conserved throughout and Postgres agrees.
func testScaleOut(e *env) {
	edge := e.start(app.Roles{Ingest: true, Sink: true, EnsureTopics: true}, e.t.TempDir())
	dir1 := e.t.TempDir()
	p1, p2 := e.spawnRole("proc-1", "process", "--data-dir", dir1), e.spawnRole("proc-2", "process")
	ready(e, p1)
	ready(e, p2)
	before := e.awaitOwners("proc-1", "proc-2")
	// Enough stock that orders after the restart still reserve some.
	initial := stockOf(10, 500)
	e.setStock(edge.Addr, initial)
	orders := randomOrders(1200, 10, 3)
	ids := e.submit(edge.Addr, orders[:300])
	// Kill while orders are being submitted and the first ones are still
	// uncommitted: the survivor must replay them from its predecessor's
	// last commit without reserving twice.
	type result struct {
		ids []string
		err error
	}
	during := make(chan result, 1)
	go func() {
		ids, err := e.trySubmit(edge.Addr, orders[300:600], submitConcurrency)
		during <- result{ids, err}
	}()
	lag := e.lag()
	if err := p1.Kill(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Logf("SIGKILLed proc-1 with %d input records uncommitted and 300 orders being submitted", lag)
	r := <-during
	if r.err != nil {
		e.t.Fatal(r.err)
	}
	ids = append(ids, r.ids...)
	after := e.awaitOwners("proc-2")
	e.t.Logf("input partitions owned before the kill %v; after %v", before, after)
	ids = append(ids, e.submit(edge.Addr, orders[600:900])...)
	e.final(edge.Addr, ids, 3*time.Minute)

	// The machine comes back: proc-1 restarts on the table state its
	// SIGKILL left on disk, takes back its share, and the flow goes on.
	ready(e, e.spawnRole("proc-1", "process", "--data-dir", dir1))
	e.awaitOwners("proc-1", "proc-2")
	e.t.Logf("proc-1 restarted on its old data dir and shares the partitions again")
	ids = append(ids, e.submit(edge.Addr, orders[900:])...)
	got := e.final(edge.Addr, ids, 3*time.Minute)
	confirmed := 0
	for _, id := range ids[900:] {
		if got[id]["status"] == "confirmed" {
			confirmed++
		}
	}
	if confirmed == 0 {
		e.t.Error("no order after the restart was confirmed: the restarted process reserved nothing")
	}
	e.t.Logf("%d of the 300 orders after the restart confirmed; all %d final", confirmed, len(ids))
	stock := e.checkConservation(edge.Addr, initial, got)
	e.checkPostgres(got, stock)
}

// testProcesses: every role as a process of its own, as they are deployed
// — topics and migrate as one-shot jobs, one edge, two processors, one
// sink — and 2,000 orders submitted at once, checked from outside through
// the API and SQL.
func testProcesses(e *env) {
	began := time.Now()
	e.oneShot("topics")
	e.oneShot("topics", "--check")
	e.oneShot("migrate", "--postgres-url", e.pgURL)
	// Started together, as an orchestrator would.
	roles := []*proc{
		e.spawnRole("ingest-1", "ingest", "--listen", "127.0.0.1:0"),
		e.spawnRole("process-1", "process"),
		e.spawnRole("process-2", "process"),
		e.spawnRole("sink-1", "sink", "--postgres-url", e.pgURL),
	}
	edge := ready(e, roles[0])
	for _, r := range roles[1:] {
		ready(e, r)
	}
	e.t.Logf("topics, migrate and 4 roles ready in %s", time.Since(began).Round(time.Millisecond))
	initial := stockOf(20, 300)
	e.setStock(edge, initial)
	orders := randomOrders(2000, 20, 4)
	start := time.Now()
	ids, err := e.trySubmit(edge, orders, len(orders))
	if err != nil {
		e.t.Fatal(err)
	}
	accepted := time.Since(start)
	got := e.final(edge, ids, 3*time.Minute)
	e.t.Logf("%d orders: all accepted in %s, all final in %s", len(ids), accepted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	stock := e.checkConservation(edge, initial, got)
	e.checkPostgres(got, stock)
	e.t.Logf("API and Postgres checked %s after the start", time.Since(began).Round(time.Millisecond))

	// SIGHUP: a role with nothing to reload stops as on SIGTERM, cleanly.
	sink := roles[3]
	if err := sink.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		e.t.Fatal(err)
	}
	select {
	case <-sink.Exited():
	case <-time.After(60 * time.Second):
		e.t.Fatalf("sink-1 did not stop within 60s of SIGHUP")
	}
	if !sink.Cmd.ProcessState.Success() || !bytes.Contains(sink.Output(), []byte("SIGHUP: nothing to reload")) {
		e.t.Errorf("sink-1 on SIGHUP: %v, want a clean stop saying why: %s", sink.Cmd.ProcessState, proctest.Tail(sink.Output(), 1000))
	}
	testKeysReload(e)
}

// testKeysReload: SIGHUP makes a running edge reload its API keys file: a
// client added to it gets in and a removed one is shut out, by the same
// process (same pid); a broken file keeps the keys in use.
func testKeysReload(e *env) {
	keysFile := filepath.Join(e.t.TempDir(), "keys")
	newKey := func(client string) (key, line string) {
		key, line, err := ingest.NewAPIKey(client, []string{"orders:read"})
		if err != nil {
			e.t.Fatal(err)
		}
		return key, line
	}
	writeKeys := func(content string) {
		if err := os.WriteFile(keysFile, []byte(content), 0o600); err != nil {
			e.t.Fatal(err)
		}
	}
	oldKey, oldLine := newKey("client-old")
	newKeyValue, newLine := newKey("client-new")
	writeKeys(oldLine + "\n")
	p := e.spawnRole("ingest-keys", "ingest", "--listen", "127.0.0.1:0", "--api-keys-file", keysFile)
	edge := ready(e, p)
	pid := p.Pid()
	status := func(key string) int {
		req, err := http.NewRequest(http.MethodGet, "http://"+edge+"/v1/inventory/S0", nil)
		if err != nil {
			e.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			e.t.Fatalf("GET with a key: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// want waits, within 30s, until the old and the new key get these
	// statuses: the reload is asynchronous to the signal.
	want := func(what string, oldStatus, newStatus int) {
		await.Until(e.t, what, 30*time.Second, func() error {
			if o, n := status(oldKey), status(newKeyValue); o != oldStatus || n != newStatus {
				return fmt.Errorf("old key %d, new key %d, want %d and %d: %s", o, n, oldStatus, newStatus, proctest.Tail(p.Output(), 2000))
			}
			return nil
		})
	}
	want("before the reload", http.StatusOK, http.StatusUnauthorized)

	writeKeys(newLine + "\n")
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		e.t.Fatal(err)
	}
	want("after SIGHUP with the new file", http.StatusUnauthorized, http.StatusOK)

	writeKeys("client-bad not-a-hash orders:read\n")
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		e.t.Fatal(err)
	}
	await.Until(e.t, "a broken keys file on SIGHUP: a log line saying it was not reloaded", 30*time.Second, func() error {
		if !bytes.Contains(p.Output(), []byte("API keys not reloaded")) {
			return fmt.Errorf("not logged: %s", proctest.Tail(p.Output(), 2000))
		}
		return nil
	})
	want("after SIGHUP with a broken file", http.StatusUnauthorized, http.StatusOK)
	if !p.Running() || p.Pid() != pid {
		e.t.Fatalf("the edge did not stay up through the reloads (pid %d, now %d, running %v)", pid, p.Pid(), p.Running())
	}
	e.t.Logf("SIGHUP reloads: new client let in, removed one shut out, broken file refused, same pid %d", pid)
}

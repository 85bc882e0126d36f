package integration_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/topology"
)

// proc is an `orderpipe` subprocess.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	// exited is closed once the process has been reaped.
	exited chan struct{}
}

// spawn runs `orderpipe process` as a separate process named name (its
// client id, which is how its group membership is recognised).
func (e *env) spawn(name string) *proc {
	e.t.Helper()
	dir := e.t.TempDir()
	p := &proc{name: name, log: filepath.Join(dir, "log"), exited: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		e.t.Fatal(err)
	}
	p.cmd = exec.Command(binary, "process",
		"--brokers", strings.Join(e.brokers, ","), "--data-dir", filepath.Join(dir, "data"),
		"--client-id", name, "--log-level", "info")
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait() // a killed process's exit status is expected
		f.Close()
		close(p.exited)
	}()
	e.t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(60 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			e.t.Errorf("process %s did not stop within 60s of SIGTERM", name)
		}
		if e.t.Failed() {
			b, _ := os.ReadFile(p.log)
			e.t.Logf("log of %s:\n%s", name, tail(b, 4000))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return bytes.TrimSpace(b)
}

// kill sends SIGKILL: no shutdown, no commit, no leaving the group.
func (p *proc) kill() error {
	if err := p.cmd.Process.Kill(); err != nil {
		return err
	}
	<-p.exited
	return nil
}

// owners returns, for the orders group, the partitions of orders.submitted
// each member (by client id) owns.
func (e *env) owners() (map[string][]int32, error) {
	adm, done := e.admin()
	defer done()
	groups, err := adm.DescribeGroups(e.t.Context(), string(topology.OrdersGroup))
	if err != nil {
		return nil, err
	}
	g := groups[string(topology.OrdersGroup)]
	if g.Err != nil {
		return nil, g.Err
	}
	out := map[string][]int32{}
	for _, m := range g.Members {
		a, ok := m.Assigned.AsConsumer()
		if !ok {
			return nil, fmt.Errorf("member %s: assignment is not a consumer assignment", m.ClientID)
		}
		for _, t := range a.Topics {
			if t.Topic == string(topology.OrdersSubmitted) {
				ps := append([]int32(nil), t.Partitions...)
				sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
				out[m.ClientID] = append(out[m.ClientID], ps...)
			}
		}
	}
	return out, nil
}

// testScaleOut: two `orderpipe process` processes share the partitions;
// one is killed with SIGKILL while orders flow; its partitions move to the
// other and every order still reaches one final state, with stock conserved.
func testScaleOut(e *env) {
	edge := e.start(app.Roles{Ingest: true, Sink: true, EnsureTopics: true}, e.t.TempDir())
	p1, _ := e.spawn("proc-1"), e.spawn("proc-2")
	var before map[string][]int32
	await.Until(e.t, "two processes share the partitions", 2*time.Minute, func() error {
		o, err := e.owners()
		if err != nil {
			return err
		}
		if len(o["proc-1"]) == 0 || len(o["proc-2"]) == 0 || len(o["proc-1"])+len(o["proc-2"]) != 12 {
			return fmt.Errorf("owners %v", o)
		}
		before = o
		return nil
	})
	initial := stockOf(10, 150)
	e.setStock(edge.addr, initial)
	orders := randomOrders(900, 10, 3)
	ids := e.submit(edge.addr, orders[:300])
	// Kill while orders are being submitted and the first ones are still
	// uncommitted: the survivor must replay them from its predecessor's
	// last commit without reserving twice.
	type result struct {
		ids []string
		err error
	}
	during := make(chan result, 1)
	go func() {
		ids, err := e.trySubmit(edge.addr, orders[300:600])
		during <- result{ids, err}
	}()
	lag := e.lag()
	if err := p1.kill(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Logf("SIGKILLed proc-1 with %d input records uncommitted and 300 orders being submitted", lag)
	r := <-during
	if r.err != nil {
		e.t.Fatal(r.err)
	}
	ids = append(ids, r.ids...)
	await.Until(e.t, "the survivor owns every partition", 2*time.Minute, func() error {
		o, err := e.owners()
		if err != nil {
			return err
		}
		if len(o) != 1 || len(o["proc-2"]) != 12 {
			return fmt.Errorf("owners %v", o)
		}
		return nil
	})
	e.t.Logf("partitions of %s before the kill %v; after: all 12 on proc-2", topology.OrdersSubmitted, before)
	ids = append(ids, e.submit(edge.addr, orders[600:])...)
	got := e.final(edge.addr, ids, 3*time.Minute)
	stock := e.checkConservation(edge.addr, initial, got)
	e.checkPostgres(got, stock)
}

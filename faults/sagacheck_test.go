package faults

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/orderpipe/orderpipe/internal/sagaaudit"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sagaChecks is a scenario's check once its invariants hold: the saga
// audits of the changelogs and commands (package sagaaudit) and the
// detectors on every role's /metrics must find nothing.
func sagaChecks(r *run) {
	r.sagaChecked = true
	c := r.c
	// Bounded: a read that never reaches its end is a finding, not a hang
	// of the whole suite.
	ctx, cancel := context.WithTimeout(c.t.Context(), 3*time.Minute)
	defer cancel()
	rep, err := sagaaudit.Audit(ctx, c.kcl, topology.DefaultConfig())
	if err != nil {
		r.breach("saga audit: %v", err)
		return
	}
	if err := rep.Err(); err != nil {
		r.breach("%v", err)
	} else {
		c.t.Logf("saga audit: nothing found in %v records, commands up to the inventory group's commits", rep.Records)
	}
	wired := false
	var seen []string
	for _, m := range c.members() {
		if m.down {
			continue
		}
		values, err := detectors(c, m.addr)
		if err != nil {
			r.breach("%s: %v", m.name, err)
			continue
		}
		for name, v := range values {
			wired = wired || name == "orderpipe_inventory_state_behind_total"
			seen = append(seen, fmt.Sprintf("%s %s %g", m.name, name, v))
			if v != 0 {
				r.breach("%s: %s is %g, want 0", m.name, name, v)
			}
		}
	}
	slices.Sort(seen)
	if !wired {
		r.breach("no role has orderpipe_inventory_state_behind_total on /metrics: the detectors are not wired")
	}
	c.t.Logf("detectors (a labelled one shows once it counted): %s", strings.Join(seen, "; "))
}

// detectorNames are the counters of what must never happen: a record the
// producer lost, a table record older than the state applied, an inventory
// state behind an acknowledged hold (docs/producer.md).
var detectorNames = []string{"orderpipe_producer_data_loss_total", "orderpipe_table_regressions_total", "orderpipe_inventory_state_behind_total"}

// detectors reads the detectors a role serves on addr's /metrics, each
// summed over its labels.
func detectors(c *cluster, addr string) (map[string]float64, error) {
	resp, err := c.http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	out := map[string]float64{}
	for _, name := range detectorNames {
		fam := fams[name]
		if fam == nil {
			continue
		}
		out[name] = 0
		for _, mt := range fam.GetMetric() {
			out[name] += mt.GetCounter().GetValue()
		}
	}
	return out, nil
}

// keepOnFailure keeps, if the scenario fails, what explains it: the
// saga's topics decoded record by record (sagaaudit.Dump), every role's log
// and the files more returns (the brokers' logs), in $ORDERPIPE_ARTIFACTS
// or else a new directory under the system's temporary one, which the test
// names.
func keepOnFailure(r *run, more func() map[string][]byte) {
	t := r.c.t
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir, err := artifacts(t.Name())
		if err != nil {
			t.Logf("keep the artifacts: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		topics := []string{string(topology.OrdersTable()), string(topology.InventoryTable()), string(topology.InventoryCommands), string(topology.InventoryResults)}
		var b bytes.Buffer
		if err := sagaaudit.Dump(ctx, r.c.kcl, &b, topics...); err != nil {
			t.Logf("dump %v: %v", topics, err)
		}
		keep := more()
		keep["topics.txt"] = b.Bytes()
		for _, m := range r.c.members() {
			keep[m.name+".log"] = m.p.Output()
		}
		for name, data := range keep {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Logf("keep %s: %v", name, err)
			}
		}
		t.Logf("kept the saga's topics and the logs in %s", dir)
	})
}

// artifacts makes the directory a failed test keeps its evidence in.
func artifacts(name string) (string, error) {
	name = strings.NewReplacer("/", "_", " ", "_").Replace(name)
	if root := os.Getenv("ORDERPIPE_ARTIFACTS"); root != "" {
		dir := filepath.Join(root, name)
		return dir, os.MkdirAll(dir, 0o755)
	}
	return os.MkdirTemp("", "orderpipe-"+name+"-")
}

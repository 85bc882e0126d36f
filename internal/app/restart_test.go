package app_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/membroker"
	"github.com/orderpipe/orderpipe/topology"
)

// restartReady bounds how long a process started again on its data dir
// may take to be ready: a few seconds here, so a minute only fails a
// process that cannot get ready at all (before the fix, the orders
// processor restarted forever on Goka's "delete your local cache").
const restartReady = time.Minute

// startAgain starts the process and fails t unless it is ready within
// restartReady; the process is stopped when t ends.
func startAgain(t *testing.T, cfg app.Config, roles app.Roles) *apptest.Process {
	t.Helper()
	began := time.Now()
	p, err := apptest.Start(cfg, roles)
	if err != nil {
		t.Fatalf("start again on the same data dir: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop the restarted process: %v", err)
		}
	})
	if d := time.Since(began); d > restartReady {
		t.Errorf("started again on the same data dir: ready after %s, want within %s", d.Round(time.Millisecond), restartReady)
	}
	t.Logf("started again on the same data dir: ready in %s", time.Since(began).Round(time.Millisecond))
	return p
}

// client is a system's HTTP side for the restart tests.
func client(t *testing.T, addr string) *system {
	return &system{t: t, base: "http://" + addr, http: &http.Client{Timeout: 30 * time.Second}}
}

// setStock sets sku's available units and waits until the API shows them.
func (s *system) setStock(sku string, available int) {
	s.t.Helper()
	if code, body := s.do("PUT", "/v1/inventory/"+sku, map[string]any{"available": available}, nil); code != 202 {
		s.t.Fatalf("PUT stock of %s: got %d %v, want 202", sku, code, body)
	}
	await.Until(s.t, "stock of "+sku+" visible", 30*time.Second, func() error {
		code, body := s.do("GET", "/v1/inventory/"+sku, nil, nil)
		if code != 200 || body["available"] != float64(available) {
			return fmt.Errorf("GET stock of %s: %d %v", sku, code, body)
		}
		return nil
	})
}

// confirmedOrder places an order of qty units of sku and returns its id
// once the API shows it confirmed.
func (s *system) confirmedOrder(sku string, qty int) string {
	s.t.Helper()
	code, body := s.do("POST", "/v1/orders", order{CustomerID: "c-restart", Currency: "EUR", Items: []line{{SKU: sku, Quantity: qty, Price: 100}}}, nil)
	if code != 202 {
		s.t.Fatalf("POST order: got %d %v, want 202", code, body)
	}
	id, _ := body["order_id"].(string)
	await.Until(s.t, "order "+id+" confirmed", 60*time.Second, func() error {
		code, body := s.do("GET", "/v1/orders/"+id+"?wait=2s", nil, nil)
		if code != 200 || body["status"] != "confirmed" {
			return fmt.Errorf("GET order %s: %d %v", id, code, body)
		}
		return nil
	})
	return id
}

// TestRunRestartsOnItsDataDir: `orderpipe run --data-dir DIR` (the
// embedded broker), stopped and started again on DIR, is ready again and
// still has every order it accepted: the embedded broker keeps its log in
// DIR, so the tables' local state and the log they come from agree.
func TestRunRestartsOnItsDataDir(t *testing.T) {
	pg := apptest.PostgresFor(t)
	cfg := app.Config{PostgresURL: pg.URL(), DataDir: t.TempDir(), Topology: topology.DefaultConfig()}
	roles := app.Roles{Ingest: true, Process: true, Sink: true, EnsureTopics: true}

	first, err := apptest.Start(cfg, roles)
	if err != nil {
		t.Fatal(err)
	}
	s := client(t, first.Addr)
	s.setStock("R1", 100)
	before := s.confirmedOrder("R1", 3)
	if err := first.Stop(); err != nil {
		t.Fatalf("first run: stop: %v", err)
	}

	s = client(t, startAgain(t, cfg, roles).Addr)
	if code, body := s.do("GET", "/v1/orders/"+before, nil, nil); code != 200 || body["status"] != "confirmed" {
		t.Errorf("order %s accepted before the restart: got %d %v, want 200 confirmed", before, code, body)
	}
	s.confirmedOrder("R1", 2)
	await.Until(t, "stock of R1 after both orders", 30*time.Second, func() error {
		code, body := s.do("GET", "/v1/inventory/R1", nil, nil)
		if code != 200 || body["available"] != float64(95) || body["reserved"] != float64(0) {
			return fmt.Errorf("got %d %v, want available 95, reserved 0", code, body)
		}
		return nil
	})
}

// TestDataDirOfAnotherCluster: a process started on a data dir whose table
// state came from another Kafka cluster (here: the first cluster is gone,
// a new one took its place) is ready again within restartReady, with the
// new cluster's tables: the old state is rebuilt from the new cluster's
// log, never served, and never a restart loop.
func TestDataDirOfAnotherCluster(t *testing.T) {
	old, err := membroker.Start()
	if err != nil {
		t.Fatal(err)
	}
	cfg := app.Config{Brokers: old.Brokers(), DataDir: t.TempDir(), Topology: topology.DefaultConfig()}
	roles := app.Roles{Ingest: true, Process: true, EnsureTopics: true}
	first, err := apptest.Start(cfg, roles)
	if err != nil {
		old.Close()
		t.Fatal(err)
	}
	s := client(t, first.Addr)
	s.setStock("A1", 100)
	before := s.confirmedOrder("A1", 3)
	if err := first.Stop(); err != nil {
		t.Fatalf("first run: stop: %v", err)
	}
	old.Close()
	// What internal/datadir removes when the origin changes: if the
	// processors and views kept their state elsewhere, it would not.
	for _, sub := range []string{"processor", "view"} {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, sub)); err != nil {
			t.Fatalf("table state of the first run: %v, want it under %s", err, sub)
		}
	}

	other, err := membroker.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	cfg.Brokers = other.Brokers()
	s = client(t, startAgain(t, cfg, roles).Addr)
	s.setStock("A1", 10)
	s.confirmedOrder("A1", 2)
	await.Until(t, "stock of A1 on the new cluster", 30*time.Second, func() error {
		code, body := s.do("GET", "/v1/inventory/A1", nil, nil)
		if code != 200 || body["available"] != float64(8) || body["reserved"] != float64(0) {
			return fmt.Errorf("got %d %v, want available 8, reserved 0", code, body)
		}
		return nil
	})
	if code, body := s.do("GET", "/v1/orders/"+before, nil, nil); code != 404 {
		t.Errorf("order %s of the old cluster: got %d %v, want 404: the new cluster does not have it", before, code, body)
	}
}

// TestDataDirInUse: a second process on a data dir in use stops at start,
// saying so, instead of fighting the first over its files.
func TestDataDirInUse(t *testing.T) {
	c, err := membroker.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cfg := app.Config{Brokers: c.Brokers(), DataDir: t.TempDir(), Topology: topology.DefaultConfig()}
	apptest.StartFor(t, cfg, app.Roles{Process: true, EnsureTopics: true})
	p, err := apptest.Start(cfg, app.Roles{Ingest: true})
	if err == nil {
		p.Stop()
		t.Fatal("a second process on the same data dir: got ready, want it refused")
	}
	if !strings.Contains(err.Error(), "in use by another orderpipe process") {
		t.Errorf("a second process on the same data dir: got %v, want it refused as in use", err)
	}
}

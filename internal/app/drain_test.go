package app_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/topology"
)

// get answers GET url on a connection of its own (so that a closed
// listener shows), with its status and body.
func get(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestShutdownDrainsBeforeTheListenerCloses: on shutdown, /readyz answers
// 503 "shutdown" on new connections for ShutdownDrain before connections
// are refused. An edge-only process also shows its client metrics: kprom's
// for the edge's producer and the lag collector's admin client, Sarama's
// for the views, and the views' lag.
func TestShutdownDrainsBeforeTheListenerCloses(t *testing.T) {
	const drain = 3 * time.Second
	p, err := apptest.Start(app.Config{Topology: topology.DefaultConfig(), ShutdownDrain: drain, LagInterval: 100 * time.Millisecond},
		app.Roles{Ingest: true})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + p.Addr
	if code, body, err := get(base + "/readyz"); err != nil || code != http.StatusOK || !strings.Contains(body, `"view_lag":"ok"`) {
		t.Fatalf("/readyz before the shutdown: got %d %s (%v), want 200 with view_lag ok", code, body, err)
	}
	resp, err := http.Post(base+"/v1/orders", "application/json",
		strings.NewReader(`{"customer_id":"c1","currency":"EUR","items":[{"sku":"sku-1","quantity":1,"unit_price_cents":100}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/orders: got %d, want 202", resp.StatusCode)
	}
	await.Until(t, "client metrics on /metrics", 10*time.Second, func() error {
		_, body, err := get(base + "/metrics")
		if err != nil {
			return err
		}
		for _, want := range []string{
			`orderpipe_produce_records_total{client="edge"`,
			`orderpipe_connects_total{client="admin"`,
			`orderpipe_sarama_`,
			`client="views"`,
			`orderpipe_view_lag_records{partition="0",view="orders"}`,
			`orderpipe_goka_view_partitions{state="running",view="orders"} 12`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("no %s in /metrics", want)
			}
		}
		return nil
	})

	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop() }()
	var draining time.Time
	await.Until(t, "/readyz to answer 503 shutdown", drain/2, func() error {
		code, body, err := get(base + "/readyz")
		if err != nil {
			return fmt.Errorf("got %v, want an answer", err)
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, `"shutdown":"shutting down`) {
			return fmt.Errorf("got %d %s, want 503 with the shutdown check", code, body)
		}
		draining = time.Now()
		return nil
	})
	await.Until(t, "connections refused after the drain", drain+30*time.Second, func() error {
		code, body, err := get(base + "/readyz")
		if err == nil {
			if code != http.StatusServiceUnavailable {
				t.Fatalf("during the drain /readyz answered %d %s, want 503", code, body)
			}
			return errors.New("still answering")
		}
		return nil
	})
	if took := time.Since(draining); took < drain-time.Second {
		t.Errorf("connections refused %s after /readyz turned 503, want about the drain, %s", took.Round(time.Millisecond), drain)
	}
	if err := <-stopped; err != nil {
		t.Errorf("stop: %v", err)
	}
}

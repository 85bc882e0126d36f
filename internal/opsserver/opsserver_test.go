package opsserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/health"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/prometheus/client_golang/prometheus"
)

func TestServer(t *testing.T) {
	var down atomic.Bool
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ops_test_total", Help: "a counter"})
	reg.MustRegister(c)
	c.Add(3)
	s := New("127.0.0.1:0", []health.Check{{Name: "postgres-sink", Fn: func() error {
		if down.Load() {
			return errors.New("postgres down")
		}
		return nil
	}}}, reg, testlog.New())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Listening()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("/healthz: %d %s", code, body)
	}
	readyz := func() (int, health.Report) {
		code, body := get("/readyz")
		var r health.Report
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("/readyz: %q: %v", body, err)
		}
		return code, r
	}
	if code, r := readyz(); code != 200 || r.Status != health.Ready {
		t.Errorf("/readyz: %d %+v, want 200 ready", code, r)
	}
	down.Store(true)
	if code, r := readyz(); code != 200 || r.Status != health.Degraded || r.Checks["postgres-sink"] != "postgres down" {
		t.Errorf("/readyz with a non-critical check failing: %d %+v, want 200 degraded naming it", code, r)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "ops_test_total 3") {
		t.Errorf("/metrics: %d, want the registry's counter: %s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context ending")
	}
}

func TestListenFailure(t *testing.T) {
	s := New("256.0.0.1:1", nil, prometheus.NewRegistry(), testlog.New())
	if err := s.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "ops listener") {
		t.Fatalf("Run on a bad address: %v, want an error naming the ops listener", err)
	}
	<-s.Listening()
}

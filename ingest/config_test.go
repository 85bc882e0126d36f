package ingest

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	for _, d := range []struct {
		name      string
		got, want any
	}{
		{"Listen", c.Listen, "127.0.0.1:8080"},
		{"MaxBodyBytes", c.MaxBodyBytes, 64 << 10},
		{"MaxBatchBodyBytes", c.MaxBatchBodyBytes, 4 << 20},
		{"MaxBatchOrders", c.MaxBatchOrders, 1000},
		{"MaxItems", c.MaxItems, 100},
		{"MaxQuantity", c.MaxQuantity, uint32(10000)},
		{"MaxInFlight", c.MaxInFlight, 4096},
		{"ProduceTimeout", c.ProduceTimeout, 5 * time.Second},
		{"MaxWait", c.MaxWait, 30 * time.Second},
		{"ReadTimeout", c.ReadTimeout, 5 * time.Second},
		{"WriteTimeout", c.WriteTimeout, 35 * time.Second},
		{"IdleTimeout", c.IdleTimeout, 30 * time.Second},
		{"MaxConnsPerIP", c.MaxConnsPerIP, 1024},
		{"RateLimit", c.RateLimit, 0.0},
	} {
		if d.got != d.want {
			t.Errorf("%s: got %v, want %v", d.name, d.got, d.want)
		}
	}
	if c := (Config{RateLimit: 2.5}).withDefaults(); c.RateBurst != 3 {
		t.Errorf("RateBurst for 2.5/s: got %d, want 3", c.RateBurst)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("the zero config: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Listen: "nonsense"}, "listen address"},
		{Config{MaxItems: 1001}, "max items"},
		{Config{MaxItems: -1}, "max items"},
		{Config{MaxQuantity: 1_000_001}, "max quantity"},
		{Config{MaxInFlight: -1}, "max in flight"},
		{Config{ProduceTimeout: -time.Second}, "produce timeout"},
		{Config{RateLimit: math.NaN()}, "rate limit"},
		{Config{RateLimit: -1}, "rate limit"},
		{Config{MaxBodyBytes: -1}, "max body bytes"},
		{Config{Listen: ":8080"}, "loopback"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error about %q", c.cfg, err, c.want)
		}
	}
	if _, err := New(Config{Listen: "0.0.0.0:0"}, Deps{}); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("New without keys on every interface: got %v, want a loopback error", err)
	}
	if _, err := New(Config{}, Deps{}); err == nil || !strings.Contains(err.Error(), "no brokers") {
		t.Errorf("New without a producer: got %v, want an error", err)
	}
}

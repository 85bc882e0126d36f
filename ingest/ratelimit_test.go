package ingest

import (
	"fmt"
	"testing"
	"time"
)

func TestRateLimiter(t *testing.T) {
	l := newRateLimiter(2, 3) // 2/s, burst 3
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 3 {
		if ok, _ := l.allow("a", t0); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, retry := l.allow("a", t0)
	if ok || retry != 1 {
		t.Fatalf("over the burst: got ok=%v retry=%d, want refused with Retry-After 1 (a token in 0.5s)", ok, retry)
	}
	// Refused requests use nothing up: half a second later one token is back.
	for range 10 {
		l.allow("a", t0)
	}
	if ok, _ := l.allow("a", t0.Add(500*time.Millisecond)); !ok {
		t.Fatal("the token refilled after 0.5s was taken by refused requests")
	}
	if ok, _ := l.allow("b", t0); !ok {
		t.Fatal("another client shares a's bucket")
	}
	slow := newRateLimiter(0.1, 1) // one every 10s
	slow.allow("c", t0)
	if _, retry := slow.allow("c", t0); retry != 10 {
		t.Fatalf("Retry-After at 0.1/s: got %d, want 10", retry)
	}
}

// The limiter forgets full buckets first and never holds more than
// maxRateClients clients.
func TestRateLimiterBounded(t *testing.T) {
	l := newRateLimiter(1000, 1)
	t0 := time.Unix(1_700_000_000, 0)
	for i := range maxRateClients + 10 {
		l.allow(fmt.Sprintf("ip-%d", i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(l.buckets); n > maxRateClients {
		t.Fatalf("%d clients remembered, bound %d", n, maxRateClients)
	}
}

package ingest

import (
	"math"
	"sync"
	"time"
)

// maxRateClients bounds the clients the rate limiter remembers, so that a
// flood of distinct source addresses cannot grow it without end.
const maxRateClients = 1 << 16

// rateLimiter is a token bucket per client: rate tokens a second, up to
// burst. It is safe for concurrent use.
type rateLimiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), buckets: make(map[string]*bucket)}
}

// allow takes a token of client at now. When there is none it returns
// false and the whole seconds until there will be one (for Retry-After).
func (l *rateLimiter) allow(client string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[client]
	if !ok {
		if len(l.buckets) >= maxRateClients {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[client] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := (1 - b.tokens) / l.rate
	return false, max(1, int(math.Ceil(wait)))
}

// evict forgets the clients whose bucket has refilled (they lose nothing:
// a new bucket starts full), or, if none has, an arbitrary half of them,
// which can only make the limiter more lenient for a while.
func (l *rateLimiter) evict(now time.Time) {
	full := l.burst / l.rate // seconds for an empty bucket to refill
	for k, b := range l.buckets {
		if now.Sub(b.last).Seconds() >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < maxRateClients {
		return
	}
	for k := range l.buckets {
		delete(l.buckets, k)
		if len(l.buckets) < maxRateClients/2 {
			return
		}
	}
}

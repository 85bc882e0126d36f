package ingest

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxRateClients bounds the clients the rate limiter remembers, so that a
// flood of distinct source addresses cannot grow it without end.
const maxRateClients = 1 << 16

// rateLimiter is a token bucket per client (golang.org/x/time/rate): rate
// tokens a second, up to burst. It only keeps the buckets by client and
// bounds how many it keeps. It is safe for concurrent use.
type rateLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newRateLimiter(r float64, burst int) *rateLimiter {
	return &rateLimiter{limit: rate.Limit(r), burst: burst, buckets: make(map[string]*rate.Limiter)}
}

// allow takes a token of client at now. When there is none it returns
// false and the whole seconds until there will be one (for Retry-After).
func (l *rateLimiter) allow(client string, now time.Time) (bool, int) {
	b := l.bucket(client, now)
	if b.AllowN(now, 1) {
		return true, 0
	}
	// Reserve to learn the wait, then give the token back: a refused
	// request must not use up the client's next one.
	res := b.ReserveN(now, 1)
	wait := res.DelayFrom(now)
	res.CancelAt(now)
	return false, max(1, int(math.Ceil(wait.Seconds())))
}

// bucket is client's limiter, made full on first use.
func (l *rateLimiter) bucket(client string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[client]
	if !ok {
		if len(l.buckets) >= maxRateClients {
			l.evict(now)
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[client] = b
	}
	return b
}

// evict forgets the clients whose bucket has refilled (they lose nothing:
// a new bucket starts full), or, if none has, an arbitrary half of them,
// which can only make the limiter more lenient for a while. l.mu is held.
func (l *rateLimiter) evict(now time.Time) {
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
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

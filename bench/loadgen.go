// Package bench drives orderpipe over HTTP and measures it: an open-loop
// load generator with latency percentiles, and benchmark scenarios (see
// bench_test.go) that print figures and ratios measured in the same run.
package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Load describes one run of the generator. Runs are bounded in count and
// in time, and only ever target loopback addresses.
type Load struct {
	// Addr is host:port of the edge; it must be a loopback address.
	Addr string
	// Rate is the offered requests per second (open loop: requests are sent
	// on schedule whether or not earlier ones were answered, and latency is
	// measured from the scheduled time, so a stall is not hidden). 0 means
	// closed loop: each of Concurrency workers sends as fast as answered.
	Rate float64
	// Requests is the number of requests to send. Required.
	Requests int
	// MaxDuration bounds the run. Default 2 minutes.
	MaxDuration time.Duration
	// Concurrency is the number of connections. Default 64.
	Concurrency int
	// Body returns the i-th request: method, path, body and headers.
	Body func(i int) Request
}

// Request is one HTTP request of a run.
type Request struct {
	Method, Path string
	Body         []byte
	Header       map[string]string
}

// Result sums up a run.
type Result struct {
	Sent, OK, Failed int
	Codes            map[int]int
	Elapsed          time.Duration
	Latencies        []time.Duration // sorted
	// Responses holds the body of each 2xx answer by request index, if
	// Load.KeepBodies was set.
	Responses [][]byte
}

// Throughput is successful requests per second.
func (r Result) Throughput() float64 { return float64(r.OK) / r.Elapsed.Seconds() }

// Percentile returns the p-th latency percentile (0 < p <= 100).
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(r.Latencies)))) - 1
	return r.Latencies[max(0, min(i, len(r.Latencies)-1))]
}

func (r Result) String() string {
	return fmt.Sprintf("%d sent, %d ok, %d failed in %s: %.0f ok/s, p50 %s p99 %s p99.9 %s, codes %v",
		r.Sent, r.OK, r.Failed, r.Elapsed.Round(time.Millisecond), r.Throughput(),
		r.Percentile(50), r.Percentile(99), r.Percentile(99.9), r.Codes)
}

// Run executes l and keeps the 2xx bodies.
func Run(ctx context.Context, l Load) (Result, error) {
	if l.Requests <= 0 || l.Body == nil {
		return Result{}, errors.New("bench: Requests and Body are required")
	}
	if err := checkLoopback(l.Addr); err != nil {
		return Result{}, err
	}
	if l.MaxDuration == 0 {
		l.MaxDuration = 2 * time.Minute
	}
	if l.Concurrency == 0 {
		l.Concurrency = 64
	}
	ctx, cancel := context.WithTimeout(ctx, l.MaxDuration)
	defer cancel()
	client := &fasthttp.HostClient{Addr: l.Addr, MaxConns: l.Concurrency, ReadTimeout: 30 * time.Second, WriteTimeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	res := Result{Codes: map[int]int{}, Responses: make([][]byte, l.Requests)}
	lat := make([]time.Duration, l.Requests)
	codes := make([]int, l.Requests)
	var next atomic.Int64
	start := time.Now()
	interval := time.Duration(0)
	if l.Rate > 0 {
		interval = time.Duration(float64(time.Second) / l.Rate)
	}
	var wg sync.WaitGroup
	for range l.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= l.Requests {
					return
				}
				scheduled := time.Now()
				if interval > 0 {
					scheduled = start.Add(time.Duration(i) * interval)
					if d := time.Until(scheduled); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
				}
				r := l.Body(i)
				req.Reset()
				req.SetRequestURI("http://" + l.Addr + r.Path)
				req.Header.SetMethod(r.Method)
				if r.Body != nil {
					req.Header.SetContentType("application/json")
					req.SetBodyRaw(r.Body)
				}
				for k, v := range r.Header {
					req.Header.Set(k, v)
				}
				err := client.Do(req, resp)
				lat[i] = time.Since(scheduled)
				if err != nil {
					codes[i] = -1
					continue
				}
				codes[i] = resp.StatusCode()
				if codes[i] >= 200 && codes[i] < 300 {
					res.Responses[i] = append([]byte(nil), resp.Body()...)
				}
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	for i, c := range codes {
		if c == 0 {
			continue // not sent: the run hit MaxDuration
		}
		res.Sent++
		res.Codes[c]++
		if c >= 200 && c < 300 {
			res.OK++
			res.Latencies = append(res.Latencies, lat[i])
		} else {
			res.Failed++
		}
	}
	sort.Slice(res.Latencies, func(i, j int) bool { return res.Latencies[i] < res.Latencies[j] })
	return res, nil
}

// checkLoopback refuses any target that is not on this machine's loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bench: target %q: %w", addr, err)
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return fmt.Errorf("bench: resolve %q: %w", host, err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("bench: target %s is not a loopback address; load is only sent to 127.0.0.0/8 or ::1", addr)
		}
	}
	return nil
}

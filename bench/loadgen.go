// Package bench drives orderpipe over HTTP and measures it: an open-loop
// load generator with latency percentiles, and benchmark scenarios (see
// bench_test.go) that print figures and ratios measured in the same run.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// Load describes one run of the generator. Runs are bounded in count and
// in time, and only ever target loopback addresses.
type Load struct {
	// Addr is host:port of the edge; it must be a loopback address.
	Addr string
	// Rate is the offered requests per second (open loop: requests are sent
	// on schedule whether or not earlier ones were answered, and latency is
	// measured from the scheduled time, so a stall is not hidden: the
	// coordinated-omission correction). 0 means closed loop: each of
	// Concurrency workers sends as fast as it is answered.
	Rate float64
	// Requests is the number of requests to send. Required.
	Requests int
	// MaxDuration bounds the run. Default 2 minutes.
	MaxDuration time.Duration
	// Concurrency is the number of connections, and so of requests in
	// flight. Default 64. In open loop it must cover Rate × latency, or
	// requests wait for a connection; that wait is counted in their latency.
	Concurrency int
	// Body returns the i-th request: method, path, body and headers.
	Body func(i int) Request
	// KeepBodies keeps each 2xx answer's body in Result.Responses.
	KeepBodies bool
	// Progress, if set, receives a line every ProgressEvery (default 2s):
	// answered, accepted, rate and the generator's CPU so far.
	Progress      io.Writer
	ProgressEvery time.Duration
	// Name prefixes the progress lines.
	Name string
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
	// Latency of the 2xx answers in microseconds, from the intended send
	// time, in an HDR histogram (1µs to 10 minutes, 3 significant digits).
	Latency *hdrhistogram.Histogram
	// Responses holds the body of each 2xx answer by request index, if
	// Load.KeepBodies was set.
	Responses [][]byte
	// CPU is the CPU time this whole process used during the run (user +
	// system): the generator's own cost when the system under test runs
	// in other processes.
	CPU time.Duration
}

// Throughput is successful requests per second.
func (r Result) Throughput() float64 { return float64(r.OK) / r.Elapsed.Seconds() }

// Percentile returns the p-th latency percentile (0 < p <= 100).
func (r Result) Percentile(p float64) time.Duration {
	if r.Latency == nil || r.Latency.TotalCount() == 0 {
		return 0
	}
	return time.Duration(r.Latency.ValueAtQuantile(p)) * time.Microsecond
}

// CPUCores is the generator process's CPU use in cores over the run.
func (r Result) CPUCores() float64 { return r.CPU.Seconds() / r.Elapsed.Seconds() }

func (r Result) String() string {
	return fmt.Sprintf("%d sent, %d ok, %d failed in %s: %.0f ok/s, p50 %s p99 %s p99.9 %s, codes %v, generator CPU %.2f cores",
		r.Sent, r.OK, r.Failed, r.Elapsed.Round(time.Millisecond), r.Throughput(),
		r.Percentile(50), r.Percentile(99), r.Percentile(99.9), r.Codes, r.CPUCores())
}

// newHistogram covers 1µs to 10 minutes at 3 significant digits.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
}

// ProcessCPU is the CPU time (user + system) this process has used.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Run executes l.
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
	if l.ProgressEvery == 0 {
		l.ProgressEvery = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, l.MaxDuration)
	defer cancel()
	client := &fasthttp.HostClient{Addr: l.Addr, MaxConns: l.Concurrency, ReadTimeout: 30 * time.Second, WriteTimeout: 10 * time.Second,
		MaxConnWaitTimeout: l.MaxDuration}
	defer client.CloseIdleConnections()

	res := Result{Codes: map[int]int{}, Latency: newHistogram()}
	if l.KeepBodies {
		res.Responses = make([][]byte, l.Requests)
	}
	codes := make([]int, l.Requests)
	var next, answered, ok atomic.Int64
	cpu0 := ProcessCPU()
	start := time.Now()
	interval := time.Duration(0)
	if l.Rate > 0 {
		interval = time.Duration(float64(time.Second) / l.Rate)
	}
	// One histogram for every worker, under mu: a histogram per worker
	// (~170 KB each at this range and precision) would cost 170 MB at the
	// 1,024 connections of an open-loop step, and a short lock per answer
	// costs little at these rates.
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for range l.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			timer := time.NewTimer(0)
			defer timer.Stop()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= l.Requests {
					return
				}
				scheduled := time.Now()
				if interval > 0 {
					scheduled = start.Add(time.Duration(i) * interval)
					if d := time.Until(scheduled); d > 0 {
						timer.Reset(d)
						select {
						case <-timer.C:
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
					ct := "application/json"
					if v, ok := r.Header["Content-Type"]; ok {
						ct = v
					}
					req.Header.SetContentType(ct)
					req.SetBodyRaw(r.Body)
				}
				for k, v := range r.Header {
					req.Header.Set(k, v)
				}
				err := client.Do(req, resp)
				lat := time.Since(scheduled)
				answered.Add(1)
				if err != nil {
					codes[i] = -1
					continue
				}
				codes[i] = resp.StatusCode()
				if codes[i] >= 200 && codes[i] < 300 {
					ok.Add(1)
					mu.Lock()
					_ = res.Latency.RecordValue(max(1, lat.Microseconds()))
					mu.Unlock()
					if l.KeepBodies {
						res.Responses[i] = append([]byte(nil), resp.Body()...)
					}
				}
			}
		}()
	}
	if l.Progress != nil {
		done := make(chan struct{})
		var pwg sync.WaitGroup
		pwg.Add(1)
		go func() { // owned here: stopped by close(done) below
			defer pwg.Done()
			t := time.NewTicker(l.ProgressEvery)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					el := time.Since(start)
					fmt.Fprintf(l.Progress, "%s%6.1fs: %d/%d answered, %d ok (%.0f ok/s), generator CPU %.2f cores\n",
						l.Name, el.Seconds(), answered.Load(), l.Requests, ok.Load(), float64(ok.Load())/el.Seconds(),
						(ProcessCPU()-cpu0).Seconds()/el.Seconds())
				}
			}
		}()
		defer func() { close(done); pwg.Wait() }()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.CPU = ProcessCPU() - cpu0
	for _, c := range codes {
		if c == 0 {
			continue // not sent: the run hit MaxDuration
		}
		res.Sent++
		res.Codes[c]++
		if c >= 200 && c < 300 {
			res.OK++
		} else {
			res.Failed++
		}
	}
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

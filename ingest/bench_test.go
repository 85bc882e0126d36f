package ingest

import (
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/valyala/fasthttp"
)

// BenchmarkPostOrder posts orders over loopback TCP from parallel clients to
// an edge producing to kfake, and, in the same run, to a null handler that
// answers 202 without reading or producing anything. orders/s is the edge's
// throughput, null-req/s the HTTP stack's alone, and edge/null what the edge
// keeps of it. No processor runs: each client reports its order final to
// orderUpdated as soon as it is accepted, as the orders view would, so that
// admission control (at its default) sees orders complete.
func BenchmarkPostOrder(b *testing.B) {
	h := newHarness(b, options{})
	final, _ := saga.NewOrderID()
	finalState := (&saga.OrderState{Version: 2, OrderID: final, Status: saga.StatusConfirmed}).Encode()
	bodies := make([]string, 512)
	for i := range bodies {
		bodies[i] = orderBody(fmt.Sprintf("bench-customer-%d", i), fmt.Sprintf("SKU-%d:%d", i%37, 1+i%5), fmt.Sprintf("SKU-X%d:1", i%11))
	}

	null := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(fasthttp.StatusAccepted)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"order_id":"0190c1b2-7a3e-7cc1-9d4e-1f2a3b4c5d6e","status":"pending"}`)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go null.Serve(ln) //nolint:errcheck // ends with Shutdown below
	b.Cleanup(func() { _ = null.Shutdown() })

	// 64 clients in all on the 2-core CI machine: enough requests in flight
	// for the producer to batch.
	b.SetParallelism(max(1, 256/runtime.GOMAXPROCS(0)))
	run := func(addr string, onAccepted func(id string)) time.Duration {
		client := &fasthttp.HostClient{Addr: addr, MaxConns: 256}
		var next atomic.Int64
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.Header.SetMethod(fasthttp.MethodPost)
			req.SetRequestURI("http://" + addr + "/v1/orders")
			req.Header.SetContentType("application/json")
			for pb.Next() {
				req.SetBodyString(bodies[next.Add(1)%int64(len(bodies))])
				if err := client.Do(req, resp); err != nil || resp.StatusCode() != fasthttp.StatusAccepted {
					b.Errorf("POST: %v %d %s", err, resp.StatusCode(), resp.Body())
					return
				}
				if onAccepted != nil {
					onAccepted(string(resp.Body()[len(`{"order_id":"`):][:36]))
				}
			}
		})
		return time.Since(start)
	}

	b.ResetTimer()
	edge := run(h.edge.Addr(), func(id string) { h.edge.orderUpdated(id, finalState) })
	b.StopTimer()
	nullTook := run(ln.Addr().String(), nil)

	edgeRate := float64(b.N) / edge.Seconds()
	nullRate := float64(b.N) / nullTook.Seconds()
	b.ReportMetric(edgeRate, "orders/s")
	b.ReportMetric(nullRate, "null-req/s")
	b.ReportMetric(edgeRate/nullRate, "edge/null")
}

package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// route is one endpoint.
type route struct {
	// name labels the route's metrics.
	name string
	// scopes grant access, any one of them; nil makes the route public
	// (no authentication, no rate limit).
	scopes []string
	handle func(ctx *fasthttp.RequestCtx, c *client, param string)
}

// resource is a path's routes by method.
type resource struct{ get, post, put *route }

// pick returns the route of method, or the Allow header of the resource.
func (r resource) pick(method []byte) (*route, string) {
	var rt *route
	switch string(method) {
	case fasthttp.MethodGet, fasthttp.MethodHead:
		rt = r.get
	case fasthttp.MethodPost:
		rt = r.post
	case fasthttp.MethodPut:
		rt = r.put
	}
	if rt != nil {
		return rt, ""
	}
	var allow []byte
	for _, m := range []struct {
		name string
		rt   *route
	}{{"GET, HEAD", r.get}, {"POST", r.post}, {"PUT", r.put}} {
		if m.rt != nil {
			if len(allow) > 0 {
				allow = append(allow, ", "...)
			}
			allow = append(allow, m.name...)
		}
	}
	return nil, string(allow)
}

// routes are the edge's resources, built once by New.
type routes struct {
	orders, batch, order, stock, healthz, readyz, metrics, openapi resource
	ui, uiAsset, root                                              resource
}

func (e *Edge) newRoutes() routes {
	return routes{
		orders:  resource{post: &route{"post_order", []string{ScopeOrdersWrite}, e.postOrder}},
		batch:   resource{post: &route{"post_batch", []string{ScopeOrdersWrite}, e.postBatch}},
		order:   resource{get: &route{"get_order", []string{ScopeOrdersRead}, e.getOrder}},
		healthz: resource{get: &route{"healthz", nil, e.healthz}},
		readyz:  resource{get: &route{"readyz", nil, e.readyz}},
		metrics: resource{get: &route{"metrics", nil, e.serveMetrics}},
		openapi: resource{get: &route{"openapi", nil, e.serveOpenAPI}},
		ui:      resource{get: &route{"ui", nil, e.serveUI}},
		uiAsset: resource{get: &route{"ui_asset", nil, e.serveUI}},
		root:    resource{get: &route{"root", nil, e.redirectToUI}},
		stock: resource{
			get: &route{"get_stock", []string{ScopeOrdersRead, ScopeInventoryAdmin}, e.getStock},
			put: &route{"put_stock", []string{ScopeInventoryAdmin}, e.putStock},
		},
	}
}

// resolve finds the route of a request and its path parameter. With no
// route for the method it returns the Allow header; with no route at all,
// neither. path is fasthttp's normalized, decoded path.
func (e *Edge) resolve(method, path []byte) (rt *route, param, allow string) {
	var res resource
	switch string(path) {
	case "/v1/orders":
		res = e.routes.orders
	case "/v1/orders:batch":
		res = e.routes.batch
	case "/healthz":
		res = e.routes.healthz
	case "/readyz":
		res = e.routes.readyz
	case "/metrics":
		res = e.routes.metrics
	case "/openapi.json":
		res = e.routes.openapi
	case "/ui", "/ui/":
		res = e.routes.ui
	case "/":
		res = e.routes.root
	default:
		var ok bool
		if param, ok = pathParam(path, "/v1/orders/"); ok {
			res = e.routes.order
		} else if param, ok = pathParam(path, "/v1/inventory/"); ok {
			res = e.routes.stock
		} else if param, ok = pathParam(path, "/ui/"); ok {
			res = e.routes.uiAsset
		} else {
			return nil, "", ""
		}
	}
	rt, allow = res.pick(method)
	return rt, param, allow
}

// pathParam returns the last segment of path if path is prefix plus one
// non-empty segment; the segment is a fresh string.
func pathParam(path []byte, prefix string) (string, bool) {
	rest, ok := bytes.CutPrefix(path, []byte(prefix))
	if !ok || len(rest) == 0 || bytes.IndexByte(rest, '/') >= 0 {
		return "", false
	}
	return string(rest), true
}

// isBatchURI reports whether a raw request URI may be the batch endpoint:
// it only picks the body limit fasthttp reads up to, the handler checks
// the real one.
func isBatchURI(uri []byte) bool { return bytes.Contains(uri, []byte(":batch")) }

// serve is the edge's handler: panic recovery and metrics around routing,
// authentication, rate limiting and authorization.
func (e *Edge) serve(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	name := "unmatched"
	who := "" // the authenticated client, for the access log
	defer func() {
		// fasthttp does not recover panics: one would kill the process.
		if v := recover(); v != nil {
			e.metrics.panics.Inc()
			e.log.Error("handler panic", "route", name, "panic", v, "stack", string(debug.Stack()))
			ctx.Response.Reset()
			writeProblem(ctx, internalError())
		}
		took := time.Since(start)
		e.metrics.observeRequest(name, ctx.Response.StatusCode(), took)
		if e.cfg.AccessLog && e.sampled(ctx.Response.StatusCode()) {
			e.accessLog(ctx, name, who, took)
		}
	}()

	rt, param, allow := e.resolve(ctx.Method(), ctx.Path())
	switch {
	case rt == nil && allow != "":
		writeProblem(ctx, methodNotAllowed(allow))
		return
	case rt == nil:
		writeProblem(ctx, notFound("there is no such resource"))
		return
	}
	name = rt.name
	if rt.scopes == nil {
		rt.handle(ctx, e.anon, param)
		return
	}

	c := e.anon
	keys := e.keys.Load()
	if keys != nil {
		token, ok := bearerToken(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization))
		if !ok {
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="orderpipe"`)
			writeProblem(ctx, unauthorized("send an API key: Authorization: Bearer <key>"))
			return
		}
		if c = keys.authenticate(token); c == nil {
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="orderpipe", error="invalid_token"`)
			writeProblem(ctx, unauthorized("the API key is not valid"))
			return
		}
		who = c.id
	}
	if e.limiter != nil {
		// Per client; per address without authentication.
		limitKey := "client:" + c.id
		if keys == nil {
			limitKey = "ip:" + ctx.RemoteIP().String()
		}
		if ok, retry := e.limiter.allow(limitKey, start); !ok {
			e.metrics.rateLimited.Inc()
			writeProblem(ctx, rateLimited(retry))
			return
		}
	}
	if !c.allowed(rt.scopes) {
		// RFC 6750 §3: the scope the request needs, in the header and the
		// problem, so that a client knows which key to ask for.
		need := strings.Join(rt.scopes, " ")
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="orderpipe", error="insufficient_scope", scope="`+need+`"`)
		writeProblem(ctx, forbidden(fmt.Sprintf("this API key lacks the scope %s, which %s %s needs", strings.Join(rt.scopes, " or "), ctx.Method(), ctx.Path())))
		return
	}
	rt.handle(ctx, c, param)
}

// sampled reports whether the access log keeps a request answered with
// status: every AccessLogEvery-th one, and every 5xx.
func (e *Edge) sampled(status int) bool {
	if status >= 500 || e.cfg.AccessLogEvery <= 1 {
		return true
	}
	return e.accessSeq.Add(1)%uint64(e.cfg.AccessLogEvery) == 0
}

// accessLog writes one line per request: what was asked, by whom, the
// answer and how long it took, with the order id when the answer names one
// (its Location), so that a client's report can be found in the log.
func (e *Edge) accessLog(ctx *fasthttp.RequestCtx, route, client string, took time.Duration) {
	attrs := []slog.Attr{
		slog.String("method", string(ctx.Method())), slog.String("path", string(ctx.Path())),
		slog.String("route", route), slog.Int("status", ctx.Response.StatusCode()),
		slog.Duration("took", took), slog.String("remote", ctx.RemoteIP().String()),
	}
	if client != "" {
		attrs = append(attrs, slog.String("client", client))
	}
	if loc := ctx.Response.Header.Peek(fasthttp.HeaderLocation); len(loc) > 0 {
		attrs = append(attrs, slog.String("order_id", string(bytes.TrimPrefix(loc, []byte("/v1/orders/")))))
	}
	e.log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

// serveError answers a request fasthttp could not read.
func (e *Edge) serveError(ctx *fasthttp.RequestCtx, err error) {
	var (
		p     *problem
		small *fasthttp.ErrSmallBuffer
		nerr  net.Error
	)
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		limit := e.cfg.MaxBodyBytes
		if isBatchURI(ctx.Request.Header.RequestURI()) {
			limit = e.cfg.MaxBatchBodyBytes
		}
		p = tooLarge("the body exceeds " + strconv.Itoa(limit) + " bytes")
	case errors.As(err, &small):
		p = newProblem(fasthttp.StatusRequestHeaderFieldsTooLarge, "headers-too-large", "Request headers too large", "the request line and headers exceed the read buffer")
	case errors.As(err, &nerr) && nerr.Timeout():
		p = newProblem(fasthttp.StatusRequestTimeout, "request-timeout", "Request timeout", "the request was not received within the read timeout")
	default:
		p = newProblem(fasthttp.StatusBadRequest, "bad-request", "Bad request", "the request could not be parsed as HTTP/1.1")
	}
	writeProblem(ctx, p)
	e.metrics.observeRequest("unreadable", p.Status, 0)
}

func (e *Edge) serveMetrics(ctx *fasthttp.RequestCtx, _ *client, _ string) { e.promHandler(ctx) }

// hasMediaType reports whether a Content-Type header is want, ignoring
// case and parameters; a charset parameter must be utf-8 (JSON is UTF-8).
func hasMediaType(ct []byte, want string) bool {
	mt, params, _ := bytes.Cut(ct, []byte{';'})
	if !bytes.EqualFold(bytes.TrimSpace(mt), []byte(want)) {
		return false
	}
	for len(params) > 0 {
		var p []byte
		p, params, _ = bytes.Cut(params, []byte{';'})
		k, v, _ := bytes.Cut(p, []byte{'='})
		if bytes.EqualFold(bytes.TrimSpace(k), []byte("charset")) &&
			!bytes.EqualFold(bytes.Trim(bytes.TrimSpace(v), `"`), []byte("utf-8")) {
			return false
		}
	}
	return true
}

package ingest

import (
	"github.com/orderpipe/orderpipe/internal/dashboard"
	"github.com/valyala/fasthttp"
)

// serveUI is GET /ui and /ui/{asset}: the live dashboard (package
// dashboard). Public like /metrics and /readyz, which it reads; its order
// lookup sends the API key typed into the page.
func (e *Edge) serveUI(ctx *fasthttp.RequestCtx, _ *client, asset string) {
	a, ok := dashboard.Lookup(asset)
	if !ok {
		writeProblem(ctx, notFound("the dashboard has no file "+asset))
		return
	}
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", dashboard.ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(fasthttp.HeaderCacheControl, "no-cache")
	ctx.SetContentType(a.ContentType)
	ctx.SetBody(a.Body)
}

// redirectToUI is GET /: the dashboard is the edge's front page.
func (e *Edge) redirectToUI(ctx *fasthttp.RequestCtx, _ *client, _ string) {
	// Relative (RFC 9110 allows it), so that it works behind any proxy;
	// fasthttp's Redirect would make it absolute with this edge's host.
	ctx.Response.Header.Set(fasthttp.HeaderLocation, "/ui")
	ctx.SetStatusCode(fasthttp.StatusFound)
}

// Package dashboard is the live dashboard the edge serves at /ui: one HTML
// page, one script and one style sheet, embedded in the binary, with no
// build step and nothing loaded from elsewhere (the page's Content
// Security Policy allows its own origin only).
//
// The page reads what the edge already serves, every second: /metrics
// (Prometheus text, parsed in the browser) for the rates per stage (from
// counter deltas), the lag per consumer group and per view, latency
// percentiles (from histogram buckets) and the dead letters; /readyz for
// readiness and its reasons; and GET /v1/orders/{id}?trace=1 for an
// order's journey, with the API key typed into the page when
// authentication is on. Metrics a process does not export show "—".
package dashboard

import (
	"embed"
	"path"
	"strings"
)

// files holds the assets. It is package-level only because go:embed
// requires it; it is read-only.
//
//go:embed assets
var files embed.FS

// Asset is one file of the dashboard.
type Asset struct {
	Body        []byte
	ContentType string
}

// contentTypes are the types of the assets, by extension.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// Lookup returns the asset called name: "" or "index.html" is the page,
// "app.js" and "style.css" what it loads. ok is false for any other name.
func Lookup(name string) (a Asset, ok bool) {
	if name == "" {
		name = "index.html"
	}
	typ, known := contentTypes[path.Ext(name)]
	if !known || strings.ContainsAny(name, `/\`) {
		return Asset{}, false
	}
	body, err := files.ReadFile("assets/" + name)
	if err != nil {
		return Asset{}, false
	}
	return Asset{Body: body, ContentType: typ}, true
}

// ContentSecurityPolicy is the policy to serve the page with: its own
// script, style and requests, nothing inline and nothing from elsewhere.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

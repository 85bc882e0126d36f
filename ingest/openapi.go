package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"

	_ "embed" // for openAPIDocument

	"github.com/valyala/fasthttp"
)

// openAPIDocument is the OpenAPI 3.1 contract of the edge (SPEC section 3),
// served at GET /openapi.json. openapi_test.go holds it to the code: its
// routes to the routing table, its limits to the defaults of Config, and
// real requests and answers to its schemas.
//
//go:embed openapi.json
var openAPIDocument string

// openAPIETag is the strong ETag of openAPIDocument: it changes only with
// the binary. Computed per request (tens of µs) rather than held in a
// package variable: the document is fetched rarely.
func openAPIETag() string {
	sum := sha256.Sum256([]byte(openAPIDocument))
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// openAPICacheControl lets clients and proxies keep the document for five
// minutes, then revalidate it with If-None-Match: a deploy is seen soon.
const openAPICacheControl = "public, max-age=300"

// serveOpenAPI is GET /openapi.json: public, cacheable, 304 for a client
// that holds the current document.
func (e *Edge) serveOpenAPI(ctx *fasthttp.RequestCtx, _ *client, _ string) {
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, openAPICacheControl)
	etag := openAPIETag()
	ctx.Response.Header.Set(fasthttp.HeaderETag, etag)
	if etagMatches(ctx.Request.Header.Peek(fasthttp.HeaderIfNoneMatch), etag) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBodyString(openAPIDocument)
}

// etagMatches reports whether an If-None-Match header lists etag, with the
// weak comparison RFC 9110 (section 13.1.2) asks for.
func etagMatches(header []byte, etag string) bool {
	for len(header) > 0 {
		var tag []byte
		tag, header, _ = bytes.Cut(header, []byte{','})
		tag = bytes.TrimSpace(tag)
		if string(tag) == "*" || string(bytes.TrimPrefix(tag, []byte("W/"))) == etag {
			return true
		}
	}
	return false
}

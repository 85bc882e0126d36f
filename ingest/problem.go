package ingest

import (
	"encoding/json"
	"strconv"

	"github.com/valyala/fasthttp"
)

// problemTypeBase prefixes every problem type. The URIs are identifiers
// that clients may switch on; they never change meaning.
const problemTypeBase = "https://orderpipe.dev/problems/"

// problem is an RFC 9457 problem detail, the body of every error answer.
type problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Errors []fieldError `json:"errors,omitempty"`

	// retryAfter is the Retry-After header in seconds; 0 leaves it out.
	retryAfter int
	// allow is the Allow header of a 405.
	allow string
}

// fieldError is one broken rule of a request body; Field is a path such as
// "items[2].quantity".
type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// retryAfterSeconds is what 503 answers ask clients to wait: overload and
// broker trouble are usually over within a second or two, and clients add
// their own backoff.
const retryAfterSeconds = 1

func newProblem(status int, slug, title, detail string) *problem {
	return &problem{Type: problemTypeBase + slug, Title: title, Status: status, Detail: detail}
}

// The problems the edge answers with. Each slug is a stable type URI.

func malformedJSON(detail string) *problem {
	return newProblem(fasthttp.StatusBadRequest, "malformed-json", "Malformed JSON", detail)
}

func invalidOrder(errs []fieldError) *problem {
	p := newProblem(fasthttp.StatusBadRequest, "invalid-order", "Invalid order", "the order breaks the rules listed in errors; nothing was stored")
	p.Errors = errs
	return p
}

func invalidRequest(detail string) *problem {
	return newProblem(fasthttp.StatusBadRequest, "invalid-request", "Invalid request", detail)
}

func unsupportedMediaType(want string) *problem {
	return newProblem(fasthttp.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type", "Content-Type must be "+want)
}

func tooLarge(detail string) *problem {
	return newProblem(fasthttp.StatusRequestEntityTooLarge, "payload-too-large", "Payload too large", detail)
}

func idempotencyKeyReuse() *problem {
	return newProblem(fasthttp.StatusUnprocessableEntity, "idempotency-key-reuse", "Idempotency-Key reused",
		"this Idempotency-Key was already used with a different request body; use a new key for a new order")
}

func notFound(detail string) *problem {
	return newProblem(fasthttp.StatusNotFound, "not-found", "Not found", detail)
}

func methodNotAllowed(allow string) *problem {
	p := newProblem(fasthttp.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed", "allowed: "+allow)
	p.allow = allow
	return p
}

func unauthorized(detail string) *problem {
	return newProblem(fasthttp.StatusUnauthorized, "unauthorized", "Unauthorized", detail)
}

func forbidden(detail string) *problem {
	return newProblem(fasthttp.StatusForbidden, "forbidden", "Forbidden", detail)
}

func rateLimited(retryAfter int) *problem {
	p := newProblem(fasthttp.StatusTooManyRequests, "rate-limited", "Too many requests", "this client is over its request rate; retry after the delay in Retry-After")
	p.retryAfter = retryAfter
	return p
}

func unavailable(slug, title, detail string) *problem {
	p := newProblem(fasthttp.StatusServiceUnavailable, slug, title, detail)
	p.retryAfter = retryAfterSeconds
	return p
}

func overloaded(detail string) *problem {
	return unavailable("overloaded", "Overloaded", detail)
}

// outcomeUnknown is the one answer that promises nothing: the order's
// record reached a broker that did not answer in time, and it may have been
// stored. It is 504, not 503, because a 503 means the order will not happen.
// A retry with the same Idempotency-Key gets the real answer once the
// broker answers.
func outcomeUnknown() *problem {
	p := newProblem(fasthttp.StatusGatewayTimeout, "outcome-unknown", "Outcome unknown",
		"the broker did not confirm the write in time; the order may or may not have been accepted: retry with the same Idempotency-Key")
	p.retryAfter = retryAfterSeconds
	return p
}

func partitionInDoubt() *problem {
	return unavailable("broker-unavailable", "Broker unavailable",
		"the broker has not answered for this order's partition; the order was not produced and will not happen: retry")
}

func notReady(detail string) *problem {
	return unavailable("not-ready", "Not ready", detail)
}

func internalError() *problem {
	return newProblem(fasthttp.StatusInternalServerError, "internal", "Internal error", "the edge failed to handle this request; it has been logged")
}

// writeProblem answers ctx with p.
func writeProblem(ctx *fasthttp.RequestCtx, p *problem) {
	body, err := json.Marshal(p)
	if err != nil {
		// A problem holds strings and ints only; this cannot happen.
		body = []byte(`{"type":"` + problemTypeBase + `internal","title":"Internal error","status":500}`)
		p = internalError()
	}
	ctx.SetStatusCode(p.Status)
	ctx.SetContentType("application/problem+json")
	if p.retryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(p.retryAfter))
	}
	if p.allow != "" {
		ctx.Response.Header.Set("Allow", p.allow)
	}
	ctx.SetBody(body)
}

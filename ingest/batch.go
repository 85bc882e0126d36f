package ingest

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// batchResult is one element of the answer of POST /v1/orders:batch.
type batchResult struct {
	OrderID string   `json:"order_id,omitempty"`
	Status  string   `json:"status,omitempty"`
	Error   *problem `json:"error,omitempty"`
}

// postBatch is POST /v1/orders:batch: a JSON array or NDJSON of orders.
// The valid ones are produced together and the answer waits for all their
// acks (each within ProduceTimeout), so every "pending" in it is durable.
// With an Idempotency-Key K, order i is submitted with key "K#i", exactly
// as if it had been sent alone with that key.
func (e *Edge) postBatch(ctx *fasthttp.RequestCtx, c *client, _ string) {
	body := ctx.PostBody()
	ct := ctx.Request.Header.ContentType()
	ndjson := hasMediaType(ct, "application/x-ndjson")
	if !ndjson && !hasMediaType(ct, "application/json") {
		writeProblem(ctx, unsupportedMediaType("application/json (an array of orders) or application/x-ndjson"))
		return
	}
	if len(body) > e.cfg.MaxBatchBodyBytes {
		writeProblem(ctx, tooLarge(fmt.Sprintf("a batch is at most %d bytes", e.cfg.MaxBatchBodyBytes)))
		return
	}
	key, p := idempotencyKey(ctx)
	if p != nil {
		writeProblem(ctx, p)
		return
	}
	var entries []batchEntry
	if ndjson {
		entries, p = decodeBatchNDJSON(body, e.limits, e.cfg.MaxBatchOrders, e.cfg.MaxBodyBytes)
	} else {
		entries, p = decodeBatchArray(body, e.limits, e.cfg.MaxBatchOrders)
	}
	if p == nil {
		p = e.checkKeyable(key)
	}
	if p != nil {
		writeProblem(ctx, p)
		return
	}
	now := time.Now()
	subs := make([]*submission, len(entries))
	replayed := make([]bool, len(entries))
	for i, en := range entries {
		if en.in == nil {
			continue
		}
		k := ""
		if key != "" {
			k = key + "#" + strconv.Itoa(i)
		}
		var joined bool
		subs[i], joined = e.submit(c, k, en.in, now)
		replayed[i] = joined
	}
	results := make([]batchResult, len(entries))
	for i, sub := range subs {
		if sub == nil {
			results[i].Error = entries[i].prob
			continue
		}
		o := sub.wait()
		switch {
		case o.prob != nil:
			results[i].Error = o.prob
		case o.replayed || replayed[i]:
			// As for a single order: a replay says where the order is now.
			results[i] = batchResult{OrderID: sub.id, Status: e.currentStatus(sub.id, c)}
		default:
			results[i] = batchResult{OrderID: sub.id, Status: "pending"}
		}
	}
	e.writeJSON(ctx, fasthttp.StatusOK, results)
}

// batchEntry is one order of a batch: decoded, or the problem that rejects
// it alone.
type batchEntry struct {
	in   *orderInput
	prob *problem
}

// decodeBatchArray reads a JSON array of orders. A syntax error anywhere
// rejects the whole batch (its elements cannot be told apart any more); an
// element that breaks a rule rejects only itself.
func decodeBatchArray(data []byte, lim limits, maxOrders int) ([]batchEntry, *problem) {
	s := &scanner{buf: data}
	if s.peek() != '[' {
		return nil, malformedJSON(s.unexpected("a JSON array of orders").Error())
	}
	var out []batchEntry
	tooMany := false
	err := s.array(func(i int) error {
		if i >= maxOrders {
			tooMany = true
			return s.skipValue(0)
		}
		if s.peek() != '{' {
			out = append(out, batchEntry{prob: invalidOrder([]fieldError{{Field: "", Message: "must be a JSON object"}})})
			return s.skipValue(0)
		}
		in, errs, err := s.order(lim)
		if errs.count > 0 {
			out = append(out, batchEntry{prob: invalidOrder(errs.list)})
		} else {
			out = append(out, batchEntry{in: in})
		}
		return err
	})
	if err == nil && !s.atEnd() {
		err = s.fail("trailing data after the JSON array")
	}
	switch {
	case err != nil:
		return nil, malformedJSON(err.Error())
	case tooMany:
		return nil, tooLarge(fmt.Sprintf("a batch holds at most %d orders", maxOrders))
	case len(out) == 0:
		return nil, invalidRequest("the batch is empty")
	}
	return out, nil
}

// decodeBatchNDJSON reads newline-delimited orders, one JSON object a line;
// blank lines are skipped. Each line stands alone: a malformed or oversized
// line rejects only itself.
func decodeBatchNDJSON(data []byte, lim limits, maxOrders, maxLine int) ([]batchEntry, *problem) {
	var out []batchEntry
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if len(bytes.Trim(line, " \t\r")) == 0 {
			continue
		}
		if len(out) == maxOrders {
			return nil, tooLarge(fmt.Sprintf("a batch holds at most %d orders", maxOrders))
		}
		if len(line) > maxLine {
			out = append(out, batchEntry{prob: tooLarge(fmt.Sprintf("an order is at most %d bytes", maxLine))})
			continue
		}
		in, prob := decodeOrder(line, lim)
		out = append(out, batchEntry{in: in, prob: prob})
	}
	if len(out) == 0 {
		return nil, invalidRequest("the batch is empty")
	}
	return out, nil
}

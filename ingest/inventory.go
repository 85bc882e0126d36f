package ingest

import (
	"fmt"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// stockJSON is the answer of GET /v1/inventory/{sku}.
type stockJSON struct {
	SKU       string `json:"sku"`
	Available int64  `json:"available"`
	Reserved  int64  `json:"reserved"`
	Sold      int64  `json:"sold"`
}

// putStock is PUT /v1/inventory/{sku} {"available": n}. The stock level is
// a SetStock command on the inventory.commands topic, keyed by the SKU, so
// the inventory processor applies it in order with the reservations: the
// edge never writes stock around the topic. 202 means the command is
// durable, not yet applied.
func (e *Edge) putStock(ctx *fasthttp.RequestCtx, _ *client, sku string) {
	if !validSKU(sku) {
		writeProblem(ctx, invalidRequest(fmt.Sprintf("a SKU is 1 to %d characters from A-Z, a-z, 0-9, '.', '_', '-'", maxSKULen)))
		return
	}
	if !hasMediaType(ctx.Request.Header.ContentType(), "application/json") {
		writeProblem(ctx, unsupportedMediaType("application/json"))
		return
	}
	body := ctx.PostBody()
	if len(body) > e.cfg.MaxBodyBytes {
		writeProblem(ctx, tooLarge(fmt.Sprintf("the body is at most %d bytes", e.cfg.MaxBodyBytes)))
		return
	}
	available, p := decodeStockLevel(body)
	if p != nil {
		writeProblem(ctx, p)
		return
	}
	cmd := saga.InventoryCommand{Kind: saga.CmdSetStock, Available: available}
	rec := &kgo.Record{Topic: string(topology.InventoryCommands), Key: []byte(sku), Value: cmd.Encode()}
	answer := make(chan error, 1)
	e.produce(rec, func(err error) { answer <- err }, nil)
	if err := <-answer; err != nil {
		writeProblem(ctx, produceProblem(err))
		return
	}
	e.writeJSON(ctx, fasthttp.StatusAccepted, struct {
		SKU       string `json:"sku"`
		Available int64  `json:"available"`
	}{sku, available})
}

// getStock is GET /v1/inventory/{sku}.
func (e *Edge) getStock(ctx *fasthttp.RequestCtx, _ *client, sku string) {
	if !validSKU(sku) {
		writeProblem(ctx, invalidRequest(fmt.Sprintf("a SKU is 1 to %d characters from A-Z, a-z, 0-9, '.', '_', '-'", maxSKULen)))
		return
	}
	if !readable(e.stock) {
		writeProblem(ctx, notReady("the inventory view is still recovering"))
		return
	}
	v, err := e.stock.Get(sku)
	if err != nil {
		e.log.Warn("inventory view lookup failed", "sku", sku, "err", err)
		writeProblem(ctx, notReady("the inventory view cannot be read"))
		return
	}
	st, ok := v.(*saga.StockState)
	switch {
	case (v == nil || (ok && st == nil)) && !e.stock.Recovered():
		writeProblem(ctx, notReady("the inventory view is reconnecting to the broker: it cannot tell yet whether SKU "+sku+" has stock"))
		return
	case v == nil || (ok && st == nil):
		writeProblem(ctx, notFound("there is no stock for SKU "+sku))
		return
	case !ok:
		e.log.Error("inventory view holds the wrong type", "sku", sku, "type", fmt.Sprintf("%T", v))
		writeProblem(ctx, internalError())
		return
	}
	e.writeJSON(ctx, fasthttp.StatusOK, stockJSON{SKU: sku, Available: st.Available, Reserved: st.Reserved, Sold: st.Sold})
}

// decodeStockLevel reads the body of PUT /v1/inventory/{sku}: {"available": n}.
func decodeStockLevel(data []byte) (int64, *problem) {
	s := &scanner{buf: data}
	if s.peek() != '{' {
		return 0, malformedJSON(s.unexpected("a JSON object").Error())
	}
	var (
		errs      fieldErrors
		available int64
		seen      bool
	)
	err := s.object(func(key string) error {
		switch {
		case key != "available":
			errs.add(truncate(key), "%s", unknownField(key, "available"))
			return s.skipValue(0)
		case seen:
			errs.add(key, "duplicate field")
			return s.skipValue(0)
		}
		seen = true
		v, _, err := s.intValue(key, 0, maxAvailable, &errs)
		available = v
		return err
	})
	if err == nil && !s.atEnd() {
		err = s.fail("trailing data after the JSON object")
	}
	if err != nil {
		return 0, malformedJSON(err.Error())
	}
	if !seen {
		errs.add("available", "is required")
	}
	if errs.count > 0 {
		p := newProblem(fasthttp.StatusBadRequest, "invalid-stock-level", "Invalid stock level", "the body breaks the rules listed in errors; nothing was changed")
		p.Errors = errs.list
		return 0, p
	}
	return available, nil
}

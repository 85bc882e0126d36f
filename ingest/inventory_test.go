package ingest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/saga"

	"github.com/orderpipe/orderpipe/topology"
)

func TestInventory(t *testing.T) {
	h := newHarness(t, options{})
	r := h.do("PUT", "/v1/inventory/SKU-9", "application/json", `{"available": 250}`)
	if r.status != 202 || string(r.body) != `{"sku":"SKU-9","available":250}` {
		t.Fatalf("PUT: got %s, want 202 {\"sku\":\"SKU-9\",\"available\":250}", r)
	}
	recs := h.records(string(topology.InventoryCommands))
	if len(recs) != 1 {
		t.Fatalf("records on inventory.commands: got %d, want 1", len(recs))
	}
	cmd, err := saga.DecodeInventoryCommand(recs[0].Value)
	switch {
	case err != nil:
		t.Fatal(err)
	case string(recs[0].Key) != "SKU-9" || recs[0].Partition != topology.PartitionFor([]byte("SKU-9"), testPartitions):
		t.Errorf("record key %q partition %d, want SKU-9 in its topology partition", recs[0].Key, recs[0].Partition)
	case cmd.Kind != saga.CmdSetStock || cmd.Available != 250:
		t.Errorf("command: got %+v, want SetStock 250", cmd)
	}

	for _, c := range []struct {
		path, contentType, body string
		status                  int
	}{
		{"/v1/inventory/SKU-9", "application/json", `{"available":-1}`, 400},
		{"/v1/inventory/SKU-9", "application/json", `{"available":1000000000001}`, 400},
		{"/v1/inventory/SKU-9", "application/json", `{"available":2.5}`, 400},
		{"/v1/inventory/SKU-9", "application/json", `{"available":1,"reserved":0}`, 400},
		{"/v1/inventory/SKU-9", "application/json", `{"available":1}{}`, 400},
		{"/v1/inventory/SKU-9", "text/plain", `{"available":1}`, 415},
		{"/v1/inventory/a%20b", "application/json", `{"available":1}`, 400},
		{"/v1/inventory/" + strings.Repeat("A", 65), "application/json", `{"available":1}`, 400},
	} {
		r := h.do("PUT", c.path, c.contentType, c.body)
		if r.status != c.status {
			t.Errorf("PUT %s %s: got %s, want %d", c.path, c.body, r, c.status)
			continue
		}
		problemOf(t, r)
	}
	if n := len(h.records(string(topology.InventoryCommands))); n != 1 {
		t.Fatalf("records after refused PUTs: got %d, want still 1", n)
	}

	if r := h.do("GET", "/v1/inventory/SKU-9", "", ""); r.status != 404 {
		t.Errorf("GET before the inventory table has the SKU: got %s, want 404", r)
	}
	st := saga.NewStockState()
	st.Version, st.Available, st.Reserved, st.Sold, st.UpdatedAt = 3, 240, 7, 3, time.Now()
	h.writeTable(topology.InventoryTable(), "SKU-9", st.Encode())
	await.Until(t, "stock in the view", 10*time.Second, func() error {
		_, err := h.stock.Get("SKU-9")
		if v, _ := h.stock.Get("SKU-9"); v == nil {
			return errNotYet
		}
		return err
	})
	r = h.do("GET", "/v1/inventory/SKU-9", "", "")
	var got stockJSON
	if err := json.Unmarshal(r.body, &got); err != nil || r.status != 200 || got != (stockJSON{"SKU-9", 240, 7, 3}) {
		t.Errorf("GET: got %s, want 200 available 240 reserved 7 sold 3", r)
	}
	if r := h.do("GET", "/v1/inventory/bad%20sku", "", ""); r.status != 400 {
		t.Errorf("GET with a bad SKU: got %s, want 400", r)
	}
}

package processors

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/topology"
)

// TestCorruptPartitionIsRebuilt: a table partition whose LevelDB files are
// garbage opens again (repaired, or empty to be rebuilt from the
// changelog) instead of failing the processor for good.
func TestCorruptPartitionIsRebuilt(t *testing.T) {
	c := Config{DataDir: t.TempDir(), Logger: testlog.New()}
	var permanent error
	build, err := c.storageBuilder(topology.OrdersTable(), "processor/orders", func(err error) { permanent = err })
	if err != nil {
		t.Fatal(err)
	}
	st, err := build("orders-table", 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Set("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(c.DataDir, "processor/orders", "orders-table.3")
	files, err := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifest in %s (%v)", dir, err)
	}
	for _, f := range files {
		if err := os.WriteFile(f, []byte("not a manifest at all"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st, err = build("orders-table", 3)
	if err != nil {
		t.Fatalf("reopening a corrupt partition: got %v, want it repaired or rebuilt", err)
	}
	defer st.Close()
	if permanent != nil {
		t.Errorf("a rebuildable partition was reported permanent: %v", permanent)
	}
	if v, err := st.Get("k"); err != nil || (v != nil && string(v) != "v") {
		t.Errorf("after the repair: got %q, %v; want the value or nothing (rebuilt)", v, err)
	}
}

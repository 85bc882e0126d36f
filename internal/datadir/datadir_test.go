package datadir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderpipe/orderpipe/internal/membroker"
	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestOpenLocks: a second Open of a held dir fails and names the holder;
// after Close the dir can be opened again.
func TestOpenLocks(t *testing.T) {
	path := t.TempDir()
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path)
	if err == nil || !strings.Contains(err.Error(), "in use by another orderpipe process") {
		t.Fatalf("second Open of a held data dir: got %v, want in use", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = Open(path)
	if err != nil {
		t.Fatalf("Open after Close: got %v, want the dir", err)
	}
	d.Close()
}

// put creates a file of table state under the data dir.
func put(t *testing.T, d *Dir, rel string) {
	t.Helper()
	path := filepath.Join(d.Path(), rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestReconcile: table state is kept only when its recorded origin is the
// cluster's now; anything else in the dir is always kept.
func TestReconcile(t *testing.T) {
	a := Origin{ClusterID: "c1", TopicIDs: map[string]string{"orders-table": "A", "inventory-table": "B"}}
	recreated := Origin{ClusterID: "c1", TopicIDs: map[string]string{"orders-table": "A2", "inventory-table": "B"}}
	other := Origin{ClusterID: "c2", TopicIDs: a.TopicIDs}
	for _, tc := range []struct {
		name string
		// before is the origin recorded before (nil: none); corrupt
		// writes an unreadable record instead.
		before  *Origin
		corrupt bool
		now     Origin
		kept    bool
	}{
		{name: "same origin", before: &a, now: a, kept: true},
		{name: "no record (a data dir from before the record)", now: a},
		{name: "unreadable record", corrupt: true, now: a},
		{name: "another cluster", before: &a, now: other},
		{name: "a table topic created again", before: &a, now: recreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if tc.before != nil {
				if err := d.record(*tc.before); err != nil {
					t.Fatal(err)
				}
			}
			if tc.corrupt {
				put(t, d, originFile)
			}
			put(t, d, "processor/orders/orders-table.0/000001.log")
			put(t, d, "view/orders-table/orders-table.0/000001.log")
			put(t, d, "broker/meta.json")
			put(t, d, "notes.txt")
			if err := d.Reconcile(tc.now, testlog.New()); err != nil {
				t.Fatal(err)
			}
			for _, sub := range []string{"processor", "view"} {
				if got := exists(filepath.Join(d.Path(), sub)); got != tc.kept {
					t.Errorf("%s kept: got %v, want %v", sub, got, tc.kept)
				}
			}
			for _, rel := range []string{"broker/meta.json", "notes.txt"} {
				if !exists(filepath.Join(d.Path(), rel)) {
					t.Errorf("%s: removed, want it kept (not table state)", rel)
				}
			}
			got, why := d.recorded()
			if why != "" || got.differences(tc.now) != "" {
				t.Errorf("recorded origin after Reconcile: got %+v (%s), want %+v", got, why, tc.now)
			}
		})
	}
}

// TestReadOrigin: a topic deleted and created again has a new id, so its
// origin differs from the one before; reading it again gives the same.
func TestReadOrigin(t *testing.T) {
	c, err := membroker.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A client per step: franz-go answers metadata from its cache for
	// MetadataMinAge, and a step must see what the one before it did.
	admin := func() *kadm.Client {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return kadm.NewClient(cl)
	}
	ctx := t.Context()
	if _, err := admin().CreateTopic(ctx, 2, 1, nil, "t-table"); err != nil {
		t.Fatal(err)
	}
	first, err := ReadOrigin(ctx, admin(), "t-table")
	if err != nil {
		t.Fatal(err)
	}
	again, err := ReadOrigin(ctx, admin(), "t-table")
	if err != nil {
		t.Fatal(err)
	}
	if d := first.differences(again); d != "" {
		t.Errorf("origin read twice: got differences %s, want none", d)
	}
	if _, err := admin().DeleteTopic(ctx, "t-table"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin().CreateTopic(ctx, 2, 1, nil, "t-table"); err != nil {
		t.Fatal(err)
	}
	recreated, err := ReadOrigin(ctx, admin(), "t-table")
	if err != nil {
		t.Fatal(err)
	}
	if d := first.differences(recreated); !strings.Contains(d, "topic t-table id") {
		t.Errorf("origin after the topic was created again: got differences %q, want a new topic id", d)
	}
	if _, err := ReadOrigin(ctx, admin(), "no-such-topic"); err == nil {
		t.Error("origin of a topic that does not exist: got no error, want one")
	}
}

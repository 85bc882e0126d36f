package batchstore

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/lovoo/goka/storage"
	"github.com/syndtr/goleveldb/leveldb"
)

func open(t *testing.T, dir string, o Options) *Store {
	t.Helper()
	db, err := leveldb.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return New(db, o)
}

func get(t *testing.T, s storage.Storage, key string) string {
	t.Helper()
	v, err := s.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	if v == nil {
		return "<nil>"
	}
	return string(v)
}

// Reads see writes at once, before and after they reach the disk, and a
// clean close keeps everything.
func TestReadYourWritesAndClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p0")
	s := open(t, dir, Options{MaxPending: 3})
	must(t, s.Set("a", []byte("1")))
	must(t, s.Set("b", []byte("2")))
	if got := get(t, s, "a"); got != "1" {
		t.Fatalf("a = %s before the flush", got)
	}
	must(t, s.Delete("b")) // the third write: the batch goes to disk
	if s.batch.Len() != 0 || len(s.overlay) != 0 {
		t.Fatalf("not flushed at MaxPending: %d pending", s.batch.Len())
	}
	if got := get(t, s, "b"); got != "<nil>" {
		t.Fatalf("b = %s after delete", got)
	}
	must(t, s.Set("c", []byte("3")))
	must(t, s.SetOffset(41))
	if off, _ := s.GetOffset(-1); off != 41 {
		t.Fatalf("pending offset = %d", off)
	}
	if ok, _ := s.Has("c"); !ok {
		t.Fatal("Has(c) = false while pending")
	}
	must(t, s.Close())

	s = open(t, dir, Options{})
	defer s.Close()
	for k, want := range map[string]string{"a": "1", "b": "<nil>", "c": "3"} {
		if got := get(t, s, k); got != want {
			t.Errorf("after reopen %s = %s, want %s", k, got, want)
		}
	}
	if off, _ := s.GetOffset(-1); off != 41 {
		t.Errorf("offset after reopen = %d, want 41", off)
	}
}

// A crash (the database closed without a flush) loses the overlay, values
// and offset together: what is on disk is the table as of its offset.
func TestCrashLosesValuesAndOffsetTogether(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p0")
	s := open(t, dir, Options{MaxPending: 1000})
	must(t, s.Set("k", []byte("v1")))
	must(t, s.SetOffset(10))
	must(t, s.MarkRecovered()) // on disk: k=v1 at offset 10
	must(t, s.Set("k", []byte("v2")))
	must(t, s.SetOffset(11))
	must(t, s.db.Close()) // crash: no flush

	s = open(t, dir, Options{})
	defer s.Close()
	off, err := s.GetOffset(-1)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "k"); off != 10 || got != "v1" {
		t.Fatalf("after a crash: k=%s at offset %d, want v1 at 10", got, off)
	}
	if got, _ := s.GetOffset(-1); got != 10 {
		t.Fatalf("offset %d", got)
	}
}

// The bytes bound flushes as the count bound does.
func TestFlushAtMaxPendingBytes(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "p0"), Options{MaxPending: 1 << 20, MaxPendingBytes: 100})
	defer s.Close()
	must(t, s.Set("big", make([]byte, 200)))
	if s.batch.Len() != 0 {
		t.Fatal("a write over MaxPendingBytes stayed pending")
	}
}

// The data Goka's own LevelDB storage wrote opens here, and the other way
// round: existing data directories keep working.
func TestGokaFormat(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p0")
	db, err := leveldb.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := storage.New(db)
	if err != nil {
		t.Fatal(err)
	}
	must(t, g.Open())
	must(t, g.MarkRecovered())
	must(t, g.Set("x", []byte("from goka")))
	must(t, g.SetOffset(7))
	must(t, g.Close())

	s := open(t, dir, Options{})
	if got := get(t, s, "x"); got != "from goka" {
		t.Fatalf("x = %s", got)
	}
	if off, _ := s.GetOffset(-1); off != 7 {
		t.Fatalf("offset = %d, want 7", off)
	}
	must(t, s.Set("y", []byte("from batchstore")))
	must(t, s.SetOffset(8))
	must(t, s.Close())

	db, err = leveldb.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, _ = storage.New(db)
	must(t, g.MarkRecovered())
	defer g.Close()
	if got := get(t, g, "y"); got != "from batchstore" {
		t.Fatalf("goka reads y = %s", got)
	}
	if off, _ := g.GetOffset(-1); off != 8 {
		t.Fatalf("goka reads offset %d, want 8", off)
	}
}

// Iterators see pending writes and never the offset key.
func TestIterator(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "p0"), Options{})
	defer s.Close()
	for i := range 5 {
		must(t, s.Set(fmt.Sprintf("k%d", i), []byte{byte(i)}))
	}
	must(t, s.Delete("k2"))
	must(t, s.SetOffset(99))
	it, err := s.Iterator()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for it.Next() {
		keys = append(keys, string(it.Key()))
	}
	it.Release()
	if fmt.Sprint(keys) != "[k0 k1 k3 k4]" {
		t.Fatalf("keys %v", keys)
	}
	it, err = s.IteratorWithRange([]byte("k3"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Release()
	if !it.Next() || string(it.Key()) != "k3" || it.Next() {
		t.Fatal("prefix iterator over k3")
	}
}

// Readers and a writer at once (run with -race).
func TestConcurrentReaders(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "p0"), Options{MaxPending: 16})
	defer s.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				v, err := s.Get(fmt.Sprintf("k%d", i%100))
				if err != nil {
					t.Error(err)
					return
				}
				if v != nil && len(v) != 8 {
					t.Errorf("torn value %q", v)
					return
				}
			}
		}()
	}
	for i := range 2000 {
		must(t, s.Set(fmt.Sprintf("k%d", i%100), fmt.Appendf(nil, "%08d", i)))
	}
	wg.Wait()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

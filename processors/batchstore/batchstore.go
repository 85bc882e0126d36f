// Package batchstore is Goka table storage on LevelDB that writes in
// batches. Goka's own LevelDB storage puts every record, and after recovery
// every offset, with a Put of its own: each is a journal write(2), and in the
// profiles of `process` and `ingest` under load those syscalls were the
// largest single cost (a quarter of the edge's CPU, for its views).
//
// Here writes go to a memory overlay and a leveldb.Batch, and the batch is
// written when it holds MaxPending operations or MaxPendingBytes, before an
// iterator is made, at MarkRecovered and at Close. The offset travels in the
// same batch as the values it covers, so what is on disk is always a table
// as of some changelog offset (or ahead of it, which replaying the
// changelog from there repairs, as with Goka's storage).
//
// What a crash loses is the overlay: at most one batch of writes that the
// changelog holds, and that recovery re-reads from the stored offset. A
// stop through Close loses nothing. The on-disk format (values by key, the
// offset as a decimal string under "__offset") is Goka's, so existing data
// directories open as they are.
package batchstore

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/lovoo/goka/storage"
	"github.com/syndtr/goleveldb/leveldb"
	ldbiter "github.com/syndtr/goleveldb/leveldb/iterator"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// offsetKey is where Goka's LevelDB storage keeps the table's offset.
const offsetKey = "__offset"

// Defaults for Options.
const (
	DefaultMaxPending      = 1024
	DefaultMaxPendingBytes = 1 << 20
)

// Options bound the overlay.
type Options struct {
	// MaxPending is how many writes (sets, deletes) wait before the batch
	// is written. Default DefaultMaxPending.
	MaxPending int
	// MaxPendingBytes bounds the keys and values waiting. Default
	// DefaultMaxPendingBytes.
	MaxPendingBytes int
}

// pending is a write not on disk yet: a value, or a deletion.
type pending struct {
	value   []byte
	deleted bool
}

// Store is a storage.Storage. It is safe for concurrent use: Goka writes
// from a partition's goroutine while readers (the edge's GETs) read.
type Store struct {
	db   *leveldb.DB
	opts Options

	mu      sync.Mutex
	overlay map[string]pending
	batch   leveldb.Batch
	bytes   int
	// offset is the newest offset set; dirty says it is not on disk yet.
	offset int64
	dirty  bool
	closed bool
}

var _ storage.Storage = (*Store)(nil)

// New returns a Store over db, which it closes on Close.
func New(db *leveldb.DB, o Options) *Store {
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = DefaultMaxPendingBytes
	}
	return &Store{db: db, opts: o, overlay: make(map[string]pending)}
}

// Open does nothing: there is no background work to start.
func (s *Store) Open() error { return nil }

// Close writes what is pending and closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.flushLocked()
	if cerr := s.db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("batchstore: close: %w", cerr)
	}
	return err
}

// Has reports whether key has a value.
func (s *Store) Has(key string) (bool, error) {
	v, err := s.Get(key)
	return v != nil, err
}

// Get returns key's value, or nil.
func (s *Store) Get(key string) ([]byte, error) {
	s.mu.Lock()
	p, ok := s.overlay[key]
	s.mu.Unlock()
	if ok {
		if p.deleted {
			return nil, nil
		}
		return p.value, nil
	}
	v, err := s.db.Get([]byte(key), nil)
	if err == leveldb.ErrNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("batchstore: get %q: %w", key, err)
	}
	return v, nil
}

// Set stores value under key. It keeps a copy: a view's values are slices
// of a whole fetch response, which the overlay must not keep alive.
func (s *Store) Set(key string, value []byte) error {
	if key == offsetKey {
		return fmt.Errorf("batchstore: %q is reserved for the offset", key)
	}
	return s.write(key, pending{value: append([]byte{}, value...)})
}

// Delete removes key.
func (s *Store) Delete(key string) error { return s.write(key, pending{deleted: true}) }

func (s *Store) write(key string, p pending) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("batchstore: write %q after close", key)
	}
	s.overlay[key] = p
	if p.deleted {
		s.batch.Delete([]byte(key))
	} else {
		s.batch.Put([]byte(key), p.value)
	}
	s.bytes += len(key) + len(p.value)
	if s.batch.Len() >= s.opts.MaxPending || s.bytes >= s.opts.MaxPendingBytes {
		return s.flushLocked()
	}
	return nil
}

// GetOffset returns the table's offset, or def when none was ever stored.
func (s *Store) GetOffset(def int64) (int64, error) {
	s.mu.Lock()
	if s.dirty {
		off := s.offset
		s.mu.Unlock()
		return off, nil
	}
	s.mu.Unlock()
	v, err := s.db.Get([]byte(offsetKey), nil)
	if err == leveldb.ErrNotFound {
		return def, nil
	}
	if err != nil {
		return 0, fmt.Errorf("batchstore: get offset: %w", err)
	}
	off, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("batchstore: decode offset %q: %w", v, err)
	}
	return off, nil
}

// SetOffset records the offset; it is written with the next batch, so
// never before the values it covers.
func (s *Store) SetOffset(offset int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset, s.dirty = offset, true
	return nil
}

// MarkRecovered writes what is pending: the recovered table is on disk.
func (s *Store) MarkRecovered() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

// flushLocked writes the batch and the offset in one LevelDB write.
// s.mu must be held.
func (s *Store) flushLocked() error {
	if s.batch.Len() == 0 && !s.dirty {
		return nil
	}
	if s.dirty {
		s.batch.Put([]byte(offsetKey), strconv.AppendInt(nil, s.offset, 10))
	}
	if err := s.db.Write(&s.batch, nil); err != nil {
		return fmt.Errorf("batchstore: write %d operations: %w", s.batch.Len(), err)
	}
	s.batch.Reset()
	clear(s.overlay)
	s.bytes, s.dirty = 0, false
	return nil
}

// Iterator iterates over every key (the offset excluded), after writing
// what is pending.
func (s *Store) Iterator() (storage.Iterator, error) {
	return s.iterator(nil, &opt.ReadOptions{DontFillCache: true})
}

// IteratorWithRange iterates over [start, limit), or over the keys with
// prefix start when limit is empty, as Goka's storage does.
func (s *Store) IteratorWithRange(start, limit []byte) (storage.Iterator, error) {
	if len(limit) > 0 {
		return s.iterator(&util.Range{Start: start, Limit: limit}, nil)
	}
	return s.iterator(util.BytesPrefix(start), nil)
}

func (s *Store) iterator(r *util.Range, ro *opt.ReadOptions) (storage.Iterator, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.flushLocked(); err != nil {
		return nil, err
	}
	return &iterator{it: s.db.NewIterator(r, ro)}, nil
}

// iterator skips the offset key.
type iterator struct{ it ldbiter.Iterator }

func (i *iterator) Next() bool {
	for i.it.Next() {
		if string(i.it.Key()) != offsetKey {
			return true
		}
	}
	return false
}

func (i *iterator) Seek(key []byte) bool {
	if !i.it.Seek(key) {
		return false
	}
	if string(i.it.Key()) == offsetKey {
		return i.Next()
	}
	return true
}

func (i *iterator) Err() error             { return i.it.Error() }
func (i *iterator) Key() []byte            { return i.it.Key() }
func (i *iterator) Value() ([]byte, error) { return i.it.Value(), nil }
func (i *iterator) Release()               { i.it.Release() }

package sagaaudit

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// partKey is a key in one partition: a lineage, since a processor keeps
// each partition's table apart.
type partKey struct {
	partition int32
	key       string
}

// lineage is what the audit remembers of one key's records so far.
type lineage struct {
	// maxVersion and maxLastOffset are the highest seen, and where.
	maxVersion      uint64
	maxVersionAt    int64
	maxLastOffset   int64
	maxLastOffsetAt int64
	states          map[uint64]stateSeen // by version
	// lastAt and lastVersion are the key's last record's.
	lastAt      int64
	lastVersion uint64
	// keptPosition is the position (LastOffset for stock, Version for
	// orders) of the state a rebuild keeps.
	keptPosition int64
}

// stateSeen is the first state written under a version: its digest
// without timestamps, the digest of the record's bytes, and its offset.
type stateSeen struct {
	digest, raw [sha256.Size]byte
	at          int64
}

func (r *Report) readTables(ctx context.Context, cl *kgo.Client, topo topology.Config) error {
	adm := kadm.NewClient(cl)
	tables := []string{string(topology.InventoryTable()), string(topology.OrdersTable())}
	ends, err := endOffsets(ctx, adm, tables...)
	if err != nil {
		return err
	}
	for _, t := range tables {
		if n := int32(len(ends[t])); n != topo.Partitions {
			return fmt.Errorf("topic %s has %d partitions, the topology %d", t, n, topo.Partitions)
		}
	}
	lineages := map[string]map[partKey]*lineage{}
	for _, t := range tables {
		lineages[t] = map[partKey]*lineage{}
	}
	return scan(ctx, cl, ends, func(rec *kgo.Record) {
		r.Records[rec.Topic]++
		r.tableRecord(rec, topo.Partitions, lineages[rec.Topic])
	})
}

// tableRecord checks one changelog record against its key's lineage.
func (r *Report) tableRecord(rec *kgo.Record, partitions int32, lineages map[partKey]*lineage) {
	key := string(rec.Key)
	home := topology.PartitionFor(rec.Key, partitions) == rec.Partition
	if !home {
		r.add(WrongPartition, rec, "the key hashes to partition %d of %d", topology.PartitionFor(rec.Key, partitions), partitions)
	}
	pk := partKey{rec.Partition, key}
	isStock := rec.Topic == string(topology.InventoryTable())
	if rec.Value == nil {
		// A tombstone ends the lineage; nothing here writes one, but a
		// rebuild would forget the key, and so does the audit.
		delete(lineages, pk)
		if isStock {
			delete(r.recovered, pk)
			delete(r.stockHistory, pk) // the fold does not know tombstones
		}
		if home {
			if isStock {
				delete(r.Stock, key)
			} else {
				delete(r.Orders, key)
			}
		}
		return
	}
	value := bytes.Clone(rec.Value) // the kept states refer to it
	var (
		version    uint64
		lastOffset int64 = -1
		digest     [sha256.Size]byte
		stock      *saga.StockState
		order      *saga.OrderState
		err        error
	)
	if isStock {
		if stock, err = saga.DecodeStockState(value); err != nil {
			r.add(Undecodable, rec, "stock state: %v", err)
			return
		}
		version, lastOffset, digest = stock.Version, stock.LastOffset, stockDigest(stock)
		r.stockHistory[pk] = append(r.stockHistory[pk], stockRecord{at: rec.Offset, lastOffset: lastOffset, digest: digest, summary: summary(stock)})
	} else {
		if order, err = saga.DecodeOrderState(value); err != nil {
			r.add(Undecodable, rec, "order state: %v", err)
			return
		}
		version, digest = order.Version, orderDigest(order)
	}
	raw := sha256.Sum256(value)

	l := lineages[pk]
	if l == nil {
		l = &lineage{states: map[uint64]stateSeen{}, maxLastOffset: -1, keptPosition: -1}
		lineages[pk] = l
	} else {
		seen, again := l.states[version]
		back := version < l.maxVersion || (isStock && lastOffset < l.maxLastOffset)
		switch {
		case back && again && seen.raw == raw:
			r.add(Resent, rec, "the record of version %d at offset %d, byte for byte, after version %d at offset %d",
				version, seen.at, l.maxVersion, l.maxVersionAt)
		default:
			if version < l.maxVersion {
				r.add(VersionBack, rec, "version %d after version %d at offset %d (the record before, at offset %d, has version %d)",
					version, l.maxVersion, l.maxVersionAt, l.lastAt, l.lastVersion)
			}
			if isStock && lastOffset < l.maxLastOffset {
				r.add(LastOffsetBack, rec, "last offset %d (version %d) after last offset %d at offset %d",
					lastOffset, version, l.maxLastOffset, l.maxLastOffsetAt)
			}
			if again && seen.digest != digest {
				r.add(VersionForked, rec, "version %d was written at offset %d with another state", version, seen.at)
			}
		}
	}
	if _, ok := l.states[version]; !ok {
		l.states[version] = stateSeen{digest: digest, raw: raw, at: rec.Offset}
	}
	if version >= l.maxVersion {
		l.maxVersion, l.maxVersionAt = version, rec.Offset
	}
	if isStock && lastOffset >= l.maxLastOffset {
		l.maxLastOffset, l.maxLastOffsetAt = lastOffset, rec.Offset
	}
	// What a rebuild keeps: the processors and views apply a record
	// unless it is older than the state they hold (processors.Regressions:
	// LastOffset for stock, Version for orders).
	position := lastOffset
	if !isStock {
		position = int64(version)
	}
	if position >= l.keptPosition {
		l.keptPosition = position
		switch {
		case isStock:
			r.recovered[pk] = recovered{st: stock, at: rec.Offset}
			if home {
				r.Stock[key] = stock
			}
		case home:
			r.Orders[key] = order
		}
	}
	l.lastAt, l.lastVersion = rec.Offset, version
}

// stockDigest is the digest of st without its timestamp.
func stockDigest(st *saga.StockState) [sha256.Size]byte {
	c := *st
	c.UpdatedAt = time.Time{}
	return sha256.Sum256(c.Encode())
}

// orderDigest is the digest of st without its timestamps: when the order
// was created, written, and each line's step times.
func orderDigest(st *saga.OrderState) [sha256.Size]byte {
	c := *st
	c.CreatedAt, c.UpdatedAt = time.Time{}, time.Time{}
	c.Lines = make([]saga.Line, len(st.Lines))
	for i, l := range st.Lines {
		l.RequestedAt, l.AnsweredAt = time.Time{}, time.Time{}
		c.Lines[i] = l
	}
	return sha256.Sum256(c.Encode())
}

// stockRecord is what the replay needs of a stock record.
type stockRecord struct {
	at, lastOffset int64
	digest         [sha256.Size]byte
	summary        string
}

func sortedKeys[V any](m map[partKey]V) []partKey {
	keys := make([]partKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b partKey) int {
		if c := cmp.Compare(a.partition, b.partition); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	return keys
}

package pgsink

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// tp is a topic partition.
type tp struct {
	topic     string
	partition int32
}

// positions are what this process wrote to the database last, per
// partition it owns: the offset of the next record. The database is
// checked against them in every transaction: a database that holds less
// (a standby promoted without the last transactions) lost what this
// process wrote, and the sink rewinds to what it holds. Safe for
// concurrent use (assignment runs on franz-go's group goroutine).
type positions struct {
	mu      sync.Mutex
	written map[tp]int64
}

func (p *positions) set(k tp, next int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.written == nil {
		p.written = map[tp]int64{}
	}
	p.written[k] = next
}

func (p *positions) forget(revoked map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for topic, parts := range revoked {
		for _, part := range parts {
			delete(p.written, tp{topic, part})
		}
	}
}

// lost compares stored (what the database holds) with what this process
// wrote, and returns the partitions the database is behind on, with where
// to read them from again.
func (p *positions) lost(stored map[tp]int64) map[tp]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out map[tp]int64
	for k, w := range p.written {
		if s := stored[k]; s < w {
			if out == nil {
				out = map[tp]int64{}
			}
			out[k] = s
		}
	}
	return out
}

// rewindError aborts a batch whose database lost earlier batches: the
// records from `to` on are read again, this batch with them.
type rewindError struct{ to map[tp]int64 }

func (e *rewindError) Error() string {
	parts := make([]string, 0, len(e.to))
	for k, n := range e.to {
		parts = append(parts, fmt.Sprintf("%s/%d from %d", k.topic, k.partition, n))
	}
	sort.Strings(parts)
	return "postgres lacks rows this sink wrote (a failover to a standby that missed them?): reading again " + strings.Join(parts, ", ")
}

// checkPositions locks the group's offsets in tx and fails with a
// rewindError when the database holds less than this process wrote.
func (s *Sink) checkPositions(ctx context.Context, tx pgx.Tx) error {
	stored, err := readOffsets(ctx, tx, s.cfg.Group, true)
	if err != nil {
		return err
	}
	if lost := s.pos.lost(stored); lost != nil {
		return &rewindError{to: lost}
	}
	return nil
}

// rewind moves the consumer back to where the database stands, dropping
// what was buffered for those partitions.
func (s *Sink) rewind(cl *kgo.Client, e *rewindError) {
	set := map[string]map[int32]kgo.EpochOffset{}
	for k, n := range e.to {
		if set[k.topic] == nil {
			set[k.topic] = map[int32]kgo.EpochOffset{}
		}
		set[k.topic][k.partition] = kgo.EpochOffset{Epoch: -1, Offset: n}
		s.pos.set(k, n)
	}
	cl.SetOffsets(set)
	s.stats.rewinds.Add(1)
	s.log.Warn("rewound to postgres's offsets", "err", e)
}

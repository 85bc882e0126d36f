// Package sagaaudit checks, after the fact, what the saga wrote to its logs:
// that every table's changelog is one lineage per key (its versions never go
// back, and a version written twice is the same state), and that no
// inventory command was lost between the state a rebuild recovers and the
// offset the inventory group committed. The fault tests of every suite run
// it at their end; it imports no testing package and returns what it finds
// as values, so both the in-process and the real-broker suites can use it.
//
// Why these checks: the saga's idempotency rests on the producer keeping
// each partition's records in order and never acknowledging a record it did
// not write (see package topology). A record reordered or dropped in a
// changelog is invisible until something rebuilds from that changelog, and
// then it is silent: an inventory table recovered to a state older than a
// committed input never replays that input. The audits see both.
package sagaaudit

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Rule names what a finding breaks.
type Rule string

// The rules.
const (
	// VersionBack: a state's Version is lower than that of an earlier
	// record of its key.
	VersionBack Rule = "version-back"
	// LastOffsetBack: a stock state's LastOffset is lower than that of an
	// earlier record of its SKU.
	LastOffsetBack Rule = "last-offset-back"
	// VersionForked: a Version written again carries another state, its
	// timestamps aside. The replay paths rewrite a state unchanged, so two
	// states under one version are two lineages.
	VersionForked Rule = "version-forked"
	// Resent: a record written again, byte for byte, after newer records
	// of its key: a producer re-sent a batch that was already written
	// (franz-go does after OUT_OF_ORDER_SEQUENCE_NUMBER, which a broker
	// answers when it lost records: docs/producer.md). Readers that keep
	// the newer state (processors.Regressions) are unharmed, and count it;
	// readers that take the last record go back. It is reported instead of
	// VersionBack and LastOffsetBack for that record.
	Resent Rule = "resent"
	// Undecodable: a table record that its codec refuses.
	Undecodable Rule = "undecodable"
	// WrongPartition: a table record in another partition than its key
	// hashes to; processors and views would never read it.
	WrongPartition Rule = "wrong-partition"
	// LostCommand: an inventory command that would change its SKU's
	// recovered state lies above that state's LastOffset and below the
	// inventory group's committed offset: it will never be applied.
	LostCommand Rule = "lost-command"
	// Diverged: a stock state is not what the SKU's commands, applied in
	// offset order with the inventory's rules up to its LastOffset, make:
	// its lineage lost or gained a write, at this record or before (only
	// the first of each SKU is reported).
	Diverged Rule = "diverged-from-commands"
)

// Finding is one breach of a rule, at one record.
type Finding struct {
	Rule      Rule
	Topic     string
	Partition int32
	Offset    int64
	Key       string
	// Detail says what was seen, naming the record it is compared with.
	Detail string
}

func (f Finding) String() string {
	return fmt.Sprintf("%s at %s/%d offset %d, key %q: %s", f.Rule, f.Topic, f.Partition, f.Offset, f.Key, f.Detail)
}

// Report is what the audits read and found.
type Report struct {
	// Orders and Stock are the state of every key that a processor or view
	// rebuilding from the orders and inventory changelogs keeps (in the
	// partition the key hashes to): the last record, unless a record with
	// a higher position (Version for orders, LastOffset for stock) came
	// before it, as processors.Regressions applies them.
	Orders map[string]*saga.OrderState
	Stock  map[string]*saga.StockState
	// Records counts the records read, by topic.
	Records map[string]int
	// Committed is the inventory group's committed offset on each
	// partition of inventory.commands that has one (Audit only).
	Committed map[int32]int64
	// Findings are in the order the records were read: by topic, then
	// partition by partition in offset order.
	Findings []Finding

	// stockHistory is every stock record of each SKU, for the replay.
	stockHistory map[partKey][]stockRecord
	// recovered is the stock state a rebuild keeps of every SKU in every
	// partition of the inventory changelog, wherever its key hashes to:
	// what the inventory processor of that partition recovers.
	recovered map[partKey]recovered
}

// recovered is a stock state recovered from the changelog, and its offset
// there.
type recovered struct {
	st *saga.StockState
	at int64
}

// Count is how many findings break rule.
func (r *Report) Count(rule Rule) int {
	n := 0
	for _, f := range r.Findings {
		if f.Rule == rule {
			n++
		}
	}
	return n
}

// maxListed bounds the findings Err spells out.
const maxListed = 10

// Err is nil when nothing was found, else an error that counts the findings
// by rule and lists the first few.
func (r *Report) Err() error {
	if len(r.Findings) == 0 {
		return nil
	}
	counts := map[Rule]int{}
	var order []Rule
	for _, f := range r.Findings {
		if counts[f.Rule] == 0 {
			order = append(order, f.Rule)
		}
		counts[f.Rule]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "saga audit: %d findings (", len(r.Findings))
	for i, rule := range order {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s", counts[rule], rule)
	}
	b.WriteString(")")
	for i, f := range r.Findings {
		if i == maxListed {
			fmt.Fprintf(&b, "\n  … and %d more", len(r.Findings)-maxListed)
			break
		}
		b.WriteString("\n  ")
		b.WriteString(f.String())
	}
	return errors.New(b.String())
}

// Tables reads the orders and inventory changelogs through cl, every
// partition from its start to the end offset it had when the read began,
// and checks each key's lineage (VersionBack, LastOffsetBack, VersionForked,
// Undecodable, WrongPartition). topo gives the partition count the keys hash
// over.
//
// cl is used for admin requests, and its options (cl.Opts) seed the
// short-lived reader client, so it reaches the same brokers the same way;
// a group or regex consumer is not changed by this, but must not be passed,
// since the reader cannot undo those options. The reader stops when ctx
// ends.
func Tables(ctx context.Context, cl *kgo.Client, topo topology.Config) (*Report, error) {
	r := newReport()
	if err := r.readTables(ctx, cl, topo); err != nil {
		return nil, err
	}
	return r, nil
}

// Audit runs every audit: it reads the inventory group's committed offsets
// first, then the changelogs (as Tables does), then inventory.commands, and
// reports a LostCommand for every command that would change its SKU's
// recovered state but lies between that state's LastOffset and the
// committed offset, and a Diverged for the first stock record of a SKU that
// is not the fold of its commands. Reading the commits first makes the
// audit sound while the processors run: Goka commits an input only after
// its table write was acknowledged, so that write is in the changelog read
// after. cl is as for Tables.
func Audit(ctx context.Context, cl *kgo.Client, topo topology.Config) (*Report, error) {
	committed, err := committedOffsets(ctx, kadm.NewClient(cl))
	if err != nil {
		return nil, err
	}
	r := newReport()
	r.Committed = committed
	if err := r.readTables(ctx, cl, topo); err != nil {
		return nil, err
	}
	if err := r.commands(ctx, cl); err != nil {
		return nil, err
	}
	return r, nil
}

func newReport() *Report {
	return &Report{
		Orders:  map[string]*saga.OrderState{},
		Stock:   map[string]*saga.StockState{},
		Records: map[string]int{},

		recovered:    map[partKey]recovered{},
		stockHistory: map[partKey][]stockRecord{},
	}
}

func (r *Report) add(rule Rule, rec *kgo.Record, format string, args ...any) {
	r.Findings = append(r.Findings, Finding{
		Rule: rule, Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Key: string(rec.Key),
		Detail: fmt.Sprintf(format, args...),
	})
}

// committedOffsets are the inventory group's commits on inventory.commands.
func committedOffsets(ctx context.Context, adm *kadm.Client) (map[int32]int64, error) {
	group := string(topology.InventoryGroup)
	resp, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = resp.Error()
	}
	out := map[int32]int64{}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return out, nil // never committed (kfake says so; Kafka answers nothing)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch the committed offsets of group %s: %w", group, err)
	}
	for p, o := range resp[string(topology.InventoryCommands)] {
		if o.At >= 0 {
			out[p] = o.At
		}
	}
	return out, nil
}

package sagaaudit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Dump writes every record of topics to w, one line each, partition by
// partition in offset order, with what kafka-dump-log.sh shows of a record
// that a client can see (offset, timestamp, producer id and epoch) and its
// value decoded with the saga's codecs. It is what a fault test keeps when
// an audit fails: the lineage of every key, to find the fork point. cl is
// as for Tables.
func Dump(ctx context.Context, cl *kgo.Client, w io.Writer, topics ...string) error {
	ends, err := endOffsets(ctx, kadm.NewClient(cl), topics...)
	if err != nil {
		return err
	}
	// scan interleaves partitions; a dump reads best partition by partition.
	byPartition := map[topicPartition][]string{}
	err = scan(ctx, cl, ends, func(rec *kgo.Record) {
		tp := topicPartition{rec.Topic, rec.Partition}
		byPartition[tp] = append(byPartition[tp], dumpLine(rec))
	})
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	for _, t := range topics {
		for p := int32(0); p < int32(len(ends[t])); p++ {
			lines := byPartition[topicPartition{t, p}]
			fmt.Fprintf(bw, "# %s partition %d: %d records, end offset %d\n", t, p, len(lines), ends[t][p])
			for _, l := range lines {
				bw.WriteString(l)
				bw.WriteByte('\n')
			}
		}
	}
	return bw.Flush()
}

func dumpLine(rec *kgo.Record) string {
	head := fmt.Sprintf("offset=%d ts=%s pid=%d epoch=%d key=%q", rec.Offset,
		rec.Timestamp.UTC().Format("15:04:05.000000"), rec.ProducerID, rec.ProducerEpoch, rec.Key)
	if rec.Value == nil {
		return head + " tombstone"
	}
	body, err := decode(rec.Topic, rec.Value)
	if err != nil {
		return fmt.Sprintf("%s undecodable (%v): %x", head, err, rec.Value)
	}
	return head + " " + body
}

// decode renders a value of topic.
func decode(topic string, v []byte) (string, error) {
	switch topic {
	case string(topology.InventoryTable()):
		st, err := saga.DecodeStockState(v)
		if err != nil {
			return "", err
		}
		var holds []string
		for _, h := range st.Holds() {
			holds = append(holds, fmt.Sprintf("%s×%d@%d/%d", h.OrderID, h.Quantity, h.Offset, h.Outcome))
		}
		return fmt.Sprintf("version=%d available=%d reserved=%d sold=%d last_offset=%d updated=%s holds=[%s]",
			st.Version, st.Available, st.Reserved, st.Sold, st.LastOffset, st.UpdatedAt.Format("15:04:05.000000"), strings.Join(holds, " ")), nil
	case string(topology.OrdersTable()):
		st, err := saga.DecodeOrderState(v)
		if err != nil {
			return "", err
		}
		var lines []string
		for _, l := range st.Lines {
			lines = append(lines, fmt.Sprintf("%s×%d:%d@%d", l.SKU, l.Quantity, l.Result, l.HoldOffset))
		}
		return fmt.Sprintf("version=%d status=%s updated=%s lines=[%s]", st.Version, st.Status, st.UpdatedAt.Format("15:04:05.000000"), strings.Join(lines, " ")), nil
	case string(topology.InventoryCommands):
		c, err := saga.DecodeInventoryCommand(v)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %s", c.Kind, describe(c)), nil
	case string(topology.InventoryResults):
		r, err := saga.DecodeReservationResult(v)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("result order=%s sku=%s outcome=%d quantity=%d available=%d hold=%d", r.OrderID, r.SKU, r.Outcome, r.Quantity, r.Available, r.HoldOffset), nil
	case string(topology.OrdersSubmitted):
		s, err := saga.DecodeOrderSubmitted(v)
		if err != nil {
			return "", err
		}
		var items []string
		for _, it := range s.Items {
			items = append(items, fmt.Sprintf("%s×%d", it.SKU, it.Quantity))
		}
		return fmt.Sprintf("submitted order=%s key=%q items=[%s]", s.OrderID, s.IdempotencyKey, strings.Join(items, " ")), nil
	}
	return fmt.Sprintf("%d bytes", len(v)), nil
}

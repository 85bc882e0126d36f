// Package rulestest is what the goka/tester rules tests of the orders and
// inventory processors share: running a processor on a tester, reading its
// table, consuming records and checking the dead letters they caused. Only
// tests import it (TestOnlyTestsImport checks).
package rulestest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"

	"github.com/lovoo/goka"
	"github.com/lovoo/goka/tester"
	"github.com/orderpipe/orderpipe/topology"
)

// Start runs a processor of g on a tester of its own, in a goroutine, until
// the test ends, and returns the tester. The cleanup stops the processor,
// waits for it and fails t if Run returned an error. Goka's messages go to
// log at debug level.
func Start(t testing.TB, g *goka.GroupGraph, log *slog.Logger) *tester.Tester {
	t.Helper()
	tt := tester.New(t)
	proc, err := goka.NewProcessor(nil, g, goka.WithTester(tt), goka.WithLogger(gokaLogger{log}))
	if err != nil {
		t.Fatalf("new processor of %s: %v", g.Group(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- proc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("processor of %s: got error %v, want none", g.Group(), err)
		}
	})
	return tt
}

// TableValue is the value of key in table on tt, or V's zero value (nil for
// the pointers the codecs decode to) if the table has none. A value of
// another type panics, as a plain type assertion would.
func TableValue[V any](tt *tester.Tester, table goka.Table, key string) V {
	v := tt.TableValue(table, key)
	if v == nil {
		var none V
		return none
	}
	return v.(V)
}

// gokaLogger is goka.Logger on slog at debug level. The processors package
// has the same adapter for production, unexported: exporting it only for
// tests would widen that package's surface.
type gokaLogger struct{ l *slog.Logger }

func (g gokaLogger) Print(v ...any)                 { g.l.Debug(fmt.Sprint(v...)) }
func (g gokaLogger) Println(v ...any)               { g.l.Debug(fmt.Sprint(v...)) }
func (g gokaLogger) Printf(format string, v ...any) { g.l.Debug(fmt.Sprintf(format, v...)) }

// Inputs consumes records on a tester and keeps those under test, to check
// the dead letters they caused against them. Its test's goroutine owns it.
type Inputs struct {
	tt   *tester.Tester
	dlq  *tester.QueueTracker // from the first record under test
	sent []record             // the records under test
}

// record is one record Inputs consumed.
type record struct {
	topic  goka.Stream
	key    string
	value  []byte
	offset int64 // in topic, which has one partition on a tester
}

// NewInputs returns Inputs on tt; every record it consumes is under test
// until UnderTest is called.
func NewInputs(tt *tester.Tester) *Inputs {
	return &Inputs{tt: tt, dlq: tt.NewQueueTracker(string(topology.DeadLetter))}
}

// UnderTest starts the records under test: those consumed so far, and the
// dead letters they caused, are not checked. Dead.In counts from the next
// record.
func (in *Inputs) UnderTest() {
	in.dlq = in.tt.NewQueueTracker(string(topology.DeadLetter))
	in.sent = nil
}

// Consume delivers key and value (nil: a record without a value) to topic,
// returning once every processor on the tester has handled it
// (tester.Consume).
func (in *Inputs) Consume(topic goka.Stream, key string, value []byte) {
	in.sent = append(in.sent, record{topic, key, value, in.tt.NewQueueTracker(string(topic)).Hwm()})
	var msg any // only an untyped nil makes the tester send a record without a value
	if value != nil {
		msg = value
	}
	in.tt.Consume(string(topic), key, msg)
}

// Dead is an expected dead letter: the record under test it comes from, by
// its index, and the reason in its headers.
type Dead struct {
	In     int
	Reason string
}

// CheckDeadLetters checks the dead letters written since UnderTest against
// want, in order: each must carry the key and value of record w.In and
// headers naming w.Reason and that record's topic, partition (0) and offset.
// counted is how many dead letters the processor's metrics counted
// meanwhile; it must be len(want). Every difference fails t.
func (in *Inputs) CheckDeadLetters(t testing.TB, want []Dead, counted int) {
	t.Helper()
	var n int
	for ; ; n++ {
		h, key, v, ok := in.dlq.NextRawWithHeaders()
		if !ok {
			break
		}
		if n >= len(want) {
			t.Errorf("dead letter %d: got %x (%s), want none", n, v, h[topology.HeaderDLQReason])
			continue
		}
		w := want[n]
		if w.In < 0 || w.In >= len(in.sent) {
			t.Fatalf("dead letter %d: want one from record %d, but %d records are under test", n, w.In, len(in.sent))
		}
		from := in.sent[w.In]
		if key != from.key || !bytes.Equal(v, from.value) {
			t.Errorf("dead letter %d: got key %q value %x, want %q %x", n, key, v, from.key, from.value)
		}
		for k, want := range map[string]string{
			topology.HeaderDLQReason:    w.Reason,
			topology.HeaderDLQTopic:     string(from.topic),
			topology.HeaderDLQPartition: "0",
			topology.HeaderDLQOffset:    strconv.FormatInt(from.offset, 10),
		} {
			if got := string(h[k]); got != want {
				t.Errorf("dead letter %d: header %s: got %q, want %q", n, k, got, want)
			}
		}
	}
	if n < len(want) {
		t.Errorf("dead letters: got %d, want %d", n, len(want))
	}
	if counted != len(want) {
		t.Errorf("dead-letter metric: got %d, want %d", counted, len(want))
	}
}

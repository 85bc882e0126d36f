package faultproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeBroker reads Kafka frames and answers each with a frame carrying its
// correlation id, at once or, while holding, when released.
type fakeBroker struct {
	ln net.Listener

	mu       sync.Mutex
	received []request
	holding  bool
	held     []heldReply
	closed   int // connections that ended
}

type heldReply struct {
	c    net.Conn
	corr int32
}

func startBroker(t *testing.T) *fakeBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBroker{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *fakeBroker) serve(c net.Conn) {
	defer c.Close()
	defer func() {
		b.mu.Lock()
		b.closed++
		b.mu.Unlock()
	}()
	for {
		f, err := readFrame(c, nil, 1<<20)
		if err != nil {
			return
		}
		r := request{key: int16(binary.BigEndian.Uint16(f[4:])), correlation: int32(binary.BigEndian.Uint32(f[8:]))}
		noReply := r.key == produceKey && acksOf(f) == 0
		b.mu.Lock()
		b.received = append(b.received, r)
		hold := b.holding
		if hold && !noReply {
			b.held = append(b.held, heldReply{c, r.correlation})
		}
		b.mu.Unlock()
		if !hold && !noReply {
			reply(c, r.correlation)
		}
	}
}

func acksOf(f []byte) int16 {
	acks, _ := produceAcks(f[4:])
	return acks
}

func reply(c net.Conn, corr int32) {
	f := binary.BigEndian.AppendUint32(nil, 8)
	f = binary.BigEndian.AppendUint32(f, uint32(corr))
	f = append(f, 0, 0, 0, 0)
	_, _ = c.Write(f)
}

func (b *fakeBroker) hold(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding = on
}

// release answers every held request with acks.
func (b *fakeBroker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, h := range b.held {
		reply(h.c, h.corr)
	}
	b.held = nil
}

func (b *fakeBroker) got() []request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]request(nil), b.received...)
}

func startProxy(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	p, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("proxy did not stop within 10s")
		}
	})
	return p
}

var formatter = kmsg.NewRequestFormatter(kmsg.FormatterClientID("faultproxy-test"))

func produce(version, acks int16, txn *string, corr int32) []byte {
	req := &kmsg.ProduceRequest{Version: version, Acks: acks, TransactionID: txn, TimeoutMillis: 1000}
	return formatter.AppendRequest(nil, req, corr)
}

func metadata(corr int32) []byte {
	return formatter.AppendRequest(nil, &kmsg.MetadataRequest{Version: 9}, corr)
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		if _, err := c.Write(f); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// readReplies reads n response frames and returns their correlation ids.
func readReplies(t *testing.T, c net.Conn, n int) []int32 {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []int32
	for range n {
		f, err := readFrame(c, nil, 1<<20)
		if err != nil {
			t.Fatalf("read a response: %v", err)
		}
		out = append(out, int32(binary.BigEndian.Uint32(f[4:])))
	}
	return out
}

func awaitReceived(t *testing.T, b *fakeBroker, n int) {
	t.Helper()
	await.Until(t, fmt.Sprintf("%d requests at the broker", n), 10*time.Second, func() error {
		if got := len(b.got()); got != n {
			return fmt.Errorf("%d requests", got)
		}
		return nil
	})
}

func TestProduceAcks(t *testing.T) {
	tx := "tx-1"
	for v := int16(0); v <= 12; v++ {
		for _, acks := range []int16{-1, 0, 1} {
			for _, txn := range []*string{nil, &tx} {
				f := produce(v, acks, txn, 7)
				got, ok := produceAcks(f[4:])
				if !ok || got != acks {
					t.Errorf("produce v%d acks %d txn %v: got %d, %v", v, acks, txn != nil, got, ok)
				}
			}
		}
	}
	if _, ok := produceAcks([]byte{0, 0, 0, 9}); ok {
		t.Errorf("a truncated request parsed")
	}
}

// TestInFlight counts produce requests written and not answered, per
// connection and in order, without acks=0 ones, which get no answer.
func TestInFlight(t *testing.T) {
	b := startBroker(t)
	p := startProxy(t, Config{Upstream: b.ln.Addr().String()})
	c := dial(t, p)
	b.hold(true)
	write(t, c, produce(9, -1, nil, 1), metadata(2), produce(3, 1, nil, 3), produce(12, 0, nil, 4))
	awaitReceived(t, b, 4)
	if got := p.InFlight(); got != 2 {
		t.Errorf("produce requests in flight: got %d, want 2", got)
	}
	b.release()
	if got := readReplies(t, c, 3); fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("replies: got %v, want [1 2 3]", got)
	}
	await.Until(t, "nothing in flight", 10*time.Second, func() error {
		if n := p.InFlight(); n != 0 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	st := p.Stats()
	if st.ProduceRequests != 3 || st.Connections != 1 || st.Resets() != 0 || st.Desyncs != 0 {
		t.Errorf("stats: got %+v, want 3 produce requests on 1 connection, no reset, no desync", st)
	}
}

// TestReset resets on command, after and before forwarding, with one and
// with two produce requests in flight.
func TestReset(t *testing.T) {
	for _, c := range []struct {
		mode    Mode
		earlier bool // a produce request already waits for its answer
		want    int  // in flight at the reset
	}{
		{After, false, 1}, {Before, false, 1}, {After, true, 2}, {Before, true, 2},
	} {
		t.Run(fmt.Sprintf("%s/earlier=%v", c.mode, c.earlier), func(t *testing.T) {
			b := startBroker(t)
			p := startProxy(t, Config{Upstream: b.ln.Addr().String()})
			conn := dial(t, p)
			write(t, conn, metadata(1))
			readReplies(t, conn, 1)
			n := 1
			if c.earlier {
				b.hold(true)
				write(t, conn, produce(9, -1, nil, 2))
				n++
				awaitReceived(t, b, n)
			}
			done := p.Arm(c.mode)
			write(t, conn, produce(9, -1, nil, 3))
			var r Reset
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("no reset within 10s")
			}
			if r.Mode != c.mode || r.InFlight != c.want {
				t.Errorf("reset: got %+v, want mode %s with %d in flight", r, c.mode, c.want)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("client read after the reset: %v, want the connection gone", err)
			}
			await.Until(t, "broker connection closed", 10*time.Second, func() error {
				b.mu.Lock()
				defer b.mu.Unlock()
				if b.closed != 1 {
					return errors.New("still open")
				}
				return nil
			})
			forwarded := false
			for _, r := range b.got() {
				forwarded = forwarded || r.correlation == 3
			}
			if forwarded != (c.mode == After) {
				t.Errorf("the triggering request reached the broker: %v, want %v", forwarded, c.mode == After)
			}
			st := p.Stats()
			if st.Resets() != 1 || st.ResetsInFlight != 1 || (st.ResetsTwoInFlight == 1) != (c.want == 2) {
				t.Errorf("stats: got %+v", st)
			}
		})
	}
}

// TestRandomResets: at a high rate, clients that keep producing see resets
// in both modes, each with a produce request in flight.
func TestRandomResets(t *testing.T) {
	b := startBroker(t)
	p := startProxy(t, Config{Upstream: b.ln.Addr().String(), ResetsPerMinute: 60_000, Seed: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for corr := int32(0); ctx.Err() == nil && p.Stats().Resets() < 20; {
				c, err := net.Dial("tcp", p.Addr())
				if err != nil {
					return
				}
				for ctx.Err() == nil {
					corr++
					if _, err := c.Write(produce(9, -1, nil, corr)); err != nil {
						break
					}
					_ = c.SetReadDeadline(time.Now().Add(time.Second))
					if _, err := readFrame(c, nil, 1<<20); err != nil {
						break
					}
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	st := p.Stats()
	if st.Resets() < 20 || st.ResetsAfter == 0 || st.ResetsBefore == 0 || st.ResetsInFlight != st.Resets() {
		t.Errorf("stats: got %+v, want 20 resets or more, of both modes, all with a produce request in flight", st)
	}
}

// TestUpstreamLater: a connection accepted before the broker's address is
// known waits for it.
func TestUpstreamLater(t *testing.T) {
	b := startBroker(t)
	p := startProxy(t, Config{})
	c := dial(t, p)
	write(t, c, metadata(5))
	p.SetUpstream(b.ln.Addr().String())
	if got := readReplies(t, c, 1); got[0] != 5 {
		t.Errorf("reply: got %v, want correlation 5", got)
	}
}

// TestResetAtRandomDisarms: a reset armed in the window and still waiting
// for a produce request when the window ends is taken back.
func TestResetAtRandomDisarms(t *testing.T) {
	b := startBroker(t)
	p := startProxy(t, Config{Upstream: b.ln.Addr().String(), Seed: 2})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	p.ResetAtRandom(ctx, 60_000) // no client: nothing happens
	p.mu.Lock()
	armed := len(p.armed)
	p.mu.Unlock()
	if armed != 0 {
		t.Fatalf("%d resets still armed after the window", armed)
	}
	c := dial(t, p)
	write(t, c, produce(9, -1, nil, 1))
	if got := readReplies(t, c, 1); got[0] != 1 {
		t.Errorf("reply: got %v, want correlation 1", got)
	}
	if st := p.Stats(); st.Resets() != 0 {
		t.Errorf("stats: got %+v, want no reset", st)
	}
}

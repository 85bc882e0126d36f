// Package faultproxy is a TCP proxy for fault tests that stands between
// Kafka clients and one broker and resets connections while produce
// requests are in flight on them: the fault that breaks a producer's
// per-partition order if it retries carelessly (see
// docs/producer.md). It parses the Kafka framing (an int32
// size, then the request header) of what clients send, and counts, per
// connection, the requests written minus the responses read, in order.
//
// A reset is made on command (Proxy.Reset) or at random moments (a seeded
// Poisson process, Config.ResetsPerMinute). Either way it waits for the next
// produce request a client writes and resets that client's connection, half
// the time just after forwarding the request to the broker (it may be
// applied, and its answer is lost), half the time just before (the broker
// never sees it); both ends get a TCP RST. The broker must advertise the
// proxy's address (advertised.listeners), or clients bypass it after their
// first metadata request.
//
// It is test support: it imports no testing package, so the in-process and
// real-broker suites can both use it.
package faultproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is where in a produce request's passage a reset happens.
type Mode int

// The modes.
const (
	// Random picks After or Before with equal odds, from the seed.
	Random Mode = iota
	// After: the request was forwarded to the broker; its answer never
	// reaches the client.
	After
	// Before: the request never reaches the broker.
	Before
)

func (m Mode) String() string {
	switch m {
	case After:
		return "after forwarding"
	case Before:
		return "before forwarding"
	}
	return "random"
}

// Config configures a Proxy. The zero value listens on a free loopback port
// and resets only on command.
type Config struct {
	// Listen is the address to listen on. Default "127.0.0.1:0".
	Listen string
	// Upstream is the broker's address. It may be left empty and given
	// later with SetUpstream (a broker whose advertised address is the
	// proxy's must know that address before it starts); connections
	// accepted before then wait for it.
	Upstream string
	// ResetsPerMinute is the mean rate of random resets. Default 0: none.
	ResetsPerMinute float64
	// Seed seeds the random moments and modes. Default 0.
	Seed uint64
	// MaxFrame bounds the size of a request or response. Default 128 MiB
	// (a broker's socket.request.max.bytes is 100 MiB).
	MaxFrame int
	// Logger receives a line per reset. Default: discard.
	Logger *slog.Logger
}

// Stats are the proxy's counts since it started.
type Stats struct {
	// Connections accepted.
	Connections int64
	// ProduceRequests read from clients (acks=0 ones included).
	ProduceRequests int64
	// Resets made, by mode, and the resets made with at least one and at
	// least two produce requests in flight on the connection (the one that
	// triggered the reset counts: its client has written it).
	ResetsAfter, ResetsBefore int64
	ResetsInFlight            int64
	ResetsTwoInFlight         int64
	// Desyncs counts responses whose correlation id was not the oldest
	// request's: the proxy's count of that connection is then unreliable.
	Desyncs int64
}

// Resets is the total of resets made.
func (s Stats) Resets() int64 { return s.ResetsAfter + s.ResetsBefore }

// Proxy forwards TCP connections from its listener to the broker.
type Proxy struct {
	cfg      Config
	ln       net.Listener
	log      *slog.Logger
	upstream atomic.Pointer[string]
	haveUp   chan struct{}
	setOnce  sync.Once

	mu    sync.Mutex
	conns map[*conn]struct{}
	// armed are the resets waiting for a produce request, oldest first;
	// each gets its mode and is told when done.
	armed []*arm
	rng   *rand.Rand

	stats struct {
		connections, produce, after, before, inFlight, twoInFlight, desyncs atomic.Int64
	}
}

// arm is a reset waiting for its produce request.
type arm struct {
	mode Mode
	done chan Reset
}

// Reset describes one reset made.
type Reset struct {
	Mode Mode
	// InFlight is how many produce requests were in flight on the
	// connection, the triggering one included.
	InFlight int
	// Client is the client's address.
	Client string
}

// Listen starts listening. Run serves the connections.
func Listen(cfg Config) (*Proxy, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.MaxFrame == 0 {
		cfg.MaxFrame = 128 << 20
	}
	if cfg.ResetsPerMinute < 0 {
		return nil, fmt.Errorf("faultproxy: resets per minute must be >= 0, got %g", cfg.ResetsPerMinute)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{cfg: cfg, ln: ln, log: log, haveUp: make(chan struct{}), conns: map[*conn]struct{}{},
		rng: rand.New(rand.NewPCG(cfg.Seed, 0x7072_6f78))}
	if cfg.Upstream != "" {
		p.SetUpstream(cfg.Upstream)
	}
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetUpstream sets the broker's address for the connections accepted from
// now on, and releases those waiting for one.
func (p *Proxy) SetUpstream(addr string) {
	p.upstream.Store(&addr)
	p.setOnce.Do(func() { close(p.haveUp) })
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	return Stats{
		Connections:       p.stats.connections.Load(),
		ProduceRequests:   p.stats.produce.Load(),
		ResetsAfter:       p.stats.after.Load(),
		ResetsBefore:      p.stats.before.Load(),
		ResetsInFlight:    p.stats.inFlight.Load(),
		ResetsTwoInFlight: p.stats.twoInFlight.Load(),
		Desyncs:           p.stats.desyncs.Load(),
	}
}

// InFlight is the number of produce requests in flight over all
// connections: written by clients and not answered to them yet.
func (p *Proxy) InFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		n += c.produceInFlight()
	}
	return n
}

// Reset resets the connection of the next produce request a client writes,
// in mode, and returns what it did; it waits until then or until ctx ends.
func (p *Proxy) Reset(ctx context.Context, mode Mode) (Reset, error) {
	a := p.arm(mode)
	select {
	case r := <-a.done:
		return r, nil
	case <-ctx.Done():
		p.disarm(a)
		return Reset{}, ctx.Err()
	}
}

// Arm is Reset without the wait: the reset is armed when Arm returns, and
// the channel gets what it did.
func (p *Proxy) Arm(mode Mode) <-chan Reset { return p.arm(mode).done }

func (p *Proxy) arm(mode Mode) *arm {
	p.mu.Lock()
	defer p.mu.Unlock()
	if mode == Random {
		mode = After
		if p.rng.IntN(2) == 1 {
			mode = Before
		}
	}
	a := &arm{mode: mode, done: make(chan Reset, 1)}
	p.armed = append(p.armed, a)
	return a
}

func (p *Proxy) disarm(a *arm) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.armed {
		if x == a {
			p.armed = append(p.armed[:i], p.armed[i+1:]...)
			return
		}
	}
}

// putBack re-arms a, taken for a connection that closed first, as the
// oldest; a may be nil.
func (p *Proxy) putBack(a *arm) {
	if a == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = append([]*arm{a}, p.armed...)
}

// take returns the oldest armed reset, if any.
func (p *Proxy) take() *arm {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.armed) == 0 {
		return nil
	}
	a := p.armed[0]
	p.armed = p.armed[1:]
	return a
}

// Run accepts and forwards connections until ctx ends, then closes the
// listener and every connection and returns nil once they are done. With
// Config.ResetsPerMinute it also arms random resets (ResetAtRandom).
func (p *Proxy) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { p.ln.Close() })
	defer stop()
	if p.cfg.ResetsPerMinute > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); p.ResetAtRandom(ctx, p.cfg.ResetsPerMinute) }()
	}
	var err error
	for {
		var nc net.Conn
		nc, err = p.ln.Accept()
		if err != nil {
			break
		}
		p.stats.connections.Add(1)
		wg.Add(1)
		go func() { defer wg.Done(); p.serve(ctx, nc) }()
	}
	if ctx.Err() == nil {
		err = fmt.Errorf("faultproxy: accept: %w", err)
	} else {
		err = nil
	}
	p.mu.Lock()
	for c := range p.conns {
		c.close(false)
	}
	p.mu.Unlock()
	wg.Wait()
	return err
}

// ResetAtRandom arms resets at the moments of a Poisson process of
// perMinute resets a minute on average, seeded by Config.Seed, each in a
// mode picked at random, until ctx ends; at most one waits for a produce
// request at a time, so a quiet spell does not save them up. Run does this
// with Config.ResetsPerMinute; a test calls it for the window of its fault.
func (p *Proxy) ResetAtRandom(ctx context.Context, perMinute float64) {
	if perMinute <= 0 {
		return
	}
	mean := time.Duration(float64(time.Minute) / perMinute)
	var pending *arm // the reset armed last, until it happened
	defer func() {
		if pending != nil {
			p.disarm(pending) // a reset after the window would not be the caller's
		}
	}()
	for {
		p.mu.Lock()
		gap := time.Duration(p.rng.ExpFloat64() * float64(mean))
		p.mu.Unlock()
		t := time.NewTimer(gap)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if pending != nil {
			select {
			case <-pending.done:
				pending = nil
			default:
				continue // still waiting for a produce request
			}
		}
		pending = p.arm(Random)
	}
}

// serve forwards one client connection.
func (p *Proxy) serve(ctx context.Context, client net.Conn) {
	select {
	case <-p.haveUp:
	case <-ctx.Done():
		client.Close()
		return
	}
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", *p.upstream.Load())
	if err != nil {
		p.log.Debug("faultproxy: dial the broker", "err", err)
		client.Close()
		return
	}
	c := &conn{p: p, client: client, broker: up}
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	done := make(chan struct{})
	go func() { defer close(done); c.responses() }()
	c.requests()
	<-done
}

// conn is one proxied connection and the requests in flight on it.
type conn struct {
	p              *Proxy
	client, broker net.Conn

	mu sync.Mutex
	// inFlight are the requests forwarded and not answered yet, oldest
	// first; acks=0 produce requests get no answer and are not in it.
	inFlight []request
	// held counts a produce request read from the client and not
	// forwarded yet: in flight for the client.
	held int
	// resetting: a reset is under way, and no answer is forwarded any
	// more, so that the requests in flight stay so until it.
	resetting bool
	closed    bool
}

type request struct {
	key         int16
	correlation int32
}

const produceKey = 0

func (c *conn) produceInFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.held
	for _, r := range c.inFlight {
		if r.key == produceKey {
			n++
		}
	}
	return n
}

// close closes both ends, with a RST when reset.
func (c *conn) close(reset bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for _, nc := range []net.Conn{c.client, c.broker} {
		if tc, ok := nc.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0) // close sends a RST
		}
		nc.Close()
	}
}

// requests forwards the client's requests frame by frame, and makes the
// armed resets happen on produce requests.
func (c *conn) requests() {
	defer c.close(false)
	var buf []byte
	for {
		frame, err := readFrame(c.client, buf, c.p.cfg.MaxFrame)
		if err != nil {
			return
		}
		buf = frame[:0]
		if len(frame) < 4+8 {
			return // not Kafka: no header
		}
		req := request{key: int16(binary.BigEndian.Uint16(frame[4:])), correlation: int32(binary.BigEndian.Uint32(frame[8:]))}
		answered := true
		var a *arm
		if req.key == produceKey {
			c.p.stats.produce.Add(1)
			if acks, ok := produceAcks(frame[4:]); ok && acks == 0 {
				answered = false
			}
			a = c.p.take()
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			c.p.putBack(a)
			return
		}
		if a != nil {
			// From now on no answer reaches the client: what is in
			// flight stays in flight until the reset.
			c.resetting = true
		}
		if a != nil && a.mode == Before {
			c.held++
			c.mu.Unlock()
			c.reset(a)
			return
		}
		if answered {
			c.inFlight = append(c.inFlight, req)
		}
		c.mu.Unlock()
		if _, err := c.broker.Write(frame); err != nil {
			c.p.putBack(a) // the connection died without the proxy's help
			return
		}
		if a != nil {
			c.reset(a)
			return
		}
	}
}

// reset resets the connection for a and tells a's waiter.
func (c *conn) reset(a *arm) {
	n := c.produceInFlight()
	c.close(true)
	st := &c.p.stats
	if a.mode == Before {
		st.before.Add(1)
	} else {
		st.after.Add(1)
	}
	if n >= 1 {
		st.inFlight.Add(1)
	}
	if n >= 2 {
		st.twoInFlight.Add(1)
	}
	r := Reset{Mode: a.mode, InFlight: n, Client: c.client.RemoteAddr().String()}
	c.p.log.Info("faultproxy: connection reset with produce requests in flight", "mode", a.mode.String(), "in_flight", n, "client", r.Client)
	a.done <- r
}

// responses forwards the broker's responses frame by frame, each ending the
// oldest request in flight as it is handed to the client.
func (c *conn) responses() {
	defer c.close(false)
	var buf []byte
	for {
		frame, err := readFrame(c.broker, buf, c.p.cfg.MaxFrame)
		if err != nil {
			return
		}
		buf = frame[:0]
		c.mu.Lock()
		if c.resetting {
			c.mu.Unlock()
			return
		}
		if len(c.inFlight) > 0 {
			if len(frame) >= 8 && int32(binary.BigEndian.Uint32(frame[4:])) != c.inFlight[0].correlation {
				c.p.stats.desyncs.Add(1)
			}
			c.inFlight = c.inFlight[1:]
		} else {
			c.p.stats.desyncs.Add(1)
		}
		c.mu.Unlock()
		if _, err := c.client.Write(frame); err != nil {
			return
		}
	}
}

// readFrame reads one size-prefixed frame, size included, into buf.
func readFrame(r io.Reader, buf []byte, maxFrame int) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(size[:])))
	if n < 0 || n > maxFrame {
		return nil, fmt.Errorf("faultproxy: frame of %d bytes", n)
	}
	if cap(buf) < 4+n {
		buf = make([]byte, 4+n)
	}
	buf = buf[:4+n]
	copy(buf, size[:])
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		return nil, err
	}
	return buf, nil
}

// errShort is a request too short for its header.
var errShort = errors.New("short request")

// produceAcks reads the acks of a produce request (the frame without its
// size): after the request header (v1, or v2 with tagged fields from
// produce v9 on) and, from v3 on, the transactional id.
func produceAcks(b []byte) (int16, bool) {
	d := reader{b: b}
	d.skip(2) // api key
	version := d.int16()
	d.skip(4) // correlation id
	if n := d.int16(); n > 0 {
		d.skip(int(n)) // client id
	}
	flexible := version >= 9
	if flexible {
		d.taggedFields()
	}
	if version >= 3 {
		if flexible {
			if n := d.uvarint(); n > 1 {
				d.skip(int(n - 1))
			}
		} else if n := d.int16(); n > 0 {
			d.skip(int(n))
		}
	}
	acks := d.int16()
	return acks, d.err == nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) skip(n int) {
	if r.err != nil || n > len(r.b) || n < 0 {
		r.err = errShort
		return
	}
	r.b = r.b[n:]
}

func (r *reader) int16() int16 {
	if r.err != nil || len(r.b) < 2 {
		r.err = errShort
		return 0
	}
	v := int16(binary.BigEndian.Uint16(r.b))
	r.b = r.b[2:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) taggedFields() {
	for range r.uvarint() {
		r.uvarint() // tag
		r.skip(int(r.uvarint()))
	}
}

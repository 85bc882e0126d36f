package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

// Config configures an Edge. The zero value of every field selects the
// default documented on it; Validate reports settings that cannot work.
type Config struct {
	// Brokers are the seed brokers the edge produces to and reads the
	// tables from. Required by New.
	Brokers []string
	// ClientID names the edge to the brokers; its producer is ClientID+"-edge".
	// Default "orderpipe".
	ClientID string
	// Topology sizes the topics; it must match the cluster. Default
	// topology.DefaultConfig().
	Topology topology.Config
	// Replication is the replication factor of the table topics (see
	// processors.Config.Replication). Default: as the topology resolves it
	// for the number of seed brokers.
	Replication int16
	// DataDir holds the views' table state (LevelDB). Required by New.
	DataDir string
	// FetchWait is processors.Config.FetchWait for the views. Default 0.
	FetchWait time.Duration

	// Listen is the TCP address to serve on. Default "127.0.0.1:8080". Use
	// port 0 for an ephemeral port and read it back with Edge.Addr.
	Listen string
	// TLSCertFile and TLSKeyFile, both set, serve HTTPS (TLS 1.2 or newer)
	// with this PEM certificate chain and key; SIGHUP reloads them. Default
	// "": plain HTTP.
	TLSCertFile, TLSKeyFile string

	// MaxBodyBytes caps the body of POST /v1/orders and PUT /v1/inventory,
	// and each line of an NDJSON batch. Default 64 KiB; larger bodies get 413.
	MaxBodyBytes int
	// MaxBatchBodyBytes caps the body of POST /v1/orders:batch. Default 4 MiB.
	MaxBatchBodyBytes int
	// MaxBatchOrders caps the orders of one batch. Default 1000; more get 413.
	MaxBatchOrders int
	// MaxItems caps the lines of one order. Default 100, at most 1000.
	MaxItems int
	// MaxQuantity caps the quantity of one line. Default 10000, at most 1e6
	// (so that no order total can overflow int64).
	MaxQuantity uint32

	// MaxInFlight is admission control: the number of orders this edge
	// accepted, or is producing, that are not final yet in the orders view.
	// Above it new orders get 503 + Retry-After. Default 4096. It also bounds
	// the holds per SKU in the inventory table (see package topology) and the
	// idempotency keys this edge remembers.
	MaxInFlight int
	// MaxInFlightPerSKU caps the order lines of one SKU among them: holds
	// live in the SKU's value, which every inventory update rewrites, so
	// this is what bounds the cost of an update on a hot SKU (a hold is 29
	// bytes: 128 holds keep a value under 4 KiB). Default 128. Measured by
	// the fault harness's overload (5x capacity, 2 edges, 10 SKUs, 2 cores):
	// goodput 1.00 of capacity with 128, 0.80 with 256 and 0.70-0.78 with
	// 512, the longest accept->final 4s, 10s and 27s.
	MaxInFlightPerSKU int
	// ProduceTimeout bounds the answer to an order. Its record must be
	// acknowledged within it for a 202; a record the producer could fail
	// (not written to any broker yet) is failed by then, for a 503 that
	// means the order will not happen. A record written to a broker that
	// did not answer cannot be failed safely (the broker may have stored
	// it): that order gets 504 "outcome unknown, retry with the same
	// Idempotency-Key" at ProduceTimeout, and while such a record is
	// outstanding on a partition, new orders for that partition get 503 at
	// once without being produced. Default 5s.
	ProduceTimeout time.Duration
	// MaxWait caps ?wait= on GET /v1/orders/{id}. Default 30s.
	MaxWait time.Duration
	// LookupTimeout bounds the lookup of an order that the orders view does
	// not show, which asks the broker whether it exists (see
	// docs/read-your-writes.md): a GET that cannot be decided within it
	// gets 503 + Retry-After, never a guessed 404. Default 500ms.
	LookupTimeout time.Duration
	// LookupMaxScan caps the records of orders.submitted that one lookup
	// reads per partition: those the orders processor has not committed
	// yet. Further behind, an unknown order gets 503 instead of 404.
	// Default 20000.
	LookupMaxScan int

	// ReadTimeout bounds reading one request, headers and body, which cuts
	// slowloris clients. Default 5s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one response. Default 35s. fasthttp arms it
	// when the handler returns, so a long ?wait= does not count against it.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection. Default 30s.
	IdleTimeout time.Duration
	// ShutdownTimeout bounds the graceful shutdown of Run: requests still
	// running after it are cut. Default 10s.
	ShutdownTimeout time.Duration
	// MaxConns caps the connections served at once (fasthttp's Concurrency);
	// above it new connections get 503. Default 10000.
	MaxConns int
	// MaxConnsPerIP caps the connections from one IP address. Default 1024;
	// negative means unlimited (behind a load balancer that is the only IP).
	MaxConnsPerIP int

	// AccessLog logs every request at info level: method, path, route,
	// status, duration, remote address, client and order id. Off by
	// default: under load it is a line per request.
	AccessLog bool
	// AccessLogEvery, with AccessLog, samples the lines: one request in
	// this many, plus every 5xx answer (the ones an operator looks for).
	// Default 1: every request.
	AccessLogEvery int
	// APIKeysFile is the API keys file (see NewAPIKey for its format).
	// Default "": authentication is off, which New allows only when Listen is
	// a loopback address.
	APIKeysFile string
	// RateLimit is the sustained requests per second allowed per client (per
	// remote IP when authentication is off). Default 0: no limit. Over it,
	// requests get 429 + Retry-After.
	RateLimit float64
	// RateBurst is how many requests a client may send at once before
	// RateLimit applies. Default ceil(RateLimit), at least 1.
	RateBurst int

	// StoredAt, if set, tells GET /v1/orders/{id}?trace=1 when the sink
	// stored an order's final version in Postgres (ok false: not yet); it
	// is called once per traced final order, with a deadline, and must be
	// safe for concurrent use (pgsink.StoredAtReader.StoredAt is). Default
	// nil: the trace says the stored step is unknown and why.
	StoredAt func(ctx context.Context, id saga.OrderID) (at time.Time, ok bool, err error)
}

// The documented defaults.
const (
	DefaultListen            = "127.0.0.1:8080"
	DefaultMaxBodyBytes      = 64 << 10
	DefaultMaxBatchBodyBytes = 4 << 20
	DefaultMaxBatchOrders    = 1000
	DefaultMaxItems          = 100
	DefaultMaxQuantity       = 10000
	DefaultMaxInFlight       = 4096
	DefaultMaxInFlightPerSKU = 128
	DefaultProduceTimeout    = 5 * time.Second
	DefaultMaxWait           = 30 * time.Second
	DefaultLookupTimeout     = 500 * time.Millisecond
	DefaultLookupMaxScan     = 20000
	DefaultReadTimeout       = 5 * time.Second
	DefaultWriteTimeout      = 35 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultMaxConns          = 10000
	DefaultMaxConnsPerIP     = 1024
)

// Hard limits that no configuration may exceed.
const (
	// maxItemsLimit keeps an order under the codec's line limit (1024) and,
	// with maxQuantityLimit and maxUnitPriceCents, its total under 2^63.
	maxItemsLimit    = 1000
	maxQuantityLimit = 1_000_000
)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	setDefault(&c.Listen, DefaultListen)
	setDefault(&c.AccessLogEvery, 1)
	setDefault(&c.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&c.MaxBatchBodyBytes, DefaultMaxBatchBodyBytes)
	setDefault(&c.MaxBatchOrders, DefaultMaxBatchOrders)
	setDefault(&c.MaxItems, DefaultMaxItems)
	setDefault(&c.MaxQuantity, DefaultMaxQuantity)
	setDefault(&c.MaxInFlight, DefaultMaxInFlight)
	setDefault(&c.MaxInFlightPerSKU, DefaultMaxInFlightPerSKU)
	setDefault(&c.ProduceTimeout, DefaultProduceTimeout)
	setDefault(&c.MaxWait, DefaultMaxWait)
	setDefault(&c.LookupTimeout, DefaultLookupTimeout)
	setDefault(&c.LookupMaxScan, DefaultLookupMaxScan)
	setDefault(&c.ReadTimeout, DefaultReadTimeout)
	setDefault(&c.WriteTimeout, DefaultWriteTimeout)
	setDefault(&c.IdleTimeout, DefaultIdleTimeout)
	setDefault(&c.ShutdownTimeout, DefaultShutdownTimeout)
	setDefault(&c.MaxConns, DefaultMaxConns)
	setDefault(&c.MaxConnsPerIP, DefaultMaxConnsPerIP)
	if c.RateLimit > 0 && c.RateBurst == 0 {
		c.RateBurst = max(1, int(math.Ceil(c.RateLimit)))
	}
	setDefault(&c.ClientID, "orderpipe")
	if c.Topology.Partitions == 0 {
		c.Topology = topology.DefaultConfig()
	}
	if c.Replication == 0 {
		c.Replication = c.Topology.ReplicationFor(len(c.Brokers))
	}
	return c
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate reports every setting that cannot work, after defaults apply.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	check := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf("ingest: "+format, args...))
		}
	}
	_, _, err := net.SplitHostPort(c.Listen)
	check(err != nil, "listen address %q: %v", c.Listen, err)
	check(c.MaxBodyBytes < 0, "max body bytes must be positive, got %d", c.MaxBodyBytes)
	check(c.MaxBatchBodyBytes < 0, "max batch body bytes must be positive, got %d", c.MaxBatchBodyBytes)
	check(c.MaxBatchOrders < 0, "max batch orders must be positive, got %d", c.MaxBatchOrders)
	check(c.MaxItems < 0 || c.MaxItems > maxItemsLimit, "max items must be in 1..%d, got %d", maxItemsLimit, c.MaxItems)
	check(c.MaxQuantity > maxQuantityLimit, "max quantity must be in 1..%d, got %d", maxQuantityLimit, c.MaxQuantity)
	check(c.MaxInFlight < 0, "max in flight must be positive, got %d", c.MaxInFlight)
	check(c.LookupMaxScan < 0, "lookup max scan must be positive, got %d", c.LookupMaxScan)
	check(c.MaxInFlightPerSKU < 0, "max in flight per sku must be positive, got %d", c.MaxInFlightPerSKU)
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"produce timeout", c.ProduceTimeout}, {"max wait", c.MaxWait}, {"lookup timeout", c.LookupTimeout}, {"read timeout", c.ReadTimeout},
		{"write timeout", c.WriteTimeout}, {"idle timeout", c.IdleTimeout}, {"shutdown timeout", c.ShutdownTimeout},
	} {
		check(d.d < 0, "%s must be positive, got %s", d.name, d.d)
	}
	check(c.ProduceTimeout > 0 && c.ProduceTimeout < 100*time.Millisecond, "produce timeout must be at least 100ms, got %s", c.ProduceTimeout)
	check(c.FetchWait < 0, "fetch wait must be >= 0, got %s", c.FetchWait)
	check(c.Topology.Validate() != nil, "topology: %v", c.Topology.Validate())
	check(c.MaxConns < 0, "max conns must be positive, got %d", c.MaxConns)
	check(math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) || c.RateLimit < 0, "rate limit must be a finite number >= 0, got %v", c.RateLimit)
	check(c.RateBurst < 0, "rate burst must be >= 0, got %d", c.RateBurst)
	check(c.AccessLogEvery < 0, "access log every must be >= 1, got %d", c.AccessLogEvery)
	if err := validTLS(c.TLSCertFile, c.TLSKeyFile); err != nil {
		errs = append(errs, err)
	}
	if err == nil && c.APIKeysFile == "" && !isLoopback(c.Listen) {
		errs = append(errs, errors.New("ingest: authentication is off (no API keys file), which is allowed only on a loopback listen address, got "+c.Listen))
	}
	return errors.Join(errs...)
}

// isLoopback reports whether addr (host:port) can only be reached from this
// machine. An empty host means every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// limits are the rules of the order decoder.
func (c Config) limits() limits {
	return limits{maxItems: c.MaxItems, maxQuantity: int64(c.MaxQuantity)}
}

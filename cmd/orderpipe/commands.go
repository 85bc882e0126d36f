package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/lag"
	"github.com/orderpipe/orderpipe/processors"
	"github.com/orderpipe/orderpipe/topology"
)

// rolesFor returns the roles a role command (run, ingest, process, sink)
// runs, and false for any other command.
func rolesFor(cmd string) (app.Roles, bool) {
	switch cmd {
	case "run":
		return app.Roles{Ingest: true, Process: true, Sink: true, EnsureTopics: true}, true
	case "ingest":
		return app.Roles{Ingest: true}, true
	case "process":
		return app.Roles{Process: true}, true
	case "sink":
		return app.Roles{Sink: true}, true
	}
	return app.Roles{}, false
}

// flagsFor returns the flag set of subcommand cmd, built by the same code as
// the command itself but bound to throwaway values and writing nothing, so
// that tests can check deploy files against the real flags without running
// anything. "keys" stands for `keys new`; "probe" takes no flags.
func flagsFor(cmd string) (*flag.FlagSet, error) {
	if roles, ok := rolesFor(cmd); ok {
		fs, _ := roleFlags(cmd, roles, io.Discard)
		return fs, nil
	}
	switch cmd {
	case "topics":
		fs, _, _ := topicsFlags(io.Discard)
		return fs, nil
	case "migrate":
		fs, _ := migrateFlags(io.Discard)
		return fs, nil
	case "keys":
		fs, _, _ := keysFlags(io.Discard)
		return fs, nil
	case "probe":
		return newFlagSet("probe", io.Discard), nil
	}
	return nil, fmt.Errorf("unknown command %q", cmd)
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("orderpipe "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// common are the flags every broker-facing command shares.
type common struct {
	brokers   listFlag
	topology  topology.Config
	logLevel  string
	logFormat string
}

// register adds the flags to fs; embedded says an empty --brokers starts
// the in-process broker (only `run`: anywhere else it would be a broker no
// other process sees).
func (c *common) register(fs *flag.FlagSet, embedded bool) {
	c.topology = topology.DefaultConfig()
	help := "Kafka-protocol seed brokers, comma-separated (required)"
	if embedded {
		help = "Kafka-protocol seed brokers, comma-separated; empty starts an in-process in-memory broker (not durable)"
	}
	fs.Var(&c.brokers, "brokers", help)
	fs.Func("partitions", "partitions of every topic (default 12)", func(v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		c.topology.Partitions = int32(n)
		return err
	})
	fs.Func("replication", "replication factor of new topics; 0 = min(3, brokers) (default 0)", func(v string) error {
		n, err := strconv.ParseInt(v, 10, 16)
		c.topology.ReplicationFactor = int16(n)
		return err
	})
	durationFlag(fs, &c.topology.StreamRetention, "stream-retention", c.topology.StreamRetention, "retention of stream topics")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, got %q", c.logFormat)
}

// roleOptions are the values the flags of a role command fill.
type roleOptions struct {
	common     common
	cfg        app.Config
	cpuProfile string
}

// roleFlags builds the flag set of role command name running roles.
func roleFlags(name string, roles app.Roles, stderr io.Writer) (*flag.FlagSet, *roleOptions) {
	fs := newFlagSet(name, stderr)
	o := &roleOptions{}
	o.common.register(fs, name == "run")
	cfg := &o.cfg
	if roles.Ingest {
		fs.StringVar(&cfg.Ingest.Listen, "listen", ingest.DefaultListen, "edge listen address")
		fs.BoolVar(&cfg.Ingest.AccessLog, "access-log", false, "log every request (method, path, status, duration, client, order id) at info level")
		fs.IntVar(&cfg.Ingest.AccessLogEvery, "access-log-every", 1, "with --access-log, log one request in this many, and every 5xx answer")
		fs.StringVar(&cfg.Ingest.APIKeysFile, "api-keys-file", "", "API keys file (client id, sha256 of key, scopes per line); empty turns auth off, allowed on loopback only")
		fs.StringVar(&cfg.Ingest.TLSCertFile, "tls-cert", "", "PEM certificate chain: serve HTTPS with it and --tls-key (reloaded on SIGHUP); empty serves plain HTTP")
		fs.StringVar(&cfg.Ingest.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
		fs.Float64Var(&cfg.Ingest.RateLimit, "rate-limit", 0, "requests per second per client; 0 = no limit")
		fs.IntVar(&cfg.Ingest.RateBurst, "rate-burst", 0, "burst of the per-client rate limit (default: the rate)")
		fs.IntVar(&cfg.Ingest.MaxInFlight, "max-in-flight", ingest.DefaultMaxInFlight, "orders accepted by this edge and not final yet, above which new orders get 503")
		fs.IntVar(&cfg.Ingest.MaxInFlightPerSKU, "max-in-flight-per-sku", ingest.DefaultMaxInFlightPerSKU, "order lines of one SKU in flight from this edge, above which new orders for it get 503")
		durationFlag(fs, &cfg.Ingest.ProduceTimeout, "produce-timeout", ingest.DefaultProduceTimeout, "bound on the answer to an order: 202 once the broker acked, 503 when the record certainly was not stored, 504 when a broker took it and did not answer")
		durationFlag(fs, &cfg.Ingest.LookupTimeout, "lookup-timeout", ingest.DefaultLookupTimeout, "bound on a GET of an order this edge's view does not show yet, which asks the broker whether it exists: 503 + Retry-After when it cannot tell in time, never a guessed 404")
		fs.IntVar(&cfg.Ingest.LookupMaxScan, "lookup-max-scan", ingest.DefaultLookupMaxScan, "records of a partition not yet committed by the orders processor that such a GET reads; further behind, an unknown order gets 503 instead of 404")
		fs.Int64Var(&cfg.MaxViewLag, "max-view-lag", app.DefaultMaxViewLag, "records a view may be behind its table on a partition before /readyz says degraded (view_lag)")
		durationFlag(fs, &cfg.ShutdownDrain, "shutdown-drain", 2*time.Second, "on SIGTERM, how long /readyz answers 503 before the listener closes, for the load balancer to notice (above its check interval x fall)")
	}
	durationFlag(fs, &cfg.LagInterval, "lag-interval", lag.DefaultInterval, "how often consumer-group and view lag are read (orderpipe_consumer_lag_records, orderpipe_view_lag_records)")
	if roles.Sink {
		fs.StringVar(&cfg.PostgresURL, "postgres-url", "", "PostgreSQL URL (also DATABASE_URL); empty starts a throwaway local server")
		fs.StringVar(&cfg.Sink.Group, "sink-group", "orderpipe-sink", "consumer group of the sink")
	} else if roles.Ingest {
		fs.StringVar(&cfg.PostgresURL, "postgres-url", "", "PostgreSQL URL of the sink's database (also DATABASE_URL), read only by GET /v1/orders/{id}?trace=1 for when an order was stored; empty: the trace says it cannot tell")
	}
	if roles.Process {
		durationFlag(fs, &cfg.BrokerRetry, "broker-retry", processors.DefaultBrokerRetry, "how long the processors' producers keep retrying while no broker answers (a broker restart) before a processor is rebuilt")
	}
	if roles.Process || roles.Ingest {
		fs.StringVar(&cfg.DataDir, "data-dir", "", "directory of this process only, for Goka table state (LevelDB, rebuilt from the changelogs when it came from another cluster) and, for run without --brokers, the embedded broker's log; empty uses a temporary dir removed on exit")
		durationFlag(fs, &cfg.FetchWait, "fetch-wait", 0, "how long a processor or view fetch may wait for 256 KiB: 0 answers at the first record (lowest latency); e.g. 25ms cuts the broker's request load under heavy traffic")
	}
	if !roles.Ingest {
		// The edge serves these itself.
		fs.StringVar(&cfg.OpsListen, "ops-listen", "", "address of /healthz, /readyz and /metrics for this process (e.g. 127.0.0.1:9101); empty serves none")
	}
	fs.StringVar(&cfg.ClientID, "client-id", "orderpipe", "client id sent to the brokers")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of the whole run to this file (go tool pprof), complete once the process stopped cleanly")
	return fs, o
}

// topicsFlags builds the flag set of `topics`; check is --check.
func topicsFlags(stderr io.Writer) (fs *flag.FlagSet, c *common, check *bool) {
	fs = newFlagSet("topics", stderr)
	c = &common{}
	c.register(fs, false)
	check = fs.Bool("check", false, "only check the topics, create nothing")
	return fs, c, check
}

// migrateFlags builds the flag set of `migrate`; url is --postgres-url.
func migrateFlags(stderr io.Writer) (fs *flag.FlagSet, url *string) {
	fs = newFlagSet("migrate", stderr)
	url = fs.String("postgres-url", "", "PostgreSQL URL (also DATABASE_URL); required")
	return fs, url
}

// keysFlags builds the flag set of `keys new`.
func keysFlags(stderr io.Writer) (fs *flag.FlagSet, client *string, scopes *listFlag) {
	fs = newFlagSet("keys new", stderr)
	client = fs.String("client", "", "client id (required)")
	scopes = new(listFlag)
	fs.Var(scopes, "scopes", "comma-separated scopes: orders:write, orders:read, inventory:admin")
	return fs, client, scopes
}

// Command orderpipe runs the order pipeline: the HTTP edge, the Goka
// processors and the Postgres sink, together (`run`) or one role per
// process (`ingest`, `process`, `sink`), plus the `topics`, `migrate` and
// `keys` tools. Every flag also reads an ORDERPIPE_* environment variable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/sinks/pgsink"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const usage = `orderpipe: orders over HTTP, through Kafka and Goka, into Postgres.

Usage:
  orderpipe run      [flags]   every role in one process (embedded broker and database by default)
  orderpipe ingest   [flags]   the HTTP edge
  orderpipe process  [flags]   the orders and inventory processors
  orderpipe sink     [flags]   the Postgres sink
  orderpipe topics   [flags]   create or check the topics of the topology
  orderpipe migrate  [flags]   apply the Postgres schema migrations
  orderpipe keys new --client ID --scopes orders:write,orders:read
                               print a new API key and its keys-file line
  orderpipe probe URL          exit 0 if GET URL answers 200 (container health checks)

Run 'orderpipe COMMAND -h' for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, so that tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = runRoles(ctx, cmd, rest, app.Roles{Ingest: true, Process: true, Sink: true, EnsureTopics: true}, stdout, stderr)
	case "ingest":
		err = runRoles(ctx, cmd, rest, app.Roles{Ingest: true}, stdout, stderr)
	case "process":
		err = runRoles(ctx, cmd, rest, app.Roles{Process: true}, stdout, stderr)
	case "sink":
		err = runRoles(ctx, cmd, rest, app.Roles{Sink: true}, stdout, stderr)
	case "topics":
		err = runTopics(ctx, rest, stdout, stderr)
	case "migrate":
		err = runMigrate(ctx, rest, stderr)
	case "keys":
		err = runKeys(rest, stdout, stderr)
	case "probe":
		err = runProbe(ctx, rest)
	default:
		fmt.Fprintf(stderr, "orderpipe: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "orderpipe %s: %v\n", cmd, err)
	return 1
}

// errUsage marks a command-line mistake that was already explained.
var errUsage = errors.New("usage")

// common are the flags every broker-facing command shares.
type common struct {
	brokers   listFlag
	topology  topology.Config
	logLevel  string
	logFormat string
}

func (c *common) register(fs *flag.FlagSet) {
	c.topology = topology.DefaultConfig()
	fs.Var(&c.brokers, "brokers", "Kafka-protocol seed brokers, comma-separated; empty starts an in-process in-memory broker (not durable)")
	fs.Func("partitions", "partitions of every topic (default 12)", func(v string) error {
		var n int32
		_, err := fmt.Sscan(v, &n)
		c.topology.Partitions = n
		return err
	})
	fs.Func("replication", "replication factor of new topics; 0 = min(3, brokers) (default 0)", func(v string) error {
		var n int16
		_, err := fmt.Sscan(v, &n)
		c.topology.ReplicationFactor = n
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

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("orderpipe "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func runRoles(ctx context.Context, name string, args []string, roles app.Roles, stdout, stderr io.Writer) error {
	fs := newFlagSet(name, stderr)
	var c common
	c.register(fs)
	var cfg app.Config
	if roles.Ingest {
		fs.StringVar(&cfg.Ingest.Listen, "listen", ingest.DefaultListen, "edge listen address")
		fs.StringVar(&cfg.Ingest.APIKeysFile, "api-keys-file", "", "API keys file (client id, sha256 of key, scopes per line); empty turns auth off, allowed on loopback only")
		fs.Float64Var(&cfg.Ingest.RateLimit, "rate-limit", 0, "requests per second per client; 0 = no limit")
		fs.IntVar(&cfg.Ingest.RateBurst, "rate-burst", 0, "burst of the per-client rate limit (default: the rate)")
		fs.IntVar(&cfg.Ingest.MaxInFlight, "max-in-flight", ingest.DefaultMaxInFlight, "orders accepted by this edge and not final yet, above which new orders get 503")
		fs.IntVar(&cfg.Ingest.MaxInFlightPerSKU, "max-in-flight-per-sku", ingest.DefaultMaxInFlightPerSKU, "order lines of one SKU in flight from this edge, above which new orders for it get 503")
		durationFlag(fs, &cfg.Ingest.ProduceTimeout, "produce-timeout", ingest.DefaultProduceTimeout, "longest wait for the broker's ack before answering 503")
	}
	if roles.Sink {
		fs.StringVar(&cfg.PostgresURL, "postgres-url", "", "PostgreSQL URL (also DATABASE_URL); empty starts a throwaway local server")
		fs.StringVar(&cfg.Sink.Group, "sink-group", "orderpipe-sink", "consumer group of the sink")
	}
	if roles.Process || roles.Ingest {
		fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for Goka table state (LevelDB); empty uses a temporary dir removed on exit")
	}
	fs.StringVar(&cfg.ClientID, "client-id", "orderpipe", "client id sent to the brokers")
	if err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	cfg.Brokers, cfg.Topology, cfg.Logger = c.brokers, c.topology, log
	if len(cfg.Brokers) > 0 && name != "run" {
		roles.EnsureTopics = false
	}
	if roles.Ingest {
		cfg.OnReady = func(addr string) { announce(stdout, addr) }
	}
	return app.Run(ctx, cfg, roles)
}

// announce prints where to send orders, with a curl that works as is.
func announce(w io.Writer, addr string) {
	base := "http://" + addr
	fmt.Fprintf(w, `
orderpipe is ready: %[1]s

  # set stock, place an order, then read it (waits until it is final):
  curl -s -X PUT %[1]s/v1/inventory/SKU-1 -H 'Content-Type: application/json' -d '{"available": 10}'
  curl -s -X POST %[1]s/v1/orders -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \
       -d '{"customer_id":"c-1","currency":"EUR","items":[{"sku":"SKU-1","quantity":2,"unit_price_cents":1250}]}'
  curl -s '%[1]s/v1/orders/<order_id>?wait=2s'

  metrics: %[1]s/metrics   readiness: %[1]s/readyz   stop: Ctrl-C
`, base)
}

func runTopics(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("topics", stderr)
	var c common
	c.register(fs)
	check := fs.Bool("check", false, "only check the topics, create nothing")
	if err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	if len(c.brokers) == 0 {
		return errors.New("--brokers is required (the in-process broker lives only inside `orderpipe run`)")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...))
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if *check {
		err = c.topology.Check(ctx, adm)
	} else {
		err = c.topology.Ensure(ctx, adm, log)
	}
	if err != nil {
		return err
	}
	rf, err := c.topology.ResolveReplication(ctx, adm)
	if err != nil {
		return err
	}
	for _, s := range c.topology.Topics(rf) {
		fmt.Fprintf(stdout, "%-20s partitions=%d replication=%d cleanup.policy=%s\n", s.Name, s.Partitions, rf, s.Configs["cleanup.policy"])
	}
	return nil
}

func runMigrate(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("migrate", stderr)
	url := fs.String("postgres-url", "", "PostgreSQL URL (also DATABASE_URL); required")
	if err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	if *url == "" {
		return errors.New("--postgres-url is required")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := pgsink.MigrateURL(ctx, *url); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "migrations applied")
	return nil
}

func runKeys(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "new" {
		fmt.Fprintln(stderr, "usage: orderpipe keys new --client ID --scopes orders:write,orders:read,inventory:admin")
		return errUsage
	}
	fs := newFlagSet("keys new", stderr)
	client := fs.String("client", "", "client id (required)")
	var scopes listFlag
	fs.Var(&scopes, "scopes", "comma-separated scopes: orders:write, orders:read, inventory:admin")
	if err := parse(fs, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	key, line, err := ingest.NewAPIKey(*client, scopes)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "key:  %s\nline: %s\n", key, line)
	fmt.Fprintln(stderr, "Give the key to the client (Authorization: Bearer <key>); append the line to the --api-keys-file. The key is not stored anywhere.")
	return nil
}

// runProbe is a health check for images without curl: GET url, succeed on 200.
func runProbe(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: orderpipe probe URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", args[0], resp.Status)
	}
	return nil
}

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
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/sinks/pgsink"
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
	cmd, rest := args[0], args[1:]
	roles, isRole := rolesFor(cmd)
	// SIGHUP stops a one-shot command like SIGTERM; a role reloads what it
	// can on it (see app.Config.Reload), so it is not in the context.
	stopSignals := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !isRole {
		stopSignals = append(stopSignals, syscall.SIGHUP)
	}
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	defer stop()
	var err error
	switch {
	case isRole:
		err = runRoles(ctx, cmd, rest, roles, stdout, stderr)
	case cmd == "topics":
		err = runTopics(ctx, rest, stdout, stderr)
	case cmd == "migrate":
		err = runMigrate(ctx, rest, stderr)
	case cmd == "keys":
		err = runKeys(rest, stdout, stderr)
	case cmd == "probe":
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

func runRoles(ctx context.Context, name string, args []string, roles app.Roles, stdout, stderr io.Writer) error {
	fs, o := roleFlags(name, roles, stderr)
	if err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	c, cfg := &o.common, &o.cfg
	if name != "run" && len(c.brokers) == 0 {
		// An edge alone on an in-memory broker would answer 202 to orders
		// that no processor ever sees.
		fmt.Fprintf(stderr, "orderpipe %s: --brokers (or ORDERPIPE_BROKERS) is required: the in-memory broker lives only inside one process, where no other role would ever see what this one does. For every role in one process on the embedded broker, use `orderpipe run`.\n", name)
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
		scheme := "http"
		if cfg.Ingest.TLSCertFile != "" {
			scheme = "https"
		}
		cfg.OnReady = func(addr string) { announce(stdout, scheme+"://"+addr) }
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg.Reload = hup
	if o.cpuProfile != "" {
		stopProfile, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer func() {
			if err := stopProfile(); err != nil {
				log.Error("cpu profile", "err", err)
			}
		}()
	}
	return app.Run(ctx, *cfg, roles)
}

// startCPUProfile profiles the process into path until the returned func
// is called.
func startCPUProfile(path string) (func() error, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// announce prints where to send orders, with a curl that works as is, and
// where to watch them; base is the edge's scheme://host:port.
func announce(w io.Writer, base string) {
	fmt.Fprintf(w, `
orderpipe is ready: %[1]s

  # set stock, place an order, then read it (waits until it is final):
  curl -s -X PUT %[1]s/v1/inventory/SKU-1 -H 'Content-Type: application/json' -d '{"available": 10}'
  curl -s -X POST %[1]s/v1/orders -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \
       -d '{"customer_id":"c-1","currency":"EUR","items":[{"sku":"SKU-1","quantity":2,"unit_price_cents":1250}]}'
  curl -s '%[1]s/v1/orders/<order_id>?wait=2s&trace=1'

  dashboard: %[1]s/ui   API: %[1]s/openapi.json
  metrics: %[1]s/metrics   readiness: %[1]s/readyz   stop: Ctrl-C
`, base)
}

func runTopics(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c, check := topicsFlags(stderr)
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
	fs, url := migrateFlags(stderr)
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
	// Progress on stderr, so that a long migration shows what it is doing.
	if err := pgsink.MigrateURL(ctx, *url, slog.New(slog.NewTextHandler(stderr, nil))); err != nil {
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
	fs, client, scopes := keysFlags(stderr)
	if err := parse(fs, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	key, line, err := ingest.NewAPIKey(*client, *scopes)
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

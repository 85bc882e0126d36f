package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/lovoo/goka"
	"github.com/orderpipe/orderpipe/ingest"
	"github.com/orderpipe/orderpipe/internal/datadir"
	"github.com/orderpipe/orderpipe/internal/health"
	"github.com/orderpipe/orderpipe/internal/kafkaobs"
	"github.com/orderpipe/orderpipe/internal/lag"
	"github.com/orderpipe/orderpipe/internal/membroker"
	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/orderpipe/orderpipe/internal/supervise"
	"github.com/orderpipe/orderpipe/processors"
	"github.com/orderpipe/orderpipe/sinks/pgsink"
	"github.com/orderpipe/orderpipe/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func (c Config) withDefaults() (Config, *slog.Logger) {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ClientID == "" {
		c.ClientID = "orderpipe"
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 30 * time.Second
	}
	if c.MaxViewLag == 0 {
		c.MaxViewLag = DefaultMaxViewLag
	}
	if c.Restart.MaxBackoff == 0 {
		// A broker back from a restart waits at most this for a processor.
		c.Restart.MaxBackoff = 5 * time.Second
	}
	return c, c.Logger
}

// env is what the roles of a process share and nobody else owns: the
// embedded broker and database when none is configured, the data dir, the
// replication factor of the topics and the metrics registry.
type env struct {
	brokers     []string
	postgresURL string
	dataDir     string
	replication int16
	registry    *prometheus.Registry
	cleanups    []func()
}

func (e *env) close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}

// prepare sets up env. Every error it returns is permanent for the process:
// configuration, a data dir in use by another process, topics that fail
// their check, a database that cannot be created.
func prepare(ctx context.Context, cfg *Config, roles Roles, log *slog.Logger) (_ *env, err error) {
	if err := cfg.Topology.Validate(); err != nil {
		return nil, err
	}
	e := &env{brokers: cfg.Brokers, postgresURL: cfg.PostgresURL, registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	e.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The data dir first: it is locked before anything in it is opened,
	// the embedded broker's log included.
	dir, err := e.openDataDir(cfg.DataDir, roles, log)
	if err != nil {
		return nil, err
	}
	if len(e.brokers) == 0 {
		// The broker's log is kept only in a data dir the user gave.
		var keep *datadir.Dir
		if cfg.DataDir != "" {
			keep = dir
		}
		if err := e.startBroker(keep, log); err != nil {
			return nil, err
		}
		roles.EnsureTopics = true
	}
	if e.postgresURL == "" && roles.Sink {
		srv, err := pglocal.Start(ctx, pglocal.Config{Logger: log.With("component", "pglocal")})
		if err != nil {
			return nil, fmt.Errorf("start throwaway postgres (pass --postgres-url to use yours): %w", err)
		}
		e.cleanups = append(e.cleanups, func() {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := srv.Close(cctx); err != nil {
				log.Error("stop throwaway postgres", "err", err)
			}
		})
		e.postgresURL = srv.URL()
		log.Warn("no --postgres-url: started a THROWAWAY PostgreSQL, removed on exit", "url", e.postgresURL)
	}
	// Logs only: kprom's admin metrics belong to the lag collector's
	// long-lived client.
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.brokers...)}, kafkaobs.Opts(nil, "admin", log)...)...)
	if err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	actx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if e.replication, err = prepareTopics(actx, adm, cfg.Topology, roles.EnsureTopics, log); err != nil {
		return nil, err
	}
	if dir != nil {
		// After the topics are checked (their ids are the ones checked)
		// and before any table state is opened.
		origin, err := datadir.ReadOrigin(actx, adm, string(topology.OrdersTable()), string(topology.InventoryTable()))
		if err != nil {
			return nil, err
		}
		if err := dir.Reconcile(origin, log); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// openDataDir locks the data dir at path, or, when path is empty and
// roles keep table state, a temporary one removed on close. It returns
// nil when the process keeps no table state and was given no dir.
func (e *env) openDataDir(path string, roles Roles, log *slog.Logger) (*datadir.Dir, error) {
	if path == "" {
		if !roles.Ingest && !roles.Process {
			return nil, nil
		}
		tmp, err := os.MkdirTemp("", "orderpipe-data-")
		if err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		e.cleanups = append(e.cleanups, func() { _ = os.RemoveAll(tmp) })
		log.Info("no --data-dir: table state goes to a temporary dir and is recovered from the changelogs at each start", "dir", tmp)
		path = tmp
	}
	dir, err := datadir.Open(path)
	if err != nil {
		return nil, err
	}
	e.cleanups = append(e.cleanups, func() { _ = dir.Close() })
	e.dataDir = dir.Path()
	return dir, nil
}

// startBroker starts the embedded broker. In keep (a data dir the user
// gave) it keeps its log, topics and group offsets, and reloads them at
// the next start, so that a process started again on the dir has every
// order it accepted, and table state that agrees with the log. Without
// keep they live in memory and end with the process.
func (e *env) startBroker(keep *datadir.Dir, log *slog.Logger) error {
	if keep == nil {
		c, err := membroker.Start()
		if err != nil {
			return err
		}
		e.cleanups = append(e.cleanups, c.Close)
		e.brokers = c.Brokers()
		log.Warn("no --brokers: started an IN-MEMORY Kafka broker; nothing survives this process, do not use it for real orders", "brokers", e.brokers)
		return nil
	}
	c, err := membroker.Start(kfake.DataDir(keep.Broker()))
	if err != nil {
		return fmt.Errorf("embedded broker in %s (remove that dir to start afresh, losing its orders): %w", keep.Broker(), err)
	}
	e.cleanups = append(e.cleanups, c.Close)
	e.brokers = c.Brokers()
	log.Warn("no --brokers: started an EMBEDDED Kafka broker that keeps its log in the data dir; one broker, no replication, do not use it for real orders",
		"brokers", e.brokers, "dir", keep.Broker())
	return nil
}

// prepareTopics creates (ensure) or checks the topics and returns the
// replication factor the tables must have.
func prepareTopics(ctx context.Context, adm *kadm.Client, tc topology.Config, ensure bool, log *slog.Logger) (int16, error) {
	if ensure {
		if err := tc.Ensure(ctx, adm, log); err != nil {
			return 0, err
		}
	} else if err := tc.Check(ctx, adm); err != nil {
		return 0, err
	}
	return tc.ResolveReplication(ctx, adm)
}

// role is a processor group or the sink, as the supervisor runs it.
type role struct {
	name   string
	run    func(context.Context) error
	ready  func() error
	status *supervise.Status
	// critical roles take the edge out of a load balancer while not
	// ready; the sink is not: orders are still taken and served from the
	// cache while Postgres is away.
	critical bool
}

// check is the role's readiness, naming the failure it recovers from.
func (r role) check() error {
	if err := r.ready(); err != nil {
		if rerr := r.status.Recovering(); rerr != nil {
			return rerr
		}
		return err
	}
	r.status.Recovered()
	return nil
}

// checksOf is the readiness of the back roles, as the edge or the ops
// listener reports it.
func checksOf(back []role) []health.Check {
	var checks []health.Check
	for _, r := range back {
		checks = append(checks, health.Check{Name: r.name, Critical: r.critical, Fn: r.check})
	}
	return checks
}

// newLag builds the lag collector of every group of the topology and the
// sink's, and of the edge's views when views is set, on an admin client of
// its own (closed with e).
func newLag(cfg Config, e *env, views []lag.View, log *slog.Logger) (*lag.Collector, error) {
	opts := append([]kgo.Opt{kgo.SeedBrokers(e.brokers...), kgo.ClientID(cfg.ClientID + "-admin")}, kafkaobs.Opts(e.registry, "admin", log)...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("lag admin client: %w", err)
	}
	e.cleanups = append(e.cleanups, cl.Close)
	sinkGroup := cfg.Sink.Group
	if sinkGroup == "" {
		sinkGroup = pgsink.DefaultGroup
	}
	c, err := lag.New(lag.Config{
		Groups:   []string{string(topology.OrdersGroup), string(topology.InventoryGroup), sinkGroup},
		Views:    views,
		Interval: cfg.LagInterval,
	}, kadm.NewClient(cl), log)
	if err != nil {
		return nil, err
	}
	if err := e.registry.Register(c); err != nil {
		return nil, fmt.Errorf("register lag metrics: %w", err)
	}
	return c, nil
}

// build builds the roles of the process: the back roles (processor groups,
// sink), the edge (nil unless roles.Ingest) with shutdown among its checks,
// and the lag collector, registered in e.registry, whose Run the caller
// runs.
func build(cfg Config, roles Roles, e *env, shutdown health.Check, log *slog.Logger) ([]role, *ingest.Edge, *lag.Collector, error) {
	var back []role
	if roles.Process {
		procs, err := processors.New(processors.Config{
			Brokers: e.brokers, DataDir: e.dataDir, ClientID: cfg.ClientID, Topology: cfg.Topology,
			Replication: e.replication, FetchWait: cfg.FetchWait, BrokerRetry: cfg.BrokerRetry,
		}, processors.Deps{Registerer: e.registry, Logger: log.With("component", "goka")})
		if err != nil {
			return nil, nil, nil, err
		}
		// After the groups' Run returned: e closes after every role.
		e.cleanups = append(e.cleanups, procs.Close)
		for _, g := range procs.Groups() {
			back = append(back, role{name: g.Name() + " processor", run: g.Run, ready: g.Ready, status: new(supervise.Status), critical: true})
		}
	}
	if roles.Sink {
		scfg := cfg.Sink
		scfg.Brokers, scfg.PostgresURL, scfg.Migrate = e.brokers, e.postgresURL, true
		if scfg.ClientID == "" {
			scfg.ClientID = cfg.ClientID + "-sink"
		}
		sink, err := pgsink.New(scfg, pgsink.Deps{Logger: log.With("component", "sink"), Registerer: e.registry})
		if err != nil {
			return nil, nil, nil, err
		}
		back = append(back, role{name: "postgres-sink", run: sink.Run, ready: sink.Health, status: new(supervise.Status)})
	}
	if !roles.Ingest {
		lagc, err := newLag(cfg, e, nil, log.With("component", "lag"))
		return back, nil, lagc, err
	}
	var edge *ingest.Edge // set below, before the collector runs
	viewOf := func(name string, table goka.Table) lag.View {
		return lag.View{Name: name, Topic: string(table), Next: func(ctx context.Context) map[int32]int64 { return edge.ViewNext(ctx, table) }}
	}
	lagc, err := newLag(cfg, e, []lag.View{viewOf("orders", topology.OrdersTable()), viewOf("inventory", topology.InventoryTable())}, log.With("component", "lag"))
	if err != nil {
		return nil, nil, nil, err
	}
	checks := append(checksOf(back), shutdown, health.Check{Name: "view_lag", Fn: lagc.ViewsCheck(cfg.MaxViewLag)})
	icfg := cfg.Ingest
	icfg.Brokers, icfg.ClientID, icfg.Topology, icfg.Replication = e.brokers, cfg.ClientID, cfg.Topology, e.replication
	icfg.DataDir, icfg.FetchWait = e.dataDir, cfg.FetchWait
	if icfg.StoredAt == nil && e.postgresURL != "" {
		// The sink's database (run) or --postgres-url (ingest): the
		// stored step of ?trace=1.
		r, err := pgsink.NewStoredAtReader(e.postgresURL)
		if err != nil {
			return nil, nil, nil, err
		}
		e.cleanups = append(e.cleanups, r.Close)
		icfg.StoredAt = r.StoredAt
	}
	edge, err = ingest.New(icfg, ingest.Deps{Logger: log.With("component", "edge"), Registry: e.registry, Checks: checks})
	if err != nil {
		return nil, nil, nil, err
	}
	return back, edge, lagc, nil
}

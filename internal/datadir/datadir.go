// Package datadir guards a process's data dir (--data-dir). The table
// state the processors and the edge's views keep there (LevelDB, one
// database per table partition, with the offset it was read up to) is a
// copy of table topics of one Kafka cluster, and only valid against those
// topics. Against a new cluster, or topics deleted and created again,
// Goka either fails for good on "delete your local cache" (a table topic
// that is empty) or, worse, serves the old state as if it were the new
// one's. So the data dir records where its state came from (the cluster
// ID and the table topics' IDs); at start, state of another origin, or of
// an unknown one, is removed and rebuilt from the changelogs, which is
// what a process without a data dir does at every start anyway.
//
// A data dir is also locked for the process that holds it: two processes
// on one dir would corrupt each other's LevelDB files (and the embedded
// broker's log), and Goka would restart a processor forever on the lock.
package datadir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kadm"
)

// The layout of a data dir.
const (
	// lockFile is held (flock) by the process using the dir; it holds
	// that process's pid, for the message that refuses a second one.
	lockFile = "orderpipe.lock"
	// originFile records the Origin of the table state.
	originFile = "kafka-origin.json"
	// brokerDir holds the embedded broker's log (`orderpipe run`
	// without --brokers).
	brokerDir = "broker"
)

// tableDirs returns where processors.Config puts table state (its
// storageBuilder): processor/<group> for the groups' tables and
// view/<table> for the views. Only these are ever removed, never anything
// else a user keeps in the dir; internal/app's restart tests check that a
// process creates them.
func tableDirs() []string { return []string{"processor", "view"} }

// Dir is a data dir locked for this process. Close releases it.
type Dir struct {
	path string
	lock *os.File
}

// Open creates the data dir at path if needed and locks it for this
// process; it fails, naming the holder, when another process holds it.
func Open(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", path, err)
	}
	f, err := os.OpenFile(filepath.Join(path, lockFile), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: open lock file: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another orderpipe process (pid %s): give each process a --data-dir of its own",
				path, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("data dir %s: lock: %w", path, err)
	}
	// The pid is for people; the flock is the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Dir{path: path, lock: f}, nil
}

// Path is the data dir's path.
func (d *Dir) Path() string { return d.path }

// Broker is where the embedded broker keeps its log.
func (d *Dir) Broker() string { return filepath.Join(d.path, brokerDir) }

// Close releases the lock.
func (d *Dir) Close() error {
	if err := d.lock.Close(); err != nil {
		return fmt.Errorf("data dir %s: release lock: %w", d.path, err)
	}
	return nil
}

// Origin is where table state was read from: a Kafka cluster and the IDs
// of its table topics. A topic deleted and created again has a new ID, on
// the same cluster; a broker that does not support topic IDs (all zero)
// is told apart by its cluster ID only.
type Origin struct {
	ClusterID string `json:"cluster_id"`
	// TopicIDs are the table topics' IDs, by topic name.
	TopicIDs map[string]string `json:"topic_ids"`
}

// ReadOrigin asks the cluster adm reaches for its ID and the IDs of
// topics, which must exist. franz-go may answer from the metadata its
// client read within MetadataMinAge (5s): a client that has just checked
// the topics gives their IDs as checked.
func ReadOrigin(ctx context.Context, adm *kadm.Client, topics ...string) (Origin, error) {
	m, err := adm.Metadata(ctx, topics...)
	if err != nil {
		return Origin{}, fmt.Errorf("read the cluster and topic ids: %w", err)
	}
	o := Origin{ClusterID: m.Cluster, TopicIDs: map[string]string{}}
	for _, t := range topics {
		td, ok := m.Topics[t]
		switch {
		case !ok:
			return Origin{}, fmt.Errorf("read the id of topic %s: not in the metadata answer", t)
		case td.Err != nil:
			return Origin{}, fmt.Errorf("read the id of topic %s: %w", t, td.Err)
		}
		o.TopicIDs[t] = td.ID.String()
	}
	return o, nil
}

// differences says how o differs from the origin now, "" when it does not.
func (o Origin) differences(now Origin) string {
	var d []string
	if o.ClusterID != now.ClusterID {
		d = append(d, fmt.Sprintf("cluster %q, now %q", o.ClusterID, now.ClusterID))
	}
	for _, t := range slices.Sorted(maps.Keys(now.TopicIDs)) {
		if was, ok := o.TopicIDs[t]; !ok {
			d = append(d, fmt.Sprintf("no id of topic %s", t))
		} else if was != now.TopicIDs[t] {
			d = append(d, fmt.Sprintf("topic %s id %s, now %s", t, was, now.TopicIDs[t]))
		}
	}
	return strings.Join(d, ", ")
}

// Reconcile makes the data dir's table state belong to origin: state
// recorded as read from another origin, or with no record of its origin
// (a data dir from before the record, or whose record is unreadable), is
// removed, saying why on one warning line, so that the processors and
// views rebuild it from their changelogs. It then records origin. It must
// run before any table state is opened.
func (d *Dir) Reconcile(origin Origin, log *slog.Logger) error {
	recorded, why := d.recorded()
	if why == "" {
		why = recorded.differences(origin)
	}
	if why == "" {
		return nil
	}
	stale, err := d.tableState()
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		log.Warn("the data dir's table state is not from this Kafka cluster's table topics: removing it, the tables are rebuilt from their changelogs",
			"dir", d.path, "why", why, "removed", stale)
		for _, sub := range stale {
			if err := os.RemoveAll(filepath.Join(d.path, sub)); err != nil {
				return fmt.Errorf("data dir %s: remove table state of another origin: %w", d.path, err)
			}
		}
	}
	return d.record(origin)
}

// recorded reads the recorded origin; why says why there is none to
// compare with.
func (d *Dir) recorded() (o Origin, why string) {
	b, err := os.ReadFile(filepath.Join(d.path, originFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Origin{}, "no record of the cluster it was read from"
	}
	if err != nil {
		return Origin{}, fmt.Sprintf("its origin cannot be read: %v", err)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return Origin{}, fmt.Sprintf("its origin cannot be read: %s: %v", originFile, err)
	}
	return o, ""
}

// tableState returns the table dirs that exist.
func (d *Dir) tableState() ([]string, error) {
	var out []string
	for _, sub := range tableDirs() {
		_, err := os.Stat(filepath.Join(d.path, sub))
		switch {
		case err == nil:
			out = append(out, sub)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("data dir %s: %w", d.path, err)
		}
	}
	return out, nil
}

// record writes origin, atomically: a crash leaves the old record or the
// new one, and the old one (state removed or not) only costs a rebuild.
func (d *Dir) record(origin Origin) error {
	b, err := json.MarshalIndent(origin, "", "  ")
	if err != nil {
		return fmt.Errorf("data dir %s: encode origin: %w", d.path, err)
	}
	path := filepath.Join(d.path, originFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("data dir %s: record origin: %w", d.path, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("data dir %s: record origin: %w", d.path, err)
	}
	return nil
}

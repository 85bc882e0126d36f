// Package pgha runs a replicated PostgreSQL for tests: one etcd member and
// Patroni members (Debian's packages; scripts/ensure-patroni.sh installs
// them), each with its own Postgres on loopback, configured from
// deploy/patroni.yml. It kills and restarts members by pid and asks
// Patroni who leads. It is test-only: it imports testing.
package pgha

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/orderpipe/orderpipe/internal/proctest"
)

// Cluster is etcd and the Patroni members.
type Cluster struct {
	tb      testing.TB
	dir     string
	etcd    string // client address
	Members []*Member
	cred    *syscall.Credential
	http    *http.Client
}

// Member is one Patroni with its Postgres.
type Member struct {
	Name             string
	RestAddr, PGAddr string
	dir, config      string
	c                *Cluster
	P                *proctest.Proc
}

// Binaries returns Patroni's path: $ORDERPIPE_PATRONI, else what
// scripts/ensure-patroni.sh prints (it installs Patroni and etcd when
// missing).
func Binaries() (string, error) {
	if p := os.Getenv("ORDERPIPE_PATRONI"); p != "" {
		return p, nil
	}
	root, err := proctest.RepoRoot()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(root, "scripts", "ensure-patroni.sh")).Output()
	if err != nil {
		return "", fmt.Errorf("scripts/ensure-patroni.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Start starts etcd and n Patroni members, and waits until one leads and
// every other streams from it.
func Start(tb testing.TB, n int) *Cluster {
	tb.Helper()
	patroni, err := Binaries()
	if err != nil {
		tb.Fatal(err)
	}
	cred, err := pglocal.Credential("")
	if err != nil {
		tb.Fatal(err)
	}
	binDir, err := pglocal.BinDir()
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "orderpipe-pgha-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	c := &Cluster{tb: tb, dir: dir, cred: cred, http: &http.Client{Timeout: 3 * time.Second}}
	c.chown(dir)
	peer := proctest.FreeAddr(tb)
	c.etcd = proctest.FreeAddr(tb)
	etcd := exec.Command("etcd", "--name", "e1", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://"+c.etcd, "--advertise-client-urls", "http://"+c.etcd,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "e1=http://"+peer)
	etcd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	proctest.Start(tb, "etcd", etcd, false)

	root, err := proctest.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	tmpl, err := os.ReadFile(filepath.Join(root, "deploy", "patroni.yml"))
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		m := &Member{Name: fmt.Sprintf("pg-%d", i+1), RestAddr: proctest.FreeAddr(tb), PGAddr: proctest.FreeAddr(tb), c: c}
		m.dir = filepath.Join(dir, m.Name)
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			tb.Fatal(err)
		}
		c.chown(m.dir)
		vars := map[string]string{
			"PGHA_NAME": m.Name, "PGHA_REST_PORT": port(m.RestAddr), "PGHA_PG_PORT": port(m.PGAddr),
			"PGHA_DIR": m.dir, "PGHA_BIN_DIR": binDir, "PGHA_ETCD": c.etcd,
		}
		m.config = filepath.Join(m.dir, "patroni.yml")
		if err := os.WriteFile(m.config, []byte(os.Expand(string(tmpl), func(k string) string { return vars[k] })), 0o600); err != nil {
			tb.Fatal(err)
		}
		c.chown(m.config)
		m.start(patroni)
		c.Members = append(c.Members, m)
	}
	c.AwaitStreaming(3 * time.Minute)
	return c
}

func port(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

func (c *Cluster) chown(path string) {
	if c.cred != nil {
		if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			c.tb.Fatal(err)
		}
	}
}

func (m *Member) start(patroni string) {
	cmd := exec.Command(patroni, m.config)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: m.c.cred}
	cmd.Dir = m.dir
	m.P = proctest.Start(m.c.tb, m.Name, cmd, false)
}

// Restart starts a member again on its data dir (after Kill).
func (m *Member) Restart() {
	patroni, err := Binaries()
	if err != nil {
		m.c.tb.Fatal(err)
	}
	m.start(patroni)
}

// Postmaster is the pid of the member's postmaster, 0 if none runs.
func (m *Member) Postmaster() int {
	b, err := os.ReadFile(filepath.Join(m.dir, "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// Kill SIGKILLs the member's Patroni, its postmaster and every backend
// at once, as a machine that dies does (a backend left running, such as a
// WAL sender, would go on serving after its postmaster), and returns the
// postmaster's pid.
func (m *Member) Kill() int {
	pm := m.Postmaster()
	var procs []int
	if pm > 0 {
		procs = append(children(pm), pm) // processes of the Patroni this test started
		for _, pid := range procs {
			_ = syscall.Kill(pid, syscall.SIGSTOP) // frozen first: none outlives the others
		}
	}
	if err := m.P.Kill(); err != nil {
		m.c.tb.Fatal(err)
	}
	for _, pid := range procs {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return pm
}

// children are the pids whose parent is pid, from /proc.
func children(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// URL is the member's own URL for db.
func (m *Member) URL(db string) string {
	return "postgres://postgres@" + m.PGAddr + "/" + db + "?sslmode=disable"
}

// IsLeader asks the member's Patroni whether it leads (GET /primary).
func (m *Member) IsLeader() bool {
	resp, err := m.c.http.Get("http://" + m.RestAddr + "/primary")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// Leader is the member Patroni says leads, nil if none does.
func (c *Cluster) Leader() *Member {
	for _, m := range c.Members {
		if m.P.Running() && m.IsLeader() {
			return m
		}
	}
	return nil
}

// URL is the multi-host URL of db that always finds the primary: what
// the sink is given.
func (c *Cluster) URL(db string) string {
	hosts := make([]string, len(c.Members))
	for i, m := range c.Members {
		hosts[i] = m.PGAddr
	}
	return "postgres://postgres@" + strings.Join(hosts, ",") + "/" + db + "?sslmode=disable&target_session_attrs=read-write"
}

// AwaitStreaming waits until a member leads and every other member
// streams from it.
func (c *Cluster) AwaitStreaming(within time.Duration) *Member {
	c.tb.Helper()
	var leader *Member
	await.Until(c.tb, "a Patroni leader and streaming replicas", within, func() error {
		leader = c.Leader()
		if leader == nil {
			return fmt.Errorf("no leader yet")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, leader.URL("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		// Patroni names a replica's connection after its member; a
		// pg_basebackup still copying streams too, under its own name.
		var others []string
		for _, m := range c.Members {
			if m != leader {
				others = append(others, m.Name)
			}
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = any($1)", others).Scan(&n); err != nil {
			return err
		}
		if want := len(c.Members) - 1; n < want {
			return fmt.Errorf("%d of %d replicas streaming from %s", n, want, leader.Name)
		}
		return nil
	})
	return leader
}

// Switchover asks Patroni for a planned switchover from the leader to
// candidate.
func (c *Cluster) Switchover(leader, candidate *Member) error {
	out, err := exec.Command("patronictl", "-c", leader.config, "switchover", "--leader", leader.Name, "--candidate", candidate.Name, "--force").CombinedOutput()
	if err != nil {
		return fmt.Errorf("patronictl switchover: %w: %s", err, out)
	}
	return nil
}

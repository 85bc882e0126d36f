// Package pglocal runs a throwaway PostgreSQL server on loopback: initdb into
// a temporary directory, start postgres on a free port, and remove everything
// on Close. `orderpipe run` uses it when no Postgres URL is given, and every
// test suite that needs a real Postgres starts one.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// superuser is the role initdb creates; trust auth means no password.
	superuser = "postgres"
	// maxPortAttempts bounds the retries when a port we picked was taken
	// by someone else between our probe and postgres binding it.
	maxPortAttempts = 5
	// readyTimeout caps the wait for a server to accept connections when
	// ctx has no earlier deadline, so a wedged server fails a test instead
	// of hanging it.
	readyTimeout = 60 * time.Second
	// pollInterval is how often readiness is probed.
	pollInterval = 50 * time.Millisecond
	// logTailBytes is how much of the server log goes into a start error.
	logTailBytes = 4 << 10
	// cleanupTimeout bounds the cleanup after a failed Start.
	cleanupTimeout = 10 * time.Second
	// killWait bounds the wait for killed backends to exit.
	killWait = 10 * time.Second
	// maxSocketPath is sizeof(sockaddr_un.sun_path) minus the NUL on Linux.
	maxSocketPath = 107
)

// Config says how to start a throwaway server. The zero value works.
type Config struct {
	// BinDir is the directory holding initdb and postgres. Default:
	// $ORDERPIPE_PG_BINDIR, then the directory of "postgres" found on PATH
	// (symlinks resolved), then the newest /usr/lib/postgresql/*/bin.
	BinDir string
	// Dir is the parent of the temporary directory holding the data
	// directory, socket and log. Default: os.TempDir(). When running as
	// root it must be traversable by OSUser.
	Dir string
	// Port is the loopback TCP port. Default 0: pick a free one, and pick
	// again if it turns out to be taken.
	Port int
	// OSUser is the account initdb and postgres run as when this process
	// is root, since both refuse to run as root. Default "postgres".
	OSUser string
	// Logger receives start/stop events. Default slog.Default().
	Logger *slog.Logger
}

// Server is a running (or halted) throwaway PostgreSQL server. Its methods
// are safe for concurrent use; they serialise on an internal lock. The
// Server owns one goroutine per started postgres process, which waits on
// the process and ends when it exits; Halt, Kill and Close wait for it.
type Server struct {
	log     *slog.Logger
	binDir  string
	root    string // temp dir: everything below is removed by Close
	dataDir string
	sockDir string
	logPath string
	cred    *syscall.Credential // nil when not root

	// port is atomic so URL and Port never wait behind a Halt or Resume;
	// it changes only while Start picks one.
	port atomic.Int64

	mu     sync.Mutex
	proc   *process // nil when never started or after a stop
	closed bool
}

// process is one postgres (or initdb) child and the goroutine reaping it.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait has returned
	err  error         // Wait's result; read only after done is closed
}

// Start initialises a fresh cluster in a new temporary directory and starts
// postgres listening only on 127.0.0.1, returning once it accepts
// connections. It creates no databases or roles beyond initdb's. On failure
// everything it made is removed and the error carries the tail of the
// server log.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	return start(ctx, cfg, freePort)
}

// start is Start with the port picker as a parameter, so a test can hand
// out a taken port and see the retry.
func start(ctx context.Context, cfg Config, pickPort func() (int, error)) (*Server, error) {
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("pglocal: port %d out of range", cfg.Port)
	}
	binDir, err := resolveBinDir(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	cred, err := credentialFor(cfg.OSUser)
	if err != nil {
		return nil, err
	}

	root, err := os.MkdirTemp(cfg.Dir, "pglocal-")
	if err != nil {
		return nil, fmt.Errorf("pglocal: create temp dir: %w", err)
	}
	s := &Server{
		log:     log,
		binDir:  binDir,
		root:    root,
		dataDir: filepath.Join(root, "data"),
		sockDir: filepath.Join(root, "s"),
		logPath: filepath.Join(root, "postgres.log"),
		cred:    cred,
	}
	if err := s.init(ctx, cfg.Port, pickPort); err != nil {
		// ctx may be what failed, yet the directory must still go.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if cerr := s.Close(cctx); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return s, nil
}

func (s *Server) init(ctx context.Context, port int, pickPort func() (int, error)) error {
	if len(s.sockDir)+len("/.s.PGSQL.65535") > maxSocketPath {
		return fmt.Errorf("pglocal: socket dir %q too long for a unix socket path; use a shorter Config.Dir", s.sockDir)
	}
	if err := os.Mkdir(s.sockDir, 0o700); err != nil {
		return fmt.Errorf("pglocal: create socket dir: %w", err)
	}
	if s.cred != nil {
		for _, p := range []string{s.root, s.sockDir} {
			if err := os.Chown(p, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return fmt.Errorf("pglocal: chown %s to server user: %w", p, err)
			}
		}
	}
	if err := s.initdb(ctx); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 1; ; attempt++ {
		p := port
		if p == 0 {
			var err error
			if p, err = pickPort(); err != nil {
				return err
			}
		}
		err := s.launchLocked(ctx, p)
		if err == nil {
			return nil
		}
		if port != 0 || attempt >= maxPortAttempts || !errors.Is(err, errPortInUse) {
			return err
		}
		s.log.Debug("pglocal: port taken, retrying", "port", p, "attempt", attempt)
	}
}

// initdb creates the cluster. --no-sync is safe because a crash before the
// server starts loses only a throwaway directory; the server itself keeps
// fsync on so Kill tests see real crash recovery.
func (s *Server) initdb(ctx context.Context) error {
	cmd := s.command(ctx, "initdb",
		"-D", s.dataDir,
		"-U", superuser,
		"--auth=trust",
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
	)
	logf, err := s.openLog()
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	// initdb is short-lived and Run reaps it: no goroutine to own.
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pglocal: initdb: %w%s", err, s.logTail())
	}
	return nil
}

// errPortInUse marks a start that failed because the TCP port was taken.
var errPortInUse = errors.New("port in use")

// launchLocked starts postgres on port and waits until it is ready. The
// caller holds s.mu.
func (s *Server) launchLocked(ctx context.Context, port int) error {
	cmd := s.command(context.Background(), "postgres",
		"-D", s.dataDir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+s.sockDir,
		"-c", "max_connections=200",
		"-c", "shared_buffers=128MB",
		// English messages so a bind failure can be recognised in the log.
		"-c", "lc_messages=C",
	)
	// postgres runs in its own process group so a terminal's Ctrl-C reaches
	// only us: orderpipe then shuts down in order and stops the server last,
	// instead of losing Postgres while sinks still flush.
	cmd.SysProcAttr.Setpgid = true
	// If this process dies without Close, take the server down with it.
	// Pdeathsig fires when the forking OS thread exits; the Go runtime ends
	// a thread only when a goroutine exits while locked to it
	// (runtime.LockOSThread without unlock), which orderpipe never does.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT

	logf, err := s.openLog()
	if err != nil {
		return err
	}
	logStart := logSize(logf)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close() // the child has its own copy of the descriptor
	if err != nil {
		return fmt.Errorf("pglocal: start postgres: %w", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { // owned by s: every stop path waits on p.done
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p
	s.port.Store(int64(port))

	if err := s.waitReady(ctx, p); err != nil {
		s.killLocked()
		if portInUse(s.logSince(logStart)) {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("pglocal: postgres on port %d: %w%s", port, err, s.logTail())
	}
	s.log.Info("pglocal: postgres ready", "port", port, "pid", cmd.Process.Pid, "dir", s.root)
	return nil
}

// waitReady polls with real connections until the server accepts one, the
// process exits, or the deadline passes.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	// A probe can hang on whatever else holds the port; end it as soon as
	// the server exits. This goroutine ends when cancel runs on return.
	watched := make(chan struct{})
	defer func() { cancel(); <-watched }()
	go func() {
		defer close(watched)
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = ping(ctx, s.URL()); lastErr == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before accepting connections: %v", p.err)
		case <-ctx.Done():
			// The watcher cancels ctx when the server exits; report that.
			select {
			case <-p.done:
				return fmt.Errorf("exited before accepting connections: %v", p.err)
			default:
			}
			return fmt.Errorf("not ready: %w (last connect error: %v)", ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

func ping(ctx context.Context, connURL string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

// URL returns the superuser URL of the postgres database.
func (s *Server) URL() string {
	return urlFor(s.Port(), superuser)
}

// Port returns the TCP port the server listens on; it stays the same across
// Halt and Resume.
func (s *Server) Port() int {
	return int(s.port.Load())
}

func urlFor(port int, db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Halt stops the server with a fast shutdown (SIGINT) and keeps the data
// directory, so tests can simulate Postgres being down. If ctx ends first
// the server is killed and ctx's error returned. Halting a stopped server
// does nothing.
func (s *Server) Halt(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pglocal: halt: server closed")
	}
	return s.stopLocked(ctx, syscall.SIGINT)
}

// Resume starts a stopped server again on the same port and data directory
// and waits until it accepts connections; after Kill this includes crash
// recovery. It does not move to another port: if the port was taken
// meanwhile, Resume fails. Resuming a running server does nothing.
func (s *Server) Resume(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pglocal: resume: server closed")
	}
	if s.runningLocked() {
		return nil
	}
	s.proc = nil // it exited on its own; already reaped
	return s.launchLocked(ctx, s.Port())
}

// Kill sends SIGKILL to the server and all its backends, like a crash, and
// waits for the server process to be reaped. Resume recovers from it.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pglocal: kill: server closed")
	}
	if !s.runningLocked() {
		return errors.New("pglocal: kill: server not running")
	}
	s.killLocked()
	return nil
}

// Close stops the server if it runs and removes the whole temporary
// directory. It is idempotent and safe on a Server whose Start failed
// halfway or on a nil Server. A graceful stop is tried until ctx ends; then
// the server is killed, the directory still removed, and ctx's error
// returned.
func (s *Server) Close(ctx context.Context) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	stopErr := s.stopLocked(ctx, syscall.SIGINT)
	if err := os.RemoveAll(s.root); err != nil {
		return errors.Join(stopErr, fmt.Errorf("pglocal: remove %s: %w", s.root, err))
	}
	return stopErr
}

// CreateDatabase creates database name and returns its superuser URL, so
// tests can isolate themselves on one shared server.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		return "", fmt.Errorf("pglocal: create database %q: connect: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pglocal: create database %q: %w", name, err)
	}
	return urlFor(s.Port(), name), nil
}

func (s *Server) runningLocked() bool {
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.done:
		return false
	default:
		return true
	}
}

// stopLocked sends sig to the postmaster and waits for it to exit,
// escalating to SIGKILL when ctx ends. Shutdown gets less graceful as the
// deadline nears rather than leaving a server behind.
func (s *Server) stopLocked(ctx context.Context, sig syscall.Signal) error {
	p := s.proc
	if p == nil {
		return nil
	}
	defer func() { s.proc = nil }()
	if !s.runningLocked() {
		return nil // it exited on its own; already reaped
	}
	if err := ctx.Err(); err != nil {
		s.killLocked()
		return fmt.Errorf("pglocal: no time to stop gracefully, killed server: %w", err)
	}
	// Signal fails only if the process already exited, which done reports.
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		s.log.Info("pglocal: postgres stopped", "port", s.Port())
		return nil
	case <-ctx.Done():
		s.killLocked()
		return fmt.Errorf("pglocal: graceful stop interrupted, killed server: %w", ctx.Err())
	}
}

// killLocked SIGKILLs the postmaster and its backends, reaps the
// postmaster and waits for the backends to die. Postgres puts every backend
// in its own session (setsid), so a process-group kill would miss them, and
// a backend that outlives its postmaster keeps the old shared memory
// attached: the next start would refuse to run ("pre-existing shared memory
// block is still in use"). The postmaster is stopped first so it cannot
// fork while its children are listed.
func (s *Server) killLocked() {
	p := s.proc
	if p == nil {
		return
	}
	pid := p.cmd.Process.Pid
	_ = p.cmd.Process.Signal(syscall.SIGSTOP)
	kids, err := frozenChildren(pid, killWait)
	if err != nil {
		s.log.Warn("pglocal: list server processes to kill", "port", s.Port(), "err", err)
	}
	_ = p.cmd.Process.Kill()
	for _, k := range kids {
		_ = syscall.Kill(k.pid, syscall.SIGKILL)
	}
	<-p.done
	s.proc = nil
	if err := waitGone(kids, killWait); err != nil {
		s.log.Warn("pglocal: backends outlived the kill", "port", s.Port(), "err", err)
	}
	s.log.Info("pglocal: postgres killed", "port", s.Port())
}

// procID names a process across pid reuse: pid plus start time.
type procID struct {
	pid   int
	start string
}

// procStat is the part of /proc/PID/stat this package reads.
type procStat struct {
	state string // R, S, T, Z, ...
	ppid  int
	start string // start time in clock ticks since boot
}

// readStat parses /proc/PID/stat; ok is false when the process is gone.
// Reading /proc makes this Linux-only, like Pdeathsig.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// The command name is parenthesised and may hold spaces; the fields
	// after it are: state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime ...
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	return procStat{state: f[0], ppid: ppid, start: f[19]}, true
}

// frozenChildren waits until process pid has stopped (SIGSTOP is delivered
// asynchronously) or died, then lists its children.
func frozenChildren(pid int, limit time.Duration) ([]procID, error) {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		st, ok := readStat(pid)
		if !ok || st.state == "T" || st.state == "t" || st.state == "Z" || st.state == "X" {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("process %d did not stop within %v", pid, limit)
		}
		<-tick.C
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var kids []procID
	for _, e := range entries {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(cpid); ok && st.ppid == pid {
			kids = append(kids, procID{cpid, st.start})
		}
	}
	return kids, nil
}

// waitGone waits until none of procs is alive. A zombie counts as gone: it
// holds no memory, and its new parent reaps it, not us.
func waitGone(procs []procID, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		alive := 0
		for _, p := range procs {
			st, ok := readStat(p.pid)
			if ok && st.start == p.start && st.state != "Z" && st.state != "X" {
				alive++
			}
		}
		if alive == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes still alive after %v", alive, limit)
		}
		<-tick.C
	}
}

// command builds a command for one of the server binaries, dropping to the
// server user when we are root. ctx bounds short-lived commands only.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, name), args...)
	cmd.Dir = s.root // the server user may not be able to enter our cwd
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

func (s *Server) openLog() (*os.File, error) {
	f, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pglocal: open server log: %w", err)
	}
	return f, nil
}

func logSize(f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns what the server logged after offset.
func (s *Server) logSince(offset int64) []byte {
	f, err := os.Open(s.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<30))
	return b
}

// logTail formats the end of the server log for an error message.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return "\nserver log " + s.logPath + " (tail):\n" + string(bytes.TrimRight(b, "\n"))
}

// portInUse reports whether postgres logged a failed TCP bind. The log is
// the only channel a child process has to say why it exited; lc_messages=C
// keeps the wording stable.
func portInUse(log []byte) bool {
	return bytes.Contains(log, []byte("Address already in use")) ||
		bytes.Contains(log, []byte("could not create any TCP/IP sockets"))
}

// freePort asks the kernel for an unused loopback port. Another process can
// take it before postgres binds; start retries in that case.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pglocal: pick a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pglocal: pick a free port: %w", err)
	}
	return port, nil
}

// credentialFor returns the credential to run the server binaries with:
// nil when we are not root, else that of osUser (default "postgres").
func credentialFor(osUser string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if osUser == "" {
		osUser = "postgres"
	}
	u, err := user.Lookup(osUser)
	if err != nil {
		return nil, fmt.Errorf("pglocal: running as root, need OS user %q to run postgres: %w", osUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pglocal: uid of %q: %w", osUser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pglocal: gid of %q: %w", osUser, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("pglocal: OS user %q is root; postgres refuses to run as root", osUser)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// resolveBinDir finds the directory holding initdb and postgres. An
// explicit choice (Config.BinDir or $ORDERPIPE_PG_BINDIR) must be valid;
// the fallbacks are tried in order.
func resolveBinDir(explicit string) (string, error) {
	for _, d := range []struct{ dir, from string }{
		{explicit, "Config.BinDir"},
		{os.Getenv("ORDERPIPE_PG_BINDIR"), "$ORDERPIPE_PG_BINDIR"},
	} {
		if d.dir == "" {
			continue
		}
		if err := hasServerBinaries(d.dir); err != nil {
			return "", fmt.Errorf("pglocal: %s: %w", d.from, err)
		}
		return d.dir, nil
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		// Debian symlinks into /usr/local/bin; initdb lives next to the target.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			if dir := filepath.Dir(real); hasServerBinaries(dir) == nil {
				return dir, nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, dir := range dirs {
		if hasServerBinaries(dir) == nil {
			return dir, nil
		}
	}
	return "", errors.New("pglocal: no PostgreSQL server binaries found (set $ORDERPIPE_PG_BINDIR, put postgres on PATH, or install postgresql)")
}

func hasServerBinaries(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", name, dir, err)
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s in %s is not executable", name, dir)
		}
	}
	return nil
}

// compareVersions orders dotted numeric versions ("9.6" < "15"); parts that
// are not numbers sort first.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

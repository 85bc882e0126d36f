// Package pglocal runs a throwaway PostgreSQL server on loopback: initdb into
// a temporary directory, start postgres on a free port, and remove everything
// on Close. `orderpipe run` uses it when no Postgres URL is given, and every
// test suite that needs a real Postgres starts one.
package pglocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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

// Pid is the postmaster's process id, 0 while the server is not running:
// a fault test shows with it that a crash and a recovery really happened.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		return 0
	}
	return s.proc.cmd.Process.Pid
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

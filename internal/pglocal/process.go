package pglocal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Running the server binaries: initdb, launching postgres and waiting until
// it is ready, and stopping or killing it.

// process is one postgres (or initdb) child and the goroutine reaping it.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait has returned
	err  error         // Wait's result; read only after done is closed
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

// command builds a command for one of the server binaries, dropping to the
// server user when we are root. ctx bounds short-lived commands only.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, name), args...)
	cmd.Dir = s.root // the server user may not be able to enter our cwd
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

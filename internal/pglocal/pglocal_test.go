package pglocal

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startServer starts a server for one test and closes it when the test ends.
func startServer(t *testing.T) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// connectErr tries one connection and reports its error.
func connectErr(t *testing.T, url string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

func TestStartServesQueries(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	want := "postgres://postgres@127.0.0.1:" + strconv.Itoa(s.Port()) + "/postgres?sslmode=disable"
	if got := s.URL(); got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	conn := connect(t, s.URL())
	var one int
	if err := conn.QueryRow(t.Context(), "select 1").Scan(&one); err != nil {
		t.Fatalf("select 1: %v", err)
	}
	if one != 1 {
		t.Errorf("select 1: got %d, want 1", one)
	}
	var listen string
	if err := conn.QueryRow(t.Context(), "show listen_addresses").Scan(&listen); err != nil {
		t.Fatalf("show listen_addresses: %v", err)
	}
	if listen != "127.0.0.1" {
		t.Errorf("listen_addresses: got %q, want 127.0.0.1", listen)
	}
	if _, err := os.Stat(s.logPath); err != nil {
		t.Errorf("server log: %v", err)
	}
}

func TestHaltResume(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	port := s.Port()

	if err := s.Halt(t.Context()); err != nil {
		t.Fatalf("Halt: %v", err)
	}
	if err := connectErr(t, s.URL()); err == nil {
		t.Fatal("connect after Halt: got nil error, want failure")
	}
	if err := s.Halt(t.Context()); err != nil {
		t.Errorf("second Halt: got %v, want nil", err)
	}
	if err := s.Resume(t.Context()); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if got := s.Port(); got != port {
		t.Errorf("port after Resume: got %d, want %d", got, port)
	}
	if err := connectErr(t, s.URL()); err != nil {
		t.Fatalf("connect after Resume: %v", err)
	}
	if err := s.Resume(t.Context()); err != nil {
		t.Errorf("Resume of running server: got %v, want nil", err)
	}
}

func TestKillResumeKeepsCommittedData(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	conn := connect(t, s.URL())
	if _, err := conn.Exec(t.Context(), "create table kept (id int primary key)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	if _, err := conn.Exec(t.Context(), "insert into kept select generate_series(1, 100)"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	// An open transaction at the crash must be rolled back by recovery.
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := tx.Exec(t.Context(), "insert into kept values (1000)"); err != nil {
		t.Fatalf("uncommitted insert: %v", err)
	}

	var backend int
	if err := tx.QueryRow(t.Context(), "select pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatalf("backend pid: %v", err)
	}

	if err := s.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	// Backends must be gone too, or they keep the shared memory that the
	// next start checks.
	if st, ok := readStat(backend); ok && st.state != "Z" && st.state != "X" {
		t.Errorf("backend %d after Kill: got state %s, want gone", backend, st.state)
	}
	if err := connectErr(t, s.URL()); err == nil {
		t.Fatal("connect after Kill: got nil error, want failure")
	}
	if err := s.Resume(t.Context()); err != nil {
		t.Fatalf("Resume after Kill: %v", err)
	}

	conn2 := connect(t, s.URL())
	var n int
	if err := conn2.QueryRow(t.Context(), "select count(*) from kept").Scan(&n); err != nil {
		t.Fatalf("count after recovery: %v", err)
	}
	if n != 100 {
		t.Errorf("rows after recovery: got %d, want 100 (committed only)", n)
	}
}

func TestCloseRemovesDir(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	root := s.root
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s after Close: got %v, want not exist", root, err)
	}
	if err := connectErr(t, s.URL()); err == nil {
		t.Error("connect after Close: got nil error, want failure")
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if err := s.Resume(ctx); err == nil {
		t.Error("Resume after Close: got nil error, want failure")
	}
	var nilServer *Server
	if err := nilServer.Close(ctx); err != nil {
		t.Errorf("Close on nil Server: got %v, want nil", err)
	}
}

// A fixed port that is taken cannot be retried, so Start must fail, say why
// from the server log, and leave nothing behind.
func TestStartFailsCleanlyOnTakenPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	parent, err := os.MkdirTemp("", "pglocal-test-")
	if err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	// When root, the server user must be able to enter the parent.
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatalf("chmod: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{Dir: parent, Port: port})
	if err == nil {
		s.Close(ctx)
		t.Fatalf("Start on taken port %d: got nil error, want failure", port)
	}
	if s != nil {
		t.Errorf("Start failed but returned a non-nil Server")
	}
	if !errors.Is(err, errPortInUse) {
		t.Errorf("Start error: got %v, want it to wrap errPortInUse", err)
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("Start error lacks the server log tail; got:\n%v", err)
	}
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatalf("read %s: %v", parent, err)
	}
	if len(entries) != 0 {
		t.Errorf("left behind after failed Start: got %d entries in %s, want 0", len(entries), parent)
	}
}

// A picked port that someone else takes before postgres binds it must lead
// to a retry on another port, not a failed Start.
func TestStartRetriesTakenPickedPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port

	picks := 0
	pick := func() (int, error) {
		picks++
		if picks == 1 {
			return taken, nil
		}
		return freePort()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := start(ctx, Config{}, pick)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if picks != 2 {
		t.Errorf("port picks: got %d, want 2", picks)
	}
	if s.Port() == taken {
		t.Errorf("Port(): got the taken port %d", taken)
	}
	if err := connectErr(t, s.URL()); err != nil {
		t.Errorf("connect after retry: %v", err)
	}
}

// Close is bounded by ctx: with no time left it kills the server instead of
// waiting for a graceful stop, and still removes the directory.
func TestCloseWithExpiredContextKills(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	done, cancelDone := context.WithCancel(t.Context())
	cancelDone()
	if err := s.Close(done); !errors.Is(err, context.Canceled) {
		t.Errorf("Close with cancelled ctx: got %v, want context.Canceled", err)
	}
	if _, err := os.Stat(s.root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s after Close: got %v, want not exist", s.root, err)
	}
	if err := connectErr(t, s.URL()); err == nil {
		t.Error("connect after Close: got nil error, want failure")
	}
}

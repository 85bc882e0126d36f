// Package proctest runs orderpipe's deployed shape as separate processes
// for tests and the fault harness: a process with its own log, readiness
// read from that log, SIGKILL and SIGTERM by pid, and HAProxy in front of
// edges with its stats. It is test-only: it imports testing.
package proctest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
)

// Proc is a subprocess owned by one test.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	log  string
	// exited is closed once the process has been reaped.
	exited chan struct{}
	// killed: the test SIGKILLed it, so no clean exit is expected.
	killed atomic.Bool
}

// Start starts cmd as the test's process name, with its output in a log
// of its own. When tb ends the process gets SIGTERM (SIGKILL after 60s);
// unless it was killed on purpose, wantCleanExit fails tb on a non-zero
// exit. Its log is shown when tb failed.
func Start(tb testing.TB, name string, cmd *exec.Cmd, wantCleanExit bool) *Proc {
	tb.Helper()
	p := &Proc{Name: name, Cmd: cmd, log: filepath.Join(tb.TempDir(), "log"), exited: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		tb.Fatal(err)
	}
	p.Cmd.Stdout, p.Cmd.Stderr = f, f
	if err := p.Cmd.Start(); err != nil {
		f.Close()
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.Cmd.Wait() // a killed process's exit status is expected
		f.Close()
		close(p.exited)
	}()
	tb.Cleanup(func() {
		if err := p.Stop(60 * time.Second); err != nil && (wantCleanExit || !errors.Is(err, errNotClean)) {
			tb.Error(err)
		}
		if tb.Failed() {
			tb.Logf("log of %s:\n%s", name, Tail(p.Output(), 4000))
		}
	})
	return p
}

var errNotClean = errors.New("not a clean exit")

// Stop sends SIGTERM and waits for the exit, SIGKILLing after within. It
// fails unless the process exits cleanly (or was killed before).
func (p *Proc) Stop(within time.Duration) error {
	select {
	case <-p.exited:
	default:
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(within)
		defer t.Stop()
		select {
		case <-p.exited:
		case <-t.C:
			_ = p.Cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("process %s did not stop within %s of SIGTERM", p.Name, within)
		}
	}
	if !p.killed.Load() && !p.Cmd.ProcessState.Success() {
		return fmt.Errorf("process %s: %v: %w", p.Name, p.Cmd.ProcessState, errNotClean)
	}
	return nil
}

// Kill sends SIGKILL (no shutdown, no commit, no leaving a group) and
// waits until the process is gone.
func (p *Proc) Kill() error {
	p.killed.Store(true)
	if err := p.Cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-p.exited
	return nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Output is everything the process wrote so far.
func (p *Proc) Output() []byte {
	b, _ := os.ReadFile(p.log)
	return b
}

// Announce is what a role says once it is ready: its edge's address and
// its ops listener's, when it has them.
type Announce struct{ Listen, Ops string }

// internal/app logs this once every component of a role is ready.
var readyLine = regexp.MustCompile(`msg="orderpipe is ready"(?: listen=(\S*))?(?: ops=(\S+))?`)

// Ready waits until p logs that it is ready, failing tb if it exits first
// or takes longer than within.
func (p *Proc) Ready(tb testing.TB, within time.Duration) Announce {
	tb.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(await.Poll)
	defer tick.Stop()
	for {
		if m := readyLine.FindSubmatch(p.Output()); m != nil {
			return Announce{Listen: strings.Trim(string(m[1]), `"`), Ops: strings.Trim(string(m[2]), `"`)}
		}
		select {
		case <-p.exited:
			tb.Fatalf("%s exited before ready (%v): %s", p.Name, p.Cmd.ProcessState, Tail(p.Output(), 2000))
		case <-deadline.C:
			tb.Fatalf("%s not ready within %s: %s", p.Name, within, Tail(p.Output(), 2000))
		case <-tick.C:
		}
	}
}

// Tail is the last n bytes of b, trimmed.
func Tail(b []byte, n int) []byte {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return bytes.TrimSpace(b)
}

// FreeAddr returns a loopback address with a port free at the time of the
// call, for a process that must come back on the same address.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// RepoRoot finds the module root from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Build builds bin/orderpipe's command into dir (with the race detector
// when race) and returns the binary's path.
func Build(dir string, race bool) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "orderpipe")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/orderpipe")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build orderpipe: %w: %s", err, out)
	}
	return bin, nil
}

package pglocal

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// What Start takes from the host: the server binaries, the OS user to run
// them as when root, and a free port.

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
// Credential is the credential to run a Postgres program as osUser
// ("postgres" if empty) when this process is root, which initdb, postgres
// and Patroni refuse to be; nil when not root.
func Credential(osUser string) (*syscall.Credential, error) { return credentialFor(osUser) }

// BinDir is the directory of the installed server binaries
// ($ORDERPIPE_PG_BINDIR, else the newest found).
func BinDir() (string, error) { return resolveBinDir("") }

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

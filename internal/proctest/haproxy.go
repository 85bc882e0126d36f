package proctest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// HAProxyBinary returns HAProxy's path: $ORDERPIPE_HAPROXY (set by
// .ci/run), else what scripts/ensure-haproxy.sh prints, which installs
// Debian's package when it is missing, as make test does.
func HAProxyBinary() (string, error) {
	if p := os.Getenv("ORDERPIPE_HAPROXY"); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(root, "scripts", "ensure-haproxy.sh")).Output()
	if err != nil {
		return "", fmt.Errorf("scripts/ensure-haproxy.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// LB is HAProxy running deploy/haproxy.cfg in front of two edges, the
// servers ingest-1 and ingest-2 of its backend "edges".
type LB struct {
	// Addr is the frontend, Stats the stats page.
	Addr, Stats string
	Proc        *Proc
	http        *http.Client
}

// StartHAProxy runs HAProxy in the foreground with deploy/haproxy.cfg in
// front of edge1 and edge2, until tb ends.
func StartHAProxy(tb testing.TB, edge1, edge2 string) *LB {
	tb.Helper()
	bin, err := HAProxyBinary()
	if err != nil {
		tb.Fatal(err)
	}
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	lb := &LB{Addr: FreeAddr(tb), Stats: FreeAddr(tb), http: &http.Client{Timeout: 5 * time.Second}}
	cmd := exec.Command(bin, "-db", "-f", filepath.Join(root, "deploy", "haproxy.cfg"))
	cmd.Env = append(os.Environ(),
		"ORDERPIPE_LB_LISTEN="+lb.Addr, "ORDERPIPE_LB_STATS="+lb.Stats,
		"ORDERPIPE_LB_EDGE_1="+edge1, "ORDERPIPE_LB_EDGE_2="+edge2, "ORDERPIPE_LB_MAXCONN=6000")
	// HAProxy exits 143 on SIGTERM: no clean exit to ask for.
	lb.Proc = Start(tb, "haproxy", cmd, false)
	return lb
}

// Status is HAProxy's view of the edges: server -> status (UP, DOWN,
// "UP 1/2", ...), from its stats CSV.
func (lb *LB) Status() (map[string]string, error) {
	resp, err := lb.http.Get("http://" + lb.Stats + "/;csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimPrefix(string(b), "# "), "\n")
	col := -1
	for i, c := range strings.Split(lines[0], ",") {
		if c == "status" {
			col = i
		}
	}
	if col < 0 {
		return nil, fmt.Errorf("no status column in %q", lines[0])
	}
	out := map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) > col && f[0] == "edges" && f[1] != "BACKEND" {
			out[f[1]] = f[col]
		}
	}
	return out, nil
}

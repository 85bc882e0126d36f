package proctest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
)

// TestHAProxyNoEdge: with no edge up, deploy/haproxy.cfg answers 503 itself,
// and says so as the edges do: a problem with Retry-After, so clients retry.
func TestHAProxyNoEdge(t *testing.T) {
	lb := StartHAProxy(t, FreeAddr(t), FreeAddr(t))
	await.Until(t, "both edges DOWN", time.Minute, func() error {
		st, err := lb.Status()
		if err != nil || len(st) != 2 || !strings.HasPrefix(st["ingest-1"], "DOWN") || !strings.HasPrefix(st["ingest-2"], "DOWN") {
			return fmt.Errorf("%v %v", st, err)
		}
		return nil
	})
	resp, err := http.Post("http://"+lb.Addr+"/v1/orders", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal(b, &p); err != nil || resp.StatusCode != 503 || p.Status != 503 || p.Type != "https://orderpipe.dev/problems/no-edge" ||
		resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("no edge up: %d %v %s (%v), want a 503 problem no-edge with Retry-After 1", resp.StatusCode, resp.Header, b, err)
	}
}

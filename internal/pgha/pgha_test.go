package pgha

import (
	"fmt"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/await"
)

// TestFailoverAndRejoin: two members on etcd; the leader's Patroni and
// postmaster are SIGKILLed; the other is promoted; the old one restarts
// and rejoins as a streaming replica (pg_rewind through Patroni).
func TestFailoverAndRejoin(t *testing.T) {
	c := Start(t, 2)
	old := c.AwaitStreaming(time.Minute)
	pm := old.Kill()
	killed := time.Now()
	var leader *Member
	await.Until(t, "the other member promoted", time.Minute, func() error {
		if leader = c.Leader(); leader == nil || leader == old {
			return fmt.Errorf("leader %v", leader)
		}
		return nil
	})
	t.Logf("%s (postmaster %d) SIGKILLed; %s leads %s later", old.Name, pm, leader.Name, time.Since(killed).Round(time.Millisecond))
	old.Restart()
	if got := c.AwaitStreaming(2 * time.Minute); got != leader {
		t.Fatalf("after the rejoin %s leads, want %s", got.Name, leader.Name)
	}
	t.Logf("%s rejoined as a streaming replica of %s", old.Name, leader.Name)
}

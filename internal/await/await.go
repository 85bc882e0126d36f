// Package await lets tests wait for a condition with a deadline instead of
// sleeping for a guessed time.
package await

import (
	"testing"
	"time"
)

// Poll is how often a condition is checked.
const Poll = 10 * time.Millisecond

// Until calls cond every Poll until it returns nil, and fails t with cond's
// last error, naming what was awaited, when d passes first.
func Until(t testing.TB, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(Poll)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %v", what, d, err)
		}
		<-tick.C
	}
}

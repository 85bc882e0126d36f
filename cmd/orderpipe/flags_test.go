package main

import (
	"io"
	"strings"
	"testing"
)

// TestNumericFlagsAreStrict: a number with anything after it is refused,
// never read as its prefix.
func TestNumericFlagsAreStrict(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--partitions", "12"}, true},
		{[]string{"--partitions", "12abc"}, false},
		{[]string{"--partitions", " 12"}, false},
		{[]string{"--partitions", "1e2"}, false},
		{[]string{"--replication", "3"}, true},
		{[]string{"--replication", "3x"}, false},
		{[]string{"--replication", "70000"}, false},
		{[]string{"--max-in-flight", "10k"}, false},
		{[]string{"--rate-limit", "5/s"}, false},
	} {
		roles, _ := rolesFor("run")
		fs, _ := roleFlags("run", roles, io.Discard)
		err := parse(fs, c.args)
		if (err == nil) != c.ok {
			t.Errorf("%q: got error %v, want ok=%v", c.args, err, c.ok)
		}
	}
}

// TestRolesNeedBrokers: a role other than run refuses to start without
// --brokers, naming `orderpipe run`, instead of taking orders on an
// in-memory broker no other process sees.
func TestRolesNeedBrokers(t *testing.T) {
	t.Setenv("ORDERPIPE_BROKERS", "")
	for _, cmd := range []string{"ingest", "process", "sink"} {
		var stderr strings.Builder
		if code := run([]string{cmd}, io.Discard, &stderr); code != 2 {
			t.Errorf("orderpipe %s without --brokers: exit %d, want 2 (%s)", cmd, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "--brokers") || !strings.Contains(stderr.String(), "orderpipe run") {
			t.Errorf("orderpipe %s without --brokers says %q, want it to name --brokers and orderpipe run", cmd, stderr.String())
		}
	}
}

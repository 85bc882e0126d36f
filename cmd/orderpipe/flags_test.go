package main

import (
	"io"
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

package health

import (
	"errors"
	"testing"
)

func TestEvaluate(t *testing.T) {
	ok := func() error { return nil }
	bad := func() error { return errors.New("postgres down") }
	for _, tc := range []struct {
		name   string
		checks []Check
		want   string
	}{
		{"none", nil, Ready},
		{"all ok", []Check{{"a", true, ok}, {"b", false, ok}}, Ready},
		{"non-critical fails", []Check{{"a", true, ok}, {"sink", false, bad}}, Degraded},
		{"critical fails", []Check{{"a", true, bad}, {"sink", false, bad}}, NotReady},
		{"critical after degraded", []Check{{"sink", false, bad}, {"a", true, bad}}, NotReady},
	} {
		r := Evaluate(tc.checks)
		if r.Status != tc.want {
			t.Errorf("%s: status %q, want %q", tc.name, r.Status, tc.want)
		}
		for _, c := range tc.checks {
			want := "ok"
			if err := c.Fn(); err != nil {
				want = err.Error()
			}
			if r.Checks[c.Name] != want {
				t.Errorf("%s: check %s = %q, want %q", tc.name, c.Name, r.Checks[c.Name], want)
			}
		}
	}
}

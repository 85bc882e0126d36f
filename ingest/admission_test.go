package ingest

import "testing"

// TestAdmissionPerSKU checks the per-SKU cap: orders for a SKU at its cap are
// refused while orders for other SKUs still get in, and slots come back when
// orders turn final or every record of them was refused.
func TestAdmissionPerSKU(t *testing.T) {
	a := newAdmission(100, 2)
	steps := []struct {
		op   string
		id   string
		skus []string
		want bool
	}{
		{"acquire", "o1", []string{"A", "B"}, true},
		{"acquire", "o2", []string{"A"}, true},
		{"acquire", "o3", []string{"A", "C"}, false}, // A has 2 lines in flight
		{"acquire", "o4", []string{"C"}, true},
		{"acquire", "o1", []string{"A", "B"}, true}, // a retry shares its slot
		{"final", "o1", nil, true},
		{"acquire", "o3", []string{"A", "C"}, true},
		{"acquire", "o5", []string{"C"}, false}, // C: o4 and o3
		{"refused", "o4", nil, true},
		{"acquire", "o5", []string{"C"}, true},
	}
	for i, s := range steps {
		switch s.op {
		case "acquire":
			if got := a.acquire(s.id, s.skus, nil); got != s.want {
				t.Fatalf("step %d: acquire(%s, %v) = %v, want %v", i, s.id, s.skus, got, s.want)
			}
		case "final":
			a.final(s.id)
		case "refused":
			a.produced(s.id, false)
		}
	}
	if got := a.inFlight(); got != 3 {
		t.Errorf("in flight = %d, want 3 (o2, o3, o5)", got)
	}
}

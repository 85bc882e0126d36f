// Package health evaluates readiness checks the same way wherever they
// are served: the edge's /readyz and the ops listener of a process
// without an edge.
package health

// Check is a readiness check, run on every readiness request.
type Check struct {
	// Name identifies the check in the report.
	Name string
	// Critical checks make the process not ready while they fail; the
	// others leave it ready with status "degraded".
	Critical bool
	// Fn returns nil when healthy. It must be fast and safe for concurrent use.
	Fn func() error
}

// Statuses of a Report.
const (
	Ready    = "ready"
	Degraded = "degraded"  // a non-critical check fails
	NotReady = "not ready" // a critical check fails
)

// Report is the answer of a readiness endpoint.
type Report struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// Evaluate runs every check once.
func Evaluate(checks []Check) Report {
	out := Report{Status: Ready, Checks: make(map[string]string, len(checks))}
	for _, c := range checks {
		err := c.Fn()
		if err == nil {
			out.Checks[c.Name] = "ok"
			continue
		}
		out.Checks[c.Name] = err.Error()
		switch {
		case c.Critical:
			out.Status = NotReady
		case out.Status == Ready:
			out.Status = Degraded
		}
	}
	return out
}

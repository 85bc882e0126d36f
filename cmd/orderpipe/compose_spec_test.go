package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// TestComposeFileLoads loads docker-compose.yml with compose-go, the loader
// Docker Compose itself uses, once per profile: no Docker engine runs here,
// so this is as close to `docker compose config` as the tests can get. It
// catches what the flag checks do not: schema errors, dependencies on
// services missing from a profile, and start-up conditions no service can
// meet.
func TestComposeFileLoads(t *testing.T) {
	for _, tc := range []struct {
		name     string
		profiles []string
		brokers  []string
		absent   []string
	}{
		{"default", nil, []string{"redpanda-0"}, []string{"redpanda-1", "redpanda-2"}},
		{"cluster", []string{"cluster"}, []string{"redpanda-0", "redpanda-1", "redpanda-2"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := loadCompose(t, tc.profiles)
			for _, b := range tc.brokers {
				if _, err := p.GetService(b); err != nil {
					t.Errorf("broker %s: %v", b, err)
				}
			}
			for _, b := range tc.absent {
				if _, err := p.GetService(b); err == nil {
					t.Errorf("%s runs without its profile", b)
				}
			}
			for _, s := range p.Services {
				for dep, d := range s.DependsOn {
					target, err := p.GetService(dep)
					if err != nil {
						t.Errorf("%s depends on %s: %v", s.Name, dep, err)
						continue
					}
					switch d.Condition {
					case types.ServiceConditionHealthy:
						if target.HealthCheck == nil || target.HealthCheck.Disable || len(target.HealthCheck.Test) == 0 {
							t.Errorf("%s waits for %s to be healthy, which has no health check", s.Name, dep)
						}
					case types.ServiceConditionCompletedSuccessfully:
						if target.Restart == types.RestartPolicyAlways || target.Restart == types.RestartPolicyUnlessStopped {
							t.Errorf("%s waits for %s to complete, which restarts %s", s.Name, dep, target.Restart)
						}
					}
				}
			}
		})
	}
}

// TestComposeLoaderCatchesMistakes: the loader must refuse a dependency on
// a service that does not exist.
func TestComposeLoaderCatchesMistakes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "compose.yml")
	broken := "services:\n  a:\n    image: busybox\n    depends_on:\n      missing: {condition: service_healthy}\n"
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{path}, cli.WithName("broken"), cli.WithWorkingDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opts.LoadProject(t.Context()); err == nil {
		t.Fatal("a dependency on a missing service was accepted")
	}
}

func loadCompose(t *testing.T, profiles []string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../../docker-compose.yml"},
		cli.WithName("orderpipe"), cli.WithWorkingDirectory("../.."), cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("docker-compose.yml with profiles %v: %v", profiles, err)
	}
	return p
}

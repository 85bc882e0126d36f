package main

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestDeployFilesAgreeWithFlags checks docker-compose.yml, deploy/haproxy.cfg
// and the Dockerfile against the flags of the binary (see checkDeploy).
func TestDeployFilesAgreeWithFlags(t *testing.T) {
	var files deployFiles
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{
		{"../../docker-compose.yml", &files.Compose},
		{"../../deploy/haproxy.cfg", &files.HAProxy},
		{"../../Dockerfile", &files.Dockerfile},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		*f.dst = b
	}
	for _, err := range checkDeploy(files) {
		t.Error(err)
	}
}

// TestCheckDeployReportsMistakes makes sure the checker can fail: every
// mistake planted below must be reported.
func TestCheckDeployReportsMistakes(t *testing.T) {
	files := deployFiles{
		Compose: []byte(`
x-op: &op
  image: orderpipe:dev
  environment: &env
    ORDERPIPE_BROKERS: redpanda:9092
services:
  redpanda:
    image: redpandadata/redpanda
  edge:
    <<: *op
    command: ["ingest", "--listn", "0.0.0.0:8080", "--data-dir"]
    environment:
      <<: *env
      ORDERPIPE_SINK_GROUP: orderpipe-sink
    ports: ["8080:8080"]
    depends_on:
      redpanda: {condition: service_healthy}
      topics: {condition: service_completed_successfully}
      nosuch: {condition: service_started}
  topics:
    <<: *op
    command: ["topics", "--check", "yes", "--partitions", "twelve"]
    environment:
      <<: *env
      ORDERPIPE_LOG_FORMAT: ${LOG_FORMAT}
  lb:
    image: haproxy
    volumes: ["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    ports: ["127.0.0.1:80:80"]
`),
		HAProxy: []byte(`
frontend orders
    bind :8080
    default_backend edges
backend edges
    server edge edge:9090 check
`),
		Dockerfile: []byte("FROM scratch\nENTRYPOINT /orderpipe\n"),
	}
	errs := checkDeploy(files)
	var got []string
	for _, err := range errs {
		got = append(got, err.Error())
	}
	for _, want := range []string{
		"service edge: orderpipe ingest has no flag --listn",
		"service edge: --data-dir needs a value",
		"service edge: environment ORDERPIPE_SINK_GROUP matches no flag of orderpipe ingest",
		`service edge: port "8080:8080" is published on host IP ""`,
		"service edge: waits for redpanda to be service_healthy, but redpanda has no healthcheck",
		"service edge: waits for topics to complete, but topics is not a one-shot job",
		"service edge: depends_on nosuch, which is not a service",
		`service edge: --listen "127.0.0.1:8080": want 0.0.0.0:PORT`,
		"service topics: --check is a boolean flag and takes no separate value",
		`service topics: --partitions "twelve"`,
		`service topics: environment ORDERPIPE_LOG_FORMAT "${LOG_FORMAT}": ${LOG_FORMAT}: want ${VAR:-default}`,
		"service lb: publishes container port 80, but haproxy.cfg binds [8080]",
		`service lb: haproxy.cfg backend edges: health check URI ""`,
		"service lb: haproxy.cfg backend edges: server edge has maxconn 0",
		`service lb: haproxy.cfg backend edges: server edge sends to port 9090, but service edge listens on "127.0.0.1:8080"`,
		"Dockerfile: ENTRYPOINT /orderpipe: want the exec form",
	} {
		if !slices.ContainsFunc(got, func(e string) bool { return strings.HasPrefix(e, want) }) {
			t.Errorf("no error starts with %q; got:\n%s", want, strings.Join(got, "\n"))
		}
	}
}

// TestComposeMergeKeys checks that yaml.v3 resolves anchors, aliases and
// merge keys into composeService as Compose does: explicit keys win over
// merged ones, and an explicit environment replaces the anchor's.
func TestComposeMergeKeys(t *testing.T) {
	doc := `
x-op: &op
  image: orderpipe:dev
  restart: unless-stopped
  environment: &env
    ORDERPIPE_BROKERS: b:9092
services:
  own-env:
    restart: "no"
    <<: *op
    environment:
      ORDERPIPE_POSTGRES_URL: postgres://db/orderpipe
  merged-env: &merged
    <<: *op
    environment:
      <<: *env
      ORDERPIPE_LOG_FORMAT: json
  alias: *merged
`
	var f composeFile
	if err := yaml.Unmarshal([]byte(doc), &f); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		service, image, restart string
		env                     []string
	}{
		{"own-env", "orderpipe:dev", "no", []string{"ORDERPIPE_POSTGRES_URL"}},
		{"merged-env", "orderpipe:dev", "unless-stopped", []string{"ORDERPIPE_BROKERS", "ORDERPIPE_LOG_FORMAT"}},
		{"alias", "orderpipe:dev", "unless-stopped", []string{"ORDERPIPE_BROKERS", "ORDERPIPE_LOG_FORMAT"}},
	} {
		s, ok := f.Services[tc.service]
		if !ok {
			t.Errorf("service %s: missing", tc.service)
			continue
		}
		if s.Image != tc.image || s.Restart != tc.restart {
			t.Errorf("service %s: got image %q restart %q, want %q %q", tc.service, s.Image, s.Restart, tc.image, tc.restart)
		}
		if got := slices.Sorted(maps.Keys(s.Environment)); !slices.Equal(got, tc.env) {
			t.Errorf("service %s: got environment %v, want %v", tc.service, got, tc.env)
		}
	}
}

// TestFlagsForMatchesCommands checks that flagsFor returns the flags each
// command really parses: the ones its -h lists.
func TestFlagsForMatchesCommands(t *testing.T) {
	listed := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, tc := range []struct {
		cmd  string
		args []string
	}{
		{"run", []string{"run", "-h"}},
		{"ingest", []string{"ingest", "-h"}},
		{"process", []string{"process", "-h"}},
		{"sink", []string{"sink", "-h"}},
		{"topics", []string{"topics", "-h"}},
		{"migrate", []string{"migrate", "-h"}},
		{"keys", []string{"keys", "new", "-h"}},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != 0 {
			t.Errorf("%s: got exit %d, want 0; stderr:\n%s", tc.args, code, &stderr)
			continue
		}
		var want []string
		for _, m := range listed.FindAllStringSubmatch(stderr.String(), -1) {
			want = append(want, m[1])
		}
		fs, err := flagsFor(tc.cmd)
		if err != nil {
			t.Errorf("flagsFor(%q): %v", tc.cmd, err)
			continue
		}
		var got []string
		fs.VisitAll(func(f *flag.Flag) { got = append(got, f.Name) })
		if !slices.Equal(got, want) {
			t.Errorf("flagsFor(%q): got flags %v, want %v (from %s)", tc.cmd, got, want, strings.Join(tc.args, " "))
		}
	}
	if fs, err := flagsFor("probe"); err != nil || fs.NFlag() != 0 {
		t.Errorf("flagsFor(probe): got %v, %v, want a flag set without flags", fs, err)
	}
	if _, err := flagsFor("nope"); err == nil {
		t.Errorf("flagsFor(nope): got no error, want one")
	}
}

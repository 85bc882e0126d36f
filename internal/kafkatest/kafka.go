// Package kafkatest holds what tests and benchmarks need of Kafka: a real
// Apache Kafka broker per test (scripts/kafka.sh) and topic creation. It
// imports testing, so nothing in the binary may import it.
package kafkatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/proctest"

	"github.com/orderpipe/orderpipe/topology"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka is a real Apache Kafka broker (KRaft, one node, loopback) started
// by scripts/kafka.sh from the jars on Maven Central, in a directory of its
// own, so that every test can have a fresh one.
type Kafka struct {
	script string
	// dir holds the broker's jars, config, data and logs (KAFKA_HOME_DIR).
	dir  string
	env  []string
	port int
	// jmxPort serves the broker's JMX metrics on loopback (Metrics).
	jmxPort int
}

// KafkaAvailable reports why a real broker cannot be started here (no
// java or mvn on PATH), or nil.
func KafkaAvailable() error {
	for _, bin := range []string{"java", "mvn"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found on PATH: the real-broker suite needs a JDK 17+ and Maven", bin)
		}
	}
	return nil
}

// RequireKafka skips tb, saying why, when a real broker cannot be started
// here (no java or mvn), except in CI (CI=true), which can install them
// and where it fails tb instead: nothing may be skipped there for a
// dependency CI installs. what names the test for the message.
func RequireKafka(tb testing.TB, what string) {
	tb.Helper()
	if err := KafkaAvailable(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI must run %s: %v", what, err)
		}
		tb.Skipf("skipping %s, which needs the real broker: %v", what, err)
	}
}

// StartKafka starts a broker with its data under dir, on free loopback
// ports, and waits until it serves requests. The jars are fetched once into
// the repository's .cache and shared by every broker.
func StartKafka(ctx context.Context, dir string) (*Kafka, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	k, err := newKafka(dir, ports[0], ports[1], ports[2])
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if out, err := k.run(ctx, "up"); err != nil {
		return nil, fmt.Errorf("start kafka: %w\n%s", err, out)
	}
	return k, nil
}

// newKafka describes a node with its data under dir, its client port,
// controller port and JMX port; env is added to scripts/kafka.sh's
// environment (a cluster's node id and quorum). It starts nothing.
func newKafka(dir string, port, controllerPort, jmxPort int, env ...string) (*Kafka, error) {
	root, err := proctest.RepoRoot()
	if err != nil {
		return nil, err
	}
	k := &Kafka{script: filepath.Join(root, "scripts", "kafka.sh"), dir: dir, port: port, jmxPort: jmxPort}
	k.env = append(os.Environ(),
		"KAFKA_HOME_DIR="+dir,
		"KAFKA_LIBS_DIR="+filepath.Join(root, ".cache", "kafka", "4.3.1", "libs"),
		"KAFKA_PORT="+strconv.Itoa(port),
		"KAFKA_CONTROLLER_PORT="+strconv.Itoa(controllerPort),
		"KAFKA_JMX_PORT="+strconv.Itoa(jmxPort),
		"KAFKA_HEAP_OPTS=-Xmx512m -Xms128m",
		// One node per call of the script, whatever the caller's
		// environment says; a cluster's nodes are described in env.
		"KAFKA_NODES=1", "KAFKA_NODE=", "KAFKA_NODE_ID=1", "KAFKA_VOTERS=", "KAFKA_CLUSTER_ID=",
		// A test binary that panics runs no cleanup: the broker goes
		// when this process does.
		"KAFKA_OWNER_PID="+strconv.Itoa(os.Getpid()),
		// Few partitions for the internal topics: the first group join
		// creates them, and 50 partitions each cost a second here.
		// KAFKATEST_BROKER_PROPERTIES adds lines (benchmarks weigh broker
		// settings with it, e.g. num.io.threads=2).
		"KAFKA_EXTRA_PROPERTIES=offsets.topic.num.partitions=3\ntransaction.state.log.num.partitions=3\n"+os.Getenv("KAFKATEST_BROKER_PROPERTIES"),
	)
	k.env = append(k.env, env...)
	return k, nil
}

// Brokers returns the seed address.
func (k *Kafka) Brokers() []string {
	return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(k.port))}
}

// Stop stops the broker gracefully (SIGTERM: a controlled shutdown) and
// keeps its data, for Start to bring it back on the same address.
func (k *Kafka) Stop(ctx context.Context) error {
	if out, err := k.run(ctx, "down"); err != nil {
		return fmt.Errorf("stop kafka: %w\n%s", err, out)
	}
	return nil
}

// Start starts a stopped broker again on its data and address and waits
// until it serves.
func (k *Kafka) Start(ctx context.Context) error {
	if out, err := k.run(ctx, "up"); err != nil {
		return fmt.Errorf("start kafka: %w\n%s", err, out)
	}
	return nil
}

// Pid returns the broker's process id, or an error when it is not running.
func (k *Kafka) Pid(ctx context.Context) (int, error) {
	out, err := k.run(ctx, "status")
	if err != nil {
		return 0, fmt.Errorf("kafka is not running: %w\n%s", err, out)
	}
	m := regexp.MustCompile(`pid (\d+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no pid in kafka.sh status: %q", out)
	}
	return strconv.Atoi(string(m[1]))
}

// Kill SIGKILLs the broker (found by Pid: a process this test started) and
// waits until it is gone. Start brings it back.
func (k *Kafka) Kill(ctx context.Context) error {
	pid, err := k.Pid(ctx)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill kafka pid %d: %w", pid, err)
	}
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka pid %d still there after SIGKILL: %w", pid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Metrics are a broker's own counters at one moment (see
// scripts/KafkaMetrics.java): requests handled by API, records appended by
// topic, and the JVM's CPU time.
type Metrics struct {
	Requests map[string]float64
	Records  map[string]float64
	CPU      time.Duration
}

// Metrics reads the broker's counters over JMX. It takes a few seconds
// (the JDK compiles the reader first), so read it around a measurement,
// not within it.
func (k *Kafka) Metrics(ctx context.Context) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	src := filepath.Join(filepath.Dir(k.script), "KafkaMetrics.java")
	out, err := exec.CommandContext(ctx, "java", src, net.JoinHostPort("127.0.0.1", strconv.Itoa(k.jmxPort))).CombinedOutput()
	if err != nil {
		return Metrics{}, fmt.Errorf("read the broker's JMX metrics: %w: %s", err, out)
	}
	m := Metrics{Requests: map[string]float64{}, Records: map[string]float64{}}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) != 3 {
			return Metrics{}, fmt.Errorf("broker metrics: bad line %q", line)
		}
		v, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			return Metrics{}, fmt.Errorf("broker metrics: bad line %q: %w", line, err)
		}
		switch f[0] {
		case "request":
			m.Requests[f[1]] = v
		case "topic":
			m.Records[f[1]] = v
		case "cpu":
			m.CPU = time.Duration(v)
		}
	}
	return m, nil
}

// Close stops the broker and deletes its data.
func (k *Kafka) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := k.run(ctx, "down", "--purge"); err != nil {
		return fmt.Errorf("stop kafka: %w\n%s", err, out)
	}
	return nil
}

func (k *Kafka) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, k.script, args...)
	cmd.Env = k.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// freePorts finds n distinct free loopback ports: all are held open until
// the last is found, so none is handed out twice.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// KafkaFor starts a fresh broker for tb with its data in tb's temporary
// directory, stops it when tb ends, and returns its seed brokers.
func KafkaFor(tb testing.TB) []string {
	tb.Helper()
	return KafkaServerFor(tb).Brokers()
}

// KafkaServerFor is KafkaFor returning the broker itself, to stop, kill
// and start it.
func KafkaServerFor(tb testing.TB) *Kafka {
	tb.Helper()
	k, err := StartKafka(tb.Context(), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := k.Close(); err != nil {
			tb.Error(err)
		}
	})
	return k
}

// EnsureTopics creates the topology's topics on brokers.
func EnsureTopics(ctx context.Context, brokers []string, cfg topology.Config, log *slog.Logger) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return cfg.Ensure(ctx, kadm.NewClient(cl), log)
}

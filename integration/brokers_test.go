package integration_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/orderpipe/orderpipe/internal/kafkatest"
	"github.com/orderpipe/orderpipe/internal/membroker"
	"github.com/orderpipe/orderpipe/internal/pglocal"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/modules/redpanda"
	"gopkg.in/yaml.v3"
)

// composeImage returns the image docker-compose.yml runs for service, so
// that the container suite tests the releases the compose stack deploys.
func composeImage(t *testing.T, service string) string {
	t.Helper()
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Image string `yaml:"image"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	img := f.Services[service].Image
	if img == "" {
		t.Fatalf("docker-compose.yml: no image for service %s", service)
	}
	return img
}

// TestInProcessBroker runs the suite on franz-go's kfake, limited to the
// protocol versions Kafka 4.0 speaks.
func TestInProcessBroker(t *testing.T) {
	runSuite(t, backend{
		kind: "in-process kfake",
		broker: func(t *testing.T) ([]string, brokerControl) {
			c, err := membroker.Start()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			return c.Brokers(), nil
		},
		database: localDatabase,
	})
}

// TestKafkaBroker runs the suite on a real Apache Kafka 4.3.1 broker (KRaft,
// single node), a fresh one per scenario. In CI it must run; elsewhere it
// skips, saying why, when Java or Maven is missing.
func TestKafkaBroker(t *testing.T) {
	kafkatest.RequireKafka(t, "the real-broker suite")
	runSuite(t, backend{
		kind: "Apache Kafka 4.3.1",
		broker: func(t *testing.T) ([]string, brokerControl) {
			k := kafkatest.KafkaServerFor(t)
			return k.Brokers(), k
		},
		restartable: true,
		database:    localDatabase,
	})
}

// TestRedpandaContainers runs the suite on Redpanda and PostgreSQL in
// containers (a fresh Redpanda per scenario, one PostgreSQL with a database
// per scenario). Without a Docker engine it skips, saying so: no machine
// this project is built on has one, and images cannot be pulled there.
func TestRedpandaContainers(t *testing.T) {
	redpandaImage, postgresImage := composeImage(t, "redpanda-0"), composeImage(t, "postgres")
	t.Logf("this suite needs a Docker engine: it runs the scenarios on %s and %s", redpandaImage, postgresImage)
	testcontainers.SkipIfProviderIsNotHealthy(t)
	pgc, err := tcpostgres.Run(t.Context(), postgresImage,
		tcpostgres.WithDatabase("orderpipe"), tcpostgres.WithUsername("orderpipe"),
		tcpostgres.WithPassword("orderpipe"), tcpostgres.BasicWaitStrategies())
	testcontainers.CleanupContainer(t, pgc)
	if err != nil {
		t.Fatalf("start the Postgres container: %v", err)
	}
	serverURL, err := pgc.ConnectionString(t.Context(), "sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	runSuite(t, backend{
		kind: "Redpanda (testcontainers)",
		broker: func(t *testing.T) ([]string, brokerControl) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			rp, err := redpanda.Run(ctx, redpandaImage)
			testcontainers.CleanupContainer(t, rp)
			if err != nil {
				t.Fatalf("start the Redpanda container: %v", err)
			}
			seed, err := rp.KafkaSeedBroker(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return []string{seed}, nil
		},
		database: func(t *testing.T) string {
			url, err := pglocal.CreateDatabase(t.Context(), serverURL, fmt.Sprintf("it_%d", time.Now().UnixNano()))
			if err != nil {
				t.Fatal(err)
			}
			return url
		},
	})
}

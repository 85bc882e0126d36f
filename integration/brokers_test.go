package integration_test

import (
	"os"
	"testing"

	"github.com/orderpipe/orderpipe/internal/kafkatest"
)

// TestInProcessBroker runs the suite on franz-go's kfake, limited to the
// protocol versions Kafka 4.0 speaks.
func TestInProcessBroker(t *testing.T) {
	runSuite(t, "in-process kfake", func(t *testing.T) []string {
		c, err := kafkatest.Start()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c.Brokers()
	})
}

// TestKafkaBroker runs the suite on a real Apache Kafka 4.3.1 broker (KRaft,
// single node), a fresh one per scenario. In CI it must run; elsewhere it
// skips, saying why, when Java or Maven is missing.
func TestKafkaBroker(t *testing.T) {
	if err := kafkatest.KafkaAvailable(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must run the real-broker suite: %v", err)
		}
		t.Skipf("skipping the real-broker suite: %v", err)
	}
	runSuite(t, "Apache Kafka 4.3.1", func(t *testing.T) []string {
		k, err := kafkatest.StartKafka(t.Context(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := k.Close(); err != nil {
				t.Error(err)
			}
		})
		return k.Brokers()
	})
}

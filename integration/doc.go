// Package integration holds orderpipe's scenario suite: the whole flow
// (edge, processors, sink) driven through its HTTP API and checked through
// the API and SQL, written once and run against every kind of broker — the
// in-process kfake cluster, a real Apache Kafka broker started from its
// jars, and Redpanda in a container when Docker is available. The package
// has only tests.
package integration

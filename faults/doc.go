// Package faults is orderpipe's fault harness. It starts the deployed
// shape as separate processes on a real Apache Kafka broker and a real
// PostgreSQL (two `ingest` behind HAProxy, two `process`, one `sink`),
// drives an open-loop load of orders through HAProxy from clients that
// retry with the same Idempotency-Key, injects one fault at a time, heals,
// drains, and checks from outside that nothing was lost, duplicated or
// oversold. Each scenario is a row of figures, and passes only with
// evidence that its fault really happened.
//
// `make faults` runs every scenario (ORDERPIPE_FAULTS=full); `make test`
// runs the short profile (the default).
package faults

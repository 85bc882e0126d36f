# orderpipe: the front door. `make run` and `make test` work on a fresh
# Debian/Ubuntu machine with Go: they install the PostgreSQL server binaries
# when missing (scripts/ensure-postgres.sh).

GO        ?= go
BIN       := bin/orderpipe
PKGS      := ./...
# make test must stay well under 20 minutes on 2 cores.
TEST_TIMEOUT ?= 15m
FUZZTIME  ?= 30s


.PHONY: api-doc all build run test faults lint vet fmt bench bench-more fuzz clean up down pg-setup lb-setup pgha-setup ui-setup pg-ha pg-ha-down lb lb-down kafka-up kafka-down

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/orderpipe

## run: every role in one process, embedded broker and throwaway Postgres.
run: pg-setup build
	$(BIN) run

## test: the whole suite with the race detector: real Postgres; the scenario
## suite on the in-process broker and on a real Apache Kafka (fetched with
## Maven on first use), verbosely, so it says what ran on which broker.
test: pg-setup lb-setup pgha-setup ui-setup
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list $(PKGS) | grep -v -e '/integration$$' -e '/faults$$')
	@if { command -v java && command -v mvn; } >/dev/null || [ "$$CI" = true ]; then \
		scripts/kafka_test.sh; else echo "skipping scripts/kafka_test.sh: no java or mvn"; fi
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -v ./integration
	ORDERPIPE_FAULTS=short $(GO) test -race -count=1 -timeout 15m -v ./faults

## faults: the producer's property test (300 seeded fault schedules) and the
## saga under broker faults on kfake, long; then every fault scenario on the
## real broker, real Postgres and HAProxy,
## with a table of figures; non-zero on any breach or unproven fault. Without
## -race: the harness is also the load generator (5x capacity in overload),
## and on 2 cores the race detector's cost would be taken from the product
## it measures. make test runs the short profile with -race.
faults: pg-setup lb-setup pgha-setup
	ORDERPIPE_FAULTS=full $(GO) test -count=1 -timeout 30m -v -run 'TestProducerKeepsOrderUnderFaults|TestSagaUnderFaults' ./processors/ ./processors/producer/
	ORDERPIPE_FAULTS=full $(GO) test -count=1 -timeout 80m -v ./faults

pg-setup:
	@scripts/ensure-postgres.sh >/dev/null

lb-setup:
	@scripts/ensure-haproxy.sh >/dev/null

pgha-setup:
	@scripts/ensure-patroni.sh >/dev/null

## ui-setup: Debian's chromium, for the dashboard's headless browser test.
ui-setup:
	@scripts/ensure-chromium.sh >/dev/null

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

## bench: the report (bench/out/report.json, plot.svg, summary.md): the
## baselines and a ladder of offered rates on a real Kafka and PostgreSQL,
## each role a process; ORDERPIPE_BENCH_PROFILE=long for longer, higher
## steps. Then the micro-benchmarks of the codec, validation and the sink's
## batch building.
bench: pg-setup
	$(GO) test -run=NONE -bench=BenchmarkReport -benchtime=1x -count=1 -timeout 40m ./bench/
	$(GO) test -run=NONE -bench='BenchmarkCodec|BenchmarkDecodeOrder|BenchmarkNewBatch' -benchtime=300ms -count=1 ./saga/ ./ingest/ ./sinks/pgsink/

## bench-more: the other benchmarks (end to end per broker kind, overload,
## one-at-a-time latency, the edge in process, the sink's write paths).
bench-more: pg-setup
	$(GO) test -run=NONE -bench='BenchmarkEndToEnd|BenchmarkOverload|BenchmarkLatency' -benchtime=1x -count=1 -timeout 40m ./bench/
	$(GO) test -run=NONE -bench='BenchmarkPostOrder|BenchmarkSinkBatch' -benchtime=1x -count=1 ./ingest/ ./sinks/pgsink/

## fuzz: each fuzz target for FUZZTIME, one after the other (plain `go test`, so `make test`, runs their seed corpora).
fuzz:
	$(GO) test -run=NONE -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) -timeout=0 ./saga/
	$(GO) test -run=NONE -fuzz='^FuzzDecodeOrder$$' -fuzztime=$(FUZZTIME) -timeout=0 ./ingest/
	$(GO) test -run=NONE -fuzz='^FuzzEdgeRequest$$' -fuzztime=$(FUZZTIME) -timeout=0 ./ingest/

## up: Redpanda, Console, Postgres and the roles behind HAProxy (needs Docker).
up: deploy/keys/api-keys
	docker compose up -d --build

deploy/keys/api-keys:
	@mkdir -p deploy/keys
	@$(GO) run ./cmd/orderpipe keys new --client demo --scopes orders:write,orders:read,inventory:admin > deploy/keys/demo.txt
	@sed -n 's/^line: //p' deploy/keys/demo.txt > $@
	@echo "demo API key (also in deploy/keys/demo.txt):"; sed -n 's/^key: *//p' deploy/keys/demo.txt

down:
	docker compose down -v

## lb: two `orderpipe ingest` edges behind HAProxy (deploy/haproxy.cfg) on
## 127.0.0.1:8080, on the broker of `make kafka-up` (BROKERS to change it).
lb: lb-setup build
	scripts/lb.sh up

lb-down:
	scripts/lb.sh down

## pg-ha: a primary and a streaming standby, each under Patroni, with one
## etcd, on loopback (deploy/patroni.yml); prints the sink's multi-host URL.
pg-ha: pgha-setup
	scripts/pgha.sh up

pg-ha-down:
	scripts/pgha.sh down

## kafka-up: a real single-node Kafka 4.3.1 (KRaft) on 127.0.0.1:9092, from Maven Central jars cached in .cache/.
kafka-up:
	scripts/kafka.sh up

kafka-down:
	scripts/kafka.sh down

clean:
	rm -rf bin

## api-doc: docs/api.md, the API reference, rendered from ingest/openapi.json.
api-doc:
	ORDERPIPE_UPDATE_API_DOC=1 $(GO) test -count=1 -run TestAPIReferenceUpToDate ./ingest/

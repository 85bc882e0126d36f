#!/usr/bin/env bash
# Smoke check of scripts/kafka.sh: a throwaway broker in a temporary
# KAFKA_HOME_DIR on other ports (so a broker on 9092 is left alone), taken
# through up, status, a second up, down, a restart that keeps the data, and
# down --purge; then a cluster of three (KAFKA_NODES=3) with one node
# stopped and started again. The jars are shared with the repo's
# .cache/kafka (fetched there first if needed). Needs java and mvn; no Go, no client tools: the
# broker is probed with a Kafka ApiVersions request by kafka.sh itself.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_SH=$REPO_ROOT/scripts/kafka.sh

# The shared jars, fetched once into the repo's default home.
KAFKA_HOME_DIR='' KAFKA_LIBS_DIR='' "$KAFKA_SH" fetch
export KAFKA_LIBS_DIR=$REPO_ROOT/.cache/kafka/4.3.1/libs

KAFKA_HOME_DIR=$(mktemp -d /tmp/kafka_test.XXXXXX)
export KAFKA_HOME_DIR
export KAFKA_PORT=${KAFKA_TEST_PORT:-39092}
export KAFKA_CONTROLLER_PORT=${KAFKA_TEST_CONTROLLER_PORT:-39093}
# The cluster's nodes listen on the next ports: KAFKA_PORT+2, +4 and so on.
cluster_env=(KAFKA_NODES=3 KAFKA_PORT=$((KAFKA_PORT + 100)) KAFKA_CONTROLLER_PORT=$((KAFKA_CONTROLLER_PORT + 100)) KAFKA_HOME_DIR=$KAFKA_HOME_DIR/cluster)
trap '"$KAFKA_SH" down --purge >/dev/null 2>&1 || true; env "${cluster_env[@]}" "$KAFKA_SH" clean >/dev/null 2>&1 || true; rm -rf "$KAFKA_HOME_DIR"' EXIT

passed=0 failed=0
check() { # check NAME COMMAND...: runs COMMAND, counts and reports it
	local name=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
		echo "ok   $name"
	else
		failed=$((failed + 1))
		echo "FAIL $name"
	fi
}
fails() { ! "$@"; }
cluster_id() { sed -n 's/^cluster.id=//p' "$KAFKA_HOME_DIR/run/data/meta.properties"; }

check "up starts the broker" "$KAFKA_SH" up
check "status says running" "$KAFKA_SH" status
check "second up is a no-op" "$KAFKA_SH" up
id1=$(cluster_id)
check "down stops it" "$KAFKA_SH" down
check "status says stopped" fails "$KAFKA_SH" status
check "no pid file after down" test ! -e "$KAFKA_HOME_DIR/run/kafka.pid"
check "up restarts it" "$KAFKA_SH" up
check "restart keeps the data (same cluster id)" test "$(cluster_id)" = "$id1"
check "down --purge" "$KAFKA_SH" down --purge
check "purge deleted the data" test ! -e "$KAFKA_HOME_DIR/run/data"

# A broker started for a process that then dies without cleaning up (a test
# binary that panics) stops by itself.
stopped_within() { # stopped_within SECONDS: the broker is gone in time
	local i
	for ((i = 0; i < $1; i++)); do
		"$KAFKA_SH" status >/dev/null 2>&1 || return 0
		sleep 1
	done
	return 1
}
sleep 300 &
owner=$!
check "up with an owner" env KAFKA_OWNER_PID=$owner "$KAFKA_SH" up
kill "$owner"
wait "$owner" 2>/dev/null || true
check "the broker stops once its owner is gone" stopped_within 60
check "down after that is a no-op" "$KAFKA_SH" down --purge

# A cluster of three combined nodes (one static quorum): up, one node
# stopped and started again while the other two serve, clean.
in_cluster() { env "${cluster_env[@]}" "$@"; }
cluster_ids() { sed -n 's/^cluster.id=//p' "$KAFKA_HOME_DIR"/cluster/node-*/run/data/meta.properties | sort -u | wc -l; }
check "cluster up starts three nodes" in_cluster "$KAFKA_SH" up
check "cluster status says all three run" in_cluster "$KAFKA_SH" status
check "the three are formatted with one cluster id" test "$(cluster_ids)" = 1
check "cluster: node 2 down alone" in_cluster KAFKA_NODE=2 "$KAFKA_SH" down
check "cluster status fails with a node down" fails in_cluster "$KAFKA_SH" status
check "cluster: node 1 still runs" in_cluster KAFKA_NODE=1 "$KAFKA_SH" status
check "cluster: node 2 up again, on the quorum of the other two" in_cluster KAFKA_NODE=2 "$KAFKA_SH" up
check "cluster clean" in_cluster "$KAFKA_SH" clean
check "clean deleted every node's data" test ! -e "$KAFKA_HOME_DIR/cluster/node-1/run/data" -a ! -e "$KAFKA_HOME_DIR/cluster/cluster.id"

echo "kafka_test: $passed passed, $failed failed"
((failed == 0))

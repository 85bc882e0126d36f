#!/usr/bin/env bash
# A local Apache Kafka on loopback (KRaft), for integration tests and
# benchmarks: one combined broker+controller node by default, or a cluster
# of KAFKA_NODES of them. Kafka is not installed from a tarball: its jars
# come from Maven Central through mvn, and everything downloaded or written
# lives under the git-ignored .cache/.
#
# Usage: scripts/kafka.sh fetch | up | down [--purge] | clean | status | logs
#
#   fetch   resolve kafka_2.13 (and what the broker needs at run time) into
#           $KAFKA_LIBS_DIR; a no-op once that is complete
#   up      fetch if needed, write the config, format the storage once, start
#           the broker in the background and wait until it serves requests;
#           a no-op (exit 0) when it is already running
#   down    stop it (SIGTERM, then SIGKILL after 30s); --purge also deletes
#           the data; `clean` is `down --purge`
#   status  exit 0 and print pid and address when it runs, else exit 1
#   logs    print the tail of the broker's log
#
# Environment (defaults in brackets):
#   KAFKA_PORT             PLAINTEXT listener on 127.0.0.1 [9092]
#   KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 [9093]
#   KAFKA_HOME_DIR         libs, config, data and logs [$repo/.cache/kafka]
#   KAFKA_LIBS_DIR         the jars [$KAFKA_HOME_DIR/4.3.1/libs]; point a
#                          second broker's at the first's to skip its fetch
#   KAFKA_M2_REPO          Maven's local repository, shared by every
#                          KAFKA_HOME_DIR [$repo/.cache/kafka/m2]
#   KAFKA_HEAP_OPTS        [-Xmx768m -Xms256m], per node
#   KAFKA_START_TIMEOUT    seconds `up` waits for the broker [90]
#   KAFKA_EXTRA_PROPERTIES lines appended to server.properties (they win)
#   KAFKA_OWNER_PID        stop the broker when this process is gone (tests)
#   KAFKA_JMX_PORT         serve the broker's JMX metrics on 127.0.0.1:PORT,
#                          without auth (loopback only) [off]; read them with
#                          java scripts/KafkaMetrics.java 127.0.0.1:PORT
#   JAVA_HOME              the JDK to run (17 or newer) [java on PATH]
#
# A second broker for a test: KAFKA_HOME_DIR=/tmp/k2 KAFKA_PORT=19092
# KAFKA_CONTROLLER_PORT=19093 scripts/kafka.sh up
#
# A cluster: KAFKA_NODES=3 scripts/kafka.sh up starts three combined
# broker+controller nodes, the three controllers one static quorum
# (controller.quorum.voters), so that any one node can die and the other
# two still elect a controller and leaders. Node i (1..N) lives in
# $KAFKA_HOME_DIR/node-i and listens on KAFKA_PORT+2(i-1) and
# KAFKA_CONTROLLER_PORT+2(i-1) (by default 9092/9093, 9094/9095,
# 9096/9097; JMX, if asked, on KAFKA_JMX_PORT+i-1); the jars are fetched
# once into KAFKA_LIBS_DIR for all. Its internal topics, and topics created
# without a replication factor, have min(3, N) replicas; with 3 or more,
# min.insync.replicas is 2 (so acks=all means two copies). Every verb acts
# on all nodes (up starts them together: a node serves only once a
# majority of the quorum runs); KAFKA_NODE=i makes it act on node i alone,
# e.g. to stop or restart one broker of the cluster:
#   KAFKA_NODES=3 scripts/kafka.sh up
#   KAFKA_NODES=3 KAFKA_NODE=2 scripts/kafka.sh down    # and up again
#   KAFKA_NODES=3 scripts/kafka.sh clean
#   KAFKA_NODES          number of nodes [1]
#   KAFKA_NODE           the one node a verb acts on, 1..KAFKA_NODES [all]
# What cluster mode sets for each node, and what a harness that picks its
# own ports per node sets itself (internal/kafkatest does):
#   KAFKA_NODE_ID        this node's node.id [1]
#   KAFKA_VOTERS         the static quorum, id@127.0.0.1:controller-port,...
#                        naming this node; unset: a standalone quorum of
#                        this node alone [unset]
#   KAFKA_CLUSTER_ID     the cluster id to format with, the same on every
#                        node of a cluster [random, at the first format]
set -euo pipefail

readonly KAFKA_VERSION=4.3.1
# log4j2's slf4j-1.x binding; kafka-server 4.3.1 brings log4j-core 2.25.4,
# and the binding must be the same log4j2 release.
readonly LOG4J_VERSION=2.25.4
# The Maven plugin that copies the jars, pinned so builds do not drift.
readonly DEPENDENCY_PLUGIN_VERSION=3.8.1

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HOME_DIR=${KAFKA_HOME_DIR:-$REPO_ROOT/.cache/kafka}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx768m -Xms256m}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
KAFKA_EXTRA_PROPERTIES=${KAFKA_EXTRA_PROPERTIES:-}
KAFKA_OWNER_PID=${KAFKA_OWNER_PID:-}
KAFKA_JMX_PORT=${KAFKA_JMX_PORT:-}
KAFKA_NODES=${KAFKA_NODES:-1}
KAFKA_NODE=${KAFKA_NODE:-}
KAFKA_NODE_ID=${KAFKA_NODE_ID:-1}
KAFKA_VOTERS=${KAFKA_VOTERS:-}
KAFKA_CLUSTER_ID=${KAFKA_CLUSTER_ID:-}

log() { printf 'kafka.sh: %s\n' "$*"; }
die() {
	printf 'kafka.sh: error: %s\n' "$*" >&2
	exit 1
}

# abspath prints the absolute form of a directory path, creating it.
abspath() {
	mkdir -p "$1"
	(cd "$1" && pwd)
}

for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
	[[ $p =~ ^[0-9]+$ ]] || die "port '$p' is not a number"
done
[[ $KAFKA_PORT != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT are both $KAFKA_PORT"
[[ $KAFKA_NODES =~ ^[1-9][0-9]*$ ]] || die "KAFKA_NODES must be a number of nodes, not '$KAFKA_NODES'"
[[ $KAFKA_NODE_ID =~ ^[0-9]+$ ]] || die "KAFKA_NODE_ID must be a number, not '$KAFKA_NODE_ID'"
if [[ -n $KAFKA_VOTERS ]]; then
	[[ $KAFKA_VOTERS =~ ^[0-9]+@[^,@:]+:[0-9]+(,[0-9]+@[^,@:]+:[0-9]+)*$ ]] ||
		die "KAFKA_VOTERS must be id@host:port,..., not '$KAFKA_VOTERS'"
	[[ ,$KAFKA_VOTERS, == *",$KAFKA_NODE_ID@127.0.0.1:$KAFKA_CONTROLLER_PORT,"* ]] ||
		die "KAFKA_VOTERS ($KAFKA_VOTERS) does not name this node, $KAFKA_NODE_ID@127.0.0.1:$KAFKA_CONTROLLER_PORT"
fi

KAFKA_HOME_DIR=$(abspath "$KAFKA_HOME_DIR")
KAFKA_LIBS_DIR=${KAFKA_LIBS_DIR:-$KAFKA_HOME_DIR/$KAFKA_VERSION/libs}
KAFKA_M2_REPO=${KAFKA_M2_REPO:-$REPO_ROOT/.cache/kafka/m2}
readonly RUN_DIR=$KAFKA_HOME_DIR/run
readonly DATA_DIR=$RUN_DIR/data
readonly PID_FILE=$RUN_DIR/kafka.pid
readonly SERVER_PROPS=$RUN_DIR/server.properties
readonly LOG4J_CONF=$RUN_DIR/log4j2.properties
readonly SERVER_LOG=$RUN_DIR/server.log # log4j2's output
readonly OUT_LOG=$RUN_DIR/kafka.out     # the JVM's stdout and stderr
# Written after a successful format: the controller address the quorum was
# formatted with (KRaft records it, so it cannot change without a purge).
readonly FORMAT_MARK=$RUN_DIR/formatted

if [[ -n ${JAVA_HOME:-} ]]; then
	JAVA=$JAVA_HOME/bin/java
else
	JAVA=java
fi

# ---------------------------------------------------------------- locking

# lock FD FILE takes an exclusive lock on FILE through descriptor FD, held
# until the script exits. Two `up`s at once (go test runs packages in
# parallel) must not both fetch, format or start.
lock() {
	local fd=$1 file=$2
	mkdir -p "$(dirname "$file")"
	eval "exec $fd>\"\$file\""
	if ! flock -n "$fd"; then
		log "waiting for another kafka.sh holding $file"
		flock "$fd"
	fi
}

# ------------------------------------------------------------------ fetch

# write_pom prints the pom whose runtime dependencies are the broker's
# classpath. Every org.apache.kafka artifact is $KAFKA_VERSION: kafka_2.13
# pulls all the others in at that version (clients, server, server-common,
# storage, storage-api, metadata, raft, group/transaction/share
# coordinators, coordinator-common, tools-api), so they are not listed.
# kafka-tools is not needed: the storage format tool (kafka.tools.StorageTool)
# is in kafka_2.13 itself.
write_pom() {
	cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/kafka.sh: the classpath of a local Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>orderpipe.local</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- The broker (kafka.Kafka) and the storage tool (kafka.tools.StorageTool);
         brings every other Kafka module, Scala, log4j-api and log4j-core. -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- Kafka logs through slf4j-api 1.7.x; this binds it to log4j2 as the
         Kafka distribution does. Without it slf4j falls back to a no-op
         logger and the broker writes no log at all. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>$DEPENDENCY_PLUGIN_VERSION</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
EOF
}

# libs_complete says whether $KAFKA_LIBS_DIR holds what the current pom
# resolves to: its marker, written last, records the pom's checksum.
libs_complete() {
	local want
	want=$(write_pom | sha256sum | cut -d' ' -f1)
	[[ -f $KAFKA_LIBS_DIR/.complete && $(<"$KAFKA_LIBS_DIR/.complete") == "$want" ]]
}

cmd_fetch() {
	libs_complete && return 0
	lock 8 "$KAFKA_LIBS_DIR.lock"
	if libs_complete; then # fetched by whoever held the lock
		return 0
	fi
	command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"

	local work pom tmp mvn_log start
	work=$(dirname "$KAFKA_LIBS_DIR")
	pom=$work/pom.xml
	tmp=$KAFKA_LIBS_DIR.tmp
	mvn_log=$work/mvn.log
	mkdir -p "$work" "$KAFKA_M2_REPO"
	write_pom >"$pom"
	rm -rf "$tmp"

	log "resolving Kafka $KAFKA_VERSION jars with Maven (Maven Central, cached in $KAFKA_M2_REPO) into $KAFKA_LIBS_DIR"
	log "(the first time can take a minute or more; Maven's log: $mvn_log)"
	start=$SECONDS
	if ! mvn -B --no-transfer-progress -f "$pom" \
		-Dmaven.repo.local="$KAFKA_M2_REPO" \
		dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
		tail -n 30 "$mvn_log" >&2
		die "mvn could not resolve the Kafka jars (see $mvn_log)"
	fi

	# Every Kafka artifact must be $KAFKA_VERSION: a stray version on the
	# classpath fails at run time in ways that are hard to read.
	[[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing from $tmp"
	local jar stray=()
	for jar in "$tmp"/kafka*.jar; do
		[[ $jar == *-"$KAFKA_VERSION".jar ]] || stray+=("$(basename "$jar")")
	done
	((${#stray[@]} == 0)) || die "Kafka jars of another version than $KAFKA_VERSION: ${stray[*]}"

	rm -rf "$KAFKA_LIBS_DIR"
	mv "$tmp" "$KAFKA_LIBS_DIR"
	write_pom | sha256sum | cut -d' ' -f1 >"$KAFKA_LIBS_DIR/.complete"
	log "fetched $(find "$KAFKA_LIBS_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$KAFKA_LIBS_DIR" | cut -f1)) in $((SECONDS - start))s"
}

# ----------------------------------------------------------------- probes

# is_ours PID says whether PID is alive and is the broker of this
# KAFKA_HOME_DIR (its command line names our server.properties), so a
# recycled pid is never mistaken for it.
is_ours() {
	local pid=$1
	[[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "kafka.Kafka $SERVER_PROPS"
}

# running_pid prints the pid of our broker when it is alive.
running_pid() {
	local pid
	[[ -f $PID_FILE ]] || return 1
	pid=$(<"$PID_FILE")
	is_ours "$pid" || return 1
	echo "$pid"
}

# api_probe PORT sends a Kafka ApiVersions request (v0, correlation id 42)
# to 127.0.0.1:PORT and succeeds when a Kafka broker answers it with no
# error: a real protocol round trip, not just a TCP connect, without
# starting a JVM. Response: int32 size, int32 correlation id, int16 error.
api_probe() {
	local got
	# shellcheck disable=SC2016 # $1 expands in the inner bash
	got=$(timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		# size=10: api_key 18, api_version 0, correlation_id 42, client_id null
		printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x2a\xff\xff" >&3
		head -c 10 <&3 | od -An -tx1
	' _ "$1" 2>/dev/null) || return 1
	got=${got//[[:space:]]/}
	# skip the 8 hex digits of the size; then correlation id 42 and error 0
	[[ ${got:8} == 0000002a0000 ]]
}

# port_open PORT says whether anything accepts TCP connections on it.
port_open() {
	# shellcheck disable=SC2016 # $1 expands in the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# ready says whether the broker is up: its log says the server started
# (KRaft logs that once the broker is unfenced and serving) and it answers
# a Kafka request on the client port.
ready() {
	grep -qF 'Kafka Server started' "$SERVER_LOG" 2>/dev/null && api_probe "$KAFKA_PORT"
}

# show_logs prints why the broker failed: its first errors (a shutdown
# after a failed start logs 40 lines of INFO that bury the cause), then the
# tails of its logs.
show_logs() {
	local f
	for f in "$SERVER_LOG" "$OUT_LOG"; do
		[[ -s $f ]] || continue
		if grep -qE 'ERROR|FATAL|Exception' "$f"; then
			echo "----- first errors in $f" >&2
			grep -m 20 -E -A3 'ERROR|FATAL|Exception' "$f" >&2
		fi
		echo "----- tail of $f" >&2
		tail -n "${1:-40}" "$f" >&2
	done
}

# --------------------------------------------------------------------- up

write_config() {
	mkdir -p "$DATA_DIR"
	# The quorum: this node alone (a dynamic quorum formatted --standalone),
	# or the static voters of a cluster. Replicas as the cluster allows:
	# min(3, nodes), and two in sync for acks=all once there are three.
	local quorum nodes=1 rf isr=1
	if [[ -n $KAFKA_VOTERS ]]; then
		quorum="controller.quorum.voters=$KAFKA_VOTERS"
		nodes=$(($(tr -cd , <<<"$KAFKA_VOTERS" | wc -c) + 1))
	else
		quorum="controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT"
	fi
	rf=$((nodes < 3 ? nodes : 3))
	((rf < 3)) || isr=2
	cat >"$SERVER_PROPS" <<EOF
# Generated by scripts/kafka.sh on every start; edits are lost.
# A combined KRaft node: broker and controller in one JVM, on loopback;
# one of $nodes.
node.id=$KAFKA_NODE_ID
process.roles=broker,controller
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
$quorum
log.dirs=$DATA_DIR

# Internal topics and topics created without a replication factor.
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
default.replication.factor=$rf
min.insync.replicas=$isr

# Test friendly: groups form at once, topics are made on purpose only,
# and the log cleaner looks for compactable logs every second.
group.initial.rebalance.delay.ms=0
num.partitions=1
auto.create.topics.enable=false
log.cleaner.backoff.ms=1000
EOF
	if [[ -n $KAFKA_EXTRA_PROPERTIES ]]; then
		printf '\n# KAFKA_EXTRA_PROPERTIES\n%s\n' "$KAFKA_EXTRA_PROPERTIES" >>"$SERVER_PROPS"
	fi

	cat >"$LOG4J_CONF" <<EOF
# Generated by scripts/kafka.sh. Everything to $SERVER_LOG, rolled at
# 64 MB with two old files kept, so long benchmarks cannot fill the disk.
status = warn
# No log4j2 shutdown hook: Kafka logs its own shutdown until the JVM exits.
shutdownHook = disable
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $SERVER_LOG
appender.file.filePattern = $SERVER_LOG.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 64MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
# Chatty at INFO, of little use in tests.
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

# run_java runs a Kafka class in the foreground (for the storage tool).
run_java() {
	"$JAVA" -Dlog4j2.configurationFile="$LOG4J_CONF" -cp "$KAFKA_LIBS_DIR/*" "$@"
}

# format_storage formats the KRaft storage once: with KAFKA_CLUSTER_ID
# (else a fresh cluster id), and either a standalone dynamic quorum whose
# only voter is this node's controller or the static KAFKA_VOTERS.
format_storage() {
	local want="controller=127.0.0.1:$KAFKA_CONTROLLER_PORT" quorum=(--standalone)
	if [[ -n $KAFKA_VOTERS ]]; then
		want="node $KAFKA_NODE_ID of voters=$KAFKA_VOTERS"
		quorum=() # static voters are in the config
	fi
	if [[ -f $DATA_DIR/meta.properties ]]; then
		if [[ -f $FORMAT_MARK && $(<"$FORMAT_MARK") != "$want" ]]; then
			die "the data in $DATA_DIR was formatted with $(<"$FORMAT_MARK"), not $want; use another KAFKA_HOME_DIR or run: scripts/kafka.sh down --purge"
		fi
		local had
		had=$(sed -n 's/^cluster.id=//p' "$DATA_DIR/meta.properties")
		if [[ -n $KAFKA_CLUSTER_ID && $had != "$KAFKA_CLUSTER_ID" ]]; then
			die "the data in $DATA_DIR belongs to cluster $had, not KAFKA_CLUSTER_ID=$KAFKA_CLUSTER_ID; run: scripts/kafka.sh down --purge"
		fi
		return 0
	fi
	local cluster_id=$KAFKA_CLUSTER_ID out
	rm -rf "$DATA_DIR"
	mkdir -p "$DATA_DIR"
	if [[ -z $cluster_id ]]; then
		cluster_id=$(run_java kafka.tools.StorageTool random-uuid 2>>"$OUT_LOG") || die "storage tool random-uuid failed (see $OUT_LOG)"
	fi
	log "formatting $DATA_DIR (cluster id $cluster_id)"
	if ! out=$(run_java kafka.tools.StorageTool format "${quorum[@]}" \
		--cluster-id "$cluster_id" --config "$SERVER_PROPS" 2>&1); then
		echo "$out" >&2
		rm -rf "$DATA_DIR"
		die "formatting the storage failed"
	fi
	echo "$want" >"$FORMAT_MARK"
}

# wait_ready waits until the broker with PID serves (0), or fails: it
# died (2, after showing why), or the time ran out (fatal).
wait_ready() {
	local pid=$1 deadline=$((SECONDS + KAFKA_START_TIMEOUT))
	while ((SECONDS < deadline)); do
		if ready; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			show_logs
			rm -f "$PID_FILE"
			log "the broker (pid $pid) exited during startup"
			return 2
		fi
		sleep 0.5
	done
	show_logs
	die "the broker (pid $pid) did not serve on 127.0.0.1:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s; it is still running: scripts/kafka.sh down"
}

cmd_up() {
	lock 9 "$RUN_DIR/.lock"
	local pid
	if pid=$(running_pid); then
		# Started earlier; if it does not answer yet, it is still starting.
		api_probe "$KAFKA_PORT" || wait_ready "$pid" || die "the broker (pid $pid) exited during startup"
		log "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
		return 0
	fi
	rm -f "$PID_FILE"
	local p
	for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
		! port_open "$p" || die "127.0.0.1:$p is taken by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
	done

	command -v "$JAVA" >/dev/null || die "java not found (Kafka $KAFKA_VERSION needs Java 17 or newer)"
	cmd_fetch
	write_config
	format_storage

	# A broker that exits while starting is started once more: in CI a
	# fresh broker once exited during its first start (an orderly
	# shutdown, cause not in the log tail shown then; show_logs now prints
	# the first errors). A second failure is final.
	local start=$SECONDS attempt rc
	for attempt in 1 2; do
		# Keep the previous run's logs for a post-mortem, start this one afresh
		# (ready() looks for the "started" line in this run's log only).
		local f
		for f in "$SERVER_LOG" "$OUT_LOG"; do
			if [[ -f $f ]]; then mv -f "$f" "$f.prev"; fi
		done
		rm -f "$SERVER_LOG".[0-9]*

		# JMX on loopback only, one port for the registry and the server, so
		# that benchmarks can read the broker's own request and topic counters.
		local jmx=()
		if [[ -n $KAFKA_JMX_PORT ]]; then
			[[ $KAFKA_JMX_PORT =~ ^[0-9]+$ ]] || die "KAFKA_JMX_PORT must be a port, not '$KAFKA_JMX_PORT'"
			! port_open "$KAFKA_JMX_PORT" || die "127.0.0.1:$KAFKA_JMX_PORT is taken by another process (set KAFKA_JMX_PORT)"
			jmx=(-Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.port="$KAFKA_JMX_PORT"
				-Dcom.sun.management.jmxremote.rmi.port="$KAFKA_JMX_PORT" -Dcom.sun.management.jmxremote.host=127.0.0.1
				-Djava.rmi.server.hostname=127.0.0.1 -Dcom.sun.management.jmxremote.authenticate=false
				-Dcom.sun.management.jmxremote.ssl=false -Dcom.sun.management.jmxremote.local.only=true)
		fi

		log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT, data $DATA_DIR${KAFKA_JMX_PORT:+, JMX $KAFKA_JMX_PORT})"
		# The JVM options of Kafka's own kafka-run-class.sh, and the heap.
		# setsid: a new session, so the terminal's Ctrl-C or the end of a test
		# process does not reach it; all descriptors are redirected (and the
		# lock fds closed) so that callers waiting on our output do not hang.
		# shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of options
		(cd "$RUN_DIR" && exec setsid "$JAVA" $KAFKA_HEAP_OPTS \
			-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
			-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
			-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "${jmx[@]}" \
			-Dkafka.logs.dir="$RUN_DIR" -Dlog4j2.configurationFile="$LOG4J_CONF" \
			-cp "$KAFKA_LIBS_DIR/*" kafka.Kafka "$SERVER_PROPS") \
			</dev/null >>"$OUT_LOG" 2>&1 8>&- 9>&- &
		pid=$!
		echo "$pid" >"$PID_FILE"
		if [[ -n $KAFKA_OWNER_PID ]]; then watch_owner "$KAFKA_OWNER_PID" "$pid"; fi
		rc=0
		wait_ready "$pid" || rc=$?
		((rc == 0)) && break
		((attempt == 1)) || die "the broker (pid $pid) exited during startup, twice"
		log "starting it once more"
	done
	log "ready in $((SECONDS - start))s: pid $pid, bootstrap 127.0.0.1:$KAFKA_PORT"
}

# watch_owner stops the broker once the owner process is gone: a test
# binary that panics or is killed runs no cleanup, and its broker would
# otherwise outlive it, holding ports and a core. The watchdog is detached
# like the broker and ends with it.
watch_owner() {
	local owner=$1 broker=$2
	[[ $owner =~ ^[0-9]+$ ]] || die "KAFKA_OWNER_PID must be a pid, not '$owner'"
	# ours PID: PID is still this broker, not a process that got its pid
	# after it exited (pids wrap around on a busy machine).
	setsid bash -c '
		ours() { tr "\0" " " <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "kafka.Kafka $2"; }
		while kill -0 "$1" 2>/dev/null && ours "$2" "$3"; do sleep 2; done
		ours "$2" "$3" || exit 0
		kill -TERM "$2"
		for _ in $(seq 1 30); do ours "$2" "$3" || exit 0; sleep 1; done
		kill -KILL "$2"' kafka-watch "$owner" "$broker" "$SERVER_PROPS" \
		</dev/null >>"$OUT_LOG" 2>&1 8>&- 9>&- &
}

# ------------------------------------------------------------------- down

cmd_down() {
	local purge=false
	case ${1:-} in
	"") ;;
	--purge) purge=true ;;
	*) die "down: unknown option '$1' (only --purge)" ;;
	esac
	lock 9 "$RUN_DIR/.lock"
	local pid
	if pid=$(running_pid); then
		log "stopping pid $pid"
		kill -TERM "$pid" 2>/dev/null || true
		local i
		for ((i = 0; i < 60; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "still running after 30s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
		fi
		log "stopped"
	else
		log "not running"
	fi
	rm -f "$PID_FILE"
	if $purge; then
		rm -rf "$DATA_DIR" "$FORMAT_MARK"
		log "deleted $DATA_DIR"
	fi
}

# ----------------------------------------------------------------- status

cmd_status() {
	local pid
	if ! pid=$(running_pid); then
		echo "not running"
		return 1
	fi
	if ! api_probe "$KAFKA_PORT"; then
		echo "pid $pid is alive but 127.0.0.1:$KAFKA_PORT does not answer (starting or stuck)"
		return 1
	fi
	echo "running: pid $pid, bootstrap 127.0.0.1:$KAFKA_PORT, controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, home $KAFKA_HOME_DIR"
}

# ---------------------------------------------------------------- cluster

# The id every node of a cluster is formatted with, made at its first up.
readonly CLUSTER_ID_FILE=$KAFKA_HOME_DIR/cluster.id

node_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
node_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1))); }

# voters prints the cluster's static quorum: every node's controller.
voters() {
	local i out=()
	for ((i = 1; i <= KAFKA_NODES; i++)); do
		out+=("$i@127.0.0.1:$(node_controller_port "$i")")
	done
	(
		IFS=,
		echo "${out[*]}"
	)
}

# ensure_cluster_id writes the cluster's id once: 16 random bytes in
# Kafka's url-safe base64, never starting with '-' (Kafka avoids those too:
# they read as an option on a command line).
ensure_cluster_id() {
	lock 7 "$CLUSTER_ID_FILE.lock"
	[[ -s $CLUSTER_ID_FILE ]] && return 0
	local id=-
	while [[ $id == -* ]]; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
	done
	echo "$id" >"$CLUSTER_ID_FILE"
}

# node_run I ARGS... runs this script with ARGS for node I of the cluster:
# its home, ports and place in the static quorum, the cluster's jars and id.
node_run() {
	local i=$1 jmx="" id="" quorum
	shift
	[[ -z $KAFKA_JMX_PORT ]] || jmx=$((KAFKA_JMX_PORT + i - 1))
	[[ ! -s $CLUSTER_ID_FILE ]] || id=$(<"$CLUSTER_ID_FILE")
	quorum=$(voters)
	KAFKA_NODES=1 KAFKA_NODE="" KAFKA_NODE_ID=$i KAFKA_VOTERS=$quorum KAFKA_CLUSTER_ID=$id \
		KAFKA_HOME_DIR=$KAFKA_HOME_DIR/node-$i KAFKA_LIBS_DIR=$KAFKA_LIBS_DIR KAFKA_M2_REPO=$KAFKA_M2_REPO \
		KAFKA_PORT=$(node_port "$i") KAFKA_CONTROLLER_PORT=$(node_controller_port "$i") KAFKA_JMX_PORT=$jmx \
		"${BASH_SOURCE[0]}" "$@" 7>&- 8>&- 9>&-
}

# each_node VERB ARGS... -- NODES... runs VERB on the nodes at once (a node
# of a cluster serves only once a majority of its quorum runs, and stopping
# them one by one would leave the last without a controller for its
# controlled shutdown), each line of output prefixed with the node, and
# fails when one of them does.
each_node() {
	local args=()
	while [[ $1 != -- ]]; do
		args+=("$1")
		shift
	done
	shift
	local i pids=() failed=()
	for i in "$@"; do
		# A subshell of its own, so that no other node's process (its JVM
		# least of all) inherits this pipe and keeps sed waiting.
		(node_run "$i" "${args[@]}" 2>&1 | sed -u "s/^/node-$i: /") &
		pids+=("$!")
	done
	local n=0
	for i in "$@"; do
		wait "${pids[n]}" || failed+=("node-$i")
		n=$((n + 1))
	done
	((${#failed[@]} == 0)) || die "${args[0]} failed on ${failed[*]}"
}

# cluster runs a verb on the nodes of a KAFKA_NODES cluster, or on
# KAFKA_NODE alone.
cluster() {
	local verb=$1 i nodes=() ports=()
	shift
	if [[ -n $KAFKA_NODE ]]; then
		[[ $KAFKA_NODE =~ ^[0-9]+$ ]] && ((KAFKA_NODE >= 1 && KAFKA_NODE <= KAFKA_NODES)) ||
			die "KAFKA_NODE must be in 1..$KAFKA_NODES, not '$KAFKA_NODE'"
		nodes=("$KAFKA_NODE")
	else
		for ((i = 1; i <= KAFKA_NODES; i++)); do nodes+=("$i"); done
	fi
	for ((i = 1; i <= KAFKA_NODES; i++)); do
		ports+=("$(node_port "$i")" "$(node_controller_port "$i")")
		[[ -z $KAFKA_JMX_PORT ]] || ports+=($((KAFKA_JMX_PORT + i - 1)))
	done
	[[ $(printf '%s\n' "${ports[@]}" | sort -u | wc -l) == "${#ports[@]}" ]] ||
		die "the nodes' ports collide (${ports[*]}): choose KAFKA_PORT and KAFKA_CONTROLLER_PORT further apart"
	case $verb in
	up)
		cmd_fetch
		ensure_cluster_id
		each_node up -- "${nodes[@]}"
		local seeds=()
		for i in "${nodes[@]}"; do seeds+=("127.0.0.1:$(node_port "$i")"); done
		log "cluster of $KAFKA_NODES (quorum $(voters)) serving; bootstrap $(
			IFS=,
			echo "${seeds[*]}"
		)"
		;;
	down)
		each_node down "$@" -- "${nodes[@]}"
		if [[ ${1:-} == --purge && -z $KAFKA_NODE ]]; then rm -f "$CLUSTER_ID_FILE" "$CLUSTER_ID_FILE.lock"; fi
		;;
	status)
		local rc=0
		for i in "${nodes[@]}"; do
			node_run "$i" status | sed "s/^/node-$i: /" || rc=1
		done
		return $rc
		;;
	logs)
		for i in "${nodes[@]}"; do
			echo "===== node-$i"
			node_run "$i" logs
		done
		;;
	esac
}

# ------------------------------------------------------------------- main

# usage prints the header comment's usage part and exits with $1.
usage() {
	sed -n '/^# Usage:/,/^set -euo/{/^set/d; s/^# \{0,1\}//; p;}' "${BASH_SOURCE[0]}" >&2
	exit "$1"
}

if ((KAFKA_NODES > 1)); then
	case ${1:-} in
	up | down | status | logs)
		cluster "$@"
		exit
		;;
	clean)
		cluster down --purge
		exit
		;;
	esac
fi

case ${1:-} in
fetch) cmd_fetch && log "libs ready in $KAFKA_LIBS_DIR" ;;
up) cmd_up ;;
down) cmd_down "${@:2}" ;;
clean) cmd_down --purge ;;
status) cmd_status ;;
logs) show_logs 100 2>&1 ;;
-h | --help | help) usage 0 ;;
*) usage 2 ;;
esac

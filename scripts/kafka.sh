#!/usr/bin/env bash
# A local single-node Apache Kafka broker (KRaft, combined broker+controller)
# on loopback, for integration tests and benchmarks. Kafka is not installed
# from a tarball: its jars come from Maven Central through mvn, and
# everything downloaded or written lives under the git-ignored .cache/.
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
#   KAFKA_HEAP_OPTS        [-Xmx768m -Xms256m]
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
	cat >"$SERVER_PROPS" <<EOF
# Generated by scripts/kafka.sh on every start; edits are lost.
# One combined KRaft node: broker and controller in one JVM, on loopback.
node.id=1
process.roles=broker,controller
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
log.dirs=$DATA_DIR

# A single node: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

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

# format_storage formats the KRaft storage once: a fresh cluster id and a
# standalone dynamic quorum whose only voter is this node's controller.
format_storage() {
	local want="controller=127.0.0.1:$KAFKA_CONTROLLER_PORT"
	if [[ -f $DATA_DIR/meta.properties ]]; then
		if [[ -f $FORMAT_MARK && $(<"$FORMAT_MARK") != "$want" ]]; then
			die "the data in $DATA_DIR was formatted with $(<"$FORMAT_MARK"), not $want; use another KAFKA_HOME_DIR or run: scripts/kafka.sh down --purge"
		fi
		return 0
	fi
	local cluster_id out
	rm -rf "$DATA_DIR"
	mkdir -p "$DATA_DIR"
	cluster_id=$(run_java kafka.tools.StorageTool random-uuid 2>>"$OUT_LOG") || die "storage tool random-uuid failed (see $OUT_LOG)"
	log "formatting $DATA_DIR (cluster id $cluster_id)"
	if ! out=$(run_java kafka.tools.StorageTool format --standalone \
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

# ------------------------------------------------------------------- main

# usage prints the header comment's usage part and exits with $1.
usage() {
	sed -n '/^# Usage:/,/^set -euo/{/^set/d; s/^# \{0,1\}//; p;}' "${BASH_SOURCE[0]}" >&2
	exit "$1"
}

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

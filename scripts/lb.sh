#!/usr/bin/env bash
# Two orderpipe edges behind HAProxy on this machine, with the same
# deploy/haproxy.cfg that docker compose uses (its addresses come from the
# ORDERPIPE_LB_* variables set here). The processors and the sink run
# elsewhere (`orderpipe process`, `orderpipe sink`, see the README); the
# edges need a broker with the topics created (`make kafka-up`,
# `orderpipe topics`).
#
# Usage: scripts/lb.sh up | down | status
#
# Environment (defaults in brackets):
#   BROKERS     seed brokers [127.0.0.1:9092]
#   LB_LISTEN   HAProxy's frontend [127.0.0.1:8080]
#   LB_STATS    HAProxy's stats page [127.0.0.1:8404]
#   EDGE_PORTS  the two edges' ports on 127.0.0.1 [8081,8082]
#   LB_DIR      pid files, logs and the edges' data [$repo/.cache/lb]
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BROKERS=${BROKERS:-127.0.0.1:9092}
LB_LISTEN=${LB_LISTEN:-127.0.0.1:8080}
LB_STATS=${LB_STATS:-127.0.0.1:8404}
EDGE_PORTS=${EDGE_PORTS:-8081,8082}
LB_DIR=${LB_DIR:-$REPO_ROOT/.cache/lb}
BIN=$REPO_ROOT/bin/orderpipe

log() { printf 'lb.sh: %s\n' "$*"; }
die() {
	printf 'lb.sh: error: %s\n' "$*" >&2
	exit 1
}

# alive NAME: the pid in LB_DIR/NAME.pid is running.
alive() { [[ -f $LB_DIR/$1.pid ]] && kill -0 "$(<"$LB_DIR/$1.pid")" 2>/dev/null; }

# wait_ready URL SECONDS: until URL answers 200.
wait_ready() {
	local url=$1 deadline=$((SECONDS + $2))
	until "$BIN" probe "$url" 2>/dev/null; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

cmd_up() {
	[[ -x $BIN ]] || die "$BIN missing: make build"
	local haproxy
	haproxy=$("$REPO_ROOT/scripts/ensure-haproxy.sh")
	mkdir -p "$LB_DIR"
	IFS=, read -r -a ports <<<"$EDGE_PORTS"
	((${#ports[@]} == 2)) || die "EDGE_PORTS must name two ports (deploy/haproxy.cfg has two servers)"
	local i=0
	for port in "${ports[@]}"; do
		i=$((i + 1))
		if alive "ingest-$i"; then
			log "ingest-$i already running (pid $(<"$LB_DIR/ingest-$i.pid"))"
			continue
		fi
		nohup "$BIN" ingest --brokers "$BROKERS" --listen "127.0.0.1:$port" --client-id "ingest-$i" \
			--data-dir "$LB_DIR/ingest-$i" >"$LB_DIR/ingest-$i.log" 2>&1 &
		echo $! >"$LB_DIR/ingest-$i.pid"
		log "ingest-$i on 127.0.0.1:$port (pid $!, log $LB_DIR/ingest-$i.log)"
	done
	for i in 1 2; do
		wait_ready "http://127.0.0.1:${ports[$((i - 1))]}/readyz" 120 ||
			die "ingest-$i not ready within 120s: $(tail -n 5 "$LB_DIR/ingest-$i.log")"
	done
	if ! alive haproxy; then
		# Two descriptors a connection: stay under this shell's limit.
		ORDERPIPE_LB_MAXCONN=$((($(ulimit -n) - 100) / 2)) \
			ORDERPIPE_LB_LISTEN=$LB_LISTEN ORDERPIPE_LB_STATS=$LB_STATS \
			ORDERPIPE_LB_EDGE_1=127.0.0.1:${ports[0]} ORDERPIPE_LB_EDGE_2=127.0.0.1:${ports[1]} \
			"$haproxy" -D -f "$REPO_ROOT/deploy/haproxy.cfg" -p "$LB_DIR/haproxy.pid"
	fi
	wait_ready "http://$LB_LISTEN/readyz" 30 || die "HAProxy on $LB_LISTEN does not reach a ready edge"
	log "ready: http://$LB_LISTEN (stats http://$LB_STATS/)"
}

cmd_down() {
	for name in haproxy ingest-1 ingest-2; do
		if alive "$name"; then
			local pid
			pid=$(<"$LB_DIR/$name.pid")
			kill -TERM "$pid"
			for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
			kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
			log "stopped $name (pid $pid)"
		fi
		rm -f "$LB_DIR/$name.pid"
	done
}

cmd_status() {
	local ok=0
	for name in haproxy ingest-1 ingest-2; do
		if alive "$name"; then echo "$name: running (pid $(<"$LB_DIR/$name.pid"))"; else echo "$name: not running"; ok=1; fi
	done
	return $ok
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) die "usage: scripts/lb.sh up | down | status" ;;
esac

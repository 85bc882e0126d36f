#!/usr/bin/env bash
# A replicated PostgreSQL on this machine for local use: one etcd member
# and two Patroni members (primary and streaming standby) on loopback,
# configured from deploy/patroni.yml, run as the postgres user (initdb,
# postgres and Patroni refuse root). The sink's URL is printed: a
# multi-host URL that always finds the primary.
#
# Usage: scripts/pgha.sh up | down | status
#
# Environment (defaults in brackets):
#   PGHA_DIR    data, configs, pid files and logs [$repo/.cache/pgha]
#   PGHA_PORTS  the members' Postgres ports [5441,5442]
#   PGHA_REST   the members' Patroni REST ports [8011,8012]
#   PGHA_ETCD   etcd's client and peer ports [2479,2480]
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGHA_DIR=${PGHA_DIR:-$REPO_ROOT/.cache/pgha}
IFS=, read -r -a pg_ports <<<"${PGHA_PORTS:-5441,5442}"
IFS=, read -r -a rest_ports <<<"${PGHA_REST:-8011,8012}"
IFS=, read -r etcd_client etcd_peer <<<"${PGHA_ETCD:-2479,2480}"

log() { printf 'pgha.sh: %s\n' "$*"; }
die() {
	printf 'pgha.sh: error: %s\n' "$*" >&2
	exit 1
}
alive() { [[ -f $PGHA_DIR/$1.pid ]] && kill -0 "$(<"$PGHA_DIR/$1.pid")" 2>/dev/null; }
as_postgres() {
	if [[ $(id -u) -eq 0 ]]; then su postgres -s /bin/bash -c "$1"; else bash -c "$1"; fi
}

url() {
	echo "postgres://postgres@127.0.0.1:${pg_ports[0]},127.0.0.1:${pg_ports[1]}/postgres?sslmode=disable&target_session_attrs=read-write"
}

cmd_up() {
	local patroni bindir
	patroni=$("$REPO_ROOT/scripts/ensure-patroni.sh")
	bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	mkdir -p "$PGHA_DIR"
	[[ $(id -u) -ne 0 ]] || chown postgres: "$PGHA_DIR"
	if ! alive etcd; then
		as_postgres "nohup etcd --name e1 --data-dir '$PGHA_DIR/etcd' \
			--listen-client-urls http://127.0.0.1:$etcd_client --advertise-client-urls http://127.0.0.1:$etcd_client \
			--listen-peer-urls http://127.0.0.1:$etcd_peer --initial-advertise-peer-urls http://127.0.0.1:$etcd_peer \
			--initial-cluster e1=http://127.0.0.1:$etcd_peer >'$PGHA_DIR/etcd.log' 2>&1 & echo \$! >'$PGHA_DIR/etcd.pid'"
		log "etcd on 127.0.0.1:$etcd_client (log $PGHA_DIR/etcd.log)"
	fi
	for i in 0 1; do
		local name=pg-$((i + 1)) dir=$PGHA_DIR/pg-$((i + 1))
		alive "$name" && continue
		as_postgres "mkdir -p '$dir' && chmod 700 '$dir'"
		PGHA_NAME=$name PGHA_REST_PORT=${rest_ports[$i]} PGHA_PG_PORT=${pg_ports[$i]} PGHA_DIR=$dir \
			PGHA_BIN_DIR=$bindir PGHA_ETCD=127.0.0.1:$etcd_client \
			envsubst <"$REPO_ROOT/deploy/patroni.yml" >"$dir.yml"
		[[ $(id -u) -ne 0 ]] || chown postgres: "$dir.yml"
		# One command in the background, so that \$! is Patroni's own pid.
		as_postgres "cd '$dir' || exit 1; nohup '$patroni' '$dir.yml' >'$dir.log' 2>&1 & echo \$! >'$PGHA_DIR/$name.pid'"
		log "$name: Postgres 127.0.0.1:${pg_ports[$i]}, Patroni REST 127.0.0.1:${rest_ports[$i]} (log $dir.log)"
	done
	local deadline=$((SECONDS + 120))
	until patronictl -c "$PGHA_DIR/pg-1.yml" list 2>/dev/null | grep -Eq 'Replica +\| +(running|streaming) '; do
		((SECONDS < deadline)) || die "no streaming standby within 120s: $(tail -n 5 "$PGHA_DIR/pg-1.log")"
		sleep 1
	done
	patronictl -c "$PGHA_DIR/pg-1.yml" list
	log "sink URL: $(url)"
}

cmd_down() {
	for name in pg-2 pg-1 etcd; do
		if alive "$name"; then
			kill "$(<"$PGHA_DIR/$name.pid")"
			log "stopped $name"
		fi
		rm -f "$PGHA_DIR/$name.pid"
	done
}

cmd_status() {
	[[ -f $PGHA_DIR/pg-1.yml ]] || die "not set up: scripts/pgha.sh up"
	patronictl -c "$PGHA_DIR/pg-1.yml" list
	log "sink URL: $(url)"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) die "usage: scripts/pgha.sh up | down | status" ;;
esac

#!/usr/bin/env bash
# Prints the path of Patroni, installing Debian's patroni and etcd-server
# packages when Patroni or etcd is missing (as ensure-postgres.sh does for
# PostgreSQL). Used by make test and the failover tests.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if ! command -v patroni >/dev/null || ! command -v etcd >/dev/null || ! command -v patronictl >/dev/null; then
	"$here/apt-install.sh" patroni etcd-server etcd-client >&2
fi
command -v patroni

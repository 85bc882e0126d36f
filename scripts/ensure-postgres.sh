#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries are installed, installing
# Debian's package when they are not (as root, or through sudo). orderpipe
# starts its own throwaway servers from them (internal/pglocal); nothing is
# configured or started here. Prints the directory of the binaries.
set -euo pipefail

# find_initdb prints the path of initdb: on PATH, else the newest
# /usr/lib/postgresql/*/bin (Debian keeps the server binaries off PATH).
find_initdb() {
	if command -v initdb 2>/dev/null; then
		return 0
	fi
	local bins=(/usr/lib/postgresql/*/bin/initdb)
	[[ -x ${bins[0]} ]] || return 1
	printf '%s\n' "${bins[@]}" | sort -V | tail -n 1
}

if ! initdb=$(find_initdb); then
	echo "initdb not found; installing PostgreSQL from Debian's packages" >&2
	# The package may create and start a "main" cluster on 5432; harmless,
	# orderpipe's servers pick free ports of their own.
	"$(dirname "$0")/apt-install.sh" postgresql
	initdb=$(find_initdb) || { echo "initdb still not found after install" >&2; exit 1; }
fi
dirname "$(readlink -f "$initdb")"

#!/usr/bin/env bash
# Makes sure HAProxy is installed, installing Debian's package when it is
# not (as root, or through sudo). orderpipe's load-balancer tests and
# scripts/lb.sh start their own HAProxy from it with deploy/haproxy.cfg;
# nothing is configured or started here. Prints the path of the binary.
set -euo pipefail

find_haproxy() { command -v haproxy 2>/dev/null || { [[ -x /usr/sbin/haproxy ]] && echo /usr/sbin/haproxy; }; }

if ! bin=$(find_haproxy); then
	echo "haproxy not found; installing it from Debian's packages" >&2
	"$(dirname "$0")/apt-install.sh" haproxy
	bin=$(find_haproxy) || { echo "haproxy still not found after install" >&2; exit 1; }
fi
echo "$bin"

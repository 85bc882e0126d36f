#!/usr/bin/env bash
# apt-install.sh PACKAGE...: installs Debian packages, as root or through
# sudo, without starting their services (nothing runs an init here, and
# orderpipe's tests start their own processes on ports of their own). The
# ensure-*.sh scripts call it when what they look for is missing.
set -euo pipefail
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
$sudo apt-get update >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$@" >&2

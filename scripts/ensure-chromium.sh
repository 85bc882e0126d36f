#!/usr/bin/env bash
# Makes sure a headless-capable Chromium is installed, installing Debian's
# chromium package when it is not (as root, or through sudo). The dashboard
# test (internal/dashboard) drives it with chromedp; nothing is downloaded
# besides the distribution's package. Prints the path of the binary.
set -euo pipefail

find_chromium() {
	local c
	for c in "${ORDERPIPE_CHROMIUM:-}" chromium chromium-browser google-chrome-stable google-chrome; do
		[[ -n $c ]] && command -v "$c" 2>/dev/null && return 0
	done
	return 1
}

if ! bin=$(find_chromium); then
	echo "chromium not found; installing it from Debian's packages" >&2
	"$(dirname "$0")/apt-install.sh" chromium
	bin=$(find_chromium) || { echo "chromium still not found after install" >&2; exit 1; }
fi
echo "$bin"

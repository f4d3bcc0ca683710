#!/usr/bin/env bash
# Installs the external tools relock's tests drive, if they are missing.
# Idempotent and quiet when everything is there; needs root (or sudo) to
# install. Used by `make test`, so by .ci/run on a fresh machine.
set -euo pipefail

need_apt=()
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)

if [ ${#need_apt[@]} -gt 0 ]; then
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
			echo "deps: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
			exit 0 # tests that need them skip outside CI
		fi
	fi
	echo "deps: installing ${need_apt[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq >/dev/null
	$SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
	# The Debian package starts a redis-server on 6379; tests start their own.
	if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
	$SUDO service redis-server stop >/dev/null 2>&1 || true
fi

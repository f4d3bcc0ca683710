#!/usr/bin/env bash
# Installs the external tools and client libraries relock's tests drive, if
# they are missing: redis-cli and redis-benchmark (redis-tools),
# redis-server, redis-py for Debian's /usr/bin/python3 (python3-redis),
# Node.js and npm, the pinned Node packages of examples/node (`npm ci`),
# and ip(8) (iproute2). Idempotent and quiet when everything is there;
# needs root (or sudo) to install Debian packages. Used by `make test`, so by .ci/run on a
# fresh machine. Under CI=true a failed install fails; elsewhere it only
# warns, and the tests that need the missing piece skip.
set -euo pipefail
cd "$(dirname "$0")/.."

warn_or_fail() {
	echo "deps: $*" >&2
	if [ "${CI:-}" = "true" ]; then exit 1; fi
}

need_apt=()
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The examples and compatibility tests run Debian's python3 (a pyenv or venv
# python3 earlier on PATH does not see python3-redis).
/usr/bin/python3 -c 'import redis' >/dev/null 2>&1 || need_apt+=(python3-redis)
# Node.js may come from elsewhere (nodesource, nvm): install Debian's only
# when there is none.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The network-partition test (integration/cluster_partition_linux_test.go)
# links namespaces with ip(8); unshare and nsenter are util-linux, always there.
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)

if [ ${#need_apt[@]} -gt 0 ]; then
	# Deduplicate (redis-tools may be listed twice).
	mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then SUDO="sudo -n"; else
			echo "deps: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
			need_apt=() # tests that need them skip outside CI
		fi
	fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
	echo "deps: installing ${need_apt[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq >/dev/null
	$SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
	# The Debian package starts a redis-server on 6379; tests start their own.
	if [[ " ${need_apt[*]} " == *" redis-server "* ]]; then
		if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
		$SUDO service redis-server stop >/dev/null 2>&1 || true
	fi
fi

# The Node examples' packages, at the versions package-lock.json pins. `npm
# ci` again when the lock file changed since the last install.
node_dir=examples/node
if [ -f "$node_dir/package-lock.json" ] && command -v npm >/dev/null 2>&1; then
	if [ ! -d "$node_dir/node_modules" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
		echo "deps: npm ci in $node_dir" >&2
		if ! (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
			warn_or_fail "npm ci in $node_dir failed"
		fi
	fi
fi

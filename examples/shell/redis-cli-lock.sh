#!/bin/sh
# A lock from a shell script with nothing but redis-cli.
#
#   RELOCK_ADDR=127.0.0.1:6380 ./redis-cli-lock.sh
#
# Each redis-cli invocation is a connection of its own, and relock releases
# a hold when its connection closes. So the lock is taken DETACHed (which
# needs a TTL), kept with RENEW between steps, and released with UNLOCK and
# its key at the end -- by a trap, so a failing step releases it too. If the
# script is killed outright, the TTL releases it.
set -eu

addr=${RELOCK_ADDR:-127.0.0.1:6380}
host=${addr%:*}
port=${addr##*:}
# -e: exit 1 on an error reply (NOTHELD ...); without it redis-cli exits 0.
cli() { redis-cli -h "$host" -p "$port" -e "$@"; }

# Wait in the server's queue up to DEPLOY_WAIT_MS (default 10 s). A nil
# reply -- the wait ran out -- prints an empty line.
key=$(cli LOCK deploy TTL 30000 WAIT "${DEPLOY_WAIT_MS:-10000}" DETACH)
if [ -z "$key" ]; then
	echo "deploy: busy, giving up" >&2
	exit 1
fi
trap 'cli UNLOCK deploy "$key" >/dev/null || true' EXIT
echo "deploy: locked with fence ${key%%-*}"

for step in build push migrate; do
	echo "deploy: $step"
	# ... the real step ...
	# Extend the lock for the next step; NOTHELD means it was lost (expired,
	# FORCEUNLOCK): stop before doing more.
	if ! cli RENEW deploy "$key" >/dev/null; then
		echo "deploy: lock lost, stopping" >&2
		exit 1
	fi
done
echo "deploy: done"

#!/bin/sh
# A cron job that must never run twice at once, on any number of machines:
#
#   */5 * * * *  RELOCK_ADDR=locks.internal:6380 /opt/jobs/cron-job.sh
#
# The script re-runs itself under `relock run` (like the flock(1) idiom):
# relock takes the lock jobs:report, runs the command with RELOCK_NAME,
# RELOCK_KEY and RELOCK_FENCE in its environment, renews the lock every
# third of --ttl, kills the command if the lock is lost (exit 75), releases
# the lock when the command exits, and exits with the command's status.
#
# --nonblock: if the previous run still holds the lock, skip this one at
# once ("lock ... is busy" on stderr); --conflict-exit-code 0 keeps cron
# from reporting the skip as a failure.
set -eu

if [ "${1:-}" != "--locked" ]; then
	exec relock run --nonblock --conflict-exit-code 0 --ttl 30s jobs:report -- "$0" --locked
fi

# From here on the lock is held. Hand the fence to whatever you write, so
# that a run that lost the lock can be refused there.
echo "report: running as $RELOCK_NAME with fence $RELOCK_FENCE"
# ... the real work ...
echo "report: done"

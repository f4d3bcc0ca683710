#!/usr/bin/env bash
# `make bench`: relock and Redis side by side, in one run, on this machine.
# Starts redis-server (Debian package) and relock on loopback ports, pins
# the servers to core 0 and the load generator (`relock bench`) to core 1
# when there are two or more cores, runs the matrix of the performance targets (README, Benchmarks), and writes
# bench/results.md and bench/results.json; then the cluster scenario
# (below) and the stall scenario (relock only), into
# bench/results-stall.md and .json. Bounded: about 8 minutes (the first
# time also a few minutes of building etcd).
#
# `bench/run.sh cluster` (`make bench-cluster`) runs only the cluster
# scenario (the cluster targets; about 3 minutes, needs only the Go
# module proxy): a 3-node relock cluster and a 3-node etcd 3.6 cluster side
# by side, all six servers on core 0 with fsync on — cycles through each
# leader, contended handoffs, and the failover time over BENCH_CLUSTER_KILLS
# kill -9s of each leader — into bench/results-cluster.md and .json.
#
# `bench/run.sh stall` (`make bench-stall`) runs only the stall scenario
# (about a minute; needs no Redis): each attack of the no-stall target on
# a fresh relock while another connection PINGs every millisecond.
set -euo pipefail
cd "$(dirname "$0")/.."

ONLY=${1:-all}
case $ONLY in all | redis | stall | cluster) ;; *) echo "usage: bench/run.sh [redis|stall|cluster]" >&2; exit 2 ;; esac
DUR=${BENCH_DURATION:-5s}
LOCKS=${BENCH_LOCKS:-1000000}
STALL_DUR=${BENCH_STALL_DURATION:-3s}
STALL_LOCKS=${BENCH_STALL_LOCKS:-1000000}
STALL_EXPIRING=${BENCH_STALL_EXPIRING:-300000}
REDIS_PORT=${BENCH_REDIS_PORT:-16379}
RELOCK_PORT=${BENCH_RELOCK_PORT:-16380}
TMP=bench/tmp
OUT=$TMP/results.jsonl
STALL_OUT=$TMP/stall.jsonl
CLUSTER_DUR=${BENCH_CLUSTER_DURATION:-5s}
CLUSTER_KILLS=${BENCH_CLUSTER_KILLS:-10}
CLUSTER_OUT=$TMP/cluster.jsonl

if [ "$ONLY" = all ] || [ "$ONLY" = redis ]; then
	scripts/deps.sh
	command -v redis-server >/dev/null || { echo "bench: redis-server is required" >&2; exit 1; }
fi
go build -o bin/relock ./cmd/relock
rm -rf "$TMP"; mkdir -p "$TMP/redis" "$TMP/relock" "$TMP/cluster"

SRV=(); CLI=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
	SRV=(taskset -c 0); CLI=(taskset -c 1)
fi

pids=(); RL_PID=(); ET_PID=() # RL_PID, ET_PID: the cluster scenario's live nodes
cleanup() {
	for p in "${pids[@]:-}" "${RL_PID[@]:-}" "${ET_PID[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

wait_port() { # wait until a server answers PING, if only with NOAUTH (bounded: 10 s)
	local line
	for _ in $(seq 1 200); do
		if exec 3<>"/dev/tcp/127.0.0.1/$1"; then
			printf 'PING\r\n' >&3
			line=""; read -r -t 1 line <&3 || true
			exec 3<&- 3>&-
			[[ $line == +PONG* || $line == -NOAUTH* ]] && return 0
		fi 2>/dev/null
		sleep 0.05
	done
	echo "bench: server on port $1 did not start" >&2; exit 1
}
start_redis() {
	"${SRV[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --dir "$PWD/$TMP/redis" "$@" >"$TMP/redis.log" 2>&1 &
	pids+=($!); REDIS_PID=$!; wait_port "$REDIS_PORT"
}
start_relock() {
	"${SRV[@]}" bin/relock server --listen "127.0.0.1:$RELOCK_PORT" --log-level warn "$@" >"$TMP/relock.log" 2>&1 &
	pids+=($!); RELOCK_PID=$!; wait_port "$RELOCK_PORT"
}
stop_all() { kill "$REDIS_PID" "$RELOCK_PID" 2>/dev/null || true; wait "$REDIS_PID" "$RELOCK_PID" 2>/dev/null || true; }
stop_relock() { kill "$RELOCK_PID" 2>/dev/null || true; wait "$RELOCK_PID" 2>/dev/null || true; }
run() { # label target port args...
	local label=$1 target=$2 port=$3; shift 3
	echo "bench: $label ($target)" >&2
	"${CLI[@]}" bin/relock bench -q --json --label "$label" --target "$target" --addr "127.0.0.1:$port" "$@" >>"$OUT"
}
both() { # label args...
	local label=$1; shift
	run "$label" redis "$REDIS_PORT" "$@"
	run "$label" relock "$RELOCK_PORT" "$@"
}

side_by_side() {
	# In memory: cycles, the PING ceiling, contention.
	start_redis --appendonly no
	start_relock
	for c in 1 16 64 256; do both "cycle c=$c" --mode cycle -c "$c" -d "$DUR"; done
	for c in 1 16 64 256; do run "ping c=$c" relock "$RELOCK_PORT" --mode ping -c "$c" -d "$DUR"; done
	for c in 16 64; do both "contend c=$c" --mode contend -c "$c" -d "$DUR"; done
	# Shared holds (relock only; Redis has none): LOCK … SHARED cycles next
	# to the exclusive "cycle c=16", and readers and writers on one lock.
	run "shared cycle c=16" relock "$RELOCK_PORT" --mode cycle --shared -c 16 -d "$DUR"
	run "rw c=16: 90 % readers" relock "$RELOCK_PORT" --mode rw -c 16 -d "$DUR"
	# Multi-locks (relock only): MLOCK of 2, 8 and 32 names of a connection's
	# own, each released by its own UNLOCK, next to the single "cycle c=16";
	# and MLOCKs of the same 2 names, half in the opposite order, which must
	# never stall (a deadlock would).
	for n in 2 8 32; do run "mlock c=16 names=$n" relock "$RELOCK_PORT" --mode mlock --names "$n" -c 16 -d "$DUR"; done
	run "mlock-contend c=16" relock "$RELOCK_PORT" --mode mlock-contend --names 2 -c 16 -d "$DUR"
	# Lock events: what 100 pattern subscribers cost the cycle (idle ones:
	# their patterns match no lock of the run; watching ones: 16 of them
	# get every event of one connection's lock), and how soon an event
	# reaches its subscriber.
	# (Each against a run without subscribers just before it: on a shared
	# machine two runs minutes apart differ more than subscribers cost.)
	run "subscribed base: cycle c=16, no subscribers" relock "$RELOCK_PORT" --mode cycle -c 16 -d "$DUR"
	run "subscribed cycle c=16: 100 idle pattern subscribers" relock "$RELOCK_PORT" --mode cycle -c 16 -d "$DUR" \
		--subscribers 100 --subscribe-pattern 'idle:{i}:*'
	run "subscribed base: cycle c=16, no subscribers" relock "$RELOCK_PORT" --mode cycle -c 16 -d "$DUR"
	run "subscribed cycle c=16: 100 pattern subscribers, 16 watching the cycled locks" relock "$RELOCK_PORT" --mode cycle -c 16 -d "$DUR" \
		--subscribers 100
	run "events: LOCK/UNLOCK to its event at the subscriber" relock "$RELOCK_PORT" --mode events -d "$DUR"
	stop_all

	# Memory per held lock, each on a fresh server.
	start_redis --appendonly no
	start_relock
	both "hold $LOCKS" --mode hold --locks "$LOCKS" -c 8 --ttl 1h
	stop_all

	# Durability: every grant on disk before its reply.
	start_redis --appendonly yes --appendfsync always
	start_relock --data-dir "$TMP/relock" --fsync always
	for c in 1 16 64; do both "fsync-always cycle c=$c" --mode cycle -c "$c" -d "$DUR"; done
	stop_all

	go run ./bench/report -in "$OUT" -md bench/results.md -json bench/results.json \
		-redis-version "$(redis-server --version)"
	echo "bench: wrote bench/results.md and bench/results.json" >&2
}

# No operation stalls others (the no-stall target): each attack on a fresh
# relock, measured by a bystander connection sending one PING every 1 ms
# (pipelined, so a stall delays every PING that falls in it). Every attack
# runs for STALL_DUR, and the round trip in flight then finishes (at most
# 60 s) before its server is stopped.
stall() { # label args...
	local label=$1; shift
	echo "bench: $label (relock)" >&2
	"${CLI[@]}" bin/relock bench -q --json --label "$label" --addr "127.0.0.1:$RELOCK_PORT" \
		-d "$STALL_DUR" --server-log "$TMP/relock.log" "$@" >>"$STALL_OUT"
}
stall_scenario() {
	start_relock
	stall "stall: $STALL_LOCKS held, LOCKS pages" --mode stall-locks --locks "$STALL_LOCKS" -c 8 --ttl 1h -P 20
	stop_relock
	start_relock
	stall "stall: mass expiry" --mode stall-expiry --locks "$STALL_EXPIRING" -c 8 --ttl 4s
	stop_relock
	start_relock --shards 4096
	stall "stall: mass expiry, --shards 4096" --mode stall-expiry --locks "$STALL_EXPIRING" -c 8 --ttl 4s
	stop_relock
	start_relock --requirepass benchpass
	stall "stall: AUTH flood, --requirepass" --mode stall-auth --password benchpass -c 4 -P 40
	stop_relock
	# bcrypt cost 10: a few attempts are enough (each costs ~0.1–0.2 s of CPU here).
	start_relock --users-file bench/stall-users.yaml
	stall "stall: AUTH flood, bcrypt users-file" --mode stall-auth --password benchpass -c 2 -P 5
	stop_relock
	start_relock --requirepass benchpass
	stall "stall: pre-auth partial requests" --mode stall-preauth --password benchpass -c 150
	stop_relock
	start_relock --requirepass benchpass
	stall "stall: pre-auth unread replies" --mode stall-unread --password benchpass -c 150
	stop_relock
	start_relock
	stall "stall: costly requests" --mode stall-costly -P 4
	stop_relock
	go run ./bench/report -stall -in "$STALL_OUT" -md bench/results-stall.md -json bench/results-stall.json
	echo "bench: wrote bench/results-stall.md and bench/results-stall.json" >&2
}

# The cluster scenario (the cluster targets): bench/cluster.sh.
. bench/cluster.sh

if [ "$ONLY" = all ] || [ "$ONLY" = redis ]; then side_by_side; fi
if [ "$ONLY" = redis ]; then exit 0; fi
if [ "$ONLY" = cluster ]; then cluster_scenario; exit 0; fi
if [ "$ONLY" = all ]; then cluster_scenario; fi
stall_scenario

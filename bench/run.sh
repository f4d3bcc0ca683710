#!/usr/bin/env bash
# `make bench`: relock and Redis side by side, in one run, on this machine.
# Starts redis-server (Debian package) and relock on loopback ports, pins
# the servers to core 0 and the load generator (`relock bench`) to core 1
# when there are two or more cores, runs the matrix of SPEC §6, and writes
# bench/results.md and bench/results.json. Bounded: about 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${BENCH_DURATION:-5s}
LOCKS=${BENCH_LOCKS:-1000000}
REDIS_PORT=${BENCH_REDIS_PORT:-16379}
RELOCK_PORT=${BENCH_RELOCK_PORT:-16380}
TMP=bench/tmp
OUT=$TMP/results.jsonl

scripts/deps.sh
command -v redis-server >/dev/null || { echo "bench: redis-server is required" >&2; exit 1; }
go build -o bin/relock ./cmd/relock
rm -rf "$TMP"; mkdir -p "$TMP/redis" "$TMP/relock"

SRV=(); CLI=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
	SRV=(taskset -c 0); CLI=(taskset -c 1)
fi

pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_port() { # wait until a server answers PING (bounded: 10 s)
	for _ in $(seq 1 200); do
		redis-cli -p "$1" PING >/dev/null 2>&1 && return 0
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

# In memory: cycles, the PING ceiling, contention.
start_redis --appendonly no
start_relock
for c in 1 16 64 256; do both "cycle c=$c" --mode cycle -c "$c" -d "$DUR"; done
for c in 1 16 64 256; do run "ping c=$c" relock "$RELOCK_PORT" --mode ping -c "$c" -d "$DUR"; done
for c in 16 64; do both "contend c=$c" --mode contend -c "$c" -d "$DUR"; done
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

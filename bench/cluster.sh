# shellcheck shell=bash
# The cluster scenario of `make bench` / `make bench-cluster` (the cluster
# targets), sourced by bench/run.sh (which provides SRV, CLI, TMP,
# wait_port and the cleanup trap).
#
# A 3-node relock cluster (`relock server --node-id …`, hashicorp/raft with
# raft-boltdb: fsync on every append) and a 3-node etcd 3.6 cluster (built
# here from go.etcd.io/etcd/server/v3, pinned in bench/cluster/go.mod; fsync
# on, its default) run side by side on loopback, all six servers on core 0
# and the load generators on core 1 (with ≥ 2 cores). Measured:
#   - cycles c=1/16/64: LOCK+UNLOCK through relock's leader (`relock bench
#     --mode cycle`) vs etcd's concurrency.Mutex Lock+Unlock through etcd's
#     leader (`clusterbench etcd`), each connection its own name (and, for
#     etcd, its own client and session);
#   - contend c=16: 16 clients on one lock (relock: LOCK blocks on the
#     server; etcd: Mutex on one key);
#   - failover: CLUSTER_KILLS times each, kill -9 of the leader and the time
#     until a client retrying a lock of a fresh name against the survivors
#     (following -MOVED; etcd: a Mutex Lock on the survivors' endpoints,
#     WithRequireLeader) is granted one — it starts an attempt every 10 ms,
#     each bounded by CLUSTER_ATTEMPT, without waiting for the previous (an
#     etcd request forwarded to the dead leader hangs until its timeout);
#     the killed node is restarted and the cluster settles before the next
#     kill. Kills alternate between relock and etcd.
# Every wait is bounded (leader 30 s, a failover 30 s, a restart 30 s).

RL_PORTS=(16391 16392 16393); RL_RAFT=(17391 17392 17393)
ET_PORTS=(23791 23792 23793); ET_PEER=(23801 23802 23803)
CB=bin/clusterbench
CLUSTER_ATTEMPT=${BENCH_CLUSTER_ATTEMPT:-1s}

cluster_build() {
	echo "bench: building etcd $(sed -n 's/^\tgo.etcd.io\/etcd\/server\/v3 //p' bench/cluster/go.mod) and clusterbench (bench/cluster)" >&2
	(cd bench/cluster && go build -o ../../bin/etcd ./etcd && go build -o ../../bin/clusterbench ./clusterbench)
}

rl_addr() { echo "127.0.0.1:${RL_PORTS[$1]}"; }
et_addr() { echo "127.0.0.1:${ET_PORTS[$1]}"; }
join_by() { local IFS=,; echo "$*"; }

start_rl_node() { # index (0-2); the same flags on a restart (--bootstrap is ignored once the log exists)
	local i=$1 peers=() j
	for j in 0 1 2; do peers+=("n$((j + 1))=127.0.0.1:${RL_RAFT[$j]}"); done
	"${SRV[@]}" bin/relock server --listen "$(rl_addr "$i")" --log-level warn \
		--node-id "n$((i + 1))" --raft-listen "127.0.0.1:${RL_RAFT[$i]}" --raft-dir "$TMP/cluster/relock-n$((i + 1))" \
		--raft-peers "$(join_by "${peers[@]}")" --bootstrap >>"$TMP/cluster/relock-n$((i + 1)).log" 2>&1 &
	RL_PID[i]=$!; disown "$!" # no "Killed" line from bash at its kill -9
	wait_port "${RL_PORTS[$i]}"
}

start_et_node() { # index (0-2); on a restart the data dir is reused (--initial-cluster-state is then ignored)
	local i=$1 init=() j
	for j in 0 1 2; do init+=("e$((j + 1))=http://127.0.0.1:${ET_PEER[$j]}"); done
	"${SRV[@]}" bin/etcd --name "e$((i + 1))" --data-dir "$TMP/cluster/etcd-e$((i + 1))" \
		--listen-client-urls "http://$(et_addr "$i")" --advertise-client-urls "http://$(et_addr "$i")" \
		--listen-peer-urls "http://127.0.0.1:${ET_PEER[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${ET_PEER[$i]}" \
		--initial-cluster "$(join_by "${init[@]}")" --initial-cluster-state new --initial-cluster-token relock-bench \
		--log-level error >>"$TMP/cluster/etcd-e$((i + 1)).log" 2>&1 &
	ET_PID[i]=$!; disown "$!"
}

gone() { # pid: wait (at most 10 s) until the process has exited
	local _
	for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
	echo "bench: pid $1 did not exit" >&2; return 1
}

# index_of port ports... → the node's index
index_of() {
	local port=${1##*:} i=0 p; shift
	for p in "$@"; do [ "$p" = "$port" ] && { echo "$i"; return 0; }; i=$((i + 1)); done
	echo "bench: $port is not a node" >&2; return 1
}

rl_all() { local a=() i; for i in 0 1 2; do a+=("$(rl_addr "$i")"); done; join_by "${a[@]}"; }
et_all() { local a=() i; for i in 0 1 2; do a+=("$(et_addr "$i")"); done; join_by "${a[@]}"; }

crun() { # label → a relock bench run through the relock leader, CPU of all nodes added
	local label=$1; shift
	echo "bench: $label (relock cluster, leader $RL_LEADER)" >&2
	"${CLI[@]}" "$CB" exec --pids "$(join_by "${RL_PID[@]}")" -- \
		bin/relock bench -q --json --label "$label" --target relock --addr "$RL_LEADER" "$@" >>"$CLUSTER_OUT"
}
erun() { # label mode c
	echo "bench: $1 (etcd cluster, leader $ET_LEADER)" >&2
	local li; li=$(index_of "$ET_LEADER" "${ET_PORTS[@]}")
	"${CLI[@]}" "$CB" etcd --label "$1" --endpoints "$ET_LEADER" --mode "$2" -c "$3" -d "$CLUSTER_DUR" \
		--pids "$(join_by "${ET_PID[@]}")" --leader-pid "${ET_PID[$li]}" >>"$CLUSTER_OUT"
}

# kill_leader target k → one failover measurement, then the node's restart
kill_leader() {
	local target=$1 k=$2 leader li pid surv tries rc i
	for tries in 1 2 3 4 5; do
		surv=()
		if [ "$target" = relock ]; then
			leader=$("$CB" leader --target relock --addrs "$(rl_all)"); li=$(index_of "$leader" "${RL_PORTS[@]}"); pid=${RL_PID[$li]}
			for i in 0 1 2; do [ "$i" != "$li" ] && surv+=("$(rl_addr "$i")"); done
		else
			leader=$("$CB" leader --target etcd --addrs "$(et_all)"); li=$(index_of "$leader" "${ET_PORTS[@]}"); pid=${ET_PID[$li]}
			for i in 0 1 2; do [ "$i" != "$li" ] && surv+=("$(et_addr "$i")"); done
		fi
		echo "bench: failover $k/$CLUSTER_KILLS ($target): kill -9 leader $leader (pid $pid)" >&2
		rc=0
		"${CLI[@]}" "$CB" failover --target "$target" --label "failover" --pid "$pid" --leader "$leader" \
			--survivors "$(join_by "${surv[@]}")" --attempt-timeout "$CLUSTER_ATTEMPT" >>"$CLUSTER_OUT" || rc=$?
		[ "$rc" = 3 ] || break # 3: leadership moved before the kill; look again
		sleep 1
	done
	[ "$rc" = 0 ] || echo "bench: failover $k ($target) measured nothing (exit status $rc)" >&2
	kill -9 "$pid" 2>/dev/null || true
	gone "$pid"
	if [ "$target" = relock ]; then
		start_rl_node "$li"
		"$CB" wait --target relock --addr "$(rl_addr "$li")"
	else
		start_et_node "$li"
		"$CB" wait --target etcd --addr "$(et_addr "$li")"
	fi
	sleep 2 # let the restarted node catch up before the next kill
}

cluster_scenario() {
	cluster_build
	rm -rf "$TMP/cluster" "$CLUSTER_OUT"; mkdir -p "$TMP/cluster"
	local load0 i c k
	load0=$(cut -d' ' -f1-3 /proc/loadavg)
	for i in 0 1 2; do start_rl_node "$i"; done
	for i in 0 1 2; do start_et_node "$i"; done
	RL_LEADER=$("$CB" leader --target relock --addrs "$(rl_all)")
	ET_LEADER=$("$CB" leader --target etcd --addrs "$(et_all)")

	for c in 1 16 64; do
		crun "cycle c=$c" --mode cycle -c "$c" -d "$CLUSTER_DUR"
		erun "cycle c=$c" cycle "$c"
	done
	crun "contend c=16" --mode contend -c 16 -d "$CLUSTER_DUR"
	erun "contend c=16" contend 16

	for k in $(seq 1 "$CLUSTER_KILLS"); do
		kill_leader relock "$k"
		kill_leader etcd "$k"
	done
	for i in 0 1 2; do kill "${RL_PID[$i]}" "${ET_PID[$i]}" 2>/dev/null || true; done
	for i in 0 1 2; do gone "${RL_PID[$i]}"; gone "${ET_PID[$i]}"; done
	RL_PID=(); ET_PID=()

	go run ./bench/report -cluster -in "$CLUSTER_OUT" -md bench/results-cluster.md -json bench/results-cluster.json \
		-etcd-version "$(bin/etcd --version | sed -n 's/^etcd Version: //p')" \
		-loadavg "$load0" -settings "$CLUSTER_DUR per run, $CLUSTER_KILLS kills of each leader, $CLUSTER_ATTEMPT per failover attempt"
	echo "bench: wrote bench/results-cluster.md and bench/results-cluster.json" >&2
}

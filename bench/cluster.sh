# shellcheck shell=bash
# The cluster scenario of `make bench` / `make bench-cluster` (the cluster
# targets), sourced by bench/run.sh (which provides SRV, CLI, TMP,
# wait_port and the cleanup trap).
#
# A 3-node relock cluster (`relock server --node-id …`, hashicorp/raft with
# raft-wal: fsync on every append) and a 3-node etcd 3.6 cluster (built
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
#     kill;
#   - failover with Raft mutual TLS: the same measurement on a second
#     3-node relock cluster whose nodes run with --raft-tls-cert,
#     --raft-tls-key and --raft-tls-ca (a throwaway CA and node
#     certificates made here with openssl, naming 127.0.0.1), started
#     after the throughput runs. Kills alternate between relock, etcd and
#     relock with mTLS, so that the three see the same load.
# Every wait is bounded (leader 30 s, a failover 30 s, a restart 30 s).

# relock nodes 0-2 form the plaintext cluster, 3-5 the Raft mTLS one
# (RL_PID holds both, so that bench/run.sh's cleanup stops them all).
RL_PORTS=(16391 16392 16393 16394 16395 16396); RL_RAFT=(17391 17392 17393 17394 17395 17396)
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

# rl_base index → the first node index of its cluster (0 or 3)
rl_base() { echo $(($1 / 3 * 3)); }
# rl_name index → its node name and directory, e.g. n2 or tls-n2
rl_name() { local n="n$(($1 % 3 + 1))"; [ "$1" -ge 3 ] && n="tls-$n"; echo "$n"; }

start_rl_node() { # index (0-5); the same flags on a restart (--bootstrap is ignored once the log exists)
	local i=$1 base peers=() j tls=() name
	base=$(rl_base "$i"); name=$(rl_name "$i")
	for j in 0 1 2; do peers+=("n$((j + 1))=127.0.0.1:${RL_RAFT[$((base + j))]}"); done
	if [ "$base" = 3 ]; then
		tls=(--raft-tls-cert "$TMP/cluster/tls/raft-n$((i - 2)).pem" --raft-tls-key "$TMP/cluster/tls/raft-n$((i - 2))-key.pem"
			--raft-tls-ca "$TMP/cluster/tls/ca.pem")
	fi
	"${SRV[@]}" bin/relock server --listen "$(rl_addr "$i")" --log-level warn \
		--node-id "n$((i % 3 + 1))" --raft-listen "127.0.0.1:${RL_RAFT[$i]}" --raft-dir "$TMP/cluster/relock-$name" \
		--raft-peers "$(join_by "${peers[@]}")" --bootstrap "${tls[@]}" >>"$TMP/cluster/relock-$name.log" 2>&1 &
	RL_PID[i]=$!; disown "$!" # no "Killed" line from bash at its kill -9
	wait_port "${RL_PORTS[$i]}"
}

# raft_certs: a throwaway CA and a certificate for each member of the mTLS
# cluster (P-256, valid for a day, naming 127.0.0.1, usable for both TLS
# server and client authentication, as every member both accepts and
# dials), in $TMP/cluster/tls.
raft_certs() {
	command -v openssl >/dev/null || { echo "bench: openssl is required for the Raft mTLS failover (apt-get install openssl)" >&2; exit 1; }
	local d="$TMP/cluster/tls" n
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
		-subj "/CN=relock bench raft CA" -keyout "$d/ca-key.pem" -out "$d/ca.pem" 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\nbasicConstraints=CA:FALSE\n' >"$d/member.ext"
	for n in 1 2 3; do
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=n$n" \
			-keyout "$d/raft-n$n-key.pem" -out "$d/raft-n$n.csr" 2>/dev/null
		openssl x509 -req -in "$d/raft-n$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
			-days 1 -extfile "$d/member.ext" -out "$d/raft-n$n.pem" 2>/dev/null
	done
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

rl_all() { local a=() i b=${1:-0}; for i in 0 1 2; do a+=("$(rl_addr $((b + i)))"); done; join_by "${a[@]}"; }
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

# kill_leader target k → one failover measurement, then the node's restart;
# target relock, relock-mtls (the Raft mTLS cluster) or etcd
kill_leader() {
	local target=$1 k=$2 leader li pid surv tries rc i base=0 label=failover
	[ "$target" = relock-mtls ] && { base=3; label="failover raft-mtls"; }
	for tries in 1 2 3 4 5; do
		surv=()
		if [ "$target" != etcd ]; then
			leader=$("$CB" leader --target relock --addrs "$(rl_all $base)"); li=$(index_of "$leader" "${RL_PORTS[@]}"); pid=${RL_PID[$li]}
			for i in 0 1 2; do [ "$((base + i))" != "$li" ] && surv+=("$(rl_addr $((base + i)))"); done
		else
			leader=$("$CB" leader --target etcd --addrs "$(et_all)"); li=$(index_of "$leader" "${ET_PORTS[@]}"); pid=${ET_PID[$li]}
			for i in 0 1 2; do [ "$i" != "$li" ] && surv+=("$(et_addr "$i")"); done
		fi
		echo "bench: failover $k/$CLUSTER_KILLS ($target): kill -9 leader $leader (pid $pid)" >&2
		rc=0
		"${CLI[@]}" "$CB" failover --target "${target%-mtls}" --label "$label" --pid "$pid" --leader "$leader" \
			--survivors "$(join_by "${surv[@]}")" --attempt-timeout "$CLUSTER_ATTEMPT" >>"$CLUSTER_OUT" || rc=$?
		[ "$rc" = 3 ] || break # 3: leadership moved before the kill; look again
		sleep 1
	done
	[ "$rc" = 0 ] || echo "bench: failover $k ($target) measured nothing (exit status $rc)" >&2
	kill -9 "$pid" 2>/dev/null || true
	gone "$pid"
	if [ "$target" != etcd ]; then
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

	# The Raft mTLS cluster, idle until its failovers.
	raft_certs
	for i in 3 4 5; do start_rl_node "$i"; done
	"$CB" leader --target relock --addrs "$(rl_all 3)" >/dev/null

	for k in $(seq 1 "$CLUSTER_KILLS"); do
		kill_leader relock "$k"
		kill_leader etcd "$k"
		kill_leader relock-mtls "$k"
	done
	for i in "${!RL_PID[@]}"; do kill "${RL_PID[$i]}" 2>/dev/null || true; done
	for i in 0 1 2; do kill "${ET_PID[$i]}" 2>/dev/null || true; done
	for i in "${!RL_PID[@]}"; do gone "${RL_PID[$i]}"; done
	for i in 0 1 2; do gone "${ET_PID[$i]}"; done
	RL_PID=(); ET_PID=()

	go run ./bench/report -cluster -in "$CLUSTER_OUT" -md bench/results-cluster.md -json bench/results-cluster.json \
		-etcd-version "$(bin/etcd --version | sed -n 's/^etcd Version: //p')" \
		-loadavg "$load0" -settings "$CLUSTER_DUR per run, $CLUSTER_KILLS kills of each leader, $CLUSTER_ATTEMPT per failover attempt"
	echo "bench: wrote bench/results-cluster.md and bench/results-cluster.json" >&2
}

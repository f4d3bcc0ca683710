#!/usr/bin/env bash
# One-command rerun: ./run.sh [ROUNDS]   (default 3). Alternates A/B, swaps order each round.
set -euo pipefail
cd "$(dirname "$0")"
ROUNDS=${1:-3}
go build -o bin/ ./cmd/...
df /tmp | tail -1
mkdir -p results
out=results/run-$(date +%Y%m%d-%H%M%S).txt
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then order="A B"; else order="B A"; fi
  for c in 1 16; do
    for v in $order; do
      printf 'round=%s ' "$r" | tee -a "$out"
      timeout 60 taskset -c 1 ./bin/bench -variant "$v" -c "$c" -dur 5s -warm 1s 2>/dev/null | grep "^variant=" | tee -a "$out" || echo "variant=$v c=$c FAILED" | tee -a "$out"
    done
  done
done
if pgrep -x anode || pgrep -x bnode; then echo LEFTOVER PROCESSES; else echo 'no leftover node processes'; fi
echo "results in $out"

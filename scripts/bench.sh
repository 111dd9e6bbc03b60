#!/usr/bin/env bash
# Standard benchmark of kompact-kv: starts local clusters of separate `kvstore start`
# processes on loopback from HOCON files, runs the standard workloads with
# `kvstore bench`, and prints a table (and the raw JSON lines to target/bench/).
#
# Usage: scripts/bench.sh [--duration 10s] [--warmup 2s] [--quick]
#   --quick   one short run per workload (smoke test of the script itself)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10s
WARMUP=2s
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --quick) DURATION=2s; WARMUP=1s; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cargo build --release -q -p kvstore
BIN=target/release/kvstore
OUT=target/bench
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_cluster NODES PARTITIONS -> sets ENDPOINT
start_cluster() {
    local nodes=$1 partitions=$2 i
    local ports=()
    for ((i = 0; i < nodes; i++)); do ports+=("$(free_port)"); done
    for ((i = 0; i < nodes; i++)); do
        cat > "$OUT/node$i.conf" <<CONF
kvstore {
  address = "127.0.0.1:${ports[$i]}"
  bootstrap-address = "127.0.0.1:${ports[0]}"
  boot-threshold = $nodes
  partitions = $partitions
  replication-degree = 3
}
CONF
        "$BIN" start --config "$OUT/node$i.conf" 2> "$OUT/node$i.log" &
        PIDS+=($!)
        disown $! # killed at the end; no job-control message
    done
    ENDPOINT="127.0.0.1:${ports[0]}"
    # Wait (bounded) until the cluster answers.
    local deadline=$((SECONDS + 30))
    until "$BIN" put bench-ready 1 --endpoint "$ENDPOINT" --timeout 1s 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            echo "cluster did not come up; see $OUT/node*.log" >&2
            exit 3
        fi
    done
}

run() {
    local label=$1 clients=$2 mix=$3
    local line
    line=$("$BIN" bench --endpoint "$ENDPOINT" --clients "$clients" --duration "$DURATION" \
        --warmup "$WARMUP" --keys 1000 --value-size 16 --mix "$mix" --timeout 5s)
    echo "{\"workload\":\"$label\",\"result\":$line}" >> "$RESULTS"
    python3 - "$label" "$clients" "$mix" "$line" <<'PY'
import json, sys
label, clients, mix, line = sys.argv[1:]
r = json.loads(line)
print(f"| {label:<22} | {clients:>7} | {mix:<18} | {r['ops_per_s']:>9.0f} | {r['p50_us']:>7} | {r['p99_us']:>7} | {r['p999_us']:>8} | {r['errors']+r['timeouts']:>6} |")
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "duration $DURATION per run after $WARMUP warm-up; 1,000 keys; 16-byte values; loopback"
echo
echo "| workload               | clients | mix                |     ops/s | p50 µs  | p99 µs  | p99.9 µs | errors |"
echo "|------------------------|---------|--------------------|-----------|---------|---------|----------|--------|"

start_cluster 3 1
for c in 1 16 64 256; do run "3 nodes, 1 partition" "$c" "get=1,put=1,cas=1"; done
run "3 nodes, 1 partition" 64 "get=90,put=5,cas=5"
cleanup

start_cluster 6 2
for c in 1 16 64 256; do run "6 nodes, 2 partitions" "$c" "get=1,put=1,cas=1"; done
run "6 nodes, 2 partitions" 64 "get=90,put=5,cas=5"
cleanup

echo
echo "raw results: $RESULTS"

#!/usr/bin/env bash
# redis-benchmark against the Redis gateway of a local three-node cluster, then the
# same command against one redis-server on the same machine, in the same run
# (docs/performance.md, "Redis clients"). redis-server is not replicated; the
# cluster writes every SET to three replicas through Sequence Paxos.
#
# Usage: scripts/redis-compare.sh            (N=200000 C=50 TESTS=set,get)
# Needs redis-tools and redis-server (Debian's packages).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
C=${C:-50}
TESTS=${TESTS:-set,get}

for tool in redis-benchmark redis-server; do
    command -v "$tool" >/dev/null || { echo "redis-compare: $tool is missing (apt-get install redis-tools redis-server)" >&2; exit 2; }
done
cargo build --release -q -p kvstore
bin=target/release/kvstore
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
boot=127.0.0.1:$(free_port)
for i in 1 2 3; do
    if [ "$i" = 1 ]; then addr=$boot; else addr=127.0.0.1:$(free_port); fi
    cat > "$dir/node$i.conf" <<CONF
kvstore {
  address = "$addr"
  bootstrap-address = "$boot"
  boot-threshold = 3
  partitions = 3
  replication-degree = 3
  resp-address = "127.0.0.1:0"
}
CONF
    "$bin" start --config "$dir/node$i.conf" --log-level warn 2> "$dir/node$i.log" &
    pids+=($!)
done
gw=""
for _ in $(seq 1 300); do
    gw=$(grep -ho 'serving the Redis protocol on [0-9.:]*' "$dir/node1.log" | awk '{print $NF}' || true)
    [ -n "$gw" ] && redis-cli -p "${gw##*:}" SET ready 1 2>/dev/null | grep -q OK && break
    sleep 0.1
done
[ -n "$gw" ] || { echo "redis-compare: the cluster did not start" >&2; cat "$dir"/node*.log >&2; exit 3; }

echo "== redis-benchmark -t $TESTS -n $N -c $C against the kompact-kv gateway ($gw; 3 nodes, 3 partitions, R = 3)"
redis-benchmark -p "${gw##*:}" -t "$TESTS" -n "$N" -c "$C" -q | tr '\r' '\n' | grep 'requests per second'

rport=$(free_port)
redis-server --port "$rport" --save '' --appendonly no --bind 127.0.0.1 > "$dir/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$rport" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
echo "== the same against redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$rport (one process, not replicated)"
redis-benchmark -p "$rport" -t "$TESTS" -n "$N" -c "$C" -q | tr '\r' '\n' | grep 'requests per second'

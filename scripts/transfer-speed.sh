#!/usr/bin/env bash
# State transfer speed: how fast a new replica gets a partition of a given size.
#
# Starts four `kvstore start` processes on loopback (boot-threshold 3, one partition,
# R = 3, membership.replace-after = 1s; the fourth joins as a spare), fills the
# partition with about --mb megabytes (1 KB values written by `kvstore bench`), kills
# one replica (SIGKILL) and waits until the spare has fetched the partition's state.
# Reports the fetch's bytes, seconds and MB/s from the spare's log, next to a
# reference measured in the same run: the same number of bytes sent over one bare
# loopback TCP connection in 256 KiB writes (python3). Bounded; removes what it
# started. Not part of CI (docs/membership.md, "Measured").
#
# Also reports the time from the kill to the spare running the partition's next
# epoch (R live replicas again). --replace-after sets membership.replace-after
# (default 1s here; the product's default is 30s).
#
# Usage: scripts/transfer-speed.sh [--mb 100] [--replace-after 1s] [--out DIR] [--bin PATH]
set -euo pipefail
cd "$(dirname "$0")/.."

mb=100
replace_after=1s
out=""
bin="${KVSTORE:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --mb) mb="$2"; shift 2 ;;
        --replace-after) replace_after="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
        *) echo "transfer-speed.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$out" ] || out="target/transfer-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
if [ -z "$bin" ]; then
    cargo build --release -q -p kvstore
    bin=target/release/kvstore
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for i in 1 2 3 4; do addr[$i]="127.0.0.1:$(free_port)"; done
seeds="\"${addr[1]}\", \"${addr[2]}\", \"${addr[3]}\", \"${addr[4]}\""

start_node() { # index
    local i=$1
    cat > "$out/node$i.conf" <<EOF
kvstore {
  cluster-name = "transfer"
  address = "${addr[$i]}"
  bootstrap-address = "${addr[1]}"
  boot-threshold = 3
  partitions = 1
  replication-degree = 3
  seeds = [$seeds]
  membership { replace-after = $replace_after }
}
EOF
    "$bin" start --config "$out/node$i.conf" --log-level info > /dev/null 2> "$out/node$i.log" &
    pids+=("$!")
    pid[$i]=$!
}

wait_log() { # file needle seconds
    local deadline=$(( SECONDS + $3 ))
    until grep -q "$2" "$1" 2>/dev/null; do
        if [ $SECONDS -ge "$deadline" ]; then
            echo "transfer-speed.sh: $1 did not log \"$2\" within $3 s" >&2; exit 3
        fi
        sleep 0.2
    done
}

echo "== four nodes: ${addr[*]:1} (the fourth a spare)"
for i in 1 2 3; do start_node "$i"; done
for i in 1 2 3; do wait_log "$out/node$i.log" "replicas started" 30; done
start_node 4
wait_log "$out/node4.log" "member of the cluster" 30

keys=$(( mb * 1000 ))
echo "== filling about $mb MB: $((keys * 4)) puts of 1000-byte values on $keys keys"
"$bin" bench --cluster transfer --endpoint "${addr[1]}" --mix put=1 --keys "$keys" \
    --value-size 1000 --ops $((keys * 4)) --warmup 0 --clients 64 --timeout 10s \
    > "$out/bench.json"

echo "== killing node3 (${addr[3]}), membership.replace-after = $replace_after"
killed_at=$(date +"%b %d %H:%M:%S.%N" | cut -c1-19)
kill -9 "${pid[3]}"
wait_log "$out/node4.log" "replica started" $(( 120 + mb ))

python3 - "$out/node4.log" "$mb" "$killed_at" <<'EOF'
import re, socket, sys, threading, time
from datetime import datetime

log, mb, killed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def stamp(line):
    return datetime.strptime(line.strip()[:19], "%b %d %H:%M:%S.%f")
start = done = running = None
size = 0
for line in open(log):
    if "fetching the partition's state" in line and start is None:
        start = stamp(line)
    if "partition state fetched" in line:
        done = stamp(line)
        size = int(re.search(r"bytes: (\d+)", line).group(1))
    if "replica started" in line and running is None:
        running = stamp(line)
heal = (running - stamp(killed)).total_seconds()
print(f"kill to the spare running the next epoch (R live replicas again): {heal:.2f} s")
secs = (done - start).total_seconds()
print(f"kvstore: {size} bytes fetched in {secs:.3f} s = {size / secs / 1e6:.1f} MB/s")

# Reference: the same bytes over one loopback TCP connection, 256 KiB per write.
chunk = b"x" * (256 * 1024)
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
def sink():
    c, _ = srv.accept(); got = 0
    while got < size:
        b = c.recv(1 << 20)
        if not b: break
        got += len(b)
    c.sendall(b"k"); c.close()
t = threading.Thread(target=sink); t.start()
cl = socket.create_connection(srv.getsockname())
t0 = time.perf_counter(); sent = 0
while sent < size:
    n = min(len(chunk), size - sent); cl.sendall(chunk[:n]); sent += n
cl.recv(1); ref = time.perf_counter() - t0; t.join()
print(f"reference: {size} bytes over bare loopback TCP in {ref:.3f} s = {size / ref / 1e6:.1f} MB/s")
print(f"ratio: kvstore transfer at {ref / secs:.2f}x the bare TCP rate")
EOF

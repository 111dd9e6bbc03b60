#!/usr/bin/env bash
# Soak test: a local cluster of `kvstore start` processes under a mixed `kvstore bench`
# load for a long time, with nodes killed (SIGKILL) along the way, resident memory of
# every node sampled into a CSV, and the whole history checked for linearizability at
# the end. Bounded (it stops after --duration plus the client deadline), and not part
# of the default CI run. See docs/operations.md, "Soak test".
#
# Usage: scripts/soak.sh [--duration 30m] [--nodes 5] [--partitions 2]
#                        [--kills 2] [--clients 16] [--keys 1000] [--sample 10s]
#                        [--out DIR] [--bin PATH] [--no-history]
#
# Every partition is replicated on all --nodes nodes, so the cluster survives up to
# (nodes-1)/2 crashes; --kills is capped there. After each kill a process is started
# at a new address for a while and then stopped (it joins as a member; with every
# member already a replica and the default membership.replace-after of 30 s it does
# not take over the dead replica before it stops).
#
# Output (in --out, default target/soak-YYYYmmdd-HHMMSS): rss.csv (seconds since the
# start, then one VmRSS column per node in KiB, empty once the node is killed),
# bench.json, history.jsonl, check.txt, the node logs and summary.txt. Exit code 0
# when the bench ran and the history is linearizable. --no-history skips the history
# and its check (a run at full load for memory alone writes millions of operations).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=30m
nodes=5
partitions=2
kills=2
clients=16
keys=1000
sample=10s
out=""
bin="${KVSTORE:-}"
history=yes

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --nodes) nodes="$2"; shift 2 ;;
        --partitions) partitions="$2"; shift 2 ;;
        --kills) kills="$2"; shift 2 ;;
        --clients) clients="$2"; shift 2 ;;
        --keys) keys="$2"; shift 2 ;;
        --sample) sample="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --no-history) history=no; shift ;;
        -h|--help) usage ;;
        *) echo "soak.sh: unknown argument $1" >&2; usage ;;
    esac
done

# Durations: 90s, 2m, 1h or a bare number of seconds.
secs() {
    case "$1" in
        *h) echo $(( ${1%h} * 3600 )) ;;
        *m) echo $(( ${1%m} * 60 )) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
total=$(secs "$duration")
every=$(secs "$sample")
if [ "$nodes" -lt 3 ] || [ $((nodes % 2)) -eq 0 ]; then
    echo "soak.sh: --nodes must be odd and at least 3" >&2; exit 2
fi
max_kills=$(( (nodes - 1) / 2 ))
if [ "$kills" -gt "$max_kills" ]; then
    echo "soak.sh: --kills capped at $max_kills (a majority of $nodes must stay up)" >&2
    kills=$max_kills
fi

if [ -z "$bin" ]; then
    bin="${CARGO_TARGET_DIR:-target}/release/kvstore"
    echo "== cargo build --release -p kvstore"
    cargo build --release -p kvstore --bin kvstore
fi
[ -x "$bin" ] || { echo "soak.sh: no kvstore binary at $bin" >&2; exit 2; }
out="${out:-target/soak-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"

# Loopback ports below the ephemeral range, checked free with bash's /dev/tcp.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=$(( 20000 + RANDOM % 10000 ))
free_port() { # sets port
    while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
    port=$next_port; next_port=$((next_port + 1))
}

declare -a addr pid
pids_started=()
cleanup() {
    for p in "${pids_started[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

start_node() { # name address; sets started_pid
    local name="$1" a="$2"
    cat > "$out/$name.conf" <<EOF
kvstore {
  cluster-name = "soak"
  address = "$a"
  bootstrap-address = "${addr[1]}"
  boot-threshold = $nodes
  partitions = $partitions
  replication-degree = $nodes
}
EOF
    "$bin" start --config "$out/$name.conf" --log-level info > /dev/null 2> "$out/$name.log" &
    started_pid=$!
    pids_started+=("$started_pid")
}

wait_log() { # file needle seconds
    local deadline=$(( SECONDS + $3 ))
    until grep -q "$2" "$1" 2>/dev/null; do
        if [ $SECONDS -ge "$deadline" ]; then
            echo "soak.sh: $1 did not log \"$2\" within $3 s" >&2; return 1
        fi
        sleep 0.1
    done
}

for i in $(seq 1 "$nodes"); do free_port; addr[$i]="127.0.0.1:$port"; done
echo "== starting $nodes nodes, $partitions partitions, replication $nodes: ${addr[*]:1}"
start_node node1 "${addr[1]}"; pid[1]=$started_pid
wait_log "$out/node1.log" "bootstrap server waiting for nodes" 30
for i in $(seq 2 "$nodes"); do start_node "node$i" "${addr[$i]}"; pid[$i]=$started_pid; done
for i in $(seq 1 "$nodes"); do wait_log "$out/node$i.log" "replicas started" 30; done
deadline=$(( SECONDS + 30 ))
until "$bin" get soak-probe --cluster soak --endpoint "${addr[1]}" --timeout 2s >/dev/null 2>&1 \
    || [ $? -eq 1 ]; do
    [ $SECONDS -lt "$deadline" ] || { echo "soak.sh: the cluster does not serve" >&2; exit 3; }
done

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
alive() { [ -n "${pid[$1]}" ] && kill -0 "${pid[$1]}" 2>/dev/null; }

{ printf "t_s"; for i in $(seq 1 "$nodes"); do printf ",node%d_rss_kib" "$i"; done; echo; } > "$out/rss.csv"
sample_rss() {
    local row="$1"
    for i in $(seq 1 "$nodes"); do
        if alive "$i"; then row="$row,$(rss "${pid[$i]}")"; else row="$row,"; fi
    done
    echo "$row" >> "$out/rss.csv"
}

# The leader of partition 0 most recently elected, as node1 (never killed) saw it.
current_leader() {
    grep "leader elected" "$out/node1.log" | grep "partition: 0" | tail -1 \
        | sed -n 's/.*leader: \([0-9.]*:[0-9]*\).*/\1/p'
}

history_args=()
[ "$history" = yes ] && history_args=(--history "$out/history.jsonl")
echo "== bench: $clients clients, $keys keys, get=1,put=1,cas=1, for ${total}s; $kills kill(s)"
"$bin" bench --cluster soak --endpoint "${addr[1]}" --clients "$clients" --keys "$keys" \
    --duration "${total}s" --warmup 1s --timeout 10s --mix get=1,put=1,cas=1 \
    ${history_args[@]+"${history_args[@]}"} > "$out/bench.json" 2> "$out/bench.err" &
bench_pid=$!
pids_started+=("$bench_pid")

start=$SECONDS
next_sample=0
kills_done=0
events=()
while kill -0 "$bench_pid" 2>/dev/null; do
    t=$(( SECONDS - start ))
    if [ "$t" -ge "$next_sample" ]; then
        sample_rss "$t"
        next_sample=$(( next_sample + every ))
    fi
    # Kills evenly spaced through the run: at total·k/(kills+1).
    if [ "$kills_done" -lt "$kills" ] && [ "$t" -ge $(( total * (kills_done + 1) / (kills + 1) )) ]; then
        leader=$(current_leader)
        victim=""
        for i in $(seq "$nodes" -1 2); do # prefer the leader, never node1 (the endpoint)
            if alive "$i" && [ "${addr[$i]}" = "$leader" ]; then victim=$i; fi
        done
        if [ -z "$victim" ]; then
            for i in $(seq "$nodes" -1 2); do
                if alive "$i"; then victim=$i; break; fi
            done
        fi
        kill -9 "${pid[$victim]}"; wait "${pid[$victim]}" 2>/dev/null || true
        pid[$victim]=""
        kills_done=$((kills_done + 1))
        what="t=${t}s: SIGKILL node$victim (${addr[$victim]})$([ "${addr[$victim]}" = "$leader" ] && echo ", the leader of partition 0")"
        echo "   $what"; events+=("$what")
        # A fresh process at a new address joins the running cluster as a member.
        free_port; r="127.0.0.1:$port"
        start_node "replacement$kills_done" "$r"; rp=$started_pid
        if wait_log "$out/replacement$kills_done.log" "member of the cluster" 30; then
            what="t=$(( SECONDS - start ))s: fresh node at $r joined as a member"
        else
            what="t=$(( SECONDS - start ))s: fresh node at $r did not join within 30 s"
        fi
        echo "   $what"; events+=("$what")
        kill -9 "$rp" 2>/dev/null || true; wait "$rp" 2>/dev/null || true
    fi
    sleep 1
done
sample_rss $(( SECONDS - start ))
bench_rc=0; wait "$bench_pid" || bench_rc=$?

check_rc=0
if [ "$history" = yes ]; then
    echo "== kvstore check-history"
    "$bin" check-history "$out/history.jsonl" > "$out/check.txt" 2>&1 || check_rc=$?
else
    echo "not recorded (--no-history)" > "$out/check.txt"
fi

panics=$(cat "$out"/node*.log | grep -c "panicked" || true)
{
    echo "soak: $nodes nodes, $partitions partitions, replication $nodes, ${total}s, $clients clients, $keys keys"
    echo "bench (exit $bench_rc): $(cat "$out/bench.json")"
    for e in "${events[@]}"; do echo "$e"; done
    echo "history: $(cat "$out/check.txt")"
    echo "panics in node logs: $panics"
    echo "RSS per node (KiB): first / max / last sample"
    for i in $(seq 1 "$nodes"); do
        awk -F, -v c=$((i + 1)) -v n="node$i" 'NR > 1 && $c != "" {
            if (first == "") first = $c; if ($c + 0 > max) max = $c + 0; last = $c }
            END { printf "  %s: %s / %s / %s\n", n, first, max, last }' "$out/rss.csv"
    done
    echo "RSS over time (KiB, every ${every}s sample; '-' = killed):"
    awk -F, 'NR == 1 { printf "  %6s", "t_s"; for (i = 2; i <= NF; i++) printf " %8s", "node" (i - 1); print ""; next }
        { printf "  %6s", $1; for (i = 2; i <= NF; i++) printf " %8s", ($i == "" ? "-" : $i); print "" }' "$out/rss.csv"
} | tee "$out/summary.txt"
echo "== output in $out"
[ "$bench_rc" -eq 0 ] && [ "$check_rc" -eq 0 ] && [ "$panics" -eq 0 ]

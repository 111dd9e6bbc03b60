#!/usr/bin/env bash
# Fault test across hosts: a 5-node kompact-kv cluster (2 partitions, replication 3)
# in containers on a private network, a `kvstore bench --history` workload from a
# separate container, and, one after another with pauses to recover:
#   1. kill   - `docker kill` of a partition leader (crash-stop: it stays dead),
#   2. pause  - `docker pause` of a node (a leader of another group when possible)
#               for PAUSE_S seconds, then `docker unpause` (a slow node, not a dead one),
#   3. cut    - `docker network disconnect` of one node (a minority) for CUT_S
#               seconds, then `docker network connect` with the same address.
# Afterwards every key is read once more (appended to the history, after every
# other operation, so that a lost acknowledged write shows up as a violation), the
# history is checked with `kvstore check-history`, and for each fault the time the
# clients saw no successful operation on the affected partitions is printed.
#
# Usage: scripts/fault-test.sh [--no-build] [--keep]
#   --no-build  use the image kompact-kv:fault-test as it is (default: build it)
#   --keep      leave the containers running at the end (for debugging)
# Environment (defaults in brackets): BENCH_TIMEOUT [1s] client --timeout of bench
#   (one attempt waits a quarter of it before trying another node), CLIENTS [32],
#   KEYS [200], SETTLE_S [6] recovery pause after each fault, PAUSE_S [5], CUT_S [5],
#   FAULT_TEST_TIMEOUT [600] seconds for the whole script.
#
# Output: target/fault-test/ (history.jsonl, bench.json, gaps.txt, node logs,
# summary.txt). Exit 0 when the history is linearizable, every final read
# succeeded and every partition served again after every fault; 1 otherwise; 2 when
# the test could not run (no Docker, the image did not build, the cluster did not
# form).
#
# It creates only containers and a network labelled kompact-kv.fault-test=1 (Compose
# project kvfault) and removes exactly those on exit, whatever the exit path.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BUILD=1
KEEP=0
for a in "$@"; do
    case "$a" in
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "fault-test: unknown argument $a" >&2; exit 2 ;;
    esac
done

BENCH_TIMEOUT=${BENCH_TIMEOUT:-1s}
CLIENTS=${CLIENTS:-32}
KEYS=${KEYS:-200}
SETTLE_S=${SETTLE_S:-6}
PAUSE_S=${PAUSE_S:-5}
CUT_S=${CUT_S:-5}
FAULT_TEST_TIMEOUT=${FAULT_TEST_TIMEOUT:-600}
PARTITIONS=2

IMAGE=kompact-kv:fault-test
PROJECT=kvfault
LABEL=kompact-kv.fault-test=1
NET=${PROJECT}_kvnet
SUBNET=10.213.0
PORT=45678
BENCH_IP=$SUBNET.100
READER_IP=$SUBNET.101
NODES=(node1 node2 node3 node4 node5)
OUT=target/fault-test
STATIC_BIN=target/static/x86_64-unknown-linux-gnu/release/kvstore

export KV_IMAGE=$IMAGE KV_FAULT_TEST=1
COMPOSE=(docker-compose -f docker/docker-compose.yml -p "$PROJECT")
if ! command -v docker-compose >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -f docker/docker-compose.yml -p "$PROJECT")
fi

T0=$(date +%s)
log() { printf '[fault-test %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { log "ERROR: $*"; exit "${2:-1}"; }
now_ns() { date +%s%N; }
# Run a command with a time limit (seconds).
tl() { local t=$1; shift; timeout --kill-after=5 "$t" "$@"; }

command -v docker >/dev/null 2>&1 || die "docker is not installed" 2
tl 20 docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable" 2

# ---------------------------------------------------------------- cleanup
cleanup_ours() {
    local ids
    ids=$(docker ps -aq --filter "label=$LABEL" 2>/dev/null || true)
    if [ -n "$ids" ]; then
        # A paused container must be resumed before it can be killed on some engines.
        for id in $(docker ps -q --filter "label=$LABEL" --filter status=paused 2>/dev/null || true); do
            tl 20 docker unpause "$id" >/dev/null 2>&1 || true
        done
        # shellcheck disable=SC2086
        tl 60 docker rm -f $ids >/dev/null 2>&1 || true
    fi
    for n in $(docker network ls -q --filter "label=$LABEL" 2>/dev/null || true); do
        tl 30 docker network rm "$n" >/dev/null 2>&1 || true
    done
}

save_logs() {
    mkdir -p "$OUT"
    for n in "${NODES[@]}"; do
        tl 20 docker logs "${PROJECT}_${n}_1" >"$OUT/$n.log" 2>&1 || true
    done
    tl 20 docker logs kvfault-bench >"$OUT/bench.log" 2>&1 || true
}

WATCHDOG=
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null || true
    if [ "$STARTED" = 1 ]; then
        save_logs
        if [ "$KEEP" = 1 ]; then
            log "--keep: leaving the cluster up; remove it with: docker rm -f \$(docker ps -aq --filter label=$LABEL); docker network rm $NET"
        else
            cleanup_ours
        fi
    fi
    exit "$rc"
}
STARTED=0
trap on_exit EXIT
trap 'log "stopped by a signal (or the ${FAULT_TEST_TIMEOUT}s time limit)"; exit 2' INT TERM

# The whole test is bounded: a watchdog sends TERM to this script.
# Its file descriptors go to /dev/null so that it never holds a caller's pipe open.
(sleep "$FAULT_TEST_TIMEOUT" && kill -TERM $$) </dev/null >/dev/null 2>&1 &
WATCHDOG=$!

mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/history.jsonl "$OUT"/bench-history.jsonl "$OUT"/final-reads.jsonl \
    "$OUT"/bench.json "$OUT"/gaps.txt "$OUT"/summary.txt "$OUT"/check.txt

# ---------------------------------------------------------------- image
if [ "$BUILD" = 1 ]; then
    log "building the static binary and the image $IMAGE"
    tl 1200 scripts/build-static.sh --tag "$IMAGE" >&2 || die "the image did not build" 2
else
    tl 20 docker image inspect "$IMAGE" >/dev/null 2>&1 || die "--no-build: no image $IMAGE" 2
fi
[ -x "$STATIC_BIN" ] || die "$STATIC_BIN is missing (run scripts/build-static.sh)" 2
KV=("$ROOT/$STATIC_BIN")

# ---------------------------------------------------------------- cluster
STARTED=1
cleanup_ours # leftovers of an earlier run that could not clean up
if docker network ls --format '{{.Name}}' | grep -qx "$NET"; then
    die "a network $NET exists that this test did not create; remove it first" 2
fi
log "starting the cluster (Compose project $PROJECT, network $SUBNET.0/24)"
tl 120 "${COMPOSE[@]}" up -d --no-build "${NODES[@]}" >&2 ||
    die "docker-compose up failed (is $SUBNET.0/24 used by another network, e.g. a cluster started with docker/docker-compose.yml? stop it first)" 2

cname() { echo "${PROJECT}_$1_1"; }
ip_of() { echo "$SUBNET.1${1#node}"; } # node3 -> 10.213.0.13
node_of_ip() { echo "node$(( ${1##*.} - 10 ))"; }

# Partitions hosted by a node, from its "replicas started" line: "0 1".
hosted() {
    docker logs "$(cname "$1")" 2>&1 | grep -m1 'replicas started' |
        sed -n 's/.*partitions: \[\([0-9, ]*\)\].*/\1/p' | tr -d ',' || true
}

# The current leader (IP:PORT) of partition $1 as the live nodes $2.. see it: the
# highest ballot in their latest "leader elected" lines.
leader_of() {
    local p=$1; shift
    local n
    for n in "$@"; do
        docker logs "$(cname "$n")" 2>&1 | grep 'leader elected' |
            grep -E "partition: $p(,|$)" | tail -n1 || true
    done | sed -n 's/.*ballot: \([0-9]*\).*leader: \([0-9.:]*\).*/\1 \2/p' |
        sort -n | tail -n1 | cut -d' ' -f2
}

# Wall time (ns) of the first "leader elected" line for partition $1 with a leader
# other than $2, logged by live node $3.. after time $4 (ns); empty if none.
election_after() {
    local p=$1 old=$2 after=$4
    local n line ts best=
    shift 4
    for n in "$@"; do
        while IFS= read -r line; do
            ts=$(echo "$line" | awk '{print $1" "$2" "$3}')
            ts=$(date -u -d "$ts" +%s%N 2>/dev/null) || continue
            if [ "$ts" -ge "$after" ] && [ -z "$best" -o "$ts" -lt "${best:-0}" ]; then best=$ts; fi
        done < <(docker logs "$(cname "$n")" 2>&1 | grep 'leader elected' |
            grep -E "partition: $p(,|$)" | grep -v "leader: $old" || true)
    done
    echo "$best"
}

log "waiting for the cluster to form"
formed=0
for _ in $(seq 1 120); do
    ok=1
    for n in "${NODES[@]}"; do
        [ -n "$(hosted "$n")" ] || { ok=0; break; }
    done
    if [ "$ok" = 1 ]; then
        for p in $(seq 0 $((PARTITIONS - 1))); do
            [ -n "$(leader_of "$p" "${NODES[@]}")" ] || { ok=0; break; }
        done
    fi
    if [ "$ok" = 1 ]; then formed=1; break; fi
    sleep 0.5
done
[ "$formed" = 1 ] || die "the cluster did not form within 60s (logs in $OUT)" 2
declare -A HOSTS
for n in "${NODES[@]}"; do
    HOSTS[$n]=$(hosted "$n")
    log "  $n ($(ip_of "$n")) hosts partitions: ${HOSTS[$n]}"
done
for p in $(seq 0 $((PARTITIONS - 1))); do
    log "  partition $p leader: $(leader_of "$p" "${NODES[@]}")"
done

# ---------------------------------------------------------------- workload
SCHEDULE_S=$((2 + SETTLE_S + PAUSE_S + SETTLE_S + CUT_S + SETTLE_S + 2))
BENCH_S=$((SCHEDULE_S + 4))
log "bench: $CLIENTS clients, $KEYS keys, --timeout $BENCH_TIMEOUT, ${BENCH_S}s, from $BENCH_IP"
tl 60 docker run -d --name kvfault-bench --label "$LABEL" --network "$NET" --ip "$BENCH_IP" \
    "$IMAGE" bench --endpoint "$(ip_of node1):$PORT" --clients "$CLIENTS" --keys "$KEYS" \
    --duration "${BENCH_S}s" --warmup 1s --timeout "$BENCH_TIMEOUT" \
    --history /history.jsonl >/dev/null || die "cannot start the bench container" 2
started=$(docker inspect -f '{{.State.StartedAt}}' kvfault-bench)
BENCH_START_NS=$(date -u -d "$started" +%s%N)
# Seconds on the history's clock (the bench starts it a few ms after the process).
hist_s() { awk -v t="$1" -v s="$BENCH_START_NS" 'BEGIN { printf "%.3f", (t - s) / 1e9 }'; }

ALIVE=("${NODES[@]}")
remove_alive() {
    local x=$1 a new=()
    for a in "${ALIVE[@]}"; do [ "$a" = "$x" ] || new+=("$a"); done
    ALIVE=("${new[@]}")
}
# Whether nodes $1 and $2 share a partition.
share() {
    local p
    for p in ${HOSTS[$1]}; do
        case " ${HOSTS[$2]} " in *" $p "*) return 0 ;; esac
    done
    return 1
}
FAULTS=() # "name|node|partitions|t_ns|detail"

sleep 3 # warm-up and a steady state before the first fault

# 1. Kill a partition leader, preferring one that hosts a single partition (so the
#    other faults can hit a node of the other group and every group keeps a majority).
victim=
for p in $(seq 0 $((PARTITIONS - 1))); do
    l=$(leader_of "$p" "${ALIVE[@]}")
    [ -n "$l" ] || continue
    n=$(node_of_ip "${l%:*}")
    if [ -z "$victim" ] || [ "$(echo "${HOSTS[$n]}" | wc -w)" -lt "$(echo "${HOSTS[$victim]}" | wc -w)" ]; then
        victim=$n
        victim_p=$p
    fi
done
[ -n "$victim" ] || die "no partition leader found in the logs"
log "fault 1/3: docker kill $victim ($(ip_of "$victim"), leader of partition $victim_p; hosts ${HOSTS[$victim]})"
t_kill=$(now_ns)
tl 30 docker kill "$(cname "$victim")" >/dev/null || die "docker kill failed"
remove_alive "$victim"
FAULTS+=("kill|$victim|${HOSTS[$victim]}|$t_kill|leader of partition $victim_p killed")
KILLED=$victim
sleep "$SETTLE_S"
new_leader=$(leader_of "$victim_p" "${ALIVE[@]}")
t_elect=$(election_after "$victim_p" "$(ip_of "$victim"):$PORT" "$t_kill" "${ALIVE[@]}")
if [ -n "$t_elect" ]; then
    ELECT_MS=$(((t_elect - t_kill) / 1000000))
    log "  partition $victim_p: new leader $new_leader, first elected ${ELECT_MS} ms after the kill (node log time)"
else
    ELECT_MS=
    log "  partition $victim_p: no new leader in the logs yet (now: ${new_leader:-none})"
fi

# Candidates for the next faults: live nodes sharing no partition with the killed
# node (so a group never drops below a majority), leaders first.
pick() {
    local n p l best= bestleader=0
    for n in "${ALIVE[@]}"; do
        share "$n" "$KILLED" && continue
        local isl=0
        for p in ${HOSTS[$n]}; do
            l=$(leader_of "$p" "${ALIVE[@]}")
            [ "${l%:*}" = "$(ip_of "$n")" ] && isl=1
        done
        if [ -z "$best" ] || [ "$isl" -gt "$bestleader" ]; then best=$n; bestleader=$isl; fi
    done
    if [ -z "$best" ]; then
        # Every live node shares a group with the killed one: any further fault
        # takes some group below a majority for its duration (expected unavailability).
        best=${ALIVE[-1]}
    fi
    echo "$best"
}

# 2. Pause a node (a leader if possible), then resume it.
paused=$(pick)
log "fault 2/3: docker pause $paused ($(ip_of "$paused"); hosts ${HOSTS[$paused]}) for ${PAUSE_S}s"
t_pause=$(now_ns)
tl 30 docker pause "$(cname "$paused")" >/dev/null || die "docker pause failed"
FAULTS+=("pause|$paused|${HOSTS[$paused]}|$t_pause|paused ${PAUSE_S}s")
sleep "$PAUSE_S"
tl 30 docker unpause "$(cname "$paused")" >/dev/null || die "docker unpause failed"
t_unpause=$(now_ns)
log "  resumed $paused"
sleep "$SETTLE_S"

# 3. Cut a minority (one node) off the network, then reconnect it with its address.
cut=$(pick)
log "fault 3/3: docker network disconnect $cut ($(ip_of "$cut"); hosts ${HOSTS[$cut]}) for ${CUT_S}s"
t_cut=$(now_ns)
tl 30 docker network disconnect "$NET" "$(cname "$cut")" || die "docker network disconnect failed"
FAULTS+=("cut|$cut|${HOSTS[$cut]}|$t_cut|cut off ${CUT_S}s")
sleep "$CUT_S"
tl 30 docker network connect --ip "$(ip_of "$cut")" "$NET" "$(cname "$cut")" ||
    die "docker network connect failed"
t_reconnect=$(now_ns)
log "  reconnected $cut"
sleep "$SETTLE_S"

log "waiting for the bench to finish"
rc=$(tl $((BENCH_S + 60)) docker wait kvfault-bench) || die "the bench did not finish in time"
tl 20 docker logs kvfault-bench >"$OUT/bench.json" 2>"$OUT/bench.log" || true
[ "$rc" = 0 ] || die "the bench exited with $rc: $(tail -n3 "$OUT/bench.log")"
tl 30 docker cp kvfault-bench:/history.jsonl "$OUT/bench-history.jsonl" ||
    die "cannot copy the history out of the bench container"
log "bench: $(cat "$OUT/bench.json")"

# ---------------------------------------------------------------- final reads
# Read every key once more, after everything else: appended to the history with
# times after its last event, a lost acknowledged write becomes a violation.
reader_ep="$(ip_of "${ALIVE[0]}"):$PORT"
log "final reads of $KEYS keys via $reader_ep"
for i in $(seq 0 $((KEYS - 1))); do echo "get k$i"; done |
    tl 120 docker run -i --rm --label "$LABEL" --network "$NET" --ip "$READER_IP" "$IMAGE" \
        console --endpoint "$reader_ep" --timeout 5s >"$OUT/final-reads.txt" 2>&1 ||
    die "the final reads failed: $(tail -n3 "$OUT/final-reads.txt")"
last=$(grep -o '"\(call\|ret\)":[0-9]*' "$OUT/bench-history.jsonl" | cut -d: -f2 | sort -n | tail -n1)
awk -v base="$((last + 1000))" -v keys="$KEYS" '
    {
        key = "k" (NR - 1); call = base + 2 * (NR - 1); ret = call + 1
        if ($0 ~ /^key ".*" not found$/) out = "null"
        else if ($0 ~ /^c[0-9]+-[0-9]+\.*$/) out = "\"" $0 "\""
        else { print "final read of " key " failed: " $0 > "/dev/stderr"; bad = 1; next }
        printf "{\"client\":1000000,\"call\":%d,\"ret\":%d,\"body\":{\"op\":\"get\",\"key\":\"%s\",\"out\":%s}}\n", call, ret, key, out
    }
    END { if (NR != keys) { print "expected " keys " answers, got " NR > "/dev/stderr"; bad = 1 } exit bad }
' "$OUT/final-reads.txt" >"$OUT/final-reads.jsonl" || die "the final reads did not all succeed"
cat "$OUT/bench-history.jsonl" "$OUT/final-reads.jsonl" >"$OUT/history.jsonl"

# The cluster is not needed any more.
save_logs
if [ "$KEEP" != 1 ]; then cleanup_ours; STARTED=0; fi

# ---------------------------------------------------------------- verdicts
FAIL=0
log "checking $OUT/history.jsonl for linearizability"
set +e
tl 300 "${KV[@]}" check-history "$OUT/history.jsonl" >"$OUT/check.txt" 2>&1
check_rc=$?
set -e
cat "$OUT/check.txt" >&2
if [ "$check_rc" != 0 ] || ! grep -q '^linearizable' "$OUT/check.txt"; then
    FAIL=1
    log "FAIL: the history is not (shown to be) linearizable"
fi

windows=()
for f in "${FAULTS[@]}"; do
    IFS='|' read -r name node parts t detail <<<"$f"
    s=$(hist_s "$t")
    # The window starts a little before the fault (the bench's clock starts a few
    # ms after its container) and ends before the next fault.
    e=$(awk -v s="$s" -v d="$SETTLE_S" 'BEGIN { printf "%.3f", s + d - 1 }')
    case $name in
        pause) e=$(awk -v s="$s" -v d="$((SETTLE_S + PAUSE_S))" 'BEGIN { printf "%.3f", s + d - 1 }') ;;
        cut) e=$(awk -v s="$s" -v d="$((SETTLE_S + CUT_S))" 'BEGIN { printf "%.3f", s + d - 1 }') ;;
    esac
    b=$(awk -v s="$s" 'BEGIN { printf "%.3f", s - 0.5 }')
    windows+=(--window "$name=$b..$e")
done
set +e
"${KV[@]}" history-gaps "$OUT/bench-history.jsonl" --partitions "$PARTITIONS" "${windows[@]}" >"$OUT/gaps.txt" 2>&1
gaps_rc=$?
"${KV[@]}" history-gaps "$OUT/bench-history.jsonl" --partitions "$PARTITIONS" "${windows[@]}" --json >"$OUT/gaps.jsonl" 2>/dev/null
set -e
[ "$gaps_rc" = 0 ] || { FAIL=1; log "FAIL: a partition did not serve again after a fault"; }

{
    echo "fault test: 5 nodes, $PARTITIONS partitions, replication 3; bench $CLIENTS clients, $KEYS keys, --timeout $BENCH_TIMEOUT"
    echo "settings: reference.conf defaults (tick 10ms, failure-detector 300ms + 100ms, heartbeat 50ms, link/paxos resend 200ms)"
    echo "bench: $(cat "$OUT/bench.json")"
    echo "check-history: $(head -n1 "$OUT/check.txt")"
    echo "unavailability per fault (longest time without a successful operation on the partition):"
    for f in "${FAULTS[@]}"; do
        IFS='|' read -r name node parts t detail <<<"$f"
        s=$(hist_s "$t")
        echo "  $name: $node ($(ip_of "$node")), $detail, at t=${s}s of the history; hosts partitions $parts"
        for p in $parts; do
            line=$(grep -F "\"window\":\"$name\"" "$OUT/gaps.jsonl" | grep -F "\"partition\":$p," || true)
            g=$(echo "$line" | sed -n 's/.*"longest_gap_ms":\([0-9.]*\).*/\1/p')
            from=$(echo "$line" | sed -n 's/.*"gap_from_s":\([0-9.]*\).*/\1/p')
            if [ -n "$g" ] && [ -n "$from" ]; then
                lag=$(awk -v a="$from" -v s="$s" 'BEGIN { printf "%+.0f", (a - s) * 1000 }')
                echo "    partition $p: ${g} ms without a successful operation (gap began ${lag} ms from the injection)"
            else
                echo "    partition $p: no measurement ($line)"
            fi
        done
        if [ "$name" = kill ]; then
            [ -n "$ELECT_MS" ] && echo "    new leader of partition $victim_p elected ${ELECT_MS} ms after the kill (node log)"
            for p in $parts; do
                g=$(grep -F "\"window\":\"kill\"" "$OUT/gaps.jsonl" | grep -F "\"partition\":$p," |
                    sed -n 's/.*"longest_gap_ms":\([0-9.]*\).*/\1/p')
                if [ -n "$g" ]; then
                    awk -v g="$g" -v p="$p" 'BEGIN { if (g <= 500) print "    target (partition " p " serves again within 500 ms of a leader kill): met"; else print "    target (partition " p " serves again within 500 ms of a leader kill): MISSED (" g " ms)" }'
                fi
            done
        fi
    done
    echo "all partitions, per fault window:"
    sed 's/^/  /' "$OUT/gaps.txt"
} | tee "$OUT/summary.txt"

if [ "$FAIL" = 0 ]; then
    log "PASS ($(($(date +%s) - T0))s)"
else
    log "FAIL ($(($(date +%s) - T0))s); see $OUT"
fi
exit "$FAIL"

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
#   FAULTS [kill,pause,cut] which faults, in which order (each at most once),
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
FAULTS_ASKED=${FAULTS:-kill,pause,cut}
PARTITIONS=2
IFS=',' read -r -a FAULT_LIST <<<"$FAULTS_ASKED"
for f in "${FAULT_LIST[@]}"; do
    case $f in kill | pause | cut) ;; *) echo "fault-test: FAULTS: unknown fault $f (kill, pause, cut)" >&2; exit 2 ;; esac
done

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

# Container of a Compose service, by label (Compose v1 names it kvfault_node1_1,
# v2 kvfault-node1-1).
declare -A CID
cname() {
    if [ -z "${CID[$1]:-}" ]; then
        CID[$1]=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
            --filter "label=com.docker.compose.service=$1" | head -n1)
    fi
    echo "${CID[$1]}"
}

save_logs() {
    mkdir -p "$OUT"
    for n in "${NODES[@]}"; do
        tl 20 docker logs "$(cname "$n")" >"$OUT/$n.log" 2>&1 || true
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
        sort -k1,1n -k2,2V | tail -n1 | cut -d' ' -f2
}

# Wall time (ns) of the first "leader elected" line for partition $1 with a leader
# other than $2 logged after time $3 (ns) by the live nodes $4..; empty if none.
election_after() {
    local p=$1 old=$2 after=$3
    local n line ts best=
    shift 3
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
SCHEDULE_S=3
for f in "${FAULT_LIST[@]}"; do
    case $f in
        kill) SCHEDULE_S=$((SCHEDULE_S + SETTLE_S + 1)) ;;
        pause) SCHEDULE_S=$((SCHEDULE_S + PAUSE_S + SETTLE_S + 1)) ;;
        cut) SCHEDULE_S=$((SCHEDULE_S + CUT_S + SETTLE_S + 1)) ;;
    esac
done
# Slack at the end: the bench's clock starts after its container (seconds later on
# a loaded machine) and the last window must end before the history does.
# Steps take longer than planned on a loaded machine (waits for elections, docker
# commands): give the bench twice the schedule.
BENCH_S=$((SCHEDULE_S * 2 + 8))
log "bench: $CLIENTS clients, $KEYS keys, --timeout $BENCH_TIMEOUT, ${BENCH_S}s, from $BENCH_IP"
tl 60 docker run -d --name kvfault-bench --label "$LABEL" --network "$NET" --ip "$BENCH_IP" \
    "$IMAGE" bench --endpoint "$(ip_of node1):$PORT" --clients "$CLIENTS" --keys "$KEYS" \
    --duration "${BENCH_S}s" --warmup 1s --timeout "$BENCH_TIMEOUT" \
    --history /history.jsonl >/dev/null || die "cannot start the bench container" 2
started=$(docker inspect -f '{{.State.StartedAt}}' kvfault-bench)
BENCH_START_NS=$(date -u -d "$started" +%s%N)
BENCH_ANCHOR=container
# The history's clock starts when the bench's client has connected: node1 logs the
# bench's connection (milliseconds before that), a better anchor than the
# container's start, which comes up to seconds earlier on a loaded machine.
anchor_bench_clock() {
    local line ts
    line=$(docker logs "$(cname node1)" 2>&1 | grep -m1 "registering newly connected conn.*address: $BENCH_IP," || true)
    [ -n "$line" ] || return 0
    ts=$(echo "$line" | awk '{print $1" "$2" "$3}')
    ts=$(date -u -d "$ts" +%s%N 2>/dev/null) || return 0
    BENCH_START_NS=$ts
    BENCH_ANCHOR="node1's log of the bench's connection"
}
# Seconds on the history's clock.
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
KILLED=
ELECT_MS=
victim_p=

# Candidates for the pause and the cut: live nodes sharing no partition with the
# killed node (so that no group drops below a majority), a current leader first.
pick() {
    local n p l best= bestleader=0 isl
    for n in "${ALIVE[@]}"; do
        [ -n "$KILLED" ] && share "$n" "$KILLED" && continue
        isl=0
        for p in ${HOSTS[$n]}; do
            l=$(leader_of "$p" "${ALIVE[@]}")
            [ "${l%:*}" = "$(ip_of "$n")" ] && isl=1
        done
        if [ -z "$best" ] || [ "$isl" -gt "$bestleader" ]; then best=$n; bestleader=$isl; fi
    done
    # When every live node shares a group with the killed one, any further fault
    # takes a group below a majority for its duration (expected unavailability).
    echo "${best:-${ALIVE[-1]}}"
}

# Kill a partition leader, preferring one that hosts a single partition (so the
# other faults can hit a node of the other group and every group keeps a majority).
fault_kill() {
    local p l n victim=
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
    log "fault $1: docker kill $victim ($(ip_of "$victim"), leader of partition $victim_p; hosts partitions ${HOSTS[$victim]})"
    local t_kill
    t_kill=$(now_ns)
    tl 30 docker kill "$(cname "$victim")" >/dev/null || die "docker kill failed"
    remove_alive "$victim"
    KILLED=$victim
    FAULTS+=("kill|$victim|${HOSTS[$victim]}|$t_kill|leader of partition $victim_p, killed for good")
    sleep "$SETTLE_S"
    local new_leader t_elect
    new_leader=$(leader_of "$victim_p" "${ALIVE[@]}")
    t_elect=$(election_after "$victim_p" "$(ip_of "$victim"):$PORT" "$t_kill" "${ALIVE[@]}")
    if [ -n "$t_elect" ]; then
        ELECT_MS=$(((t_elect - t_kill) / 1000000))
        log "  partition $victim_p: a new leader was first elected ${ELECT_MS} ms after the kill (node logs); now $new_leader"
    else
        log "  partition $victim_p: no new leader in the logs (now: ${new_leader:-none})"
    fi
}

# Pause a node (a leader if possible) for PAUSE_S seconds, then resume it.
fault_pause() {
    local n t
    n=$(pick)
    log "fault $1: docker pause $n ($(ip_of "$n"); hosts partitions ${HOSTS[$n]}) for ${PAUSE_S}s"
    t=$(now_ns)
    tl 30 docker pause "$(cname "$n")" >/dev/null || die "docker pause failed"
    FAULTS+=("pause|$n|${HOSTS[$n]}|$t|paused for ${PAUSE_S}s, then resumed")
    sleep "$PAUSE_S"
    tl 30 docker unpause "$(cname "$n")" >/dev/null || die "docker unpause failed"
    log "  resumed $n"
    sleep "$SETTLE_S"
}

# Cut a minority (one node, a leader if possible) off the network for CUT_S
# seconds, then reconnect it with the same address.
fault_cut() {
    local n t
    n=$(pick)
    log "fault $1: docker network disconnect $n ($(ip_of "$n"); hosts partitions ${HOSTS[$n]}) for ${CUT_S}s"
    t=$(now_ns)
    tl 30 docker network disconnect "$NET" "$(cname "$n")" || die "docker network disconnect failed"
    FAULTS+=("cut|$n|${HOSTS[$n]}|$t|cut off for ${CUT_S}s, then reconnected")
    sleep "$CUT_S"
    tl 30 docker network connect --ip "$(ip_of "$n")" "$NET" "$(cname "$n")" ||
        die "docker network connect failed"
    log "  reconnected $n"
    sleep "$SETTLE_S"
}

sleep 3 # warm-up and a steady state before the first fault
anchor_bench_clock
i=0
for f in "${FAULT_LIST[@]}"; do
    i=$((i + 1))
    "fault_$f" "$i/${#FAULT_LIST[@]}"
done

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
FINAL_OK=1
reader_ep="$(ip_of "${ALIVE[0]}"):$PORT"
log "final reads of $KEYS keys via $reader_ep"
for i in $(seq 0 $((KEYS - 1))); do echo "get k$i"; done |
    tl 60 docker run -i --rm --label "$LABEL" --network "$NET" --ip "$READER_IP" "$IMAGE" \
        console --endpoint "$reader_ep" --timeout 2s >"$OUT/final-reads.txt" 2>&1 || FINAL_OK=0
last=$(grep -o '"\(call\|ret\)":[0-9]*' "$OUT/bench-history.jsonl" | cut -d: -f2 | sort -n | tail -n1)
awk -v base="$((${last:-0} + 1000))" -v keys="$KEYS" '
    {
        key = "k" (NR - 1); call = base + 2 * (NR - 1); ret = call + 1
        if ($0 ~ /^key ".*" not found$/) out = "null"
        else if ($0 ~ /^c[0-9]+-[0-9]+\.*$/) out = "\"" $0 "\""
        else { print "final read of " key " failed: " $0 > "/dev/stderr"; bad = 1; next }
        printf "{\"client\":1000000,\"call\":%.0f,\"ret\":%.0f,\"body\":{\"op\":\"get\",\"key\":\"%s\",\"out\":%s}}\n", call, ret, key, out
    }
    END { if (NR != keys) { print "expected " keys " answers, got " NR > "/dev/stderr"; bad = 1 } exit bad }
' "$OUT/final-reads.txt" >"$OUT/final-reads.jsonl" 2>"$OUT/final-reads.err" || FINAL_OK=0
if [ "$FINAL_OK" = 1 ]; then
    cat "$OUT/bench-history.jsonl" "$OUT/final-reads.jsonl" >"$OUT/history.jsonl"
else
    log "the final reads did not all succeed: $(head -n2 "$OUT/final-reads.err" | tr '\n' ' ')"
    cp "$OUT/bench-history.jsonl" "$OUT/history.jsonl"
fi

# The cluster is not needed any more.
save_logs
if [ "$KEEP" != 1 ]; then cleanup_ours; STARTED=0; fi

# ---------------------------------------------------------------- verdicts
FAIL=0
[ "$FINAL_OK" = 1 ] || { FAIL=1; log "FAIL: the cluster did not answer every final read"; }
PANICS=$(cat "$OUT"/node*.log | grep -c "panicked at" || true)
if [ "$PANICS" != 0 ]; then
    log "WARNING: $PANICS panics in the node logs:"
    grep -h -A1 "panicked at" "$OUT"/node*.log | grep -v -e '^--' -e 'panicked at' | sort | uniq -c | sort -rn | head -n5 >&2
fi
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
hist_end=$(awk -v l="$(grep -o '"ret":[0-9]*' "$OUT/bench-history.jsonl" | cut -d: -f2 | sort -n | tail -n1)" \
    'BEGIN { printf "%.3f", l / 1e9 - 0.5 }')
for f in "${FAULTS[@]}"; do
    IFS='|' read -r name node parts t detail <<<"$f"
    s=$(hist_s "$t")
    # Two windows per fault. "$name": from 0.5 s before the injection (slack for
    # the clock anchor) to 1 s after the fault ends (kill: at once; pause and cut:
    # when the node is resumed or reconnected); the longest gap overlapping it is
    # the fault's unavailability, reported whole even when it runs past the window.
    # "$name-settle": the rest of the recovery pause, for churn after the fault
    # and for a partition that never serves again.
    d=0
    case $name in
        pause) d=$PAUSE_S ;;
        cut) d=$CUT_S ;;
    esac
    b=$(awk -v s="$s" 'BEGIN { printf "%.3f", s - 0.5 }')
    if awk -v b="$b" -v h="$hist_end" 'BEGIN { exit !(b >= h) }'; then
        log "  $name: injected after the bench ended; no window (make the bench longer)"
        continue
    fi
    m=$(awk -v s="$s" -v d="$d" -v h="$hist_end" 'BEGIN { e = s + d + 1; printf "%.3f", (e < h ? e : h) }')
    e=$(awk -v s="$s" -v d="$((d + SETTLE_S))" -v h="$hist_end" 'BEGIN { e = s + d - 0.5; printf "%.3f", (e < h ? e : h) }')
    windows+=(--window "$name=$b..$m")
    awk -v m="$m" -v e="$e" 'BEGIN { exit !(e > m) }' && windows+=(--window "$name-settle=$m..$e")
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
    echo "check-history: $(head -n1 "$OUT/check.txt")$([ "$FINAL_OK" = 1 ] || echo " (bench history only: the final reads failed)")"
    echo "node panics: $PANICS$([ "$PANICS" = 0 ] || echo " ($(grep -h -A1 "panicked at" "$OUT"/node*.log | grep -v -e '^--' -e 'panicked at' | sed 's/: the len is [0-9]*.*//' | sort | uniq -c | sort -rn | head -n3 | awk '{$1=$1; print}' | paste -sd ';' -))")"
    echo "unavailability per fault (longest time without a successful operation on the partition; history clock anchored on $BENCH_ANCHOR):"
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

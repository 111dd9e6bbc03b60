#!/usr/bin/env bash
# Fault test across hosts: a 5-node kompact-kv cluster (2 partitions, replication 3)
# in containers on a private network, a `kvstore bench --history` workload from a
# separate container, and, one after another with pauses to recover:
#   1. kill   - `docker kill` of a partition leader (crash-stop: it stays dead),
#   2. pause  - `docker pause` of a node (a leader of another group when possible)
#               for PAUSE_S seconds, then `docker unpause` (a slow node, not a dead one),
#   3. cut    - `docker network disconnect` of one node (a minority) for CUT_S
#               seconds, then `docker network connect` with the same address.
#   4. replace - (only when FAULTS names it) `docker kill` of a node holding a
#               replica, and a new node (node6 of the Compose file, a fresh address)
#               started at once; it joins through the seeds, and the cluster moves
#               the dead node's replicas after membership.replace-after
#               (REPLACE_AFTER_S). `kvstore status --json` is polled until every
#               partition of the dead node has R live answering replicas again.
# Afterwards every key is read once more (appended to the history, after every
# other operation, so that a lost acknowledged write shows up as a violation), the
# history is checked with `kvstore check-history`, and for each fault the time the
# clients saw no successful operation on the affected partitions is printed (for
# replace also how long each partition ran below R live replicas).
#
# Usage: scripts/fault-test.sh [--no-build] [--keep]
#   --no-build  use the image kompact-kv:fault-test as it is (default: build it)
#   --keep      leave the containers running at the end (for debugging)
# Environment (defaults in brackets): BENCH_TIMEOUT [1s] client --timeout of bench
#   (one attempt waits a quarter of it before trying another node), CLIENTS [32],
#   KEYS [200], SETTLE_S [6] recovery pause after each fault, PAUSE_S [5], CUT_S [5],
#   FAULTS [kill,pause,cut] which faults, in which order (each at most once; replace
#   too), FAULT_TEST_TIMEOUT [600] seconds for the whole script,
#   REPLACE_AFTER_S [3] membership.replace-after of every node, in seconds, set only
#   when FAULTS has replace (otherwise the nodes keep the default, 30s),
#   REPLACE_WAIT_S [60] how long replace waits for R live replicas again.
#
# Output: target/fault-test/ (history.jsonl, bench.json, gaps.txt, node logs,
# summary.txt; check.html: the checker's verdict as a page, drawing the offending
# key if any; report/index.html: the bench's latency-by-percentile and per-second
# charts with each fault's window shaded, drawn by `kvstore report` from the data
# the bench wrote with --report, kept in bench-report/). Exit 0 when the history is
# linearizable, every final read succeeded, every partition served again after
# every fault and (replace) got back to R live replicas within REPLACE_WAIT_S; 1
# otherwise; 2 when the test could not run (no Docker, the image did not build, the
# cluster did not form).
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
        -h | --help) sed -n '2,45p' "$0"; exit 0 ;;
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
REPLACE_AFTER_S=${REPLACE_AFTER_S:-3}
REPLACE_WAIT_S=${REPLACE_WAIT_S:-60}
PARTITIONS=2
IFS=',' read -r -a FAULT_LIST <<<"$FAULTS_ASKED"
REPLACE=0
for f in "${FAULT_LIST[@]}"; do
    case $f in
        kill | pause | cut) ;;
        replace) REPLACE=1 ;;
        *) echo "fault-test: FAULTS: unknown fault $f (kill, pause, cut, replace)" >&2; exit 2 ;;
    esac
done
for v in REPLACE_AFTER_S REPLACE_WAIT_S; do
    case ${!v} in '' | *[!0-9]*) echo "fault-test: $v must be a whole number of seconds" >&2; exit 2 ;; esac
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
# docker/conf/cluster.conf reads KV_REPLACE_AFTER as membership.replace-after. Only
# the replace fault shortens it: with 3s, a pause or a cut longer than that would
# move the faulted node's replicas too, and a kill's would move within its settle
# pause. Without replace the nodes keep the default (30s), longer than any fault.
if [ "$REPLACE" = 1 ]; then
    export KV_REPLACE_AFTER="${REPLACE_AFTER_S}s"
else
    unset KV_REPLACE_AFTER
fi
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
    "$OUT"/bench.json "$OUT"/gaps.txt "$OUT"/summary.txt "$OUT"/check.txt "$OUT"/check.html \
    "$OUT"/check.err
rm -rf "$OUT/bench-report" "$OUT/report"

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

# Wall time (ns) of a node's log line (its first three fields); empty if none.
log_ns() {
    [ -n "$1" ] || return 0
    date -u -d "$(awk '{print $1" "$2" "$3}' <<<"$1")" +%s%N 2>/dev/null || true
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
            if [ "$ts" -ge "$after" ] && { [ -z "$best" ] || [ "$ts" -lt "$best" ]; }; then best=$ts; fi
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
        # The replacement comes after REPLACE_AFTER_S, then a state transfer and an
        # election in the new epoch (a few seconds on a loaded machine).
        replace) SCHEDULE_S=$((SCHEDULE_S + REPLACE_AFTER_S + 8 + SETTLE_S + 1)) ;;
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
    --history /history.jsonl --report /report >/dev/null || die "cannot start the bench container" 2
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
    local n p l best='' bestleader=0 isl
    for n in "${ALIVE[@]}"; do
        [ -n "$KILLED" ] && share "$n" "$KILLED" && continue
        [ -n "${HOSTS[$n]:-}" ] || continue # no replica left (moved away)
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

# ---------------------------------------------------------------- replace
# `kvstore status --json` as node $1 sees it, asked from inside its container (the
# image has no shell, but the binary is there): one line, empty when it failed. A
# dead member never answers, so a poll lasts its --timeout (twice: the endpoint,
# then the others) plus about 100 ms for docker exec. A live node slower than that
# counts as not answering in that poll.
status_json() {
    tl 10 docker exec "$(cname "$1")" /kvstore status --endpoint "$(ip_of "$1"):$PORT" \
        --json --timeout 250ms 2>/dev/null || true
}

# The replica slots of a status document, one line each:
# "PARTITION ADDRESS ANSWERED EPOCH ROLE" (ANSWERED true when the node answered and
# runs the replica; EPOCH and ROLE "-" otherwise). The k-th "partition" key and the
# k-th "replica_status" list belong to the k-th partition, whatever the key order.
status_slots() {
    awk '
        function field(e, k,   v) {
            if (!match(e, "\"" k "\":(\"[^\"]*\"|[a-z0-9]+)")) return "-"
            v = substr(e, RSTART + length(k) + 3, RLENGTH - length(k) - 3)
            gsub(/"/, "", v)
            return v
        }
        {
            s = $0; np = 0
            while (match(s, /"partition":[0-9]+/)) {
                part[++np] = substr(s, RSTART + 12, RLENGTH - 12); s = substr(s, RSTART + RLENGTH)
            }
            s = $0; nr = 0
            while (match(s, /"replica_status":\[[^]]*\]/)) {
                rs[++nr] = substr(s, RSTART, RLENGTH); s = substr(s, RSTART + RLENGTH)
            }
            for (i = 1; i <= np; i++) {
                t = rs[i]
                while (match(t, /\{[^{}]*\}/)) {
                    e = substr(t, RSTART, RLENGTH); t = substr(t, RSTART + RLENGTH)
                    a = field(e, "answered")
                    print part[i], field(e, "node"), a, (a == "true" ? field(e, "epoch") : "-"),
                        (a == "true" ? field(e, "role") : "-")
                }
            }
        }' <<<"$1"
}

# Whether partition $1 has, in the slots on stdin, $2 replicas that all answer and
# run one epoch above $3, none of them at address $4. Prints that epoch and the
# replicas' addresses when it does.
healed() {
    awk -v p="$1" -v r="$2" -v e0="$3" -v dead="$4" '
        $1 == p { n++; nodes = nodes " " $2
                  if ($3 != "true" || $2 == dead || $4 == "-" || $4 <= e0) bad = 1
                  if (epoch == "") epoch = $4; else if ($4 != epoch) bad = 1 }
        END { if (n != r || bad) exit 1; print epoch nodes }'
}

# Replace: kill a node holding a replica and start node6, a new node at a fresh
# address, that joins through the seeds; then poll `kvstore status --json` until
# each partition the dead node held has R live answering replicas in a later epoch.
REPLACE_NEW=node6
DIRECTORY_GROUP=4294967295 # the directory group's id in "hosted_groups" (u32::MAX)
REPLACE_PARTS=
REPLACE_D=
REPLACE_FAILED=0
REPLACE_LINES=()
fault_replace() {
    local json slots n p best='' bestscore=-1 score others parts t_kill t_up
    local observer='' t_a t_b polls=0 poll_ms=0 line ok pending ms lo_ms slots0 R ts
    for n in "${ALIVE[@]}"; do
        [ "$n" = "$REPLACE_NEW" ] && continue
        json=$(status_json "$n")
        [ -n "$json" ] && { observer=$n; break; }
    done
    [ -n "$json" ] || die "replace: no live node answered kvstore status"
    slots=$(status_slots "$json")
    R=$(sed -n 's/.*"replication_degree":\([0-9]*\).*/\1/p' <<<"$json")
    R=${R:-3}
    # The victim: a live node whose every group has all its other replicas
    # answering (so each keeps a majority and can be moved). Preferred, in this
    # order: not a replica of the directory group (at boot, from its log: status does
    # not show that group), since the directory's lost replica is replaced first and
    # would take the new node, sending the partition's replica to an older node;
    # hosting one partition; leading it.
    for n in "${ALIVE[@]}"; do
        parts=$(awk -v a="$(ip_of "$n"):$PORT" '$2 == a { print $1 }' <<<"$slots" | sort -n | paste -sd' ' -)
        [ -n "$parts" ] || continue
        others=1
        for p in $parts; do
            awk -v p="$p" -v a="$(ip_of "$n"):$PORT" '$1 == p && $2 != a && $3 != "true" { bad = 1 } END { exit bad }' \
                <<<"$slots" || others=0
        done
        [ "$others" = 1 ] || continue
        score=0
        line=$(docker logs "$(cname "$n")" 2>&1 | grep -m1 'member of the cluster' || true)
        case $line in *"$DIRECTORY_GROUP"*) ;; *) score=4 ;; esac
        [ "$(wc -w <<<"$parts")" = 1 ] && score=$((score + 2))
        awk -v a="$(ip_of "$n"):$PORT" '$2 == a && $5 == "leader" { f = 1 } END { exit !f }' <<<"$slots" &&
            score=$((score + 1))
        if [ "$score" -gt "$bestscore" ]; then best=$n; bestscore=$score; REPLACE_PARTS=$parts; fi
    done
    [ -n "$best" ] || die "replace: no node whose groups all have their other replicas live"
    slots0=$slots
    declare -A E0
    for p in $REPLACE_PARTS; do
        E0[$p]=$(awk -v p="$p" '$1 == p && $4 != "-" && $4 > m { m = $4 } END { print m + 0 }' <<<"$slots")
    done
    [ "$observer" = "$best" ] && observer=
    for n in "${ALIVE[@]}"; do
        [ -z "$observer" ] && [ "$n" != "$best" ] && observer=$n
    done
    # The new node's container is created now and started right after the kill:
    # Compose takes seconds to create one, longer than replace-after, and a
    # replacement planned before the new node joined goes to an older node.
    tl 120 "${COMPOSE[@]}" up --no-start --no-build "$REPLACE_NEW" >&2 || die "cannot create $REPLACE_NEW"
    log "fault $1: docker kill $best ($(ip_of "$best"); replicas of partitions $REPLACE_PARTS$(
        awk -v a="$(ip_of "$best"):$PORT" '$2 == a && $5 == "leader" { printf ", leader of %s", $1 }' <<<"$slots")), then start $REPLACE_NEW ($(ip_of "$REPLACE_NEW")); membership.replace-after ${REPLACE_AFTER_S}s"
    t_kill=$(now_ns)
    tl 30 docker kill "$(cname "$best")" >/dev/null || die "docker kill failed"
    remove_alive "$best"
    tl 30 docker start "$(cname "$REPLACE_NEW")" >/dev/null || die "cannot start $REPLACE_NEW"
    t_up=$(now_ns)
    NODES+=("$REPLACE_NEW")
    ALIVE+=("$REPLACE_NEW")
    FAULTS+=("replace|$best|$REPLACE_PARTS|$t_kill|killed for good; $REPLACE_NEW ($(ip_of "$REPLACE_NEW")) started $(((t_up - t_kill) / 1000000)) ms after the kill")
    log "  $REPLACE_NEW started $(((t_up - t_kill) / 1000000)) ms after the kill; polling kvstore status on $observer"
    # Poll until every partition of the victim is healed, or REPLACE_WAIT_S.
    declare -A HEAL_NS LAST_BAD_NS HEAL_AT
    pending=$REPLACE_PARTS
    t_b=$t_kill
    while [ -n "$pending" ] && [ $((t_b - t_kill)) -lt $((REPLACE_WAIT_S * 1000000000)) ]; do
        t_a=$(now_ns)
        json=$(status_json "$observer")
        t_b=$(now_ns)
        polls=$((polls + 1))
        poll_ms=$((poll_ms + (t_b - t_a) / 1000000))
        slots=$(status_slots "$json")
        ok=
        for p in $pending; do
            if line=$(healed "$p" "$R" "${E0[$p]}" "$(ip_of "$best"):$PORT" <<<"$slots"); then
                HEAL_NS[$p]=$t_b
                HEAL_AT[$p]=$line
                log "  partition $p: $R live replicas again in epoch ${line%% *} ($(echo "${line#* }" | tr ' ' ','))"
            else
                LAST_BAD_NS[$p]=$t_a
                ok="$ok $p"
            fi
        done
        pending=${ok# }
        [ -n "$pending" ] && sleep 0.1
    done
    local heal_max=0
    [ "$polls" = 0 ] || log "  $polls status polls of $((poll_ms / polls)) ms on average, 100 ms apart"
    for p in $REPLACE_PARTS; do
        if [ -z "${HEAL_NS[$p]:-}" ]; then
            REPLACE_FAILED=1
            log "  partition $p: not back to $R live replicas within ${REPLACE_WAIT_S}s; last status: $(grep "^$p " <<<"$slots" | paste -sd';' -)"
            REPLACE_LINES+=("partition $p: NOT back to $R live replicas within ${REPLACE_WAIT_S}s ($polls status polls)")
            heal_max=$REPLACE_WAIT_S
            continue
        fi
        ms=$(((HEAL_NS[$p] - t_kill) / 1000000))
        lo_ms=$(((${LAST_BAD_NS[$p]:-$t_kill} - t_kill) / 1000000))
        [ "$lo_ms" -lt 0 ] && lo_ms=0
        line=${HEAL_AT[$p]}
        local newr='' a
        for a in ${line#* }; do
            grep -qE "^$p $a " <<<"$slots0" || newr="$newr $(node_of_ip "${a%:*}")"
        done
        REPLACE_LINES+=("partition $p: below R=$R live replicas for ${ms} ms (from the kill to the end of the first status poll showing $R answering replicas in epoch ${line%% *}; the poll before began at ${lo_ms} ms); new replica:${newr:- none}")
        # The same from the nodes' logs: the last of the new epoch's replicas to start.
        local last='' rl
        for a in ${line#* }; do
            n=$(node_of_ip "${a%:*}")
            rl=$(docker logs "$(cname "$n")" 2>&1 | grep 'replica started' | grep "epoch: ${line%% *}," |
                grep -E "partition: $p(,|$)" | tail -n1 || true)
            ts=$(log_ns "$rl")
            [ -n "$ts" ] && { [ -z "$last" ] || [ "$ts" -gt "$last" ]; } && last=$ts
        done
        [ -n "$last" ] && REPLACE_LINES+=("partition $p: epoch ${line%% *} running on all $R replicas $(((last - t_kill) / 1000000)) ms after the kill (the last 'replica started' in their logs)")
        heal_max=$(awk -v a="$heal_max" -v b="$ms" 'BEGIN { b /= 1000; print (b > a ? b : a) }')
    done
    REPLACE_D=$heal_max
    # Precise times from the nodes' logs: the join and the new replicas' start.
    local jl
    jl=$(docker logs "$(cname "$REPLACE_NEW")" 2>&1 | grep -m1 'member of the cluster' || true)
    ts=$(log_ns "$jl")
    [ -n "$ts" ] && REPLACE_LINES+=("$REPLACE_NEW a member $(((ts - t_kill) / 1000000)) ms after the kill (its log)")
    jl=$(docker logs "$(cname "$REPLACE_NEW")" 2>&1 | grep -c 'directory leader' || true)
    [ "${jl:-0}" != 0 ] && REPLACE_LINES+=("$REPLACE_NEW also runs a replica of the directory group (its log)")
    for p in $REPLACE_PARTS; do
        for n in "${ALIVE[@]}"; do
            jl=$(docker logs "$(cname "$n")" 2>&1 | grep 'partition state fetched' | grep -E "partition: $p(,|$)" | tail -n1 || true)
            ts=$(log_ns "$jl")
            [ -n "$ts" ] && [ "$ts" -ge "$t_kill" ] &&
                REPLACE_LINES+=("partition $p: state fetched by $n $(((ts - t_kill) / 1000000)) ms after the kill ($(sed -n 's/.*\(bytes: [0-9]*\).*/\1/p' <<<"$jl"), its log)")
        done
    done
    for line in "${REPLACE_LINES[@]}"; do log "  $line"; done
    sleep "$SETTLE_S"
}

sleep 3 # warm-up and a steady state before the first fault
anchor_bench_clock
# Partitions each live node hosts now, from `kvstore status --json`: with a short
# replace-after, replicas of a killed, paused or cut node move during the run.
# HOSTS stays as it was if no node answers.
refresh_hosts() {
    local n json='' slots
    for n in "${ALIVE[@]}"; do
        json=$(status_json "$n")
        [ -n "$json" ] && break
    done
    [ -n "$json" ] || return 0
    slots=$(status_slots "$json")
    # The killed node too: once its replicas moved, it shares no group any more.
    for n in "${ALIVE[@]}" $KILLED; do
        HOSTS[$n]=$(awk -v a="$(ip_of "$n"):$PORT" '$2 == a { print $1 }' <<<"$slots" | sort -n | paste -sd' ' -)
    done
}

i=0
for f in "${FAULT_LIST[@]}"; do
    i=$((i + 1))
    [ "$REPLACE" = 1 ] && [ "$i" -gt 1 ] && refresh_hosts
    "fault_$f" "$i/${#FAULT_LIST[@]}"
done

log "waiting for the bench to finish"
rc=$(tl $((BENCH_S + 60)) docker wait kvfault-bench) || die "the bench did not finish in time"
tl 20 docker logs kvfault-bench >"$OUT/bench.json" 2>"$OUT/bench.log" || true
[ "$rc" = 0 ] || die "the bench exited with $rc: $(tail -n3 "$OUT/bench.log")"
tl 30 docker cp kvfault-bench:/history.jsonl "$OUT/bench-history.jsonl" ||
    die "cannot copy the history out of the bench container"
log "bench: $(cat "$OUT/bench.json")"
# The per-second data for the charts; the verdict does not depend on it.
tl 30 docker cp kvfault-bench:/report "$OUT/bench-report" ||
    log "cannot copy the bench's report out of its container (no charts)"

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
tl 300 "${KV[@]}" check-history "$OUT/history.jsonl" --html "$OUT/check.html" >"$OUT/check.txt" 2>"$OUT/check.err"
check_rc=$?
cat "$OUT/check.err" >>"$OUT/check.txt"
set -e
cat "$OUT/check.txt" >&2
if [ "$check_rc" != 0 ] || ! grep -q '^linearizable' "$OUT/check.txt"; then
    FAIL=1
    log "FAIL: the history is not (shown to be) linearizable"
fi

windows=()
shades=() # one window per fault, shaded in the per-second chart
hist_end=$(awk -v l="$(grep -o '"ret":[0-9]*' "$OUT/bench-history.jsonl" | cut -d: -f2 | sort -n | tail -n1)" \
    'BEGIN { printf "%.3f", l / 1e9 - 0.5 }')
for f in "${FAULTS[@]}"; do
    IFS='|' read -r name node parts t detail <<<"$f"
    s=$(hist_s "$t")
    # Two windows per fault. "$name": from 0.5 s before the injection (slack for
    # the clock anchor) to 1 s after the fault ends (kill: at once; pause and cut:
    # when the node is resumed or reconnected; replace: when status showed R live
    # replicas again, so the move itself is inside); the longest gap overlapping it is
    # the fault's unavailability, reported whole even when it runs past the window.
    # "$name-settle": the rest of the recovery pause, for churn after the fault
    # and for a partition that never serves again.
    d=0
    case $name in
        pause) d=$PAUSE_S ;;
        cut) d=$CUT_S ;;
        replace) d=${REPLACE_D:-0} ;;
    esac
    b=$(awk -v s="$s" 'BEGIN { printf "%.3f", s - 0.5 }')
    if awk -v b="$b" -v h="$hist_end" 'BEGIN { exit !(b >= h) }'; then
        log "  $name: injected after the bench ended; no window (make the bench longer)"
        continue
    fi
    m=$(awk -v s="$s" -v d="$d" -v h="$hist_end" 'BEGIN { e = s + d + 1; printf "%.3f", (e < h ? e : h) }')
    e=$(awk -v s="$s" -v d="$d" -v st="$SETTLE_S" -v h="$hist_end" 'BEGIN { e = s + d + st - 0.5; printf "%.3f", (e < h ? e : h) }')
    windows+=(--window "$name=$b..$m")
    shades+=(--window "$name=$b..$m")
    awk -v m="$m" -v e="$e" 'BEGIN { exit !(e > m) }' && windows+=(--window "$name-settle=$m..$e")
    # replace: the same span in two parts, the kill (its first second) and the move
    # that follows, so that the summary tells which of them kept clients waiting.
    if [ "$name" = replace ]; then
        k=$(awk -v s="$s" -v m="$m" 'BEGIN { e = s + 1; printf "%.3f", (e < m ? e : m) }')
        windows+=(--window "replace-kill=$b..$k")
        awk -v m="$m" -v k="$k" 'BEGIN { exit !(m > k) }' && windows+=(--window "replace-move=$k..$m")
    fi
done
set +e
"${KV[@]}" history-gaps "$OUT/bench-history.jsonl" --partitions "$PARTITIONS" "${windows[@]}" >"$OUT/gaps.txt" 2>&1
gaps_rc=$?
"${KV[@]}" history-gaps "$OUT/bench-history.jsonl" --partitions "$PARTITIONS" "${windows[@]}" --json >"$OUT/gaps.jsonl" 2>/dev/null
set -e
[ "$gaps_rc" = 0 ] || { FAIL=1; log "FAIL: a partition did not serve again after a fault"; }
# Throughput, p99, errors and timeouts per second with the faults shaded (the
# bench's per-second buckets are on the history's clock, as the windows are).
CHARTS="none (no report data from the bench)"
if [ -f "$OUT/bench-report/report.json" ]; then
    if "${KV[@]}" report "$OUT/bench-report/report.json" --out "$OUT/report" \
        --title "fault test: $FAULTS_ASKED" "${shades[@]}" 2>>"$OUT/check.err"; then
        CHARTS="$OUT/report/index.html"
    else
        CHARTS="none (kvstore report failed: $(tail -n1 "$OUT/check.err"))"
    fi
fi
log "charts: $CHARTS"
[ "$REPLACE_FAILED" = 0 ] || { FAIL=1; log "FAIL: a partition did not get back to R live replicas after the replace fault"; }

{
    echo "fault test: 5 nodes$([ "$REPLACE" = 0 ] || echo " (and $REPLACE_NEW, started by replace)"), $PARTITIONS partitions, replication 3; bench $CLIENTS clients, $KEYS keys, --timeout $BENCH_TIMEOUT"
    echo "settings: reference.conf defaults (tick 10ms, failure-detector 300ms + 100ms, heartbeat 50ms, link/paxos resend 200ms)$([ "$REPLACE" = 0 ] || echo ", except membership.replace-after ${REPLACE_AFTER_S}s")"
    echo "bench: $(cat "$OUT/bench.json")"
    echo "check-history: $(head -n1 "$OUT/check.txt")$([ "$FINAL_OK" = 1 ] || echo " (bench history only: the final reads failed)")"
    echo "charts: $CHARTS; the checker's page: $OUT/check.html"
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
        if [ "$name" = replace ]; then
            for p in $parts; do
                split=
                for w in kill move; do
                    g=$(grep -F "\"window\":\"replace-$w\"" "$OUT/gaps.jsonl" | grep -F "\"partition\":$p," |
                        sed -n 's/.*"longest_gap_ms":\([0-9.]*\).*/\1/p')
                    split="$split${split:+, }$w ${g:-?} ms"
                done
                echo "    partition $p: longest gap at the kill (its first second) and during the move (to R live replicas + 1 s): $split"
            done
            for l in "${REPLACE_LINES[@]}"; do echo "    $l"; done
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

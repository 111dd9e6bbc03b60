//! Random fault schedules, each fully determined by one seed.
//!
//! A schedule picks a cluster shape (5 servers / 2 partitions / 3 replicas, or 3
//! servers / 1 partition / 3 replicas) plus 0–2 spare servers that start between 2
//! and 3.5 s and join the running cluster, a delay model (zero, uniform 3–7 ms or
//! uniform 1–20 ms), and:
//! - at 3 s, 3–6 clients with 1–3 closed-loop sessions each on a small key space
//!   (so operations collide), issuing GET, PUT, CAS (against the value last seen,
//!   or against absent once the session saw the key missing) and, in about two
//!   thirds of the sessions, DELETE;
//! - between 4 s and 12 s, 1–5 faults: crashes (at most a minority of every
//!   replication group; half of them are restarts, where a new process starts at
//!   once at the crashed node's address and joins as an empty member, its former
//!   slots staying lost), partitions into two sides that heal
//!   0.3–3 s later, and dropped connections (what is in flight is lost; the
//!   connection comes back);
//! - at 13 s everything still cut is healed; at 16 s a checking client, contacting
//!   a live server, reads every key and writes it once.
//!
//! [`check`] fails a run if the history is not linearizable, if the simulator saw a
//! problem (replicas deciding different commands at one index, a livelock), if an
//! operation is still unfinished at the end, if an operation of the checking
//! client fails (once faults have healed and a majority of every group is alive,
//! every operation must complete), if the live servers do not end with one
//! directory in which each of them, restarted ones included, is a member as the
//! process it is, or if a partition ends with fewer live replicas than it should:
//! servers replace a replica suspected for [`REPLACE_AFTER`], and a restarted
//! process's former replicas at once.
//!
//! Whether a crash is a restart is drawn from a stream of its own, so a schedule
//! without restarts is exactly the one this seed gave before restarts existed; the
//! weight of DELETE in a session's mix is drawn from another, so the cluster, the
//! clients and the faults of a seed do not depend on it.

use std::time::Duration;

use kv_ports::{KvOp, LookupTable};
use kv_protocols::rng::{SplitMix64, mix64};

use crate::scenario::{Event, Outcome, Scenario, ms, node_addr, secs};
use crate::sim::DelayModel;
use crate::workload::{ClosedLoop, Mix, Plan};

/// The client id of the checking client.
pub const CHECKER_CLIENT: usize = 100;

/// When every fault is healed.
pub const HEAL_ALL_AT: Duration = Duration::from_secs(13);

/// When the checking client starts.
pub const CHECK_AT: Duration = Duration::from_secs(16);

/// `membership.replace-after` of the servers: a crashed replica is replaced about a
/// second after it is suspected, well before the checking client starts.
pub const REPLACE_AFTER: Duration = Duration::from_secs(1);

/// Least time between two crashes (kills or restarts) of one schedule: suspicion,
/// `REPLACE_AFTER`, the stop-sign and the transfer take about 1.5 s, and a cut in
/// between may delay them, so the group a crash hits is whole again before the
/// next one.
pub const CRASH_SPACING: Duration = Duration::from_secs(4);

/// The random schedule of `seed`.
pub fn scenario(seed: u64) -> Scenario {
    let mut rng = SplitMix64::new(mix64(seed ^ 0x7363_6865_6475_6c65));
    let (n, partitions) = if rng.chance(0.5) { (5, 2) } else { (3, 1) };
    let r = 3;
    let delay = match rng.below(3) {
        0 => DelayModel::zero(),
        1 => DelayModel::uniform_ms(3, 7),
        _ => DelayModel::uniform_ms(1, 20),
    };
    let keys: Vec<String> = (0..rng.range_inclusive(2, 6))
        .map(|i| format!("k{i}"))
        .collect();
    // Spares: 0–2 servers beyond the boot threshold, started once the cluster runs;
    // they join as members without replicas and take over lost ones. Drawn from a
    // stream of their own, like restarts.
    let mut joins = SplitMix64::new(mix64(seed ^ 0x7370_6172_6573));
    let spares = joins.below(3) as usize;
    let total = n + spares;
    // Replication settings, from a stream of their own: in a third of the schedules
    // every message above a few kilobytes (a sync after a fault) travels in chunks
    // (`kv_components::large_paxos`), and in a third the partitions are snapshotted
    // every few dozen entries (so lagging replicas get snapshots).
    let mut settings = SplitMix64::new(mix64(seed ^ 0x6c61_7267_6573));
    let max_message = settings
        .chance(1.0 / 3.0)
        .then(|| settings.range_inclusive(700, 1500) as usize);
    let snapshot_interval = settings
        .chance(1.0 / 3.0)
        .then(|| settings.range_inclusive(10, 60));
    let gap = ms(rng.range_inclusive(0, 300));
    let mut sc = Scenario::new("random")
        .seed(seed)
        .network(delay)
        .cluster(total, partitions, r)
        .boot_threshold(n)
        .replace_after(REPLACE_AFTER);
    if let Some(bytes) = max_message {
        sc = sc.max_message_bytes(bytes);
    }
    if let Some(entries) = snapshot_interval {
        sc = sc.snapshot_interval(entries);
    }
    for i in 1..=n {
        sc = sc.start_node(gap * (i as u32 - 1), i);
    }
    for i in n + 1..=total {
        sc = sc.start_node(secs(2) + ms(joins.below(1500)), i);
    }

    // Closed-loop clients. The weight of DELETE comes from a stream of its own
    // (0 for about a third of the sessions, which still delete nothing).
    let mut deletes = SplitMix64::new(mix64(seed ^ 0x0064_656c_6574_6573));
    let clients = rng.range_inclusive(3, 6) as usize;
    for c in 1..=clients {
        let sessions = (0..rng.range_inclusive(1, 3))
            .map(|_| {
                Plan::ClosedLoop(ClosedLoop {
                    ops: rng.range_inclusive(10, 30) as usize,
                    keys: keys.clone(),
                    mix: Mix {
                        get: rng.range_inclusive(1, 3) as u32,
                        put: rng.range_inclusive(1, 3) as u32,
                        cas: rng.range_inclusive(1, 3) as u32,
                        del: deletes.range_inclusive(0, 2) as u32,
                    },
                    seed: rng.next_u64(),
                    think: ms(rng.range_inclusive(0, 300)),
                })
            })
            .collect();
        let contact = rng.range_inclusive(1, n as u64) as usize;
        sc = sc.client(secs(3) + ms(rng.below(500)), c, contact, sessions);
    }

    // Faults.
    let nodes: Vec<_> = (1..=n).map(node_addr).collect();
    let table = LookupTable::build(nodes, partitions, r).ok();
    let mut dead: Vec<usize> = Vec::new();
    let mut restarted: Vec<usize> = Vec::new();
    let mut crash_times: Vec<Duration> = Vec::new();
    let mut restarts = SplitMix64::new(mix64(seed ^ 0x7265_7374_6172_7473));
    let faults = rng.range_inclusive(1, 5);
    for _ in 0..faults {
        let at = secs(4) + ms(rng.below(8000));
        match rng.below(3) {
            0 => {
                let victim = rng.range_inclusive(1, total as u64) as usize;
                let mut after = dead.clone();
                after.push(victim);
                // Groups change as they heal, so which nodes a group holds later is
                // not known here: crashes come at least CRASH_SPACING apart, time for
                // the group hit by one to be whole again before the next.
                let spaced = crash_times
                    .iter()
                    .all(|t: &Duration| t.abs_diff(at) >= CRASH_SPACING);
                if !dead.contains(&victim) && spaced && minority_everywhere(table.as_ref(), &after)
                {
                    crash_times.push(at);
                    dead.push(victim);
                    if restarts.chance(0.5) {
                        // Its slots are lost all the same: it counts as dead for
                        // the groups, but it runs (and may be contacted).
                        restarted.push(victim);
                        sc = sc.restart(at, victim);
                    } else {
                        sc = sc.kill(at, victim);
                    }
                }
            }
            1 => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for i in 1..=total {
                    if rng.chance(0.5) {
                        a.push(i)
                    } else {
                        b.push(i)
                    }
                }
                if !a.is_empty() && !b.is_empty() {
                    let heal = (at + ms(rng.range_inclusive(300, 3000))).min(HEAL_ALL_AT);
                    sc = sc.partition(at, vec![a, b]).heal(heal);
                }
            }
            _ => {
                let x = rng.range_inclusive(1, total as u64) as usize;
                let y = rng.range_inclusive(1, total as u64) as usize;
                if x != y {
                    sc = sc.at(
                        at,
                        Event::DropConnection(x, y, ms(rng.range_inclusive(1, 500))),
                    );
                }
            }
        }
    }
    sc = sc.heal(HEAL_ALL_AT);
    if !restarted.is_empty() || spares > 0 {
        // A restarted bootstrap server, and spares while it is down, get in through
        // their seeds.
        sc = sc.with_seeds();
    }

    // The checking client: every key read, then written, one after the other.
    let live: Vec<usize> = (1..=total).filter(|i| !dead.contains(i)).collect();
    let contact = live[rng.below(live.len() as u64) as usize];
    let mut check_ops = Vec::new();
    for k in &keys {
        check_ops.push(KvOp::Get { key: k.clone() });
        check_ops.push(KvOp::Put {
            key: k.clone(),
            value: format!("final-{k}"),
        });
        check_ops.push(KvOp::Get { key: k.clone() });
    }
    sc.client(
        CHECK_AT,
        CHECKER_CLIENT,
        contact,
        vec![Plan::Sequence(check_ops)],
    )
    .end_when_done(secs(60))
}

/// Whether crashing `dead` leaves a majority alive in every replication group.
fn minority_everywhere(table: Option<&LookupTable>, dead: &[usize]) -> bool {
    let Some(t) = table else { return false };
    let dead: Vec<_> = dead.iter().map(|i| node_addr(*i)).collect();
    t.groups.iter().all(|g| {
        let down = g.iter().filter(|n| dead.contains(n)).count();
        2 * down < g.len()
    })
}

/// Everything wrong with a run of a random schedule (empty: it passed).
pub fn check(o: &Outcome) -> Vec<String> {
    let mut f = o.failures();
    if !o.all_done {
        let open = o.ops.iter().filter(|x| x.ret.is_none()).count();
        f.push(format!(
            "{open} operations never finished (run ended at {:?})",
            o.end_time
        ));
    }
    for op in o.client_ops(CHECKER_CLIENT) {
        if !op.succeeded() {
            f.push(format!(
                "after every fault healed, an operation did not complete: {:?} -> {:?}",
                op.op, op.result
            ));
        }
    }
    f.extend(directory_problems(o));
    f.extend(redundancy_problems(o));
    f
}

/// Once the schedule has quiesced, every partition must again have as many live
/// replicas running its current epoch as the replication degree asks, or as many as
/// there are live members: crashed replicas were replaced, and the replicas of
/// restarted processes too.
pub fn redundancy_problems(o: &Outcome) -> Vec<String> {
    let mut f = Vec::new();
    let Some(Some(d)) = o.directories.values().next() else {
        return f;
    };
    let live = |addr| {
        o.incarnations.iter().find_map(|(i, inc)| {
            (node_addr(*i) == addr).then_some(kv_ports::Member {
                addr,
                incarnation: *inc,
            })
        })
    };
    let live_members = d
        .members()
        .iter()
        .filter(|m| live(m.addr) == Some(**m))
        .count();
    for p in 0..d.partitions() {
        let Some(g) = d.group(p) else { continue };
        let running = g
            .replicas
            .iter()
            .filter(|m| live(m.addr) == Some(**m))
            .filter(|m| {
                o.incarnations.keys().any(|i| {
                    node_addr(*i) == m.addr
                        && o.hosting.get(i).is_some_and(|h| h.contains(&(p, g.epoch)))
                })
            })
            .count();
        let expected = d.replication_degree().min(live_members);
        if running < expected {
            f.push(format!(
                "partition {p} ends with {running} live replicas running epoch {} (settled: {}), \
                 {expected} expected",
                g.epoch, g.settled
            ));
        }
    }
    f
}

/// The live servers must end with one directory in which each is a member as the
/// process it is (its current incarnation).
pub fn directory_problems(o: &Outcome) -> Vec<String> {
    let mut f = Vec::new();
    let Some(first) = o.directories.values().next() else {
        return f;
    };
    for (i, d) in &o.directories {
        match d {
            None => f.push(format!("server {i} is not a member at the end")),
            Some(d) if Some(d) != first.as_ref() => f.push(format!(
                "server {i} ends with directory version {}, another server with {:?}",
                d.version(),
                first.as_ref().map(|x| x.version())
            )),
            Some(d) => {
                let me = kv_ports::Member {
                    addr: node_addr(*i),
                    incarnation: o.incarnations.get(i).copied().unwrap_or_default(),
                };
                if !d.is_current(&me) {
                    f.push(format!("server {i} is not a member as the process it is"));
                }
            }
        }
    }
    f
}

/// Runs the schedule of `seed` (printing the event trace if `trace`).
pub fn run(seed: u64, trace: bool) -> Outcome {
    scenario(seed).trace(trace).run()
}

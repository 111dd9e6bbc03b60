//! Issue 13 "Done when", processes: a cluster that heals. Five `kvstore start`
//! processes on loopback, boot-threshold 3, R = 3, one partition,
//! `membership.replace-after = 2s`, every node listing the others as seeds. The three
//! nodes that form the cluster hold partition 0 (and the directory); the two started
//! after join as spares. A workload of client sessions runs throughout and records a
//! history. One original replica is SIGKILLed; once `kvstore status --json` shows the
//! partition on three live, answering replicas of a later epoch, without the killed
//! node, a second original replica is SIGKILLed and the same is awaited. Then:
//! - the partition still serves (`kvstore put` and `get` succeed);
//! - every write the workload saw acknowledged on a key of its own is read back;
//! - `kvstore check-history` finds the whole history linearizable;
//! - `kvstore status --json` lists R live, answering replicas for every partition;
//! - no node panicked.
//!
//! The first test kills a replica that is not the bootstrap server first (the
//! partition's leader when it is not the bootstrap server), the second kills the
//! bootstrap server first. The time from each kill to R live replicas again is
//! printed (`--nocapture`); it is a measurement, not asserted. Every wait polls a
//! condition with a bound; nothing sleeps to synchronise.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Node, Scratch, WAIT, cluster_slot, free_addrs, run, wait_until};
use kv_checker::{HistoryOp, Op};
use kv_client::{ClientOptions, ClientSystem, Error, Session};
use kv_ports::{KvOp, KvResult};
use kv_protocols::rng::SplitMix64;
use serde_json::Value;

/// Processes started.
const NODES: usize = 5;
/// Processes that form the cluster; the others join as spares.
const BOOT_THRESHOLD: usize = 3;
/// Replicas per partition.
const R: usize = 3;
/// `membership.replace-after` of every node.
const REPLACE_AFTER: &str = "2s";
/// Hang guard of each wait for the group to heal (not a performance bound).
const HEAL_LIMIT: Duration = Duration::from_secs(45);
/// Concurrent client sessions of the workload.
const SESSIONS: usize = 3;
/// Keys the sessions share (GET, PUT and CAS on them race with each other).
const SHARED_KEYS: u64 = 4;
/// Pause of a session between two operations: the workload must run throughout
/// without starving five nodes on a 2-core machine.
const PACE: Duration = Duration::from_millis(3);

// ---------------------------------------------------------------------------------
// The cluster

struct Healing {
    nodes: Vec<Node>,
    bootstrap: SocketAddr,
    /// The spares: never killed, so the workload and status use them as endpoints.
    spares: Vec<SocketAddr>,
    /// Partition 0's replicas in the boot configuration.
    original: Vec<SocketAddr>,
    scratch: Scratch,
}

impl Healing {
    /// Starts the bootstrap server, then two nodes (the three form the cluster and
    /// run partition 0), then two spares that join the running cluster.
    fn start(name: &str) -> Healing {
        let scratch = Scratch::new(name);
        let addrs = free_addrs(NODES);
        let bootstrap = addrs[0];
        let nodes = common::start_growing_cluster(
            &scratch,
            &addrs,
            BOOT_THRESHOLD,
            1,
            R,
            &format!("membership.replace-after = {REPLACE_AFTER}"),
        );
        let spares = addrs[BOOT_THRESHOLD..].to_vec();
        let mut c = Healing {
            nodes,
            bootstrap,
            spares,
            original: Vec::new(),
            scratch,
        };
        // Every node lists the five members, and partition 0 is served by the boot
        // nodes in epoch 0 with a confirmed leader.
        let mut group = Vec::new();
        wait_until("the spares joined and partition 0 is served", WAIT, || {
            let all = c.nodes.iter().all(|n| {
                status_json(n.address, "1s").is_some_and(|s| {
                    s["nodes"]
                        .as_array()
                        .is_some_and(|a| a.len() == NODES && a.iter().all(|e| e["member"] == true))
                })
            });
            all && match c.status().and_then(|s| healthy(&s, &[], None)) {
                Some((0, g)) => {
                    group = g[0].clone();
                    true
                }
                _ => false,
            }
        });
        group.sort();
        let mut boot: Vec<SocketAddr> = addrs[..BOOT_THRESHOLD].to_vec();
        boot.sort();
        assert_eq!(group, boot, "partition 0 is not on the boot nodes");
        c.original = group;
        c
    }

    fn node(&mut self, a: SocketAddr) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.address == a)
            .expect("a node of the cluster")
    }

    fn killed(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter(|n| n.killed)
            .map(|n| n.address)
            .collect()
    }

    /// The status report of the first spare that gives one.
    fn status(&self) -> Option<Value> {
        self.spares.iter().find_map(|a| status_json(*a, "1s"))
    }

    /// Like [`Healing::status`] with a short wait for the other nodes, so that the
    /// time to heal is measured with a fine grain even while a killed node is
    /// still in the table (a live node that is late only costs one more poll).
    fn quick_status(&self) -> Option<Value> {
        self.spares.iter().find_map(|a| status_json(*a, "300ms"))
    }

    /// SIGKILLs `victim`, a replica of partition 0's group `group` (in `epoch`),
    /// then waits until every partition is on R live, answering replicas of a later
    /// epoch, none of them killed. Returns that epoch, partition 0's new group and
    /// the time from the kill to the status report that showed it.
    fn kill_and_heal(
        &mut self,
        victim: SocketAddr,
        epoch: u64,
        group: &[SocketAddr],
    ) -> (u64, Vec<SocketAddr>, Duration) {
        assert!(group.contains(&victim));
        self.node(victim).kill();
        let killed_at = Instant::now();
        let dead = self.killed();
        let mut healed = None;
        wait_until(
            &format!("partition 0 heals after {victim} was killed"),
            HEAL_LIMIT,
            || {
                healed = self
                    .quick_status()
                    .and_then(|s| healthy(&s, &dead, Some(epoch)));
                healed.is_some()
            },
        );
        let took = killed_at.elapsed();
        let (now, groups) = healed.expect("healed");
        let mut new_group = groups[0].clone();
        new_group.sort();
        // The newcomer started from the state it fetched from the old replicas.
        for a in new_group.iter().filter(|a| !group.contains(a)) {
            self.node(*a).wait_for_log("partition state fetched", WAIT);
        }
        (now, new_group, took)
    }

    /// The leader of partition 0 in a status report.
    fn leader(&self) -> Option<SocketAddr> {
        self.status()?["partitions"][0]["leader"]
            .as_str()?
            .parse()
            .ok()
    }

    /// Fails the test (after printing every log) if a node panicked or a live node
    /// exited.
    fn assert_no_crash(&mut self) {
        for n in &mut self.nodes {
            let panicked = n.log_text().contains("panicked");
            let exited = !n.killed && n.exited().is_some();
            assert!(
                !panicked && !exited,
                "node {} panicked or exited; log:\n{}",
                n.address,
                n.log_text()
            );
        }
    }
}

/// `kvstore status --json` through `endpoint`, waiting `timeout` for the endpoint
/// and then for the other nodes (a killed node costs a whole `timeout`).
fn status_json(endpoint: SocketAddr, timeout: &str) -> Option<Value> {
    let ep = endpoint.to_string();
    let r = run(&["status", "--endpoint", &ep, "--json", "--timeout", timeout]);
    (r.code == Some(0))
        .then(|| serde_json::from_str(r.stdout.trim()).ok())
        .flatten()
}

/// When every partition in `status` has R replicas, none in `dead`, each answering
/// as leader or follower in one epoch (above `above`, if given) with a confirmed
/// leader: that epoch (the highest over the partitions) and every partition's
/// replicas.
fn healthy(
    status: &Value,
    dead: &[SocketAddr],
    above: Option<u64>,
) -> Option<(u64, Vec<Vec<SocketAddr>>)> {
    let parts = status["partitions"].as_array()?;
    if parts.is_empty() {
        return None;
    }
    let mut top = 0;
    let mut groups = Vec::new();
    for p in parts {
        let replicas: Vec<SocketAddr> = p["replicas"]
            .as_array()?
            .iter()
            .filter_map(|r| r.as_str()?.parse().ok())
            .collect();
        if replicas.len() != R || replicas.iter().any(|r| dead.contains(r)) {
            return None;
        }
        let st = p["replica_status"].as_array()?;
        let epochs: Vec<u64> = st
            .iter()
            .filter(|r| r["answered"] == true && (r["role"] == "leader" || r["role"] == "follower"))
            .filter_map(|r| r["epoch"].as_u64())
            .collect();
        if epochs.len() != R || epochs.iter().any(|e| *e != epochs[0]) {
            return None;
        }
        if p["leader_confirmed"] != true || above.is_some_and(|a| epochs[0] <= a) {
            return None;
        }
        top = top.max(epochs[0]);
        groups.push(replicas);
    }
    Some((top, groups))
}

// ---------------------------------------------------------------------------------
// The workload

/// What one session did.
#[derive(Default)]
struct SessionLog {
    history: Vec<HistoryOp>,
    /// (key, value) of every acknowledged PUT on a key only this session writes.
    acked: Vec<(String, String)>,
    unknown: u64,
    rejected: Vec<String>,
}

struct Workload {
    system: Option<ClientSystem>,
    stop: Arc<AtomicBool>,
    /// Set when the test fails: the sessions stop without reading back.
    abandon: Arc<AtomicBool>,
    /// Operations answered so far, over all sessions.
    answered: Arc<AtomicU64>,
    threads: Vec<JoinHandle<SessionLog>>,
}

/// Runs `op` on `session`, records it in `log` with times from `origin`, and
/// returns its outcome.
fn record(
    session: &Session,
    client: u64,
    origin: Instant,
    op: KvOp,
    log: &mut SessionLog,
) -> Result<KvResult, Error> {
    let call = origin.elapsed().as_nanos() as u64;
    let r = session.execute(op.clone());
    let ret = origin.elapsed().as_nanos() as u64;
    let known = match &r {
        Ok(_) => true,
        Err(Error::Unavailable(_)) => {
            log.unknown += 1;
            false
        }
        Err(e) => {
            // Refused before it could take effect: not part of the history.
            log.rejected.push(format!("{op:?}: {e}"));
            return r;
        }
    };
    let body = match (&op, &r) {
        (KvOp::Get { key }, _) => Op::Get {
            key: key.clone(),
            out: match &r {
                Ok(KvResult::Value(v)) => Some(v.clone()),
                _ => None,
            },
        },
        (KvOp::Put { key, value }, _) => Op::Put {
            key: key.clone(),
            value: value.clone(),
        },
        (KvOp::Cas { key, expected, new }, _) => Op::Cas {
            key: key.clone(),
            from: expected.clone(),
            to: new.clone(),
            ok: matches!(r, Ok(KvResult::Done)),
        },
        (KvOp::Delete { key }, _) => Op::Del {
            key: key.clone(),
            existed: matches!(r, Ok(KvResult::Done)),
        },
    };
    log.history.push(HistoryOp {
        client,
        call,
        ret: known.then_some(ret),
        op: body,
    });
    r
}

/// One session: until `stop`, PUTs on keys of its own and GET / PUT / CAS on the
/// shared keys; then reads back every key of its own it saw acknowledged.
fn session_loop(
    idx: usize,
    session: Session,
    origin: Instant,
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> SessionLog {
    let client = idx as u64 + 1;
    let mut log = SessionLog::default();
    let mut rng = SplitMix64::new(0x5EED + idx as u64);
    let mut known: HashMap<String, String> = HashMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let shared = format!("s{}", rng.below(SHARED_KEYS));
        let value = format!("c{client}-{n}");
        let op = match rng.below(8) {
            0..=2 => KvOp::Put {
                key: format!("own-{client}-{n}"),
                value: value.clone(),
            },
            3 | 4 => KvOp::Get { key: shared },
            5 | 6 => KvOp::Put {
                key: shared,
                value: value.clone(),
            },
            _ => KvOp::Cas {
                expected: Some(
                    known
                        .get(&shared)
                        .cloned()
                        .unwrap_or_else(|| format!("never-{client}")),
                ),
                key: shared,
                new: value.clone(),
            },
        };
        let r = record(&session, client, origin, op.clone(), &mut log);
        if r.is_ok() {
            answered.fetch_add(1, Ordering::SeqCst);
        }
        match (&op, r) {
            (KvOp::Put { key, value }, Ok(KvResult::Done)) => {
                if key.starts_with("own-") {
                    log.acked.push((key.clone(), value.clone()));
                } else {
                    known.insert(key.clone(), value.clone());
                }
            }
            (KvOp::Get { key }, Ok(KvResult::Value(v))) => {
                known.insert(key.clone(), v);
            }
            (KvOp::Cas { key, new, .. }, Ok(KvResult::Done)) => {
                known.insert(key.clone(), new.clone());
            }
            (KvOp::Cas { key, .. }, Ok(KvResult::CasMismatch { current })) => {
                known.insert(key.clone(), current);
            }
            _ => {}
        }
        std::thread::sleep(PACE); // pacing, not a synchronisation
    }
    // Every acknowledged write of this session's own keys is read back (in the
    // history too). An unanswered read is asked again; a wrong or missing value
    // fails the test.
    for (key, value) in log.acked.clone() {
        if abandon.load(Ordering::SeqCst) {
            break; // the test failed already
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let r = record(
                &session,
                client,
                origin,
                KvOp::Get { key: key.clone() },
                &mut log,
            );
            match r {
                Ok(KvResult::Value(v)) => {
                    assert_eq!(v, value, "acknowledged write of {key:?} read back wrong");
                    break;
                }
                Ok(other) => {
                    panic!("acknowledged write {key:?} = {value:?} read back as {other:?}")
                }
                Err(e) if tries < 3 => eprintln!("read-back of {key:?} unanswered ({e}), again"),
                Err(e) => panic!("acknowledged write of {key:?} could not be read back: {e}"),
            }
        }
    }
    log
}

impl Workload {
    fn start(endpoint: SocketAddr) -> Workload {
        let mut opts = ClientOptions::new(endpoint);
        opts.deadline = Duration::from_secs(5);
        let system = ClientSystem::start(opts).expect("client system");
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let abandon = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let threads = (0..SESSIONS)
            .map(|i| {
                let session = system.session();
                session.await_connected().expect("the workload connects");
                let (stop, abandon, answered) = (stop.clone(), abandon.clone(), answered.clone());
                std::thread::spawn(move || {
                    session_loop(i, session, origin, stop, abandon, answered)
                })
            })
            .collect();
        Workload {
            system: Some(system),
            stop,
            abandon,
            answered,
            threads,
        }
    }

    /// Waits until `more` operations beyond those answered now were answered.
    fn progress(&self, more: u64, what: &str) {
        let from = self.answered.load(Ordering::SeqCst);
        wait_until(
            &format!("the workload gets {more} answers {what}"),
            WAIT,
            || self.answered.load(Ordering::SeqCst) >= from + more,
        );
    }

    /// Stops the sessions, lets them read their keys back, and returns their logs.
    fn finish(mut self) -> Vec<SessionLog> {
        self.stop.store(true, Ordering::SeqCst);
        let logs = self
            .threads
            .drain(..)
            .map(|t| t.join().expect("a workload session failed"))
            .collect();
        if let Some(s) = self.system.take() {
            s.shutdown();
        }
        logs
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // A failing test must not leave sessions running.
        self.abandon.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------
// The scenario

/// Kills `first(cluster)`, waits for the partition to heal, kills
/// `second(cluster, first)`, waits again, and checks what the issue asks.
fn two_replicas_replaced_one_after_the_other(
    name: &str,
    first: impl Fn(&Healing) -> SocketAddr,
    second: impl Fn(&Healing, SocketAddr) -> SocketAddr,
) {
    let _slot = cluster_slot();
    let mut c = Healing::start(name);
    eprintln!(
        "{name}: bootstrap server {}, partition 0 on {:?}, spares {:?}",
        c.bootstrap, c.original, c.spares
    );
    let workload = Workload::start(c.spares[0]);
    workload.progress(50, "before the first kill");

    let v1 = first(&c);
    assert!(c.original.contains(&v1));
    eprintln!(
        "{name}: SIGKILL {v1} (bootstrap server: {}, leader: {})",
        v1 == c.bootstrap,
        c.leader() == Some(v1)
    );
    let g0 = c.original.clone();
    let (e1, g1, t1) = c.kill_and_heal(v1, 0, &g0);
    eprintln!("{name}: R live replicas again {t1:.2?} after killing {v1}: epoch {e1}, {g1:?}");
    workload.progress(50, "after the first replacement");

    let v2 = second(&c, v1);
    assert!(c.original.contains(&v2) && v2 != v1);
    eprintln!(
        "{name}: SIGKILL {v2} (bootstrap server: {}, leader: {})",
        v2 == c.bootstrap,
        c.leader() == Some(v2)
    );
    let (e2, g2, t2) = c.kill_and_heal(v2, e1, &g1);
    eprintln!("{name}: R live replicas again {t2:.2?} after killing {v2}: epoch {e2}, {g2:?}");
    workload.progress(50, "after the second replacement");

    // The partition keeps serving, through a spare and through the surviving
    // original replica.
    let survivor = *c
        .original
        .iter()
        .find(|a| **a != v1 && **a != v2)
        .expect("one original replica is left");
    for (i, ep) in [c.spares[1], survivor].into_iter().enumerate() {
        let ep = ep.to_string();
        let v = format!("after-{i}");
        let r = run(&["put", "after", &v, "--endpoint", &ep, "--timeout", "10s"]);
        assert_eq!(r.code, Some(0), "{}", r.show());
        let r = run(&["get", "after", "--endpoint", &ep, "--timeout", "10s"]);
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (Some(0), format!("{v}\n").as_str()),
            "{}",
            r.show()
        );
    }

    // Every acknowledged write is read back (by the sessions, as they stop).
    let logs = workload.finish();
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let unknown: u64 = logs.iter().map(|l| l.unknown).sum();
    let rejected: Vec<&String> = logs.iter().flat_map(|l| &l.rejected).collect();
    let history: Vec<&HistoryOp> = logs.iter().flat_map(|l| &l.history).collect();
    eprintln!(
        "{name}: {} operations, {acked} acknowledged writes of own keys read back, \
         {unknown} without answer, {} refused",
        history.len(),
        rejected.len()
    );
    assert!(rejected.is_empty(), "operations were refused: {rejected:?}");

    // The history is linearizable.
    let path = c.scratch.path.join("replacement.history.jsonl");
    let text: String = history
        .iter()
        .map(|h| format!("{}\n", h.to_json_line()))
        .collect();
    std::fs::write(&path, text).expect("write the history");
    let r = run(&["check-history", &path.to_string_lossy()]);
    eprintln!("{name}: {}", r.stdout.trim());
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert!(r.stdout.starts_with("linearizable"), "{}", r.show());

    // Status lists R live replicas for every partition, none of them killed.
    let s = c.status().expect("a spare answers status");
    let (_, groups) = healthy(&s, &c.killed(), Some(e1))
        .unwrap_or_else(|| panic!("status does not list R live replicas everywhere: {s:#}"));
    for g in &groups {
        assert!(!g.contains(&v1) && !g.contains(&v2), "{s:#}");
    }
    c.assert_no_crash();
    // The nodes are killed before the slot is released.
    drop(c);
}

/// A replica that is not the bootstrap server is killed first (the partition's
/// leader, when the bootstrap server is not the leader), then the other original
/// replica that is not the bootstrap server.
#[test]
fn two_replicas_killed_one_after_the_other_are_replaced() {
    two_replicas_replaced_one_after_the_other(
        "replace",
        |c| {
            let leader = c.leader();
            let others: Vec<SocketAddr> = c
                .original
                .iter()
                .copied()
                .filter(|a| *a != c.bootstrap)
                .collect();
            leader.filter(|l| others.contains(l)).unwrap_or(others[0])
        },
        |c, v1| {
            *c.original
                .iter()
                .find(|a| **a != c.bootstrap && **a != v1)
                .expect("a second original replica")
        },
    );
}

/// The bootstrap server is killed first, then another original replica (the
/// partition's leader, when it is one of them).
#[test]
fn the_bootstrap_server_killed_first_is_replaced_too() {
    two_replicas_replaced_one_after_the_other(
        "replace-bootstrap",
        |c| c.bootstrap,
        |c, v1| {
            let others: Vec<SocketAddr> = c.original.iter().copied().filter(|a| *a != v1).collect();
            c.leader()
                .filter(|l| others.contains(l))
                .unwrap_or(others[0])
        },
    );
}

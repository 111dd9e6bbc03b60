//! The membership core under random, seeded schedules: a cluster boots from a seed,
//! processes join (new addresses, and restarts of crashed nodes as new
//! incarnations), directory replicas crash (at most a minority), links reorder
//! messages between different pairs but stay FIFO and exactly-once per pair (what
//! the perfect link gives). Properties:
//!
//! * **joins take effect**: every live process that asked to join is a current
//!   member in the view of every live node once the schedule quiesces;
//! * **agreement**: all live nodes end with the same directory;
//! * **monotonic views**: a node's directory version never decreases;
//! * **no vote from the past**: a restarted process never runs a directory replica
//!   (its slot belongs to its former incarnation).
//!
//! Each run comes from its seed; a failure prints it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kv_protocols::NodeId;
use kv_protocols::directory::{Directory, Member};
use kv_protocols::membership::{Membership, MembershipConfig, MembershipEvent, MembershipMsg};
use kv_protocols::rng::SplitMix64;
use proptest::prelude::*;

fn addr(i: u16) -> NodeId {
    NodeId::from(([10, 3, 0, 1], 7000 + i))
}

fn core(m: Member) -> Membership {
    core_with(m, None)
}

fn core_with(m: Member, replace_after_ticks: Option<u64>) -> Membership {
    Membership::new(MembershipConfig {
        me: m,
        hb_round_ticks: 3,
        resend_ticks: 4,
        snapshot_interval: 5,
        max_pending: 100,
        replace_after_ticks,
    })
}

/// Replacement in the randomized runs: after 6 ticks of suspicion.
const REPLACE_AFTER: u64 = 6;

struct Proc {
    m: Member,
    core: Membership,
    crashed: bool,
    last_version: Option<u64>,
    restarted: bool,
}

struct Sim {
    rng: SplitMix64,
    procs: BTreeMap<NodeId, Proc>,
    /// Per ordered pair, FIFO queues.
    links: BTreeMap<(NodeId, NodeId), VecDeque<MembershipMsg>>,
    violations: Vec<String>,
    joiners: BTreeSet<Member>,
    /// Whether the cores replace lost replicas (and are told of crashes).
    repair: bool,
}

impl Sim {
    fn collect(&mut self, a: NodeId) {
        let Some(p) = self.procs.get_mut(&a) else {
            return;
        };
        let mut out = Vec::new();
        p.core.take_outgoing(&mut out);
        let mut evs = Vec::new();
        p.core.take_events(&mut evs);
        for MembershipEvent::Layout(d) in evs {
            if p.last_version.is_some_and(|v| v >= d.version()) {
                self.violations.push(format!(
                    "{a}: view went from version {:?} to {}",
                    p.last_version,
                    d.version()
                ));
            }
            p.last_version = Some(d.version());
        }
        if !self.repair && p.restarted && p.core.replica_epoch().is_some() {
            self.violations
                .push(format!("{a}: a restarted process runs a directory replica"));
        }
        for (to, msg) in out {
            self.links.entry((a, to)).or_default().push_back(msg);
        }
    }

    fn deliver_one(&mut self) -> bool {
        let busy: Vec<(NodeId, NodeId)> = self
            .links
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if busy.is_empty() {
            return false;
        }
        let (from, to) = busy[self.rng.below(busy.len() as u64) as usize];
        let Some(msg) = self.links.get_mut(&(from, to)).and_then(|q| q.pop_front()) else {
            return false;
        };
        let alive = |s: &Sim, n: &NodeId| s.procs.get(n).is_some_and(|p| !p.crashed);
        if !alive(self, &from) || !alive(self, &to) {
            return true;
        }
        if let Some(p) = self.procs.get_mut(&to) {
            p.core.handle(from, msg);
        }
        self.collect(to);
        true
    }

    fn tick_all(&mut self) {
        let live: Vec<NodeId> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.crashed)
            .map(|(a, _)| *a)
            .collect();
        for a in live {
            if let Some(p) = self.procs.get_mut(&a) {
                p.core.tick();
            }
            self.collect(a);
        }
    }

    /// A joiner (no view) asks a random live booted member, as a check-in would.
    fn check_ins(&mut self) {
        let booted: Vec<NodeId> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.crashed && p.core.directory().is_some())
            .map(|(a, _)| *a)
            .collect();
        if booted.is_empty() {
            return;
        }
        let waiting: Vec<Member> = self
            .joiners
            .iter()
            .filter(|m| {
                self.procs.get(&m.addr).is_some_and(|p| {
                    !p.crashed && p.m == **m && !p.core.directory().is_some_and(|d| d.is_current(m))
                })
            })
            .copied()
            .collect();
        for m in waiting {
            let via = booted[self.rng.below(booted.len() as u64) as usize];
            if via == m.addr {
                continue;
            }
            if let Some(p) = self.procs.get_mut(&via) {
                p.core.request_join(m);
            }
            self.collect(via);
        }
    }
}

/// The directory the most advanced live process sees.
fn newest(sim: &Sim) -> Option<Directory> {
    sim.procs
        .values()
        .filter(|p| !p.crashed)
        .filter_map(|p| p.core.directory())
        .max_by_key(|d| d.version())
        .map(|d| (**d).clone())
}

fn run(seed: u64) -> Result<(), String> {
    run_with(seed, false)
}

fn run_with(seed: u64, repair: bool) -> Result<(), String> {
    let mut rng = SplitMix64::new(seed);
    let n0 = 3 + rng.below(3) as u16;
    let members: Vec<Member> = (0..n0)
        .map(|i| Member {
            addr: addr(i),
            incarnation: rng.next_u64(),
        })
        .collect();
    let seed_dir = Directory::seed(members.clone(), 2, 3).map_err(|e| e.to_string())?;
    let dir_group: Vec<NodeId> = seed_dir
        .group(u32::MAX)
        .map(|g| g.addrs())
        .unwrap_or_default();
    let mut sim = Sim {
        rng,
        procs: BTreeMap::new(),
        links: BTreeMap::new(),
        violations: Vec::new(),
        joiners: BTreeSet::new(),
        repair,
    };
    let make = |m: Member| core_with(m, repair.then_some(REPLACE_AFTER));
    for m in &members {
        let mut c = make(*m);
        c.install(seed_dir.clone());
        sim.procs.insert(
            m.addr,
            Proc {
                m: *m,
                core: c,
                crashed: false,
                last_version: None,
                restarted: false,
            },
        );
        sim.collect(m.addr);
    }
    let mut next = n0;
    let mut dir_crashes = 0;
    for _ in 0..600 {
        match sim.rng.below(20) {
            0..=11 => {
                sim.deliver_one();
            }
            12..=15 => sim.tick_all(),
            16 => {
                // A new process joins.
                let m = Member {
                    addr: addr(next),
                    incarnation: sim.rng.next_u64(),
                };
                next += 1;
                sim.joiners.insert(m);
                sim.procs.insert(
                    m.addr,
                    Proc {
                        m,
                        core: make(m),
                        crashed: false,
                        last_version: None,
                        restarted: false,
                    },
                );
            }
            17 => {
                // A crash: a directory replica only while a majority stays.
                let live: Vec<NodeId> = sim
                    .procs
                    .iter()
                    .filter(|(_, p)| !p.crashed)
                    .map(|(a, _)| *a)
                    .collect();
                let a = live[sim.rng.below(live.len() as u64) as usize];
                let allowed = if repair {
                    // While the directory group as it is now keeps a live majority
                    // of processes that run its current epoch: a move in progress
                    // (replicas not started yet) needs the old majority a while more.
                    newest(&sim).is_some_and(|d| {
                        let g = d.group(u32::MAX).cloned().expect("directory group");
                        let running = g
                            .replicas
                            .iter()
                            .filter(|m| {
                                sim.procs.get(&m.addr).is_some_and(|p| {
                                    !p.crashed
                                        && p.m == **m
                                        && p.core.replica_epoch() == Some(g.epoch)
                                })
                            })
                            .count();
                        let loses = usize::from(g.contains(a));
                        running >= loses && (running - loses) * 2 > g.replicas.len()
                    })
                } else {
                    let is_dir = dir_group.contains(&a);
                    let ok = !is_dir || dir_crashes < (dir_group.len() - 1) / 2;
                    if ok && is_dir {
                        dir_crashes += 1;
                    }
                    ok
                };
                if allowed {
                    if let Some(p) = sim.procs.get_mut(&a) {
                        p.crashed = true;
                    }
                    if repair {
                        for p in sim.procs.values_mut().filter(|p| !p.crashed) {
                            p.core.suspect(a);
                        }
                    }
                }
            }
            18 => {
                // A crashed process restarts at its address as a new incarnation.
                let down: Vec<NodeId> = sim
                    .procs
                    .iter()
                    .filter(|(_, p)| p.crashed)
                    .map(|(a, _)| *a)
                    .collect();
                if let Some(&a) = down.first() {
                    let m = Member {
                        addr: a,
                        incarnation: sim.rng.next_u64(),
                    };
                    // Messages in flight to and from the old process are gone.
                    sim.links.retain(|(f, t), _| *f != a && *t != a);
                    sim.joiners.insert(m);
                    sim.procs.insert(
                        a,
                        Proc {
                            m,
                            core: make(m),
                            crashed: false,
                            last_version: None,
                            restarted: true,
                        },
                    );
                    if repair {
                        for p in sim.procs.values_mut() {
                            p.core.restore(a);
                        }
                    }
                }
            }
            _ => sim.check_ins(),
        }
    }
    // Quiesce: keep ticking, delivering and checking in.
    for _ in 0..300 {
        while sim.deliver_one() {}
        sim.check_ins();
        sim.tick_all();
    }
    while sim.deliver_one() {}
    if !sim.violations.is_empty() {
        return Err(sim.violations.join("; "));
    }
    let live: Vec<&Proc> = sim.procs.values().filter(|p| !p.crashed).collect();
    let views: BTreeSet<Vec<u8>> = live
        .iter()
        .map(|p| p.core.directory().map(|d| d.encode()).unwrap_or_default())
        .collect();
    if views.len() != 1 {
        let versions: Vec<(NodeId, Option<u64>)> = live
            .iter()
            .map(|p| (p.m.addr, p.core.directory().map(|d| d.version())))
            .collect();
        let dir = newest(&sim).map(|d| format!("{:?}", d.group(u32::MAX)));
        if std::env::var("KV_TRACE").is_ok() {
            for p in &live {
                eprintln!("{} {:?}", p.m.addr, p.core.directory());
            }
        }
        let runs: Vec<(NodeId, Option<u64>, bool)> = sim
            .procs
            .values()
            .map(|p| (p.m.addr, p.core.replica_epoch(), p.crashed))
            .collect();
        return Err(format!(
            "live nodes disagree: {versions:?}; newest directory group {dir:?}; replicas {runs:?}"
        ));
    }
    let d = live[0].core.directory().ok_or("no directory")?;
    for p in &live {
        if !d.is_current(&p.m) {
            return Err(format!("live process {:?} is not a current member", p.m));
        }
    }
    if repair {
        // Every lost directory replica was replaced by a live process, which runs
        // the directory's current epoch.
        let g = d.group(u32::MAX).ok_or("no directory group")?;
        if g.replicas.len() >= 3 {
            for m in &g.replicas {
                let p = sim
                    .procs
                    .get(&m.addr)
                    .filter(|p| !p.crashed && p.m == *m)
                    .ok_or(format!(
                        "directory replica {m:?} is lost (epoch {})",
                        g.epoch
                    ))?;
                if p.core.replica_epoch() != Some(g.epoch) {
                    return Err(format!(
                        "directory replica {m:?} runs epoch {:?}, the directory is in {}",
                        p.core.replica_epoch(),
                        g.epoch
                    ));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn joins_take_effect_and_every_node_agrees(seed in any::<u64>()) {
        if let Err(e) = run(seed) {
            prop_assert!(false, "seed {seed}: {e}");
        }
    }

    #[test]
    fn lost_directory_replicas_are_replaced_and_every_node_agrees(seed in any::<u64>()) {
        if let Err(e) = run_with(seed, true) {
            prop_assert!(false, "seed {seed} (repair): {e}");
        }
    }
}

/// Replays `KV_SEED` with replacement on (default a fixed seed).
#[test]
fn replay_repair_seed() {
    let seed = std::env::var("KV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    if let Err(e) = run_with(seed, true) {
        panic!("seed {seed}: {e}");
    }
}

/// Replays `KV_SEED` (default a fixed seed).
#[test]
fn replay_seed() {
    let seed = std::env::var("KV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    if let Err(e) = run(seed) {
        panic!("seed {seed}: {e}");
    }
}

#[test]
fn a_join_reaching_a_non_replica_is_passed_to_the_replicas() {
    let members: Vec<Member> = (0..4)
        .map(|i| Member {
            addr: addr(i),
            incarnation: 1,
        })
        .collect();
    let d = Directory::seed(members.clone(), 1, 3).unwrap();
    // Node 3 is not in the directory group (nodes 0..3 are).
    let mut c = core(members[3]);
    c.install(d);
    let joiner = Member {
        addr: addr(9),
        incarnation: 5,
    };
    c.request_join(joiner);
    let mut out = Vec::new();
    c.take_outgoing(&mut out);
    let to: Vec<NodeId> = out.iter().map(|(t, _)| *t).collect();
    assert_eq!(to, vec![addr(0), addr(1), addr(2)]);
    assert!(out.iter().all(|(_, m)| *m == MembershipMsg::Join(joiner)));
    // A Join that claims to be another process is ignored.
    c.handle(addr(8), MembershipMsg::Join(joiner));
    c.take_outgoing(&mut out);
    assert_eq!(out.len(), 3);
}

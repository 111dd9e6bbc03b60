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
use kv_protocols::directory::{DirCommand, Directory, Member};
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
    /// Every command an operator submitted, to be sent again late.
    submitted: Vec<DirCommand>,
}

impl Sim {
    fn new(rng: SplitMix64, repair: bool) -> Sim {
        Sim {
            rng,
            procs: BTreeMap::new(),
            links: BTreeMap::new(),
            violations: Vec::new(),
            joiners: BTreeSet::new(),
            repair,
            submitted: Vec::new(),
        }
    }

    /// A live booted node, at random.
    fn any_booted(&mut self) -> Option<NodeId> {
        let booted: Vec<NodeId> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.crashed && p.core.directory().is_some())
            .map(|(a, _)| *a)
            .collect();
        (!booted.is_empty()).then(|| booted[self.rng.below(booted.len() as u64) as usize])
    }

    /// An operator (or a node's host) at a random node: reports the groups its view
    /// shows moving as stopped (as the replicas of a partition do once the old
    /// epoch's stop-sign is decided), and asks for a rebalance planned from its view.
    fn operate(&mut self) {
        let Some(a) = self.any_booted() else { return };
        let p = self.procs.get_mut(&a).expect("booted");
        let view = p.core.directory().cloned().expect("booted");
        let mut cmds: Vec<DirCommand> = view
            .group_ids()
            .filter_map(|g| {
                let c = view.group(g)?;
                (g != u32::MAX && !c.settled).then(|| DirCommand::Stopped {
                    group: g,
                    epoch: c.epoch - 1,
                })
            })
            .collect();
        // The operator's tools show which nodes are down or restarted (the
        // directory may not know the new process yet): no move targets them.
        let mut down = p.core.suspected();
        for m in view.members() {
            if self
                .procs
                .get(&m.addr)
                .is_none_or(|q| q.crashed || q.m != m)
            {
                down.insert(m.addr);
            }
        }
        let p = self.procs.get_mut(&a).expect("booted");
        cmds.extend(view.plan_rebalance(&down));
        for cmd in cmds {
            p.core.submit(cmd.clone());
            self.submitted.push(cmd);
        }
        self.collect(a);
    }

    /// A copy of an earlier request arrives late at a directory replica, from a
    /// member (what a resend racing the change it asked for looks like).
    fn resend_late(&mut self) {
        if self.submitted.is_empty() {
            return;
        }
        let cmd = self.submitted[self.rng.below(self.submitted.len() as u64) as usize].clone();
        let (Some(from), Some(d)) = (self.any_booted(), newest(self)) else {
            return;
        };
        // Only requests whose configuration is already left: a valid one arriving
        // late is just a slow request, and the crash budget counts on knowing
        // which moves may still be decided.
        if let DirCommand::Reconfigure {
            group, from_epoch, ..
        } = &cmd
            && d.group(*group).is_some_and(|g| g.epoch <= *from_epoch)
        {
            return;
        }
        let group = d.group(u32::MAX).map(|g| g.addrs()).unwrap_or_default();
        if group.is_empty() {
            return;
        }
        let to = group[self.rng.below(group.len() as u64) as usize];
        if to != from {
            self.links
                .entry((from, to))
                .or_default()
                .push_back(MembershipMsg::Propose(cmd));
        }
    }

    /// Starts process `m`, from `seed` (a member of the first configuration) or as
    /// a joiner.
    fn start(&mut self, m: Member, seed: Option<&Directory>, restarted: bool) {
        let mut core = core_with(m, self.repair.then_some(REPLACE_AFTER));
        match seed {
            Some(d) => core.install(d.clone()),
            None => {
                self.joiners.insert(m);
            }
        }
        self.procs.insert(
            m.addr,
            Proc {
                m,
                core,
                crashed: false,
                last_version: None,
                restarted,
            },
        );
        self.collect(m.addr);
    }

    /// Rounds of "deliver everything in flight, check in the joiners, tick".
    fn rounds(&mut self, n: usize) {
        for _ in 0..n {
            while self.deliver_one() {}
            self.check_ins();
            self.tick_all();
        }
        while self.deliver_one() {}
    }

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
    let mut sim = Sim::new(rng, repair);
    for m in &members {
        sim.start(*m, Some(&seed_dir), false);
    }
    let mut next = n0;
    let mut dir_crashes = 0;
    for _ in 0..600 {
        match sim.rng.below(22) {
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
                sim.start(m, None, false);
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
                        // Nor a process a directory move under way makes a replica:
                        // its slot would be lost before the move is decided.
                        let names_a = |c: &DirCommand| {
                            matches!(c, DirCommand::Reconfigure { group, from_epoch, replicas }
                                if *group == u32::MAX
                                    && *from_epoch == g.epoch
                                    && replicas.iter().any(|m| m.addr == a))
                        };
                        let target = sim.submitted.iter().any(names_a)
                            || sim
                                .procs
                                .values()
                                .filter(|p| !p.crashed)
                                .any(|p| p.core.pending().any(names_a));
                        !target && running >= loses && (running - loses) * 2 > g.replicas.len()
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
                    sim.start(m, None, true);
                    if repair {
                        for p in sim.procs.values_mut() {
                            p.core.restore(a);
                        }
                    }
                }
            }
            // Operator moves only with replacement on: the runs without it check
            // that the first configuration's replicas are never run by a restarted
            // process, which a move may rightly make them.
            19 if repair => sim.operate(),
            20 if repair => sim.resend_late(),
            _ => sim.check_ins(),
        }
    }
    // Quiesce: keep ticking, delivering and checking in.
    sim.rounds(300);
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
        // Nothing is asked for in vain for ever: every command submitted took
        // effect or can no longer have one.
        for p in &live {
            let pending: Vec<&DirCommand> = p.core.pending().collect();
            if !pending.is_empty() {
                return Err(format!("{} still asks for {pending:?}", p.m.addr));
            }
        }
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

/// A directory move requested at a node outside the directory group is sent to
/// every replica, and sent again until that node sees the move. A copy that arrives
/// after the move, at a replica of the new epoch, must not end that epoch (the
/// directory's reconfiguration is its log's stop-sign): the directory keeps
/// deciding, and stays in the epoch the move made.
#[test]
fn a_directory_move_requested_again_after_it_happened_changes_nothing() {
    let members: Vec<Member> = (0..4)
        .map(|i| Member {
            addr: addr(i),
            incarnation: 1,
        })
        .collect();
    let seed = Directory::seed(members.clone(), 1, 3).unwrap();
    let mut sim = Sim::new(SplitMix64::new(7), false);
    for m in &members {
        sim.start(*m, Some(&seed), false);
    }
    sim.rounds(20);
    let dir_epoch = |sim: &Sim, a: NodeId| {
        sim.procs[&a]
            .core
            .directory()
            .and_then(|d| d.group(u32::MAX).map(|g| g.epoch))
    };
    // Node 3 asks for the directory to move from node 0 to itself.
    let cmd = DirCommand::Reconfigure {
        group: u32::MAX,
        from_epoch: 0,
        replicas: members[1..].to_vec(),
    };
    sim.procs
        .get_mut(&addr(3))
        .unwrap()
        .core
        .submit(cmd.clone());
    sim.collect(addr(3));
    sim.rounds(40);
    for i in 0..4 {
        assert_eq!(dir_epoch(&sim, addr(i)), Some(1), "node {i}");
    }
    assert_eq!(sim.procs[&addr(3)].core.replica_epoch(), Some(1));
    // The request again, late, at every replica of the new epoch.
    for to in 1..4 {
        sim.links
            .entry((addr(3), addr(to)))
            .or_default()
            .push_back(MembershipMsg::Propose(cmd.clone()));
    }
    // And a process that joins afterwards: the directory must still decide.
    let joiner = Member {
        addr: addr(4),
        incarnation: 1,
    };
    sim.start(joiner, None, false);
    sim.rounds(60);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    for i in 0..5 {
        let p = &sim.procs[&addr(i)];
        let d = p.core.directory().expect("a directory");
        assert!(d.is_current(&joiner), "node {i} does not see the join");
        assert_eq!(dir_epoch(&sim, addr(i)), Some(1), "node {i}");
    }
}

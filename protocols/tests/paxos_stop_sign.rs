//! Stop-signs in Sequence Paxos under random, seeded fault schedules.
//!
//! A stop-sign ends a configuration: the properties checked here are what
//! reconfiguration relies on (`docs/membership.md`):
//!
//! * **stop-sign is last**: no replica decides an entry after a stop-sign, so at most
//!   one stop-sign is decided per instance;
//! * **agreement**: decided logs (stop-sign included) are prefixes of each other, so
//!   every replica stops at the same index with the same next configuration;
//! * **liveness**: once faults heal, a stop-sign proposed (and re-proposed by its host
//!   when dropped, as the hosts do) is decided by every live replica;
//! * **closed after stop**: a proposal on a stopped replica is dropped at once.
//!
//! Each schedule comes from its seed; a failure prints it, and
//! `KV_SEED=<seed> cargo test -p kv-protocols --test paxos_stop_sign replay_seed`
//! replays it.

use std::collections::VecDeque;

use kv_protocols::NodeId;
use kv_protocols::ballot::Ballot;
use kv_protocols::rng::SplitMix64;
use kv_protocols::sequence_paxos::{
    LogEntry, PaxosConfig, PaxosEvent, PaxosMsg, SequencePaxos, Snapshot,
};
use proptest::prelude::*;
use proptest::test_runner::Config;

#[derive(Clone, Debug, PartialEq, Eq)]
enum E {
    Cmd(u64),
    /// A stop-sign naming the "next configuration" by a number.
    Stop(u64),
}

impl LogEntry for E {
    fn is_stop_sign(&self) -> bool {
        matches!(self, E::Stop(_))
    }
    fn size_hint(&self) -> usize {
        9
    }
}

fn id(i: usize) -> NodeId {
    NodeId::from(([10, 0, 0, 1], 9000 + i as u16))
}

fn idx_of(n: NodeId) -> usize {
    (n.port() - 9000) as usize
}

fn encode(state: &[E]) -> Vec<u8> {
    let mut v = Vec::new();
    for e in state {
        let (tag, x) = match e {
            E::Cmd(x) => (0u8, *x),
            E::Stop(x) => (1u8, *x),
        };
        v.push(tag);
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn decode(data: &[u8]) -> Vec<E> {
    data.chunks(9)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&c[1..9]);
            let x = u64::from_le_bytes(b);
            if c[0] == 0 { E::Cmd(x) } else { E::Stop(x) }
        })
        .collect()
}

struct Replica {
    px: SequencePaxos<E>,
    /// The host's state machine: every decided entry, in order.
    applied: Vec<E>,
    crashed: bool,
    /// A stop-sign this host wants decided (re-proposed when dropped).
    wants_stop: Option<u64>,
}

struct Sim {
    rng: SplitMix64,
    nodes: Vec<Replica>,
    net: VecDeque<(usize, usize, PaxosMsg<E>)>,
    ballot: u64,
    next_cmd: u64,
    violations: Vec<String>,
    /// (replica, cmd) proposed on a replica that had already stopped.
    late: Vec<(usize, u64)>,
    /// Commands reported dropped, in order.
    dropped: Vec<u64>,
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let nodes = (0..n)
            .map(|i| Replica {
                px: SequencePaxos::new(PaxosConfig {
                    me: id(i),
                    peers: (0..n).map(id).collect(),
                    max_batch: 3,
                    max_batch_bytes: usize::MAX,
                    max_inflight_batches: 2,
                    resend_ticks: 3,
                    max_log_entries: 20,
                    max_pending: 50,
                }),
                applied: Vec::new(),
                crashed: false,
                wants_stop: None,
            })
            .collect();
        Sim {
            rng: SplitMix64::new(seed),
            nodes,
            net: VecDeque::new(),
            ballot: 0,
            next_cmd: 1,
            violations: Vec::new(),
            late: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    fn collect(&mut self, i: usize) {
        let mut out = Vec::new();
        self.nodes[i].px.take_outgoing(&mut out);
        for (to, msg) in out {
            self.net.push_back((i, idx_of(to), msg));
        }
        let mut evs = Vec::new();
        self.nodes[i].px.take_events(&mut evs);
        for ev in evs {
            match ev {
                PaxosEvent::Decided { idx, entry } => {
                    let r = &mut self.nodes[i];
                    if idx != r.applied.len() as u64 {
                        self.violations
                            .push(format!("replica {i} decided index {idx} out of order"));
                    }
                    if r.applied.last().is_some_and(E::is_stop_sign) {
                        self.violations.push(format!(
                            "replica {i} decided {entry:?} at {idx}, after a stop-sign"
                        ));
                    }
                    r.applied.push(entry);
                }
                PaxosEvent::InstallSnapshot(s) => {
                    let st = decode(&s.data);
                    if st.len() as u64 != s.idx {
                        self.violations.push(format!("replica {i}: bad snapshot"));
                    }
                    if st.iter().any(E::is_stop_sign) {
                        self.violations
                            .push(format!("replica {i}: a snapshot covers a stop-sign"));
                    }
                    self.nodes[i].applied = st;
                }
                PaxosEvent::Dropped(E::Stop(x)) => {
                    let r = &mut self.nodes[i];
                    if !r.px.has_stop_sign() && r.px.stopped().is_none() {
                        r.wants_stop = Some(x);
                    }
                }
                PaxosEvent::Dropped(E::Cmd(c)) => self.dropped.push(c),
            }
        }
    }

    fn elect(&mut self, leader: usize, all: bool) {
        self.ballot += 1;
        let b = Ballot {
            n: self.ballot,
            pid: id(leader),
        };
        for i in 0..self.nodes.len() {
            if self.nodes[i].crashed {
                continue;
            }
            if all || i == leader || self.below(2) == 0 {
                self.nodes[i].px.handle_leader(b);
                self.collect(i);
            }
        }
    }

    fn deliver_one(&mut self, lossy: bool) {
        if self.net.is_empty() {
            return;
        }
        let pos = if lossy {
            self.below(self.net.len() as u64) as usize
        } else {
            0
        };
        let Some((from, to, msg)) = self.net.remove(pos) else {
            return;
        };
        if self.nodes[to].crashed || self.nodes[from].crashed {
            return;
        }
        if lossy && self.below(10) == 0 {
            return; // lost
        }
        if lossy && self.below(20) == 0 {
            self.net.push_back((from, to, msg.clone())); // duplicated
        }
        self.nodes[to].px.handle(id(from), msg);
        self.collect(to);
    }

    fn propose_cmd(&mut self, i: usize) {
        let c = self.next_cmd;
        self.next_cmd += 1;
        if self.nodes[i].px.stopped().is_some() {
            self.late.push((i, c));
        }
        self.nodes[i].px.propose(E::Cmd(c));
        self.collect(i);
        if self.late.last() == Some(&(i, c)) && self.dropped.last() != Some(&c) {
            // A stopped replica reports the command dropped at once.
            self.violations.push(format!(
                "replica {i} did not drop {c}, proposed after it stopped"
            ));
        }
    }

    fn propose_stop(&mut self, i: usize, x: u64) {
        self.nodes[i].wants_stop = Some(x);
        self.nodes[i].px.propose(E::Stop(x));
        self.collect(i);
    }

    fn retry_stops(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].crashed {
                continue;
            }
            // Like the hosts: keep proposing until the log holds a stop-sign (a
            // forwarded proposal can be lost with its leader, unreported).
            if let Some(x) = self.nodes[i].wants_stop {
                let r = &self.nodes[i];
                if !r.px.has_stop_sign() && r.px.stopped().is_none() {
                    self.nodes[i].px.propose(E::Stop(x));
                    self.collect(i);
                }
            }
        }
    }

    fn maybe_snapshot(&mut self, i: usize) {
        let r = &self.nodes[i];
        // Like the hosts: snapshot what is applied, but never past a stop-sign.
        let upto = r
            .applied
            .iter()
            .position(E::is_stop_sign)
            .unwrap_or(r.applied.len());
        if upto == 0 {
            return;
        }
        let snap = Snapshot {
            idx: upto as u64,
            data: std::sync::Arc::new(encode(&r.applied[..upto])),
        };
        self.nodes[i].px.set_snapshot(snap);
        self.collect(i);
    }

    fn tick(&mut self, i: usize) {
        self.nodes[i].px.tick();
        self.collect(i);
    }

    fn run(&mut self, steps: usize, stops: usize) {
        let n = self.nodes.len();
        let f = (n - 1) / 2;
        let mut crashes = 0;
        let first = self.below(n as u64) as usize;
        self.elect(first, true);
        for step in 0..steps {
            match self.below(100) {
                0..=44 => self.deliver_one(true),
                45..=64 => {
                    let i = self.below(n as u64) as usize;
                    if !self.nodes[i].crashed {
                        self.propose_cmd(i);
                    }
                }
                65..=79 => {
                    let i = self.below(n as u64) as usize;
                    if !self.nodes[i].crashed {
                        self.tick(i);
                    }
                }
                80..=84 => {
                    let l = self.below(n as u64) as usize;
                    if !self.nodes[l].crashed {
                        self.elect(l, false);
                    }
                }
                85..=89 => {
                    let i = self.below(n as u64) as usize;
                    if !self.nodes[i].crashed {
                        self.maybe_snapshot(i);
                    }
                }
                90..=91 => {
                    let i = self.below(n as u64) as usize;
                    if crashes < f && !self.nodes[i].crashed {
                        self.nodes[i].crashed = true;
                        crashes += 1;
                    }
                }
                _ => {
                    if step * stops / steps.max(1) > 0 || self.below(30) == 0 {
                        let i = self.below(n as u64) as usize;
                        if !self.nodes[i].crashed && self.nodes[i].wants_stop.is_none() {
                            self.propose_stop(i, 1000 + step as u64);
                        }
                    }
                }
            }
        }
        // Make sure at least one live replica wants a stop-sign.
        if let Some(i) = (0..n).find(|&i| !self.nodes[i].crashed)
            && self
                .nodes
                .iter()
                .all(|r| r.crashed || r.wants_stop.is_none())
        {
            self.propose_stop(i, 1);
        }
        // Heal: no loss, one stable leader, ticks until everything settles.
        let leader = (0..n).rev().find(|&i| !self.nodes[i].crashed).unwrap_or(0);
        self.elect(leader, true);
        for _ in 0..400 {
            self.drain();
            self.retry_stops();
            for i in 0..n {
                if !self.nodes[i].crashed {
                    self.tick(i);
                }
            }
        }
        self.drain();
        self.check();
    }

    /// Delivers every message in order, without faults, until none is left.
    fn drain(&mut self) {
        let mut budget = 200_000;
        while !self.net.is_empty() {
            if budget == 0 {
                let kinds: Vec<String> = self
                    .net
                    .iter()
                    .take(6)
                    .map(|(f, t, m)| format!("{f}->{t} {m:?}"))
                    .collect();
                self.violations
                    .push(format!("messages never settle: {kinds:?}"));
                self.net.clear();
                return;
            }
            budget -= 1;
            self.deliver_one(false);
        }
    }

    fn check(&mut self) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].crashed)
            .collect();
        // Agreement: decided logs are prefixes of each other.
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (x, y) = (&self.nodes[a].applied, &self.nodes[b].applied);
                let k = x.len().min(y.len());
                if x[..k] != y[..k] {
                    self.violations
                        .push(format!("replicas {a} and {b} decided different logs"));
                }
            }
        }
        // Liveness: every live replica stopped, at the same index, and its state
        // machine ends with that stop-sign.
        let mut at = None;
        for &i in &live {
            match self.nodes[i].px.stopped() {
                None => self
                    .violations
                    .push(format!("live replica {i} did not stop after faults healed")),
                Some((idx, ss)) => {
                    if at.is_some_and(|a| a != idx) {
                        self.violations
                            .push(format!("replica {i} stopped at {idx}, another at {at:?}"));
                    }
                    at = Some(idx);
                    if self.nodes[i].applied.last() != Some(ss)
                        || self.nodes[i].applied.len() as u64 != idx + 1
                    {
                        self.violations.push(format!(
                            "replica {i}: the stop-sign is not the last applied entry"
                        ));
                    }
                }
            }
        }
        // Closed after stop: proposals to a stopped replica never get decided.
        for &(_, c) in &self.late {
            if live
                .iter()
                .any(|&i| self.nodes[i].applied.contains(&E::Cmd(c)))
            {
                self.violations
                    .push(format!("command {c}, proposed after the stop, was decided"));
            }
        }
    }
}

fn run_seed(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, n);
    let steps = 300 + (seed % 700) as usize;
    sim.run(steps, 1 + (seed % 3) as usize);
    sim
}

fn config() -> Config {
    let cases = std::env::var("KV_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn stop_sign_is_last_agreed_and_live_three(seed in any::<u64>()) {
        let sim = run_seed(seed, 3);
        prop_assert!(sim.violations.is_empty(),
            "seed {seed} (3 replicas); replay with KV_SEED={seed} KV_REPLICAS=3: {:?}",
            &sim.violations[..sim.violations.len().min(3)]);
    }

    #[test]
    fn stop_sign_is_last_agreed_and_live_five(seed in any::<u64>()) {
        let sim = run_seed(seed, 5);
        prop_assert!(sim.violations.is_empty(),
            "seed {seed} (5 replicas); replay with KV_SEED={seed} KV_REPLICAS=5: {:?}",
            &sim.violations[..sim.violations.len().min(3)]);
    }
}

/// Replays `KV_SEED` (default a fixed seed) with `KV_REPLICAS` (default 3).
#[test]
fn replay_seed() {
    let seed = std::env::var("KV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5709);
    let n = std::env::var("KV_REPLICAS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let sim = run_seed(seed, n);
    for (i, r) in sim.nodes.iter().enumerate() {
        println!(
            "replica {i}: crashed={} decided={} stopped={:?} leader={:?} promised={:?} is_leader={} log_len={} first={}",
            r.crashed,
            r.px.decided_idx(),
            r.px.stopped().map(|(i, _)| i),
            r.px.leader(),
            r.px.promised(),
            r.px.is_leader(),
            r.px.log_len(),
            r.px.first_retained_idx()
        );
    }
    assert!(
        sim.violations.is_empty(),
        "seed {seed}: {:#?}",
        sim.violations
    );
}

/// The stop-sign closes the log at once on the leader: commands proposed after it
/// in the same call are dropped, and nothing is appended after it.
#[test]
fn proposals_after_a_stop_sign_are_dropped() {
    let mut px: SequencePaxos<E> = SequencePaxos::new(PaxosConfig {
        me: id(0),
        peers: vec![id(0)],
        max_batch: 8,
        max_batch_bytes: usize::MAX,
        max_inflight_batches: 2,
        resend_ticks: 3,
        max_log_entries: 100,
        max_pending: 100,
    });
    px.handle_leader(Ballot { n: 1, pid: id(0) });
    px.propose_all([E::Cmd(1), E::Stop(7), E::Cmd(2)]);
    px.propose(E::Cmd(3));
    let mut evs = Vec::new();
    px.take_events(&mut evs);
    assert_eq!(
        evs,
        vec![
            PaxosEvent::Dropped(E::Cmd(2)),
            PaxosEvent::Decided {
                idx: 0,
                entry: E::Cmd(1)
            },
            PaxosEvent::Decided {
                idx: 1,
                entry: E::Stop(7)
            },
            PaxosEvent::Dropped(E::Cmd(3)),
        ]
    );
    assert_eq!(px.stopped(), Some((1, &E::Stop(7))));
    assert_eq!(px.log_len(), 2);
    // A snapshot past the stop-sign is refused; one up to it is taken.
    px.set_snapshot(Snapshot {
        idx: 2,
        data: std::sync::Arc::new(encode(&[E::Cmd(1), E::Stop(7)])),
    });
    assert_eq!(px.first_retained_idx(), 0);
    px.set_snapshot(Snapshot {
        idx: 1,
        data: std::sync::Arc::new(encode(&[E::Cmd(1)])),
    });
    assert_eq!(px.stopped(), Some((1, &E::Stop(7))));
}

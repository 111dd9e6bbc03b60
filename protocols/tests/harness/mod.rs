//! A seeded, single-threaded network of replicas, each running [`Ble`] and
//! [`SequencePaxos`] the way the Kompact components glue them together, under a
//! random schedule of delays, loss, duplication, reordering, partitions and crashes.
//!
//! Time is a global tick counter. In every tick the harness delivers the messages
//! that are due (ties in random order), injects faults and proposals, lets hosts take
//! snapshots, and ticks every live replica. Everything random comes from one
//! [`SplitMix64`] seeded by the test, so a seed replays the same run exactly.
//!
//! A run has two phases. In the *fault* phase links drop, duplicate, delay and
//! reorder messages, the network is partitioned and healed, and a minority of nodes
//! crashes (crash-stop). In the *calm* phase every link is up, reliable and FIFO with
//! short delays (crashed nodes stay crashed), which is what the liveness property
//! needs. Safety properties are checked on every event of both phases.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;

use kv_protocols::NodeId;
use kv_protocols::ballot::Ballot;
use kv_protocols::ble::{Ble, BleConfig, BleEvent, BleMsg};
use kv_protocols::rng::SplitMix64;
use kv_protocols::sequence_paxos::{PaxosConfig, PaxosEvent, PaxosMsg, SequencePaxos, Snapshot};

/// Sub-ticks per tick of the network clock.
const SUB: u64 = 1 << 16;

/// Ticks per BLE heartbeat round in the harness.
pub const HB_ROUND_TICKS: u64 = 6;
/// Resend period of Sequence Paxos in the harness.
pub const RESEND_TICKS: u64 = 5;
/// No new ids are proposed in the last ticks of a run, so that everything proposed
/// has time to be decided.
pub const QUIET_TICKS: u64 = 40;
/// Ticks after the heal before the calm phase looks for a stable leader: enough for
/// the slowest message of the fault phase (15 ticks) to land and for three heartbeat
/// rounds.
pub const SETTLE_TICKS: u64 = 3 * HB_ROUND_TICKS;

/// The node id of replica `i`.
pub fn node_id(i: usize) -> NodeId {
    NodeId::from(([127, 0, 0, 1], 9000 + i as u16))
}

/// Encodes an applied-entries list as snapshot data (the test state machine's state
/// is the list of everything it applied, so checks still work after trimming).
pub fn encode(list: &[u64]) -> Vec<u8> {
    list.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Inverse of [`encode`].
pub fn decode(data: &[u8]) -> Option<Vec<u64>> {
    if !data.len().is_multiple_of(8) {
        return None;
    }
    Some(
        data.chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect(),
    )
}

/// A message in flight.
#[derive(Clone, Debug)]
pub enum Msg {
    /// Ballot leader election.
    Ble(BleMsg),
    /// Sequence Paxos.
    Paxos(PaxosMsg<u64>),
}

/// Knobs of a run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of replicas (3 or 5).
    pub replicas: usize,
    /// Length of the fault phase, in ticks.
    pub fault_ticks: u64,
    /// Length of the calm phase, in ticks.
    pub calm_ticks: u64,
    /// Whether faults are injected at all in the fault phase.
    pub faults: bool,
    /// Probability per tick of new proposals.
    pub propose_chance: f64,
    /// The host re-proposes an undecided id after this many ticks.
    pub retry_ticks: u64,
    /// Retained-log bound given to Sequence Paxos (small, to force trimming).
    pub max_log_entries: u64,
    /// Buffered-proposal bound.
    pub max_pending: usize,
    /// Batch size.
    pub max_batch: usize,
    /// Batch size in bytes (entries weigh 8).
    pub max_batch_bytes: usize,
    /// Pipelining depth.
    pub max_inflight_batches: usize,
    /// Whether hosts take snapshots.
    pub snapshots: bool,
}

impl Params {
    /// The default adversarial run for `replicas` replicas.
    pub fn adversarial(replicas: usize) -> Params {
        Params {
            replicas,
            fault_ticks: 120,
            calm_ticks: 140,
            faults: true,
            propose_chance: 0.3,
            retry_ticks: 30,
            max_log_entries: 24,
            max_pending: 16,
            max_batch: 4,
            // Three entries: the byte bound, not the count, cuts the batches.
            max_batch_bytes: 24,
            max_inflight_batches: 2,
            snapshots: true,
        }
    }
}

/// Property violations found in a run, one list per property.
#[derive(Clone, Debug, Default)]
pub struct Violations {
    /// `decided_logs_are_prefixes_of_each_other`
    pub prefixes: Vec<String>,
    /// `decided_entries_were_proposed`
    pub proposed: Vec<String>,
    /// `decided_prefix_never_changes`
    pub prefix_changed: Vec<String>,
    /// `at_most_one_leader_per_ballot`
    pub leaders: Vec<String>,
    /// `every_proposal_is_decided_or_dropped_after_faults_heal`
    pub liveness: Vec<String>,
}

impl Violations {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
            && self.proposed.is_empty()
            && self.prefix_changed.is_empty()
            && self.leaders.is_empty()
            && self.liveness.is_empty()
    }
}

/// One replica and its test host.
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Leader election.
    pub ble: Ble,
    /// Replicated log.
    pub px: SequencePaxos<u64>,
    /// Crash-stopped: receives, sends and ticks nothing, forever.
    pub crashed: bool,
    /// Everything the host applied, in order (restored from snapshots).
    pub applied: Vec<u64>,
    /// How often each id occurs in `applied`.
    pub applied_count: BTreeMap<u64, u32>,
    /// Number of Leader events from BLE.
    pub ble_leader_events: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    /// Delivery time in sub-ticks.
    at: u64,
    from: usize,
    to: usize,
    seq: u64,
}

/// The simulated group.
pub struct Sim {
    /// The seed of this run.
    pub seed: u64,
    /// Knobs.
    pub params: Params,
    rng: SplitMix64,
    /// The replicas.
    pub nodes: Vec<Node>,
    /// Current tick.
    pub now: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    payloads: BTreeMap<u64, Msg>,
    next_seq: u64,
    /// Delivery time of the last message put on each link (for FIFO).
    link_last: Vec<u64>,
    /// `down[a * n + b]`: messages from a to b are lost.
    down: Vec<bool>,
    calm: bool,
    next_id: u64,
    /// How many times each id was proposed (retries included).
    pub proposed: BTreeMap<u64, u32>,
    /// Ids not yet decided everywhere, with the tick of their last proposal.
    outstanding: BTreeMap<u64, u64>,
    /// Ids proposed in the calm phase once a leader was stable; never retried.
    fresh: BTreeMap<u64, u64>,
    /// Ids some replica reported dropped.
    dropped: BTreeSet<u64>,
    /// Union of all decided logs (they must be prefixes of it).
    global: Vec<u64>,
    /// The node that led with each ballot.
    leader_of: BTreeMap<Ballot, usize>,
    /// Tick at which the calm phase saw a stable leader.
    stable_at: Option<u64>,
    /// Number of BLE leader events of each node at `stable_at`.
    leader_events_at_stable: Vec<u64>,
    /// What went wrong.
    pub violations: Violations,
    /// Messages delivered (for sizing runs).
    pub delivered: u64,
    trace: Option<String>,
}

impl Sim {
    /// A fresh group for `seed`.
    pub fn new(seed: u64, params: Params) -> Sim {
        let n = params.replicas;
        let ids: Vec<NodeId> = (0..n).map(node_id).collect();
        let nodes = (0..n)
            .map(|i| Node {
                id: ids[i],
                ble: Ble::new(BleConfig {
                    me: ids[i],
                    peers: ids.clone(),
                    hb_round_ticks: HB_ROUND_TICKS,
                }),
                px: SequencePaxos::new(PaxosConfig {
                    me: ids[i],
                    peers: ids.clone(),
                    max_batch: params.max_batch,
                    max_batch_bytes: params.max_batch_bytes,
                    max_inflight_batches: params.max_inflight_batches,
                    resend_ticks: RESEND_TICKS,
                    max_log_entries: params.max_log_entries,
                    max_pending: params.max_pending,
                }),
                crashed: false,
                applied: Vec::new(),
                applied_count: BTreeMap::new(),
                ble_leader_events: 0,
            })
            .collect();
        let trace = std::env::var("KV_TRACE").ok().map(|_| String::new());
        let mut sim = Sim {
            seed,
            params,
            rng: SplitMix64::new(seed),
            nodes,
            now: 0,
            queue: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            next_seq: 0,
            link_last: vec![0; n * n],
            down: vec![false; n * n],
            calm: false,
            next_id: 1,
            proposed: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            fresh: BTreeMap::new(),
            dropped: BTreeSet::new(),
            global: Vec::new(),
            leader_of: BTreeMap::new(),
            stable_at: None,
            leader_events_at_stable: Vec::new(),
            violations: Violations::default(),
            delivered: 0,
            trace,
        };
        for i in 0..n {
            sim.pump(i);
        }
        sim
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let _ = writeln!(t, "[{}] {}", self.now, f());
        }
    }

    /// The trace (only with `KV_TRACE` set).
    pub fn trace(&self) -> Option<&str> {
        self.trace.as_deref()
    }

    fn n(&self) -> usize {
        self.nodes.len()
    }

    fn idx_of(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Indexes of the live replicas.
    pub fn live(&self) -> Vec<usize> {
        (0..self.n()).filter(|&i| !self.nodes[i].crashed).collect()
    }

    /// Runs the whole schedule (fault phase, then calm phase) and the final checks.
    pub fn run(&mut self) {
        let fault_end = self.params.fault_ticks;
        let end = fault_end + self.params.calm_ticks;
        while self.now < end {
            if self.now == fault_end {
                self.heal();
            }
            self.step();
        }
        self.final_checks();
    }

    /// Enters the calm phase: all links up, no more faults.
    pub fn heal(&mut self) {
        self.calm = true;
        self.down.iter_mut().for_each(|d| *d = false);
        self.log(|| "heal".to_string());
        for i in self.live() {
            for j in self.live() {
                if i != j {
                    let id = self.nodes[j].id;
                    self.nodes[i].px.reconnected(id);
                }
            }
            self.pump(i);
        }
    }

    /// One tick of global time.
    pub fn step(&mut self) {
        self.deliver_due();
        if self.params.faults && !self.calm {
            self.inject_faults();
        }
        self.host_actions();
        for i in self.live() {
            self.nodes[i].ble.tick();
            self.nodes[i].px.tick();
            self.pump(i);
        }
        if self.calm {
            self.watch_stability();
        }
        if self.trace.is_some() {
            let state: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}{}/{:?}/{}",
                        n.ble.ballot(),
                        if n.ble.quorum_connected() { "+" } else { "-" },
                        n.ble.leader().map(|b| b.to_string()),
                        n.px.promised()
                    )
                })
                .collect();
            self.log(|| format!("state {}", state.join(" | ")));
        }
        self.now += 1;
    }

    fn deliver_due(&mut self) {
        let mut budget = 100_000;
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at >= (self.now + 1) * SUB || budget == 0 {
                break;
            }
            budget -= 1;
            let Some(Reverse(m)) = self.queue.pop() else {
                break;
            };
            let Some(msg) = self.payloads.remove(&m.seq) else {
                continue;
            };
            let n = self.n();
            if self.nodes[m.to].crashed || self.down[m.from * n + m.to] {
                continue;
            }
            self.delivered += 1;
            let from = self.nodes[m.from].id;
            match msg {
                Msg::Ble(b) => self.nodes[m.to].ble.handle(from, b),
                Msg::Paxos(p) => {
                    self.log(|| format!("{} -> {}: {:?}", m.from, m.to, short(&p)));
                    self.nodes[m.to].px.handle(from, p)
                }
            }
            self.pump(m.to);
        }
    }

    fn send(&mut self, from: usize, to: NodeId, msg: Msg) {
        let Some(to) = self.idx_of(to) else { return };
        let n = self.n();
        if self.nodes[from].crashed || self.down[from * n + to] {
            return;
        }
        let faulty = self.params.faults && !self.calm;
        if faulty && self.rng.chance(0.04) {
            return; // lost
        }
        // Duplicating a forwarded proposal would duplicate the proposal itself (the
        // real links are exactly-once); protocol messages may be duplicated.
        let forward = matches!(msg, Msg::Paxos(PaxosMsg::ProposalForward(_)));
        let copies = if faulty && !forward && self.rng.chance(0.02) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            // A long delay overtakes nothing behind it (that would stall the link for
            // good); it is a reordering. FIFO messages get short delays.
            let slow = faulty && self.rng.chance(0.05);
            let delay = if slow {
                self.rng.range_inclusive(3, 15)
            } else {
                self.rng.range_inclusive(1, 2)
            };
            // Times are in sub-ticks: a random position inside the tick interleaves
            // the links at random, while FIFO messages of one link stay in order.
            let mut at = (self.now + delay) * SUB + self.rng.below(SUB);
            let reorder = slow || (faulty && self.rng.chance(0.1));
            if !reorder {
                at = at.max(self.link_last[from * n + to] + 1);
                self.link_last[from * n + to] = at;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.payloads.insert(seq, msg.clone());
            self.queue.push(Reverse(InFlight { at, from, to, seq }));
        }
    }

    /// Host glue, as in the components: BLE leader events go to Sequence Paxos,
    /// outboxes go to the network, Paxos events go to the "state machine".
    fn pump(&mut self, i: usize) {
        if self.nodes[i].crashed {
            return;
        }
        let mut ble_events = Vec::new();
        self.nodes[i].ble.take_events(&mut ble_events);
        for BleEvent::Leader(b) in ble_events {
            self.nodes[i].ble_leader_events += 1;
            self.log(|| format!("node {i} BLE leader {b}"));
            // The holder of an elected ballot must really have reached it.
            match self.idx_of(b.pid) {
                Some(h) if self.nodes[h].ble.ballot() >= b => {}
                _ => self.violations.leaders.push(format!(
                    "seed {}: node {i} elected ballot {b} that its owner never held",
                    self.seed
                )),
            }
            self.nodes[i].px.handle_leader(b);
        }
        let mut out = Vec::new();
        self.nodes[i].ble.take_outgoing(&mut out);
        for (to, m) in out {
            self.send(i, to, Msg::Ble(m));
        }
        let mut out = Vec::new();
        self.nodes[i].px.take_outgoing(&mut out);
        let me = self.nodes[i].id;
        for (to, m) in out {
            let n = match &m {
                PaxosMsg::Prepare(p) => Some(p.n),
                PaxosMsg::AcceptSync(a) => Some(a.n),
                PaxosMsg::AcceptDecide(a) => Some(a.n),
                PaxosMsg::Decide(d) => Some(d.n),
                _ => None,
            };
            if let Some(n) = n
                && n.pid != me
            {
                self.violations.leaders.push(format!(
                    "seed {}: node {i} sent a leader message in ballot {n} it does not own",
                    self.seed
                ));
            }
            self.send(i, to, Msg::Paxos(m));
        }
        let mut evs = Vec::new();
        self.nodes[i].px.take_events(&mut evs);
        for ev in evs {
            self.apply(i, ev);
        }
        if self.nodes[i].px.is_leader()
            && let Some(b) = self.nodes[i].px.leader()
        {
            let holder = *self.leader_of.entry(b).or_insert(i);
            if holder != i {
                self.violations.leaders.push(format!(
                    "seed {}: nodes {holder} and {i} both led with ballot {b}",
                    self.seed
                ));
            }
        }
    }

    fn check_global(&mut self, i: usize, idx: usize, e: u64) {
        if idx < self.global.len() {
            if self.global[idx] != e {
                self.violations.prefixes.push(format!(
                    "seed {}: node {i} decided {e} at {idx}, another node decided {}",
                    self.seed, self.global[idx]
                ));
            }
        } else if idx == self.global.len() {
            self.global.push(e);
        } else {
            self.violations.prefix_changed.push(format!(
                "seed {}: node {i} decided index {idx} beyond any known prefix",
                self.seed
            ));
        }
    }

    fn check_proposed(&mut self, i: usize, e: u64) {
        let times = self.proposed.get(&e).copied().unwrap_or(0);
        let c = self.nodes[i].applied_count.entry(e).or_insert(0);
        *c += 1;
        if *c > times {
            let c = *c;
            self.violations.proposed.push(format!(
                "seed {}: node {i} decided {e} {c} times, proposed {times} times",
                self.seed
            ));
        }
    }

    fn apply(&mut self, i: usize, ev: PaxosEvent<u64>) {
        match ev {
            PaxosEvent::Decided { idx, entry } => {
                self.log(|| format!("node {i} decided {idx} = {entry}"));
                let len = self.nodes[i].applied.len() as u64;
                if idx != len {
                    self.violations.prefix_changed.push(format!(
                        "seed {}: node {i} got Decided for {idx} with {len} applied",
                        self.seed
                    ));
                    return;
                }
                self.check_global(i, idx as usize, entry);
                self.check_proposed(i, entry);
                self.nodes[i].applied.push(entry);
                self.mark_decided(entry);
            }
            PaxosEvent::Dropped(e) => {
                self.log(|| format!("node {i} dropped {e}"));
                self.dropped.insert(e);
            }
            PaxosEvent::InstallSnapshot(s) => {
                self.log(|| format!("node {i} installs snapshot {}", s.idx));
                let Some(list) = decode(&s.data) else {
                    self.violations.prefix_changed.push(format!(
                        "seed {}: node {i} got a corrupt snapshot",
                        self.seed
                    ));
                    return;
                };
                let mine = &self.nodes[i].applied;
                if list.len() as u64 != s.idx
                    || list.len() <= mine.len()
                    || list[..mine.len()] != mine[..]
                {
                    self.violations.prefix_changed.push(format!(
                        "seed {}: node {i} with {} applied installed a snapshot of {} that does not extend it",
                        self.seed,
                        mine.len(),
                        s.idx
                    ));
                    return;
                }
                let from = mine.len();
                for (k, &e) in list.iter().enumerate().skip(from) {
                    self.check_global(i, k, e);
                    self.check_proposed(i, e);
                    self.mark_decided(e);
                }
                self.nodes[i].applied = list;
            }
        }
    }

    fn mark_decided(&mut self, e: u64) {
        // "Decided" for the host means: in the log of every live replica.
        if self.outstanding.contains_key(&e)
            && self
                .live()
                .iter()
                .all(|&j| self.nodes[j].applied_count.contains_key(&e))
        {
            self.outstanding.remove(&e);
        }
    }

    /// Cuts every link of replica `x` (both directions).
    pub fn isolate(&mut self, x: usize) {
        let n = self.n();
        for o in 0..n {
            if o != x {
                self.down[x * n + o] = true;
                self.down[o * n + x] = true;
            }
        }
        self.log(|| format!("isolate {x}"));
    }

    /// Brings every link back up and tells the replicas which links came back.
    pub fn reconnect_all(&mut self) {
        let n = self.n();
        let was: Vec<bool> = self.down.clone();
        self.down.iter_mut().for_each(|d| *d = false);
        self.log(|| "heal links".to_string());
        for a in self.live() {
            for b in self.live() {
                if was[a * n + b] {
                    let id = self.nodes[b].id;
                    self.nodes[a].px.reconnected(id);
                }
            }
            self.pump(a);
        }
    }

    /// Proposes a new, unique id at replica `i` (never retried by the host) and
    /// returns it.
    pub fn propose_new(&mut self, i: usize) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.propose_at(i, id);
        id
    }

    /// Ids some replica reported dropped.
    pub fn dropped(&self) -> &BTreeSet<u64> {
        &self.dropped
    }

    /// Whether one live replica leads and every live replica follows it.
    pub fn has_stable_leader(&self) -> bool {
        let live = self.live();
        let leaders: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].px.is_leader())
            .collect();
        let [l] = leaders[..] else { return false };
        let lid = self.nodes[l].id;
        live.iter()
            .all(|&i| self.nodes[i].px.leader().is_some_and(|b| b.pid == lid))
    }

    fn propose_at(&mut self, i: usize, id: u64) {
        *self.proposed.entry(id).or_insert(0) += 1;
        self.log(|| format!("propose {id} at node {i}"));
        self.nodes[i].px.propose(id);
        self.pump(i);
    }

    fn host_actions(&mut self) {
        let live = self.live();
        // New proposals at random live replicas, except in the last quiet ticks.
        let end = self.params.fault_ticks + self.params.calm_ticks;
        if self.now + QUIET_TICKS < end && self.rng.chance(self.params.propose_chance) {
            let k = self.rng.range_inclusive(1, 3);
            for _ in 0..k {
                let i = live[self.rng.below(live.len() as u64) as usize];
                let id = self.next_id;
                self.next_id += 1;
                self.outstanding.insert(id, self.now);
                if self.stable_at.is_some() {
                    self.fresh.insert(id, self.now);
                }
                self.propose_at(i, id);
            }
        }
        // Retries, as the KV layer does after a timeout (fresh ids are not retried,
        // they test that the core itself never loses a proposal).
        let due: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(id, at)| {
                self.now >= **at + self.params.retry_ticks && !self.fresh.contains_key(id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if live
                .iter()
                .all(|&j| self.nodes[j].applied_count.contains_key(&id))
            {
                self.outstanding.remove(&id);
                continue;
            }
            let live = self.live();
            let i = live[self.rng.below(live.len() as u64) as usize];
            self.outstanding.insert(id, self.now);
            self.propose_at(i, id);
        }
        // Snapshots, taken by each host now and then.
        if self.params.snapshots {
            for i in live {
                if self.rng.chance(0.05) {
                    let applied = &self.nodes[i].applied;
                    let snap = Snapshot {
                        idx: applied.len() as u64,
                        data: std::sync::Arc::new(encode(applied)),
                    };
                    self.nodes[i].px.set_snapshot(snap);
                    self.pump(i);
                }
            }
        }
    }

    fn inject_faults(&mut self) {
        let n = self.n();
        let f = (n - 1) / 2;
        let r = self.rng.below(1000);
        if r < 25 {
            // A random partition into two sides.
            let mask = self.rng.next_u64();
            for a in 0..n {
                for b in 0..n {
                    let split = ((mask >> a) & 1) != ((mask >> b) & 1);
                    self.down[a * n + b] = split;
                }
            }
            self.log(|| format!("partition {:b}", mask & ((1 << n) - 1)));
        } else if r < 40 {
            let x = self.rng.below(n as u64) as usize;
            self.isolate(x);
        } else if r < 70 {
            self.reconnect_all();
        } else if r < 76 {
            let crashed = self.nodes.iter().filter(|x| x.crashed).count();
            if crashed < f {
                let x = self.rng.below(n as u64) as usize;
                if !self.nodes[x].crashed {
                    self.nodes[x].crashed = true;
                    self.log(|| format!("crash {x}"));
                }
            }
        }
    }

    /// In the calm phase: note when all live replicas follow one live leader that has
    /// finished its prepare phase.
    fn watch_stability(&mut self) {
        if let Some(at) = self.stable_at {
            // A calm network must not change its leader (no churn).
            for i in self.live() {
                let changes = self.nodes[i].ble_leader_events;
                if changes != self.leader_events_at_stable[i] {
                    self.violations.liveness.push(format!(
                        "seed {}: node {i} saw a leader change at {} in a calm network (stable since {at})",
                        self.seed, self.now
                    ));
                    self.leader_events_at_stable[i] = changes;
                }
            }
            return;
        }
        // Let the ballots of the fault phase spread and the slow messages land first.
        if self.now < self.params.fault_ticks + SETTLE_TICKS {
            return;
        }
        if self.has_stable_leader() {
            self.stable_at = Some(self.now);
            self.leader_events_at_stable = self.nodes.iter().map(|n| n.ble_leader_events).collect();
            self.log(|| "stable leader".to_string());
        }
    }

    fn final_checks(&mut self) {
        let seed = self.seed;
        let live = self.live();
        // Decided logs agree pairwise (also covered incrementally by `global`).
        for &a in &live {
            for &b in &live {
                let (x, y) = (&self.nodes[a].applied, &self.nodes[b].applied);
                let k = x.len().min(y.len());
                if x[..k] != y[..k] {
                    self.violations
                        .prefixes
                        .push(format!("seed {seed}: nodes {a} and {b} disagree"));
                }
            }
        }
        if self.params.calm_ticks == 0 {
            return;
        }
        let Some(stable_at) = self.stable_at else {
            self.violations.liveness.push(format!(
                "seed {seed}: no stable leader within {} calm ticks",
                self.params.calm_ticks
            ));
            return;
        };
        // Every id proposed at any time (with host retries) is decided on every live
        // replica.
        for (id, _) in self.proposed.iter() {
            if self.fresh.contains_key(id) {
                continue;
            }
            for &i in &live {
                if !self.nodes[i].applied_count.contains_key(id) {
                    self.violations.liveness.push(format!(
                        "seed {seed}: id {id} not decided on node {i} (stable since {stable_at})"
                    ));
                    return;
                }
            }
        }
        // Every id proposed once, after the leader was stable, and early enough to be
        // decided in the remaining calm ticks, is decided everywhere or reported
        // dropped, without any retry.
        let deadline = self.now.saturating_sub(QUIET_TICKS);
        for (id, at) in self.fresh.iter() {
            if *at > deadline || self.dropped.contains(id) {
                continue;
            }
            for &i in &live {
                if !self.nodes[i].applied_count.contains_key(id) {
                    self.violations.liveness.push(format!(
                        "seed {seed}: fresh id {id} proposed at {at} neither decided on node {i} nor dropped"
                    ));
                    return;
                }
            }
        }
    }
}

fn short(m: &PaxosMsg<u64>) -> String {
    match m {
        PaxosMsg::Promise(p) => format!(
            "Promise(n={}, acc={}, dec={}, len={}, suffix={}, snap={:?})",
            p.n,
            p.n_accepted,
            p.decided_idx,
            p.accepted_idx,
            p.suffix.len(),
            p.snapshot.as_ref().map(|s| s.idx)
        ),
        PaxosMsg::AcceptSync(a) => format!(
            "AcceptSync(n={}, sync={}, suffix={:?}, dec={}, snap={:?})",
            a.n,
            a.sync_idx,
            a.suffix,
            a.decided_idx,
            a.snapshot.as_ref().map(|s| s.idx)
        ),
        other => format!("{other:?}"),
    }
}

/// Runs one schedule and returns the simulation for inspection.
pub fn run_seed(seed: u64, params: Params) -> Sim {
    let mut sim = Sim::new(seed, params);
    sim.run();
    sim
}

/// The seed to replay, from `KV_SEED` (decimal or 0x-hex).
pub fn seed_from_env() -> Option<u64> {
    let s = std::env::var("KV_SEED").ok()?;
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

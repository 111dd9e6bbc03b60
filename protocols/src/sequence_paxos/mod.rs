//! Sequence Paxos core: a replicated log for one partition.
//!
//! One [`SequencePaxos`] runs on every replica of a partition. The host feeds it the
//! messages of the other replicas ([`SequencePaxos::handle`]), the leader chosen by
//! ballot leader election ([`SequencePaxos::handle_leader`]), proposals
//! ([`SequencePaxos::propose`]) and a fixed-period [`SequencePaxos::tick`]; it drains
//! the messages to send and the events to deliver (decided entries, dropped
//! proposals, snapshots to install). The state of a replica is an enum of roles, each
//! carrying only the data that role needs; the leader's handlers live in `leader.rs`,
//! the follower's in `follower.rs`. See `docs/protocols.md` for the algorithm and why
//! it is safe.

use std::collections::{BTreeMap, VecDeque};

use crate::NodeId;
use crate::ballot::Ballot;

mod follower;
mod leader;
pub mod messages;
#[cfg(test)]
mod tests;

pub use messages::{
    AcceptDecide, AcceptSync, Accepted, Decide, PaxosMsg, Prepare, Promise, Snapshot,
};

/// What Sequence Paxos needs to know about a log entry: whether it is a stop-sign.
///
/// A stop-sign is the last entry of a configuration (a replication group in one
/// epoch). Once a replica has it in its log, nothing is ever appended after it; once
/// it is decided, the instance is stopped and the next configuration (named inside
/// the stop-sign, which only the host interprets) takes over from the state after it.
/// See `docs/membership.md`.
pub trait LogEntry: Clone + std::fmt::Debug {
    /// Whether this entry ends its configuration.
    fn is_stop_sign(&self) -> bool;

    /// About how many bytes the entry takes in a message (an upper estimate is
    /// best): batches stop growing at [`PaxosConfig::max_batch_bytes`].
    fn size_hint(&self) -> usize;
}

/// Plain integers (the logs of tests and examples) are never stop-signs.
impl LogEntry for u32 {
    fn is_stop_sign(&self) -> bool {
        false
    }
    fn size_hint(&self) -> usize {
        4
    }
}

/// Plain integers (the logs of tests and examples) are never stop-signs.
impl LogEntry for u64 {
    fn is_stop_sign(&self) -> bool {
        false
    }
    fn size_hint(&self) -> usize {
        8
    }
}

use leader::LeaderState;

/// Configuration of one Sequence Paxos replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaxosConfig {
    /// The node this replica runs on.
    pub me: NodeId,
    /// The whole replication group, `me` included (order does not matter).
    pub peers: Vec<NodeId>,
    /// Most entries in one `AcceptDecide` or `ProposalForward` (0 is treated as 1).
    pub max_batch: usize,
    /// Most bytes ([`LogEntry::size_hint`]) in one `AcceptDecide` or
    /// `ProposalForward`; a single entry above it still goes, alone. Keeps batches
    /// of large values within a network frame.
    pub max_batch_bytes: usize,
    /// Most batches the leader keeps undecided before it holds new proposals back
    /// (0 is treated as 1).
    pub max_inflight_batches: usize,
    /// Ticks between resends to unresponsive replicas (0 is treated as 1).
    pub resend_ticks: u64,
    /// When the retained log is longer than this, the replica trims it up to its own
    /// snapshot even if some replica has not reported that far.
    pub max_log_entries: u64,
    /// Most proposals buffered while they cannot be placed in the log or forwarded;
    /// further ones are reported [`PaxosEvent::Dropped`].
    pub max_pending: usize,
}

/// What Sequence Paxos tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaxosEvent<T> {
    /// Entry `idx` of the log is decided. Emitted exactly once per index, in index
    /// order, except for indexes covered by an `InstallSnapshot` emitted earlier.
    Decided {
        /// The log index.
        idx: u64,
        /// The decided entry.
        entry: T,
    },
    /// A proposal this replica held could be neither placed in the log nor forwarded
    /// to a leader (buffer full, or leadership lost with no known successor). It will
    /// not be decided unless it is proposed again.
    Dropped(T),
    /// Replace the state machine with this snapshot (the state after applying entries
    /// `0..snap.idx`); decided entries continue at `snap.idx`.
    InstallSnapshot(Snapshot),
}

/// What a replica does in the current ballot.
#[derive(Debug)]
enum Role<T> {
    /// Following whoever holds the promised ballot.
    Follower(FollowerState),
    /// Leading with its own ballot (preparing or accepting).
    Leader(LeaderState<T>),
}

/// Data only a follower needs.
#[derive(Debug, Default)]
struct FollowerState {
    /// Tick at which we last asked the leader to prepare us again (rate limit).
    last_prepare_req: Option<u64>,
}

/// One replica of Sequence Paxos.
#[derive(Debug)]
pub struct SequencePaxos<T> {
    /// This node.
    me: NodeId,
    /// The other members of the group, sorted. Invariant: `me ∉ others`.
    others: Vec<NodeId>,
    /// Size of a majority of the group.
    majority: usize,
    /// Invariant: `>= 1`.
    max_batch: usize,
    max_batch_bytes: usize,
    /// Invariant: `>= 1`.
    max_inflight: usize,
    /// Invariant: `>= 1`.
    resend_ticks: u64,
    max_log_entries: u64,
    max_pending: usize,

    /// The highest ballot promised. Invariant: never decreases.
    promised: Ballot,
    /// The ballot in which the whole retained log was accepted.
    /// Invariant: `accepted_round <= promised`; while `accepted_round` stays the same
    /// the log only grows (never truncated), which is what lets the leader count an
    /// `Accepted` for good.
    accepted_round: Ballot,
    /// Retained log entries; `log[i]` is entry `first_idx + i`.
    log: VecDeque<T>,
    /// Index of the first retained entry.
    /// Invariant: `first_idx <= snapshot idx (0 without one) <= decided_idx <= log_len()`.
    first_idx: u64,
    /// Entries `0..decided_idx` are decided, and a `Decided` (or covering
    /// `InstallSnapshot`) event has been emitted for each. Invariant: never decreases.
    decided_idx: u64,
    /// The latest snapshot: set by the host or installed from the leader.
    /// Invariant: `snapshot.idx <= decided_idx`.
    snapshot: Option<Snapshot>,
    /// The leader this replica believes in (from BLE or from a Prepare).
    leader: Option<Ballot>,
    /// The latest leader reported by BLE. Leadership of Sequence Paxos follows it.
    ble_leader: Option<Ballot>,
    /// Tick of the last sign of life of the leader of `promised` (a Prepare or
    /// phase-2 message of that ballot), or of our own step-down.
    last_leader_contact: u64,
    /// The role in the current ballot.
    role: Role<T>,
    /// Proposals not yet in the log: on the leader, waiting for a batch slot; on a
    /// follower, waiting to be forwarded. Invariant: `pending.len() <= max_pending`
    /// after every call.
    pending: VecDeque<T>,
    /// Set when proposals forwarded to this replica arrived while it does not lead:
    /// they (and everything buffered with them) wait for the next tick before they are
    /// forwarded again, so two replicas that each believe the other leads pass them
    /// back and forth once per tick instead of in an endless burst of messages.
    hold_forwarding: bool,
    /// Tick at which we last told a leader of a lower ballot about our promise (rate
    /// limit; see `accepts_from`).
    last_overtaken_notice: Option<u64>,
    /// The highest `applied_idx` each other member reported in a `Compaction`.
    applied: BTreeMap<NodeId, u64>,
    /// Logical clock.
    ticks: u64,
    /// Messages for the host to send.
    outgoing: Vec<(NodeId, PaxosMsg<T>)>,
    /// Events for the host to deliver.
    events: Vec<PaxosEvent<T>>,
}

impl<T: LogEntry> SequencePaxos<T> {
    /// A new replica with an empty log, following nobody.
    pub fn new(cfg: PaxosConfig) -> Self {
        let mut others: Vec<NodeId> = cfg.peers.into_iter().filter(|p| *p != cfg.me).collect();
        others.sort();
        others.dedup();
        let group = others.len() + 1;
        let majority = group / 2 + 1;
        SequencePaxos {
            me: cfg.me,
            others,
            majority,
            max_batch: cfg.max_batch.max(1),
            max_batch_bytes: cfg.max_batch_bytes,
            max_inflight: cfg.max_inflight_batches.max(1),
            resend_ticks: cfg.resend_ticks.max(1),
            max_log_entries: cfg.max_log_entries,
            max_pending: cfg.max_pending,
            promised: Ballot::initial(cfg.me),
            accepted_round: Ballot::NONE,
            log: VecDeque::new(),
            first_idx: 0,
            decided_idx: 0,
            snapshot: None,
            leader: None,
            ble_leader: None,
            last_leader_contact: 0,
            role: Role::Follower(FollowerState::default()),
            pending: VecDeque::new(),
            hold_forwarding: false,
            last_overtaken_notice: None,
            applied: BTreeMap::new(),
            ticks: 0,
            outgoing: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A replica whose log starts where another configuration of the group ended:
    /// entries `0..snap.idx` are decided and summarised by `snap` (the state they
    /// produced), and new entries go after them. Every replica of the new
    /// configuration must start from the same snapshot, so that no majority of it
    /// can ever adopt a log without that state.
    pub fn starting_from(cfg: PaxosConfig, snap: Snapshot) -> Self {
        let mut px = Self::new(cfg);
        px.first_idx = snap.idx;
        px.decided_idx = snap.idx;
        // Every member starts from this state, so none needs entries before it.
        px.applied = px.others.iter().map(|o| (*o, snap.idx)).collect();
        px.snapshot = Some(snap);
        px
    }

    /// Handles a message from `from`. Messages from outside the group, from stale
    /// ballots, or that do not fit the current state are ignored.
    pub fn handle(&mut self, from: NodeId, msg: PaxosMsg<T>) {
        if from == self.me || self.others.binary_search(&from).is_err() {
            return;
        }
        match msg {
            PaxosMsg::Prepare(p) => self.handle_prepare(from, p),
            PaxosMsg::Promise(p) => self.handle_promise(from, p),
            PaxosMsg::AcceptSync(a) => self.handle_accept_sync(from, a),
            PaxosMsg::AcceptDecide(a) => self.handle_accept_decide(from, a),
            PaxosMsg::Accepted(a) => self.handle_accepted(from, a),
            PaxosMsg::Decide(d) => self.handle_decide(from, d),
            PaxosMsg::ProposalForward(entries) => self.handle_proposal_forward(entries),
            PaxosMsg::PrepareReq => self.handle_prepare_req(from),
            PaxosMsg::Compaction { n, applied_idx } => self.handle_compaction(from, n, applied_idx),
        }
    }

    /// BLE elected `leader`. If that is this node, it starts leading (with a ballot
    /// above anything it promised); otherwise it follows and forwards to that node.
    pub fn handle_leader(&mut self, leader: Ballot) {
        self.ble_leader = Some(leader);
        if leader.pid == self.me {
            if matches!(self.role, Role::Follower(_)) {
                self.become_leader(leader);
            }
        } else {
            self.leader = Some(leader);
            if matches!(self.role, Role::Leader(_)) {
                self.step_down();
            }
        }
    }

    /// Proposes `entry` for the log. The leader batches it; another replica forwards
    /// it to the leader it knows, or buffers it while it knows none. A proposal that
    /// does not fit the buffer is reported [`PaxosEvent::Dropped`].
    pub fn propose(&mut self, entry: T) {
        self.propose_all(std::iter::once(entry));
    }

    /// Proposes `entries` in this order, as [`propose`](Self::propose) would one by
    /// one, except that a leader sends them together (up to `max_batch` per Accept).
    ///
    /// Once a stop-sign is in this replica's log or among its buffered proposals,
    /// every later proposal is reported [`PaxosEvent::Dropped`]: nothing may follow a
    /// stop-sign, and the next configuration serves those commands.
    pub fn propose_all(&mut self, entries: impl IntoIterator<Item = T>) {
        let mut closed = self.has_stop_sign() || self.pending.iter().any(T::is_stop_sign);
        for entry in entries {
            if closed || self.pending.len() >= self.max_pending {
                self.events.push(PaxosEvent::Dropped(entry));
            } else {
                closed = entry.is_stop_sign();
                self.pending.push_back(entry);
            }
        }
        if matches!(self.role, Role::Leader(_)) {
            self.leader_pump();
        } else if self.pending.len() >= self.max_batch || self.next_batch_len() < self.pending.len()
        {
            self.forward_pending();
        }
    }

    /// Advances the logical clock by one tick: resends, flushes buffered proposals.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader(_) => self.leader_tick(),
            Role::Follower(_) => {
                self.hold_forwarding = false;
                self.forward_pending();
                // Leadership follows BLE: if BLE says we lead but a higher ballot made
                // us step down, and the holder of that ballot has been silent for two
                // resend periods (it stopped leading, or cannot reach us), take over
                // again, so the group never waits on a leader that is not there.
                // (Followers do not talk to each other, so silence from the others
                // says nothing; only the ballot holder's silence counts.)
                if let Some(b) = self.ble_leader
                    && b.pid == self.me
                    && self.ticks >= self.last_leader_contact + 2 * self.resend_ticks
                {
                    self.become_leader(b);
                }
            }
        }
    }

    /// The link to `peer` came back after a failure: messages may have been lost, so
    /// resynchronise with it.
    pub fn reconnected(&mut self, peer: NodeId) {
        if self.others.binary_search(&peer).is_err() {
            return;
        }
        self.send_compaction(peer);
        match self.role {
            Role::Leader(_) => self.leader_reprepare(peer),
            Role::Follower(_) => {
                if self.promised.pid == peer {
                    self.outgoing.push((peer, PaxosMsg::PrepareReq));
                }
            }
        }
    }

    /// The host has applied entries `0..snap.idx`, and `snap` is the resulting state.
    /// Ignored unless `snap.idx` is decided and newer than the current snapshot. The
    /// replica announces it to the group and trims its log when it safely can.
    /// A snapshot past a stop-sign is ignored too: the stop-sign stays in the log, so
    /// every replica learns it through the log.
    pub fn set_snapshot(&mut self, snap: Snapshot) {
        if snap.idx > self.decided_idx || snap.idx <= self.snapshot_idx() {
            return;
        }
        if self.has_stop_sign() && snap.idx >= self.log_len() {
            return;
        }
        let idx = snap.idx;
        self.snapshot = Some(snap);
        for peer in &self.others {
            self.outgoing.push((
                *peer,
                PaxosMsg::Compaction {
                    n: self.promised,
                    applied_idx: idx,
                },
            ));
        }
        self.maybe_trim();
    }

    /// Moves every message waiting to be sent into `buf` (forwarding any buffered
    /// proposals to the known leader first).
    pub fn take_outgoing(&mut self, buf: &mut Vec<(NodeId, PaxosMsg<T>)>) {
        if matches!(self.role, Role::Follower(_)) {
            self.forward_pending();
        }
        buf.append(&mut self.outgoing);
    }

    /// Moves every pending event into `buf`.
    pub fn take_events(&mut self, buf: &mut Vec<PaxosEvent<T>>) {
        buf.append(&mut self.events);
    }

    /// The leader this replica believes in: itself while it leads.
    pub fn leader(&self) -> Option<Ballot> {
        match &self.role {
            Role::Leader(l) => Some(l.n),
            Role::Follower(_) => self.leader,
        }
    }

    /// Whether this replica is the leader and has finished its prepare phase, so its
    /// proposals are being replicated.
    pub fn is_leader(&self) -> bool {
        matches!(&self.role, Role::Leader(l) if l.is_accepting())
    }

    /// Number of decided entries (`0..decided_idx` are decided).
    pub fn decided_idx(&self) -> u64 {
        self.decided_idx
    }

    /// Length of the log, trimmed prefix included.
    pub fn log_len(&self) -> u64 {
        self.first_idx + self.log.len() as u64
    }

    /// Index of the first entry still held in memory.
    pub fn first_retained_idx(&self) -> u64 {
        self.first_idx
    }

    /// Number of buffered proposals not yet in the log.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The promised ballot.
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// Whether this replica's log ends with a stop-sign (accepted, maybe not yet
    /// decided). Invariant: a stop-sign is only ever the last entry of a log, and it
    /// is never trimmed (snapshots stop at its index).
    pub fn has_stop_sign(&self) -> bool {
        self.log.back().is_some_and(T::is_stop_sign)
    }

    /// The decided stop-sign and its index, once this instance is stopped: nothing
    /// will ever be decided after it.
    pub fn stopped(&self) -> Option<(u64, &T)> {
        let idx = self.log_len().checked_sub(1)?;
        let ss = self.log.back().filter(|e| e.is_stop_sign())?;
        (idx < self.decided_idx).then_some((idx, ss))
    }

    // ----- shared helpers -------------------------------------------------------

    /// Our `Compaction` announcement for `peer`: what we applied, and our promise.
    fn send_compaction(&mut self, peer: NodeId) {
        let applied_idx = self.snapshot_idx();
        self.outgoing.push((
            peer,
            PaxosMsg::Compaction {
                n: self.promised,
                applied_idx,
            },
        ));
    }

    /// How many of the buffered proposals go in the next batch: at least one (when
    /// any), at most `max_batch`, and no more than `max_batch_bytes` together.
    fn next_batch_len(&self) -> usize {
        let mut bytes = 0usize;
        let mut k = 0;
        for e in self.pending.iter().take(self.max_batch) {
            bytes = bytes.saturating_add(e.size_hint());
            if k > 0 && bytes > self.max_batch_bytes {
                break;
            }
            k += 1;
        }
        k
    }

    fn snapshot_idx(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.idx)
    }

    /// Entries `from..log_len()` (cloned). Requires `first_idx <= from`.
    fn suffix_from(&self, from: u64) -> Vec<T> {
        let start = from.saturating_sub(self.first_idx) as usize;
        self.log
            .range(start.min(self.log.len())..)
            .cloned()
            .collect()
    }

    /// Removes every entry at index `idx` or above. Requires `idx >= decided_idx`.
    fn truncate_log(&mut self, idx: u64) {
        debug_assert!(idx >= self.decided_idx);
        let keep = idx.saturating_sub(self.first_idx) as usize;
        self.log.truncate(keep);
    }

    /// Marks `0..idx` decided (capped at the log length), emitting the new decisions.
    fn advance_decided(&mut self, idx: u64) {
        let idx = idx.min(self.log_len());
        while self.decided_idx < idx {
            let pos = (self.decided_idx - self.first_idx) as usize;
            if let Some(entry) = self.log.get(pos) {
                self.events.push(PaxosEvent::Decided {
                    idx: self.decided_idx,
                    entry: entry.clone(),
                });
            }
            self.decided_idx += 1;
        }
    }

    /// Replaces the decided prefix by `snap` (requires `snap.idx > decided_idx`).
    /// Retained entries above `snap.idx` are kept (callers truncate if they must).
    fn install_snapshot(&mut self, snap: Snapshot) {
        debug_assert!(snap.idx > self.decided_idx);
        if snap.idx <= self.log_len() {
            let drop = (snap.idx - self.first_idx) as usize;
            self.log.drain(..drop);
        } else {
            self.log.clear();
        }
        self.first_idx = snap.idx;
        self.decided_idx = snap.idx;
        let idx = snap.idx;
        self.events.push(PaxosEvent::InstallSnapshot(snap.clone()));
        self.snapshot = Some(snap);
        for peer in &self.others {
            self.outgoing.push((
                *peer,
                PaxosMsg::Compaction {
                    n: self.promised,
                    applied_idx: idx,
                },
            ));
        }
    }

    fn handle_compaction(&mut self, from: NodeId, n: Ballot, applied_idx: u64) {
        // The ballot tells us the sender promised `n`: promising it too is always
        // safe, and it is how a leader whose ballot was overtaken (its Prepare was
        // answered by this message) learns that it must pick a higher one.
        if n > self.promised {
            self.promised = n;
            if self.leader.is_none_or(|l| l < n) {
                self.leader = Some(n);
            }
            if matches!(self.role, Role::Leader(_)) {
                self.step_down();
            }
        }
        let e = self.applied.entry(from).or_insert(0);
        *e = (*e).max(applied_idx);
        self.maybe_trim();
    }

    /// Trims the log prefix that every member has applied and our snapshot covers,
    /// or, when the log is over its bound, everything our snapshot covers.
    fn maybe_trim(&mut self) {
        let own = self.snapshot_idx();
        let mut target = self
            .others
            .iter()
            .map(|p| self.applied.get(p).copied().unwrap_or(0))
            .fold(own, u64::min);
        if self.log.len() as u64 > self.max_log_entries {
            target = own;
        }
        // The snapshot covers `0..own` and `own <= decided_idx`, so everything we drop
        // can be handed to a lagging replica as the snapshot.
        if target > self.first_idx {
            let drop = ((target - self.first_idx) as usize).min(self.log.len());
            self.log.drain(..drop);
            self.first_idx += drop as u64;
        }
    }

    /// A proposal arrived from another replica: treat it as proposed here.
    fn handle_proposal_forward(&mut self, entries: Vec<T>) {
        if matches!(self.role, Role::Follower(_)) {
            self.hold_forwarding = true;
        }
        self.propose_all(entries);
    }

    /// Sends buffered proposals to the known leader (non-leaders only).
    fn forward_pending(&mut self) {
        if self.has_stop_sign() {
            // Nothing can be appended in this configuration any more.
            for e in self.pending.drain(..) {
                self.events.push(PaxosEvent::Dropped(e));
            }
            return;
        }
        let Some(leader) = self.leader else { return };
        if leader.pid == self.me || self.pending.is_empty() || self.hold_forwarding {
            return;
        }
        while !self.pending.is_empty() {
            let k = self.next_batch_len();
            let batch: Vec<T> = self.pending.drain(..k).collect();
            self.outgoing
                .push((leader.pid, PaxosMsg::ProposalForward(batch)));
        }
    }

    /// Stops leading. Proposals that never reached the log go to the new leader if one
    /// is known, and are reported dropped otherwise.
    fn step_down(&mut self) {
        self.role = Role::Follower(FollowerState::default());
        self.last_leader_contact = self.ticks;
        match self.leader {
            Some(l) if l.pid != self.me => self.forward_pending(),
            _ => {
                for e in self.pending.drain(..) {
                    self.events.push(PaxosEvent::Dropped(e));
                }
            }
        }
    }

    /// Adopts a higher ballot `n` seen in a message from its leader.
    fn observe_ballot(&mut self, n: Ballot) {
        if n > self.promised {
            self.promised = n;
        }
        if self.leader.is_none_or(|l| l < n) {
            self.leader = Some(n);
        }
        if matches!(&self.role, Role::Leader(l) if l.n < n) {
            self.step_down();
        }
    }
}

/// Deliberate bugs the simulator can plant to show that its checks catch them.
/// Never enabled in production: nothing but the simulator's planted-bug tests calls
/// [`planted::set_leader_ignores_promised_suffix`].
#[doc(hidden)]
pub mod planted {
    use std::cell::Cell;

    thread_local! {
        /// Per thread: the simulator runs every replica of a run on its driver thread.
        static IGNORE_SUFFIX: Cell<bool> = const { Cell::new(false) };
    }

    /// Make new leaders on this thread keep their own log instead of adopting the
    /// longest suffix accepted in the highest round among the promises.
    pub fn set_leader_ignores_promised_suffix(on: bool) {
        IGNORE_SUFFIX.with(|c| c.set(on));
    }

    pub(crate) fn leader_ignores_promised_suffix() -> bool {
        IGNORE_SUFFIX.with(|c| c.get())
    }
}

//! The `KvReplica` component: one partition's key-value state machine on this node.
//!
//! Client requests routed here by the overlay are checked against the size limits
//! and proposed to the partition's Sequence Paxos log; every replica applies the
//! decided commands in log order (so GET, PUT and CAS are linearizable: reads go
//! through the log too), and the replica that proposed a command answers the client
//! directly. Sessions `(client, seq)` in the state machine make a retried PUT or CAS
//! take effect once.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kompact::prelude::*;
use kv_ports::{
    ClientMessage, ClientRequest, ClientResponse, KvCommand, KvOp, NodeId, PartitionId, Refusal,
    Routed, Routing, RoutingRequest, ScIndication, ScRequest, SequenceConsensus, Snapshot, Timeout,
    Timer,
};
use kv_protocols::kv::{Applied, KvState};

use crate::metrics::{Metrics, OpKind, Outcome, PartitionMetrics, inc};
use crate::ticker::Ticker;

/// Settings of one replica.
#[derive(Clone, Debug)]
pub struct KvReplicaSettings {
    /// This node.
    pub me: NodeId,
    /// The partition.
    pub partition: PartitionId,
    /// The configuration epoch of the partition's group this replica serves.
    pub epoch: u64,
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Longest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Most client operations waiting for a decision on this node, over every
    /// replica that shares the node's counter (see [`KvReplica::with_node_inflight`]);
    /// more are answered `Busy`.
    pub max_inflight: usize,
    /// Applied entries between two snapshots (which let the log be trimmed).
    pub snapshot_interval: u64,
    /// Client sessions idle longer than this are forgotten.
    pub session_idle: Duration,
    /// Most client sessions remembered.
    pub max_sessions: usize,
    /// Period of the replica's clock (session stamps, expiry of lost proposals).
    pub tick_period: Duration,
}

/// Checks an operation against the size limits; `Err` says what is too large.
pub fn check_limits(op: &KvOp, max_key: usize, max_value: usize) -> Result<(), Refusal> {
    let key = op.key();
    if key.len() > max_key {
        return Err(Refusal::TooLarge(format!(
            "key is {} bytes, the limit is {max_key}",
            key.len()
        )));
    }
    let values: &[&str] = match op {
        KvOp::Get { .. } | KvOp::Delete { .. } => &[],
        KvOp::Put { value, .. }
        | KvOp::Cas {
            expected: None,
            new: value,
            ..
        } => &[value.as_str()],
        KvOp::Cas {
            expected: Some(expected),
            new,
            ..
        } => &[expected.as_str(), new.as_str()],
    };
    for v in values {
        if v.len() > max_value {
            return Err(Refusal::TooLarge(format!(
                "value is {} bytes, the limit is {max_value}",
                v.len()
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Planted bugs (simulation hook; off unless a test turns one on)

/// A deliberate bug the simulator can plant in replicas to show that its checks
/// catch it. Never enabled in production: nothing outside the simulator's tests
/// calls [`set_planted_bug`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Answer GET from this replica's local state at once, without going through
    /// the log (stale reads from followers and deposed leaders).
    LocalRead,
    /// Answer DELETE from this replica's local state at once (whether the key
    /// exists there), without going through the log: the key is never removed.
    LocalDelete,
}

thread_local! {
    /// The bug replicas created on this thread plant. A thread-local rather than a
    /// settings field so the node host (which builds `KvReplicaSettings`) stays
    /// untouched; the simulator runs every replica of a run on its driver thread.
    static PLANTED_BUG: Cell<Option<PlantedBug>> = const { Cell::new(None) };
}

/// Whether a replica takes a snapshot now, `entries` and `bytes` after the last one
/// (which was `last_bytes` long).
///
/// At least `interval` entries apart, as configured, and also not before the log
/// written since the last snapshot is as large as that snapshot. Encoding the state
/// costs time proportional to its size, so a fixed entry count alone would make a
/// large partition spend most of its time encoding (and stall its requests meanwhile);
/// with the size rule, the bytes encoded stay below twice the bytes written, however
/// large the state is. The price is a longer log: it may hold up to about the state's size
/// in bytes beyond `paxos.max-log-entries` (docs/configuration.md).
fn snapshot_due(entries: u64, bytes: u64, last_bytes: u64, interval: u64) -> bool {
    entries >= interval.max(1) && bytes >= last_bytes
}

/// Plant `bug` in every `KvReplica` created on this thread from now on (`None`
/// removes it). For the simulator's planted-bug tests only.
#[doc(hidden)]
pub fn set_planted_bug(bug: Option<PlantedBug>) {
    PLANTED_BUG.with(|b| b.set(bug));
}

/// A replica's epoch ended: its log decided the stop-sign, and this is the state the
/// next epoch starts from (sent to the node host, which starts the next epoch's
/// replica or serves the state to the new replicas that fetch it).
#[derive(Clone, Debug)]
pub struct EpochEnded {
    /// The partition.
    pub partition: PartitionId,
    /// The epoch that ended.
    pub epoch: u64,
    /// The log index the next epoch starts at (one past the stop-sign).
    pub next_idx: u64,
    /// The state after every entry before the stop-sign ([`KvState::encode_snapshot`]).
    pub state: Arc<Vec<u8>>,
}

/// One partition's replica of the key-value state machine.
#[derive(ComponentDefinition)]
pub struct KvReplica {
    ctx: ComponentContext<Self>,
    sc_port: RequiredPort<SequenceConsensus>,
    routing_port: RequiredPort<Routing>,
    timer_port: RequiredPort<Timer>,
    s: KvReplicaSettings,
    state: KvState,
    /// Entries `0..applied` are applied. Invariant: equals the index of the next
    /// `Decided` this replica expects.
    applied: u64,
    last_snapshot: u64,
    /// Size of the last snapshot (or of the state it stands for).
    last_snapshot_bytes: u64,
    /// About how many log bytes were applied since the last snapshot.
    bytes_since_snapshot: u64,
    /// Own proposals not yet decided: (client, seq) → the clock when proposed, and
    /// the wall-clock instant (for the latency histogram only).
    inflight: BTreeMap<(u64, u64), (u64, Instant, NodeId)>,
    /// Operations waiting for a decision over all replicas of this node (this
    /// replica's own `inflight.len()` unless shared with `with_node_inflight`).
    node_inflight: Arc<AtomicUsize>,
    ticker: Ticker,
    /// Milliseconds since this replica started (ticks × period): the stamp clock.
    now_ms: u64,
    /// A deliberately planted bug (simulation only; `None` in production).
    planted_bug: Option<PlantedBug>,
    /// Set once the epoch's stop-sign is decided: the replica takes no more requests.
    stopped: bool,
    /// Who learns that the epoch ended.
    on_epoch_end: Option<Recipient<EpochEnded>>,
    /// The configuration that follows this one (epoch, replicas), once the host
    /// told; clients waiting here when the epoch ends are sent there.
    next: Option<(u64, Vec<NodeId>)>,
    metrics: Arc<Metrics>,
    partition_metrics: Arc<PartitionMetrics>,
}

impl KvReplica {
    /// A replica with an empty store.
    pub fn new(s: KvReplicaSettings) -> Self {
        KvReplica {
            ctx: ComponentContext::uninitialised(),
            sc_port: RequiredPort::uninitialised(),
            routing_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            state: KvState::new(s.session_idle.as_millis() as u64, s.max_sessions),
            applied: 0,
            last_snapshot: 0,
            last_snapshot_bytes: 0,
            bytes_since_snapshot: 0,
            inflight: BTreeMap::new(),
            node_inflight: Arc::default(),
            ticker: Ticker::new(s.tick_period),
            now_ms: 0,
            planted_bug: PLANTED_BUG.with(Cell::get),
            stopped: false,
            on_epoch_end: None,
            next: None,
            metrics: Arc::default(),
            partition_metrics: Arc::default(),
            s,
        }
    }

    /// Counts answers, latencies and snapshots into `m`.
    pub fn with_metrics(mut self, m: Arc<Metrics>) -> Self {
        self.partition_metrics = m.partition(self.s.partition);
        self.metrics = m;
        self
    }

    /// Starts from the state a previous epoch of the group ended with: entries
    /// `0..idx` are applied and summarised by `state`.
    pub fn with_initial_state(mut self, idx: u64, state: KvState) -> Self {
        self.last_snapshot_bytes = state.data_bytes();
        self.state = state;
        self.applied = idx;
        self.last_snapshot = idx;
        self
    }

    /// Tells `to` when this replica's epoch ends (see [`EpochEnded`]).
    pub fn on_epoch_end(mut self, to: Recipient<EpochEnded>) -> Self {
        self.on_epoch_end = Some(to);
        self
    }

    /// Whether this replica's epoch ended.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The configuration epoch this replica serves.
    pub fn epoch(&self) -> u64 {
        self.s.epoch
    }

    /// The stop-sign at `idx` is decided: every entry before it is applied. Hand the
    /// state on, turn away what is still waiting here (the clients retry with the
    /// same sequence numbers, which the sessions in that state make safe), and take
    /// nothing more.
    fn on_stopped(&mut self, idx: u64, epoch: u64) {
        if self.stopped {
            return;
        }
        if idx != self.applied {
            error!(self.ctx.log(), "stop-sign out of order";
                "partition" => self.s.partition, "expected" => self.applied, "got" => idx);
        }
        self.stopped = true;
        let state = Arc::new(self.state.encode_snapshot());
        info!(self.ctx.log(), "replica stopped: epoch ended";
            "partition" => self.s.partition, "epoch" => epoch, "idx" => idx,
            "keys" => self.state.len(), "bytes" => state.len());
        self.routing_port.trigger(RoutingRequest::Serving {
            partition: self.s.partition,
            serving: false,
        });
        let waiting: Vec<(u64, u64)> = self.inflight.keys().copied().collect();
        let (next_epoch, replicas) = self.next.clone().unwrap_or_else(|| (epoch + 1, Vec::new()));
        for key in &waiting {
            if let Some((_, _, to)) = self.inflight_remove(key) {
                let reason = Refusal::Moved {
                    partition: self.s.partition,
                    epoch: next_epoch,
                    replicas: replicas.clone(),
                };
                self.send_client(
                    to,
                    ClientMessage::Refused {
                        client: key.0,
                        seq: key.1,
                        reason,
                    },
                );
            }
        }
        if let Some(to) = &self.on_epoch_end {
            to.tell(EpochEnded {
                partition: self.s.partition,
                epoch,
                next_idx: idx + 1,
                state,
            });
        }
    }

    /// Shares the count of operations waiting for a decision with the other replicas
    /// of this node, so `max_inflight` bounds the node, not each partition.
    pub fn with_node_inflight(mut self, counter: Arc<AtomicUsize>) -> Self {
        self.node_inflight = counter;
        self
    }

    fn inflight_insert(&mut self, key: (u64, u64), reply_to: NodeId) {
        if self
            .inflight
            .insert(key, (self.now_ms, Instant::now(), reply_to))
            .is_none()
        {
            self.node_inflight.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn inflight_remove(&mut self, key: &(u64, u64)) -> Option<(u64, Instant, NodeId)> {
        let removed = self.inflight.remove(key);
        if removed.is_some() {
            self.node_inflight.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    fn refuse(&mut self, to: NodeId, req: &ClientRequest, reason: Refusal) {
        self.metrics
            .count_op(OpKind::of(&req.op), Outcome::of_refusal(&reason));
        self.send_client(
            to,
            ClientMessage::Refused {
                client: req.client,
                seq: req.seq,
                reason,
            },
        );
    }

    fn send_client(&mut self, to: NodeId, msg: ClientMessage) {
        self.routing_port.trigger(RoutingRequest::Reply { to, msg });
    }

    fn on_routed(&mut self, r: Routed) {
        let mut proposals = Vec::with_capacity(r.requests.len());
        for req in r.requests {
            if let Some(cmd) = self.admit(r.reply_to, req) {
                proposals.push(cmd);
            }
        }
        if !proposals.is_empty() {
            self.sc_port.trigger(ScRequest::Propose(proposals));
        }
    }

    /// Checks one request; returns the command to propose, or answers it (refusal,
    /// or the planted local read) and returns `None`.
    fn admit(&mut self, reply_to: NodeId, req: ClientRequest) -> Option<KvCommand> {
        if let Err(reason) = check_limits(&req.op, self.s.max_key_bytes, self.s.max_value_bytes) {
            info!(self.ctx.log(), "request refused";
                "partition" => self.s.partition, "client" => %reply_to, "seq" => req.seq,
                "reason" => %reason);
            self.refuse(reply_to, &req, reason);
            return None;
        }
        let local = match (&req.op, self.planted_bug) {
            // Planted bug: a read that skips the log.
            (KvOp::Get { key }, Some(PlantedBug::LocalRead)) => Some(match self.state.get(key) {
                Some(v) => kv_ports::KvResult::Value(v.to_string()),
                None => kv_ports::KvResult::NotFound,
            }),
            // Planted bug: a delete that skips the log.
            (KvOp::Delete { key }, Some(PlantedBug::LocalDelete)) => {
                Some(match self.state.get(key) {
                    Some(_) => kv_ports::KvResult::Done,
                    None => kv_ports::KvResult::NotFound,
                })
            }
            _ => None,
        };
        if let Some(result) = local {
            let msg = ClientMessage::Response {
                client: req.client,
                seq: req.seq,
                result,
            };
            self.send_client(reply_to, msg);
            return None;
        }
        let key = (req.client, req.seq);
        if !self.inflight.contains_key(&key)
            && self.node_inflight.load(Ordering::Relaxed) >= self.s.max_inflight
        {
            // Debug only: under overload these come by the thousand; the metric
            // kvstore_operations_total{outcome="busy"} counts them.
            debug!(self.ctx.log(), "refusing request: too many in flight";
                "partition" => self.s.partition,
                "inflight" => self.node_inflight.load(Ordering::Relaxed));
            self.refuse(reply_to, &req, Refusal::Busy);
            return None;
        }
        self.inflight_insert(key, reply_to);
        Some(KvCommand {
            client: req.client,
            seq: req.seq,
            reply_to,
            origin: self.s.me,
            stamp_ms: self.now_ms,
            op: req.op,
        })
    }

    /// Applies a run of decided entries and answers the clients of this replica's own
    /// proposals among them, one message per client address.
    fn on_decided(&mut self, first: u64, cmds: Vec<KvCommand>) {
        let mut answers: BTreeMap<NodeId, Vec<ClientResponse>> = BTreeMap::new();
        for (idx, cmd) in (first..).zip(cmds) {
            if let Some((to, answer)) = self.apply_decided(idx, cmd) {
                answers.entry(to).or_default().push(answer);
            }
        }
        for (to, mut batch) in answers {
            let msg = if batch.len() == 1 {
                let ClientResponse {
                    client,
                    seq,
                    result,
                } = batch.pop().expect("one answer");
                ClientMessage::Response {
                    client,
                    seq,
                    result,
                }
            } else {
                ClientMessage::Responses(batch)
            };
            self.send_client(to, msg);
        }
    }

    /// Applies one decided entry; returns the answer to send when this replica
    /// proposed it.
    fn apply_decided(&mut self, idx: u64, cmd: KvCommand) -> Option<(NodeId, ClientResponse)> {
        if idx < self.applied {
            return None; // covered by a snapshot we installed
        }
        if idx != self.applied {
            error!(self.ctx.log(), "decided entries out of order";
                "partition" => self.s.partition, "expected" => self.applied, "got" => idx);
        }
        let applied = self.state.apply(&cmd);
        self.applied = idx + 1;
        let mut answer = None;
        if cmd.origin == self.s.me {
            let started = self.inflight_remove(&(cmd.client, cmd.seq));
            match applied {
                Applied::Executed(result) | Applied::Duplicate(result) => {
                    let op = OpKind::of(&cmd.op);
                    self.metrics.count_op(op, Outcome::of_result(&result));
                    if let Some((_, at, _)) = started {
                        self.metrics.observe_latency(op, at.elapsed());
                    }
                    answer = Some((
                        cmd.reply_to,
                        ClientResponse {
                            client: cmd.client,
                            seq: cmd.seq,
                            result,
                        },
                    ));
                }
                Applied::Stale { .. } => {}
            }
        }
        self.bytes_since_snapshot += cmd.op.size_hint() as u64;
        if snapshot_due(
            self.applied - self.last_snapshot,
            self.bytes_since_snapshot,
            self.last_snapshot_bytes,
            self.s.snapshot_interval,
        ) {
            let data = Arc::new(self.state.encode_snapshot());
            self.last_snapshot = self.applied;
            self.last_snapshot_bytes = data.len() as u64;
            self.bytes_since_snapshot = 0;
            inc(&self.partition_metrics.snapshots_taken);
            debug!(self.ctx.log(), "snapshot taken";
                "partition" => self.s.partition, "idx" => self.applied, "bytes" => data.len());
            self.sc_port.trigger(ScRequest::Snapshot(Snapshot {
                idx: self.applied,
                data,
            }));
        }
        answer
    }

    fn on_snapshot(&mut self, s: Snapshot) {
        if s.idx <= self.applied {
            return;
        }
        match KvState::decode_snapshot(
            &s.data,
            self.s.session_idle.as_millis() as u64,
            self.s.max_sessions,
        ) {
            Ok(state) => {
                info!(self.ctx.log(), "state replaced by snapshot";
                    "partition" => self.s.partition, "idx" => s.idx, "keys" => state.len());
                self.state = state;
                self.applied = s.idx;
                self.last_snapshot = s.idx;
                self.last_snapshot_bytes = s.data.len() as u64;
                self.bytes_since_snapshot = 0;
                inc(&self.partition_metrics.snapshots_installed);
            }
            Err(e) => {
                error!(self.ctx.log(), "snapshot rejected"; "partition" => self.s.partition, "error" => %e);
            }
        }
    }

    /// The value stored under `key` on this replica (for tests and status).
    pub fn local_get(&self, key: &str) -> Option<&str> {
        self.state.get(key)
    }

    /// Entries applied on this replica.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Keys stored on this replica.
    pub fn keys(&self) -> u64 {
        self.state.len() as u64
    }

    /// This replica's proposals waiting for a decision.
    pub fn inflight(&self) -> u64 {
        self.inflight.len() as u64
    }
}

crate::ticker_lifecycle!(KvReplica, |this| {
    if !this.stopped {
        this.routing_port.trigger(RoutingRequest::Serving {
            partition: this.s.partition,
            serving: true,
        });
    }
});

impl Require<SequenceConsensus> for KvReplica {
    fn handle(&mut self, ind: ScIndication) -> HandlerResult {
        if self.stopped {
            return Handled::OK; // the epoch is over; its successor serves
        }
        match ind {
            ScIndication::Stopped { idx, epoch } => self.on_stopped(idx, epoch),
            ScIndication::Decided { idx, cmds } => self.on_decided(idx, cmds),
            ScIndication::Dropped(cmd) => {
                // The client retries with the same sequence number; the session
                // makes that safe.
                self.inflight_remove(&(cmd.client, cmd.seq));
                debug!(self.ctx.log(), "proposal dropped by consensus"; "partition" => self.s.partition);
            }
            ScIndication::InstallSnapshot(s) => self.on_snapshot(s),
            ScIndication::LeaderChanged(b) => {
                self.routing_port.trigger(RoutingRequest::LeaderOf {
                    partition: self.s.partition,
                    leader: b.map(|b| b.pid),
                });
            }
        }
        Handled::OK
    }
}

impl Require<Routing> for KvReplica {
    fn handle(&mut self, r: Routed) -> HandlerResult {
        if r.partition == self.s.partition && !self.stopped {
            self.on_routed(r);
        }
        Handled::OK
    }
}

impl Require<Timer> for KvReplica {
    fn handle(&mut self, t: Timeout) -> HandlerResult {
        if self.ticker.is_mine(&t) {
            self.now_ms += self.ticker.period().as_millis() as u64;
            // A proposal whose decision never came (forwarded to a leader that then
            // crashed) is forgotten after a while; the client has retried by then.
            let horizon = self.now_ms.saturating_sub(30_000);
            let before = self.inflight.len();
            self.inflight.retain(|_, (t, _, _)| *t >= horizon);
            self.node_inflight
                .fetch_sub(before - self.inflight.len(), Ordering::Relaxed);
        }
        Handled::OK
    }
}

/// What the node host tells a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaControl {
    /// The group moves to configuration `epoch` on `replicas` (this replica's epoch
    /// is ending).
    Next {
        /// The next epoch.
        epoch: u64,
        /// Its replicas.
        replicas: Vec<NodeId>,
    },
}

impl Actor for KvReplica {
    type Message = ReplicaControl;

    fn receive_local(&mut self, msg: ReplicaControl) -> HandlerResult {
        match msg {
            ReplicaControl::Next { epoch, replicas } => self.next = Some((epoch, replicas)),
        }
        Handled::OK
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_protocols::kv::ENTRY_OVERHEAD;

    #[test]
    fn limits_apply_to_every_key_and_every_value_an_operation_carries() {
        let long = "x".repeat(9);
        let ok = |op: &KvOp| check_limits(op, 8, 8).is_ok();
        assert!(ok(&KvOp::Delete { key: "k".into() }));
        assert!(!ok(&KvOp::Delete { key: long.clone() }));
        let create = |new: &str| KvOp::Cas {
            key: "k".into(),
            expected: None,
            new: new.into(),
        };
        assert!(ok(&create("v")));
        assert!(matches!(
            check_limits(&create(&long), 8, 8),
            Err(Refusal::TooLarge(reason)) if reason == "value is 9 bytes, the limit is 8"
        ));
        let cas = KvOp::Cas {
            key: "k".into(),
            expected: Some(long),
            new: "v".into(),
        };
        assert!(!ok(&cas));
    }

    #[test]
    fn a_small_state_is_snapshotted_every_interval() {
        // 10 entries of 100 bytes since a 500-byte snapshot.
        assert!(snapshot_due(10, 1000, 500, 10));
        assert!(!snapshot_due(9, 1000, 500, 10));
        assert!(snapshot_due(1, 1, 0, 0), "an interval of 0 counts as 1");
    }

    #[test]
    fn a_large_state_waits_until_as_many_bytes_were_written() {
        let state = 500 << 20; // a 500 MiB partition
        assert!(!snapshot_due(10_000, 10_000 * 80, state, 10_000));
        assert!(snapshot_due(7_000_000, state, state, 10_000));
    }

    #[test]
    fn while_a_partition_grows_the_bytes_encoded_stay_below_twice_the_bytes_written() {
        // Fill 500 MB with 1 KB puts: every snapshot encodes the whole state so far.
        let (mut state, mut since, mut last, mut entries, mut encoded) = (0u64, 0, 0, 0, 0);
        let mut written = 0;
        for _ in 0..500_000 {
            let put = KvOp::Put {
                key: "k".repeat(16),
                value: "v".repeat(1000),
            };
            state += ENTRY_OVERHEAD + 16 + 1000;
            since += put.size_hint() as u64;
            written += put.size_hint() as u64;
            entries += 1;
            if snapshot_due(entries, since, last, 10_000) {
                encoded += state;
                last = state;
                (since, entries) = (0, 0);
            }
        }
        // Each snapshot encodes at most the last one plus what was written since,
        // and it waits until that is at least the last one: at most twice the
        // bytes written since.
        assert!(
            encoded < 2 * written,
            "encoded {encoded} after writing {written}"
        );
        // ... and the last snapshot is not far behind: it covers at least half.
        assert!(last >= state / 2);
    }
}

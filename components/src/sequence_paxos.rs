//! The `SequencePaxos` component: the replicated log of one partition, an adapter
//! around [`kv_protocols::sequence_paxos::SequencePaxos`].

use std::sync::Arc;
use std::time::Duration;

use kompact::prelude::*;
use kv_ports::{
    BallotLeaderElection, KvCommand, Leader, NodeId, PartitionId, PerfectLink, PlIndication,
    PlPayload, PlRequest, ReplicaStatus, ScIndication, ScRequest, SequenceConsensus, Snapshot,
    Timer,
};
use kv_protocols::kv::{KvEntry, StopSign};
use kv_protocols::sequence_paxos::messages::PaxosMsg;
use kv_protocols::sequence_paxos::{PaxosConfig, PaxosEvent, SequencePaxos};

use crate::large_paxos::{LargeConfig, LargeEvent, LargeMessages};
use crate::metrics::{PartitionMetrics, inc};
use crate::ticker::{Ticker, ticks};

/// Settings of one Sequence Paxos replica.
#[derive(Clone, Debug)]
pub struct PaxosSettings {
    /// This node.
    pub me: NodeId,
    /// The partition.
    pub partition: PartitionId,
    /// The group's configuration epoch this instance belongs to.
    pub epoch: u64,
    /// Where the log starts: `None` for a new partition (epoch 0), else the state
    /// the previous epoch ended with (the same on every replica of the group).
    pub initial: Option<Snapshot>,
    /// The group, this node included.
    pub group: Vec<NodeId>,
    /// Clock tick of the core.
    pub tick_period: Duration,
    /// Most entries per Accept.
    pub max_batch: usize,
    /// Most bytes per Accept (a single larger entry goes alone).
    pub max_batch_bytes: usize,
    /// Larger messages are offered to their receiver, which pulls them in chunks
    /// of this size ([`crate::large_paxos`]).
    pub max_message_bytes: usize,
    /// Most unacknowledged Accept batches in flight.
    pub max_inflight_batches: usize,
    /// Resend period for unanswered Prepare / AcceptSync.
    pub resend_period: Duration,
    /// Retained-log bound that forces trimming to the latest snapshot.
    pub max_log_entries: u64,
    /// Bound on proposals buffered while no leader is known.
    pub max_pending: usize,
}

/// Provides [`SequenceConsensus`] for one partition over [`PerfectLink`],
/// [`BallotLeaderElection`] and [`Timer`].
#[derive(ComponentDefinition)]
pub struct SequencePaxosComp {
    ctx: ComponentContext<Self>,
    sc_port: ProvidedPort<SequenceConsensus>,
    pl_port: RequiredPort<PerfectLink>,
    ble_port: RequiredPort<BallotLeaderElection>,
    timer_port: RequiredPort<Timer>,
    partition: PartitionId,
    epoch: u64,
    group: Vec<NodeId>,
    core: SequencePaxos<KvEntry>,
    ticker: Ticker,
    out: Vec<(NodeId, PaxosMsg<KvEntry>)>,
    events: Vec<PaxosEvent<KvEntry>>,
    /// Messages too large for one piece, both ways.
    large: LargeMessages,
    payloads: Vec<(NodeId, PlPayload)>,
    large_events: Vec<LargeEvent>,
    /// Set once the host asked this epoch to end: the stop-sign is proposed, and
    /// again every `resend_ticks` until it is in the log.
    stopping: bool,
    resend_ticks: u64,
    ticks: u64,
    leader: Option<kv_ports::Ballot>,
    /// The last leader ballot this replica followed (never reset to `None`, so a
    /// leader that is briefly unknown and then confirmed is not counted twice).
    followed: Option<kv_ports::Ballot>,
    metrics: Arc<PartitionMetrics>,
}

impl SequencePaxosComp {
    /// A replica of one partition's log.
    pub fn new(s: PaxosSettings) -> Self {
        let resend_ticks = ticks(s.resend_period, s.tick_period);
        let cfg = PaxosConfig {
            me: s.me,
            peers: s.group.clone(),
            max_batch: s.max_batch,
            max_batch_bytes: s.max_batch_bytes,
            max_inflight_batches: s.max_inflight_batches,
            resend_ticks,
            max_log_entries: s.max_log_entries,
            max_pending: s.max_pending,
        };
        let large = LargeMessages::new(LargeConfig {
            partition: s.partition,
            epoch: s.epoch,
            max_inline: s.max_message_bytes,
            chunk: kv_protocols::transfer::chunk_size(s.max_message_bytes),
            timeout_ticks: resend_ticks,
            max_bytes: kv_protocols::transfer::MAX_FETCH_BYTES,
        });
        let core = match s.initial {
            Some(snap) => SequencePaxos::starting_from(cfg, snap),
            None => SequencePaxos::new(cfg),
        };
        SequencePaxosComp {
            ctx: ComponentContext::uninitialised(),
            sc_port: ProvidedPort::uninitialised(),
            pl_port: RequiredPort::uninitialised(),
            ble_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            partition: s.partition,
            epoch: s.epoch,
            group: s.group,
            core,
            ticker: Ticker::new(s.tick_period),
            out: Vec::new(),
            events: Vec::new(),
            large,
            payloads: Vec::new(),
            large_events: Vec::new(),
            stopping: false,
            resend_ticks,
            ticks: 0,
            leader: None,
            followed: None,
            metrics: Arc::default(),
        }
    }

    /// Counts proposals, batches, leader changes and snapshots sent into `m`.
    pub fn with_metrics(mut self, m: Arc<PartitionMetrics>) -> Self {
        self.metrics = m;
        self
    }

    /// This replica's log and leadership, for `kvstore status` and the metrics
    /// (the state-machine fields are left at zero).
    pub fn status(&self) -> ReplicaStatus {
        let promised = self.core.promised();
        ReplicaStatus {
            partition: self.partition,
            leader: self.core.leader(),
            is_leader: self.core.is_leader(),
            promised: (promised.n > 0).then_some(promised),
            decided_idx: self.core.decided_idx(),
            log_len: self.core.log_len(),
            first_retained_idx: self.core.first_retained_idx(),
            pending: self.core.pending_len() as u64,
            epoch: self.epoch,
            ..ReplicaStatus::default()
        }
    }

    /// Sends what is queued in `payloads`, and logs what the large messages did.
    fn send_payloads(&mut self) {
        for (dst, payload) in self.payloads.drain(..) {
            self.pl_port.trigger(PlRequest::Send { dst, payload });
        }
        self.large.take_events(&mut self.large_events);
        for e in self.large_events.drain(..) {
            let p = self.partition;
            match e {
                LargeEvent::Offered { to, id, len } => {
                    inc(&self.metrics.large_messages_offered);
                    info!(self.ctx.log(), "message too large for one piece, offered in chunks";
                        "partition" => p, "to" => %to, "id" => id, "bytes" => len);
                }
                LargeEvent::Held { to } => {
                    debug!(self.ctx.log(), "large message held back: the peer is still fetching the last one";
                        "partition" => p, "to" => %to);
                }
                LargeEvent::Fetching { from, id, len } => {
                    info!(self.ctx.log(), "fetching a large message";
                        "partition" => p, "from" => %from, "id" => id, "bytes" => len);
                }
                LargeEvent::Fetched { from, len } => {
                    inc(&self.metrics.large_messages_fetched);
                    info!(self.ctx.log(), "large message fetched";
                        "partition" => p, "from" => %from, "bytes" => len);
                }
                LargeEvent::Failed { from, reason } => {
                    warn!(self.ctx.log(), "large message not fetched";
                        "partition" => p, "from" => %from, "reason" => reason);
                }
            }
        }
    }

    /// Counts (and, for snapshots, logs) an outgoing message.
    /// The configuration epoch of this instance.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn propose_stop(&mut self) {
        if !self.core.has_stop_sign() {
            self.core
                .propose(KvEntry::Stop(StopSign { epoch: self.epoch }));
        }
    }

    fn count_sent(&self, dst: NodeId, msg: &PaxosMsg<KvEntry>) {
        let snapshot = match msg {
            PaxosMsg::AcceptDecide(a) => {
                inc(&self.metrics.accept_batches);
                self.metrics
                    .accept_entries
                    .fetch_add(a.entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
                None
            }
            PaxosMsg::AcceptSync(a) => a.snapshot.as_ref(),
            PaxosMsg::Promise(p) => p.snapshot.as_ref(),
            _ => None,
        };
        if let Some(snap) = snapshot {
            inc(&self.metrics.snapshots_sent);
            info!(self.ctx.log(), "snapshot sent";
                "partition" => self.partition, "to" => %dst, "idx" => snap.idx,
                "bytes" => snap.data.len());
        }
    }

    fn flush(&mut self) {
        self.core.take_outgoing(&mut self.out);
        for (dst, msg) in &self.out {
            self.count_sent(*dst, msg);
        }
        for (dst, msg) in self.out.drain(..) {
            self.large.send(dst, msg, &mut self.payloads);
        }
        self.send_payloads();
        self.core.take_events(&mut self.events);
        // Consecutive decided entries go up as one indication.
        let mut run: Option<(u64, Vec<KvCommand>)> = None;
        for e in self.events.drain(..) {
            let ind = match e {
                PaxosEvent::Decided {
                    idx,
                    entry: KvEntry::Stop(ss),
                } => {
                    info!(self.ctx.log(), "epoch ended (stop-sign decided)";
                        "partition" => self.partition, "epoch" => ss.epoch, "idx" => idx);
                    ScIndication::Stopped {
                        idx,
                        epoch: ss.epoch,
                    }
                }
                PaxosEvent::Decided {
                    idx,
                    entry: KvEntry::Cmd(entry),
                } => {
                    match &mut run {
                        Some((first, cmds)) if *first + cmds.len() as u64 == idx => {
                            cmds.push(entry)
                        }
                        _ => {
                            if let Some((idx, cmds)) = run.replace((idx, vec![entry])) {
                                self.sc_port.trigger(ScIndication::Decided { idx, cmds });
                            }
                        }
                    }
                    continue;
                }
                PaxosEvent::Dropped(KvEntry::Cmd(cmd)) => {
                    inc(&self.metrics.proposals_dropped);
                    ScIndication::Dropped(cmd)
                }
                // Proposed again on the next tick while this epoch is to end.
                PaxosEvent::Dropped(KvEntry::Stop(_)) => continue,
                PaxosEvent::InstallSnapshot(s) => {
                    info!(self.ctx.log(), "installing snapshot";
                        "partition" => self.partition, "idx" => s.idx, "bytes" => s.data.len());
                    ScIndication::InstallSnapshot(s)
                }
            };
            if let Some((idx, cmds)) = run.take() {
                self.sc_port.trigger(ScIndication::Decided { idx, cmds });
            }
            self.sc_port.trigger(ind);
        }
        if let Some((idx, cmds)) = run.take() {
            self.sc_port.trigger(ScIndication::Decided { idx, cmds });
        }
        let leader = self.core.leader();
        if leader != self.leader {
            if let Some(b) = leader
                && Some(b) != self.followed
            {
                self.followed = Some(b);
                // Logged by Ble ("leader elected"); counted here, where the log
                // actually follows it.
                inc(&self.metrics.leader_changes);
            }
            self.leader = leader;
            self.sc_port.trigger(ScIndication::LeaderChanged(leader));
        }
    }
}

impl Provide<SequenceConsensus> for SequencePaxosComp {
    fn handle(&mut self, req: ScRequest) -> HandlerResult {
        match req {
            ScRequest::Propose(cmds) => {
                self.metrics
                    .proposals
                    .fetch_add(cmds.len() as u64, std::sync::atomic::Ordering::Relaxed);
                self.core.propose_all(cmds.into_iter().map(KvEntry::Cmd));
            }
            ScRequest::Snapshot(s) => self.core.set_snapshot(s),
        }
        self.flush();
        Handled::OK
    }
}

impl Require<BallotLeaderElection> for SequencePaxosComp {
    fn handle(&mut self, Leader(b): Leader) -> HandlerResult {
        self.core.handle_leader(b);
        self.flush();
        Handled::OK
    }
}

impl Require<PerfectLink> for SequencePaxosComp {
    fn handle(&mut self, ind: PlIndication) -> HandlerResult {
        match ind {
            PlIndication::Deliver { src, payload } => {
                let (partition, epoch) = match &*payload {
                    PlPayload::Paxos {
                        partition, epoch, ..
                    }
                    | PlPayload::PaxosLarge {
                        partition, epoch, ..
                    } => (*partition, *epoch),
                    _ => return Handled::OK,
                };
                if partition != self.partition || epoch != self.epoch {
                    return Handled::OK;
                }
                if !self.group.contains(&src) {
                    warn!(self.ctx.log(), "ignoring replication message from outside the group";
                        "partition" => self.partition, "from" => %src);
                    return Handled::OK;
                }
                let msg = match &*payload {
                    PlPayload::Paxos { msg, .. } => Some(msg.clone()),
                    PlPayload::PaxosLarge { msg, .. } => {
                        self.large.receive(src, msg.clone(), &mut self.payloads)
                    }
                    _ => None,
                };
                if let Some(m) = msg {
                    self.core.handle(src, m);
                }
                self.flush();
            }
            PlIndication::Reconnected(peer) => {
                if self.group.contains(&peer) {
                    self.core.reconnected(peer);
                    self.flush();
                }
            }
        }
        Handled::OK
    }
}

crate::ticker_lifecycle!(SequencePaxosComp);

impl Require<Timer> for SequencePaxosComp {
    fn handle(&mut self, t: kv_ports::Timeout) -> HandlerResult {
        if self.ticker.is_mine(&t) {
            self.ticks += 1;
            self.core.tick();
            self.large.tick(&mut self.payloads);
            if self.stopping && self.ticks.is_multiple_of(self.resend_ticks) {
                self.propose_stop();
            }
            self.flush();
        }
        Handled::OK
    }
}

/// What the node host tells a replica's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaxosControl {
    /// The directory moved the group past this epoch: end it with a stop-sign.
    Stop,
}

impl Actor for SequencePaxosComp {
    type Message = PaxosControl;

    fn receive_local(&mut self, msg: PaxosControl) -> HandlerResult {
        match msg {
            PaxosControl::Stop => {
                if !self.stopping {
                    info!(self.ctx.log(), "ending epoch";
                        "partition" => self.partition, "epoch" => self.epoch);
                    self.stopping = true;
                }
                self.propose_stop();
                self.flush();
            }
        }
        Handled::OK
    }

    fn receive_network(&mut self, _msg: kompact::prelude::NetMessage) -> HandlerResult {
        Handled::OK
    }
}

//! One kompact-kv node: the component graph of the design, built inside a Kompact
//! system, with the timer and network providers given from outside (real ones for
//! `kvstore start`, simulated ones in the simulator).
//!
//! ```text
//! Timer, Network (given)
//!  ├─ PerfectLink ── Network, Timer
//!  ├─ Epfd ───────── PerfectLink, Timer
//!  ├─ Bootstrap ──── PerfectLink, Timer
//!  ├─ Overlay ────── Network, PerfectLink, Epfd, Bootstrap
//!  └─ NodeHost ───── Bootstrap, Epfd; on Booted, per hosted partition:
//!       Ble ─────────── PerfectLink, Timer
//!       SequencePaxos ─ PerfectLink, Ble, Timer
//!       KvReplica ───── SequencePaxos, Overlay (Routing), Timer
//! Status ─────────── Network (answers `kvstore status`; reads the others)
//! ```
//!
//! Every component counts into one shared [`Metrics`]; when `metrics-address` is
//! set, a [`MetricsServer`] thread serves them in the Prometheus text format.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kompact::prelude::*;
use kv_components::ble::{BleComp, BleSettings};
use kv_components::connect::{Connector, connect_to, connector};
use kv_components::epfd::{EpfdComp, EpfdSettings};
use kv_components::kv_replica::{EpochEnded, KvReplica, KvReplicaSettings, ReplicaControl};
use kv_components::metrics::{Metrics, MetricsServer};
use kv_components::overlay::{Overlay, OverlaySettings};
use kv_components::perfect_link::{PerfectLinkComp, PerfectLinkConfig};
use kv_components::sequence_paxos::{
    PaxosControl, PaxosSettings as PaxosCompSettings, SequencePaxosComp,
};
use kv_components::ticker::Ticker;
use kv_ports::{
    BallotLeaderElection, BootIndication, BootRequest, Bootstrapping, DirCommand, Directory,
    EpfdIndication, EpfdRequest, EventuallyPerfectFailureDetector, LookupTable, Member, Network,
    NodeId, PartitionId, PerfectLink, PlIndication, PlPayload, PlRequest, Routing,
    SequenceConsensus, Snapshot, Timeout, Timer,
};
use kv_protocols::kv::KvState;
use kv_protocols::transfer::{
    FetchConfig, SnapshotFetch, SnapshotSource, TransferError, TransferMsg,
};

use crate::boot::{BootSettings, Bootstrap};
use crate::config::NodeConfig;
use crate::status::{StatusComp, StatusSource};

/// The components of one hosted partition (one epoch of its group).
pub struct PartitionReplica {
    /// The partition.
    pub partition: PartitionId,
    /// The group's configuration epoch these components serve.
    pub epoch: u64,
    /// Its leader election.
    pub ble: Arc<Component<BleComp>>,
    /// Its replicated log.
    pub paxos: Arc<Component<SequencePaxosComp>>,
    /// Its state machine.
    pub replica: Arc<Component<KvReplica>>,
}

/// What the node host built after boot; shared with whoever holds the [`Node`].
#[derive(Default)]
pub struct Hosted {
    /// The lookup table, once booted.
    pub table: Option<Arc<LookupTable>>,
    /// The directory the table comes from, once booted.
    pub directory: Option<Arc<Directory>>,
    /// The replicas hosted here (at most one per partition).
    pub replicas: Vec<PartitionReplica>,
    /// Set when this node was refused by the bootstrap server.
    pub refused: Option<String>,
    /// Partitions whose next epoch's state this node is fetching: partition, epoch,
    /// bytes received, bytes in all (once known).
    pub fetching: Vec<(PartitionId, u64, u64, Option<u64>)>,
}

/// The state an epoch of a partition ended with, kept to start the next epoch here
/// and to serve it to the new replicas that fetch it.
#[derive(Clone, Debug)]
struct Ended {
    epoch: u64,
    /// [`start_blob`]: the next epoch's first log index, then the state.
    blob: Arc<Vec<u8>>,
}

/// What travels as the starting state of an epoch: the log index it starts at
/// (8 bytes, little-endian), then the key-value state ([`KvState::encode_snapshot`]).
fn start_blob(next_idx: u64, state: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + state.len());
    b.extend_from_slice(&next_idx.to_le_bytes());
    b.extend_from_slice(state);
    b
}

/// Splits a [`start_blob`]; `None` if it is too short.
fn split_blob(blob: &[u8]) -> Option<(u64, &[u8])> {
    let (idx, state) = blob.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*idx), state))
}

/// Messages to the node host.
#[derive(Debug)]
pub enum HostMsg {
    /// A hosted replica's epoch ended.
    EpochEnded(EpochEnded),
}

impl From<EpochEnded> for HostMsg {
    fn from(e: EpochEnded) -> Self {
        HostMsg::EpochEnded(e)
    }
}

/// The chunk size of this node's state transfers: within one message however small
/// `paxos.max-message-bytes` (and so the frame limit) is.
fn transfer_chunk(cfg: &NodeConfig) -> u32 {
    kv_protocols::transfer::chunk_size(cfg.max_message_bytes())
}

/// Creates, moves and retires the per-partition components as the directory
/// changes: a partition's group runs in epochs, and the host runs the epochs this
/// process is a replica of (see `docs/membership.md`).
///
/// * A replica of the current epoch starts from the state the previous epoch ended
///   with: its own, when it was a replica of that epoch too and decided its
///   stop-sign, or else fetched in chunks from the previous replicas once the
///   directory records that epoch as over. Epoch 0 starts empty.
/// * A running replica of an earlier epoch is told to end it (the stop-sign) while
///   the directory waits for that; once its stop-sign is decided, the replica hands
///   its state here, the host reports the end to the directory, serves the state to
///   fetching replicas, and retires the components.
#[derive(ComponentDefinition)]
pub struct NodeHost {
    ctx: ComponentContext<Self>,
    boot_port: RequiredPort<Bootstrapping>,
    epfd_port: RequiredPort<EventuallyPerfectFailureDetector>,
    pl_port: RequiredPort<PerfectLink>,
    timer_port: RequiredPort<Timer>,
    cfg: NodeConfig,
    incarnation: u64,
    timer: Connector<Timer>,
    link: Connector<PerfectLink>,
    routing: Connector<Routing>,
    hosted: Arc<Mutex<Hosted>>,
    metrics: Arc<Metrics>,
    /// Client operations waiting for a decision over all replicas of this node
    /// (bounded by `limits.max-inflight-per-node`).
    inflight: Arc<std::sync::atomic::AtomicUsize>,
    directory: Option<Arc<Directory>>,
    /// Per partition: the latest epoch that ended here, and its state.
    ended: BTreeMap<PartitionId, Ended>,
    source: SnapshotSource,
    fetches: BTreeMap<PartitionId, SnapshotFetch>,
    transfer_out: Vec<(NodeId, TransferMsg)>,
    /// Nodes the failure detector suspects (asked last for a state).
    suspected: std::collections::BTreeSet<NodeId>,
    ticker: Ticker,
}

impl NodeHost {
    fn new(
        cfg: NodeConfig,
        incarnation: u64,
        timer: Connector<Timer>,
        link: Connector<PerfectLink>,
        routing: Connector<Routing>,
        hosted: Arc<Mutex<Hosted>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let ticker = Ticker::new(cfg.tick_period.max(Duration::from_millis(10)));
        let source = SnapshotSource::new(transfer_chunk(&cfg));
        NodeHost {
            ctx: ComponentContext::uninitialised(),
            boot_port: RequiredPort::uninitialised(),
            epfd_port: RequiredPort::uninitialised(),
            pl_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            cfg,
            incarnation,
            timer,
            link,
            routing,
            hosted,
            metrics,
            inflight: Arc::default(),
            directory: None,
            ended: BTreeMap::new(),
            source,
            fetches: BTreeMap::new(),
            transfer_out: Vec::new(),
            suspected: Default::default(),
            ticker,
        }
    }

    fn lock_hosted(&self) -> std::sync::MutexGuard<'_, Hosted> {
        self.hosted.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn host_partition(
        &mut self,
        p: PartitionId,
        epoch: u64,
        group: Vec<NodeId>,
        start: Option<(u64, KvState, Vec<u8>)>,
    ) -> PartitionReplica {
        let me = self.cfg.address;
        let sys = self.ctx.system();
        let ble = sys.create(|| {
            BleComp::new(BleSettings {
                me,
                partition: p,
                epoch,
                group: group.clone(),
                tick_period: self.cfg.tick_period,
                heartbeat_period: self.cfg.leader_election.heartbeat_period,
            })
        });
        let ps = &self.cfg.paxos;
        let (initial, state) = match start {
            Some((idx, state, bytes)) => (
                Some(Snapshot {
                    idx,
                    data: Arc::new(bytes),
                }),
                Some((idx, state)),
            ),
            None => (None, None),
        };
        let paxos = sys.create(|| {
            SequencePaxosComp::new(PaxosCompSettings {
                me,
                partition: p,
                epoch,
                initial,
                group: group.clone(),
                tick_period: self.cfg.tick_period,
                max_batch: ps.max_batch,
                // Half: a full batch and its message's header stay well inside one
                // piece.
                max_batch_bytes: self.cfg.max_message_bytes() / 2,
                max_message_bytes: self.cfg.max_message_bytes(),
                max_inflight_batches: ps.max_inflight_batches,
                resend_period: ps.resend_period,
                max_log_entries: ps.max_log_entries,
                max_pending: ps.max_pending,
            })
            .with_metrics(self.metrics.partition(p))
        });
        let limits = &self.cfg.limits;
        let host: Recipient<EpochEnded> = self.actor_ref().recipient();
        let replica = sys.create(|| {
            let r = KvReplica::new(KvReplicaSettings {
                me,
                partition: p,
                epoch,
                max_key_bytes: limits.max_key_bytes,
                max_value_bytes: limits.max_value_bytes,
                max_inflight: limits.max_inflight_per_node,
                snapshot_interval: ps.snapshot_interval,
                session_idle: self.cfg.sessions.idle_timeout,
                max_sessions: limits.max_clients,
                tick_period: Duration::from_millis(100),
            })
            .with_metrics(self.metrics.clone())
            .with_node_inflight(self.inflight.clone())
            .on_epoch_end(host);
            match state {
                Some((idx, st)) => r.with_initial_state(idx, st),
                None => r,
            }
        });
        connect_to(&self.link, &ble);
        connect_to(&self.timer, &ble);
        biconnect_components::<BallotLeaderElection, _, _>(&ble, &paxos)
            .expect("connect ble → paxos");
        connect_to(&self.link, &paxos);
        connect_to(&self.timer, &paxos);
        biconnect_components::<SequenceConsensus, _, _>(&paxos, &replica)
            .expect("connect paxos → replica");
        connect_to(&self.routing, &replica);
        connect_to(&self.timer, &replica);
        sys.start(&replica);
        sys.start(&paxos);
        sys.start(&ble);
        info!(self.ctx.log(), "replica started";
            "partition" => p, "epoch" => epoch, "group" => ?group);
        PartitionReplica {
            partition: p,
            epoch,
            ble,
            paxos,
            replica,
        }
    }

    /// Stops and drops a replica's components.
    fn retire(&mut self, r: PartitionReplica) {
        info!(self.ctx.log(), "replica retired"; "partition" => r.partition, "epoch" => r.epoch);
        let sys = self.ctx.system();
        sys.kill(r.replica);
        sys.kill(r.paxos);
        sys.kill(r.ble);
    }

    /// A replica started for an epoch the group has already left (the previous one,
    /// not ended yet) is told to end it at once.
    fn end_if_behind(&self, r: &PartitionReplica) {
        let Some(g) = self.directory.as_ref().and_then(|d| d.group(r.partition)) else {
            return;
        };
        if r.epoch < g.epoch {
            r.replica.actor_ref().tell(ReplicaControl::Next {
                epoch: g.epoch,
                replicas: g.addrs(),
            });
            r.paxos.actor_ref().tell(PaxosControl::Stop);
        }
    }

    /// Starts `epoch` of `p` from a starting state blob; `false` if the blob is not
    /// a valid state (it is then dropped, and fetched again).
    fn start_from_blob(
        &mut self,
        p: PartitionId,
        epoch: u64,
        group: Vec<NodeId>,
        blob: &[u8],
    ) -> bool {
        let Some((idx, bytes)) = split_blob(blob) else {
            error!(self.ctx.log(), "starting state too short"; "partition" => p, "epoch" => epoch);
            return false;
        };
        let session_idle = self.cfg.sessions.idle_timeout.as_millis() as u64;
        match KvState::decode_snapshot(bytes, session_idle, self.cfg.limits.max_clients) {
            Ok(state) => {
                let r = self.host_partition(p, epoch, group, Some((idx, state, bytes.to_vec())));
                self.end_if_behind(&r);
                self.lock_hosted().replicas.push(r);
                true
            }
            Err(e) => {
                error!(self.ctx.log(), "starting state rejected";
                    "partition" => p, "epoch" => epoch, "error" => %e);
                false
            }
        }
    }

    /// Brings the hosted replicas in line with the directory (see the type's docs).
    fn reconcile(&mut self) {
        let Some(dir) = self.directory.clone() else {
            return;
        };
        let me = Member {
            addr: self.cfg.address,
            incarnation: self.incarnation,
        };
        for p in 0..dir.partitions() {
            let Some(g) = dir.group(p).cloned() else {
                continue;
            };
            // While the previous epoch has not ended, its replicas are needed to end
            // it: one that has not started it yet (it was fetching its state when
            // the group moved on) still does, then ends it at once.
            let want_prev = g.epoch > 0 && !g.settled && g.previous.contains(&me);
            let want_cur = g.replicas.contains(&me);
            // 1. A running replica of an earlier epoch.
            let running = {
                let h = self.lock_hosted();
                h.replicas
                    .iter()
                    .find(|r| r.partition == p)
                    .map(|r| (r.epoch, r.paxos.clone(), r.replica.clone()))
            };
            // The oldest epoch that may still have to start: the current one, and
            // the previous one while it has not ended.
            let oldest_needed = if g.settled {
                g.epoch
            } else {
                g.epoch.saturating_sub(1)
            };
            if let Some((epoch, paxos, replica)) = &running
                && *epoch < g.epoch
            {
                if *epoch + 1 >= oldest_needed {
                    // End it. Even once the group is settled (another replica
                    // decided the stop-sign) it keeps running until it learns the
                    // stop-sign itself or this node fetched the next epoch's state:
                    // if the replicas that decided it crash before serving the
                    // state, the old epoch's survivors can still decide it again
                    // from their logs and hand the state on.
                    replica.actor_ref().tell(ReplicaControl::Next {
                        epoch: g.epoch,
                        replicas: g.addrs(),
                    });
                    paxos.actor_ref().tell(PaxosControl::Stop);
                } else {
                    // The epoch it would start has ended: its state lives on there.
                    let r = {
                        let mut h = self.lock_hosted();
                        let i = h.replicas.iter().position(|r| r.partition == p);
                        i.map(|i| h.replicas.remove(i))
                    };
                    if let Some(r) = r {
                        self.retire(r);
                    }
                }
            }
            let runs = |host: &Self, epoch: u64| {
                host.lock_hosted()
                    .replicas
                    .iter()
                    .any(|r| r.partition == p && r.epoch == epoch)
            };
            let ended =
                |host: &Self, epoch: u64| host.ended.get(&p).is_some_and(|e| e.epoch == epoch);
            // This node's own log decided the end of `epoch` (or a later one): never
            // start it again, even while this node's copy of the directory has not
            // caught up with the move. A new instance would be an acceptor that
            // forgot what it accepted and promised, and with another replica behind
            // it could decide a different command at an index already decided.
            let over =
                |host: &Self, epoch: u64| host.ended.get(&p).is_some_and(|e| e.epoch >= epoch);
            // 2. The epoch to run here, if any, and whether its start state must be
            // fetched.
            let mut fetch_for = None;
            if want_prev && !runs(self, g.epoch - 1) && !over(self, g.epoch - 1) {
                let prev = g.epoch - 1;
                if prev >= 1 && ended(self, prev - 1) {
                    let blob = self.ended[&p].blob.clone();
                    if !self.start_from_blob(
                        p,
                        prev,
                        g.previous.iter().map(|m| m.addr).collect(),
                        &blob,
                    ) {
                        self.ended.remove(&p);
                    }
                } else if prev == 0 {
                    let r = self.host_partition(
                        p,
                        0,
                        g.previous.iter().map(|m| m.addr).collect(),
                        None,
                    );
                    self.end_if_behind(&r);
                    self.lock_hosted().replicas.push(r);
                } else {
                    fetch_for = Some((prev, g.previous.iter().map(|m| m.addr).collect::<Vec<_>>()));
                }
            } else if want_cur && !runs(self, g.epoch) && !over(self, g.epoch) {
                let group = g.addrs();
                if g.epoch == 0 {
                    let r = self.host_partition(p, 0, group, None);
                    self.lock_hosted().replicas.push(r);
                } else if ended(self, g.epoch - 1) {
                    let blob = self.ended[&p].blob.clone();
                    if !self.start_from_blob(p, g.epoch, group, &blob) {
                        self.ended.remove(&p);
                    }
                } else if g.settled {
                    fetch_for = Some((g.epoch, g.previous.iter().map(|m| m.addr).collect()));
                }
            }
            // 3. At most one fetch per partition, for what is wanted now.
            match fetch_for {
                Some((epoch, _)) if self.fetches.get(&p).is_some_and(|f| f.epoch() == epoch) => {}
                Some((epoch, likely)) => {
                    // Those likely to hold the state first, unsuspected before
                    // suspected; then every other member (one that does not hold it
                    // says so, and the fetch moves on).
                    let mut sources: Vec<NodeId> =
                        likely.into_iter().filter(|a| *a != me.addr).collect();
                    sources.sort_by_key(|a| self.suspected.contains(a));
                    for m in dir.members() {
                        if m.addr != me.addr && !sources.contains(&m.addr) {
                            sources.push(m.addr);
                        }
                    }
                    info!(self.ctx.log(), "fetching the partition's state";
                        "partition" => p, "epoch" => epoch, "from" => ?sources);
                    let timeout_ticks = kv_components::ticker::ticks(
                        self.cfg.paxos.resend_period,
                        self.ticker.period(),
                    );
                    self.fetches.insert(
                        p,
                        SnapshotFetch::new(
                            p,
                            epoch,
                            sources,
                            FetchConfig {
                                chunk: transfer_chunk(&self.cfg),
                                window: kv_protocols::transfer::FETCH_WINDOW,
                                timeout_ticks,
                                max_bytes: kv_protocols::transfer::MAX_FETCH_BYTES,
                            },
                        ),
                    );
                }
                None => {
                    self.fetches.remove(&p);
                }
            }
            // 4. Served states: the starting state of the current epoch, and of the
            // previous one while it has not ended.
            if self
                .ended
                .get(&p)
                .is_some_and(|e| e.epoch + 1 < oldest_needed)
            {
                self.ended.remove(&p);
            }
            self.source.retire_before(p, oldest_needed);
        }
        self.flush_transfers();
        self.publish_fetches();
    }

    fn publish_fetches(&mut self) {
        let fetching = self
            .fetches
            .iter()
            .map(|(p, f)| {
                let (got, total) = f.progress();
                (*p, f.epoch(), got, total)
            })
            .collect();
        self.lock_hosted().fetching = fetching;
    }

    fn flush_transfers(&mut self) {
        for f in self.fetches.values_mut() {
            f.take_outgoing(&mut self.transfer_out);
        }
        for (dst, msg) in self.transfer_out.drain(..) {
            self.pl_port.trigger(PlRequest::Send {
                dst,
                payload: PlPayload::Transfer(msg),
            });
        }
    }

    /// Starts the replicas whose fetch completed.
    fn finish_fetches(&mut self) {
        let done: Vec<(PartitionId, u64, Result<Vec<u8>, TransferError>)> = self
            .fetches
            .iter_mut()
            .filter_map(|(p, f)| f.take_result().map(|r| (*p, f.epoch(), r)))
            .collect();
        for (p, epoch, result) in done {
            self.fetches.remove(&p);
            let Some(g) = self.directory.as_ref().and_then(|d| d.group(p)).cloned() else {
                continue;
            };
            // The current epoch, or the previous one while it has not ended.
            let group = if g.epoch == epoch {
                g.addrs()
            } else if g.epoch == epoch + 1 && !g.settled {
                g.previous.iter().map(|m| m.addr).collect()
            } else {
                continue;
            };
            match result {
                Ok(blob) => {
                    info!(self.ctx.log(), "partition state fetched";
                        "partition" => p, "epoch" => epoch, "bytes" => blob.len());
                    // A replica of an earlier epoch still waiting for its stop-sign
                    // is not needed any more.
                    let old = {
                        let mut h = self.lock_hosted();
                        let i = h
                            .replicas
                            .iter()
                            .position(|r| r.partition == p && r.epoch < epoch);
                        i.map(|i| h.replicas.remove(i))
                    };
                    if let Some(r) = old {
                        self.retire(r);
                    }
                    // Serve it in turn, like a state this node ended with.
                    if self.ended.get(&p).is_none_or(|e| e.epoch + 1 < epoch) {
                        let blob = Arc::new(blob.clone());
                        self.source.offer(p, epoch, blob.clone());
                        self.ended.insert(
                            p,
                            Ended {
                                epoch: epoch - 1,
                                blob,
                            },
                        );
                    }
                    self.start_from_blob(p, epoch, group, &blob);
                }
                Err(e) => {
                    error!(self.ctx.log(), "fetching the partition's state failed, trying again";
                        "partition" => p, "epoch" => epoch, "error" => %e);
                }
            }
        }
    }

    fn on_epoch_ended(&mut self, e: EpochEnded) {
        let r = {
            let mut h = self.lock_hosted();
            let i = h
                .replicas
                .iter()
                .position(|r| r.partition == e.partition && r.epoch == e.epoch);
            i.map(|i| h.replicas.remove(i))
        };
        if let Some(r) = r {
            self.retire(r);
        }
        if self
            .ended
            .get(&e.partition)
            .is_some_and(|x| x.epoch >= e.epoch)
        {
            return;
        }
        let blob = Arc::new(start_blob(e.next_idx, &e.state));
        self.source.offer(e.partition, e.epoch + 1, blob.clone());
        self.ended.insert(
            e.partition,
            Ended {
                epoch: e.epoch,
                blob,
            },
        );
        self.boot_port
            .trigger(BootRequest::Submit(DirCommand::Stopped {
                group: e.partition,
                epoch: e.epoch,
            }));
        self.reconcile();
    }
}

kv_components::ticker_lifecycle!(NodeHost);

impl Require<Bootstrapping> for NodeHost {
    fn handle(&mut self, ind: BootIndication) -> HandlerResult {
        let first = matches!(ind, BootIndication::Booted(_));
        match ind {
            BootIndication::Booted(layout) | BootIndication::Changed(layout) => {
                self.epfd_port
                    .trigger(EpfdRequest::Monitor(layout.table.nodes.clone()));
                {
                    let mut h = self.lock_hosted();
                    h.table = Some(layout.table);
                    h.directory = Some(layout.directory.clone());
                }
                self.directory = Some(layout.directory);
                self.reconcile();
                if first {
                    let partitions: Vec<PartitionId> = self
                        .lock_hosted()
                        .replicas
                        .iter()
                        .map(|r| r.partition)
                        .collect();
                    info!(self.ctx.log(), "replicas started"; "partitions" => ?partitions);
                }
            }
            BootIndication::NotInTable(reason) => {
                self.lock_hosted().refused = Some(reason);
            }
        }
        Handled::OK
    }
}

impl Require<EventuallyPerfectFailureDetector> for NodeHost {
    fn handle(&mut self, ind: EpfdIndication) -> HandlerResult {
        ind.apply(&mut self.suspected);
        Handled::OK
    }
}

impl Require<PerfectLink> for NodeHost {
    fn handle(&mut self, ind: PlIndication) -> HandlerResult {
        if let PlIndication::Deliver { src, payload } = ind
            && let PlPayload::Transfer(msg) = &*payload
        {
            match msg {
                TransferMsg::Request { .. } => {
                    if let Some(reply) = self.source.handle(msg) {
                        self.pl_port.trigger(PlRequest::Send {
                            dst: src,
                            payload: PlPayload::Transfer(reply),
                        });
                    }
                }
                TransferMsg::Chunk { group, .. } | TransferMsg::Unavailable { group, .. } => {
                    if let Some(f) = self.fetches.get_mut(group) {
                        f.handle(src, msg.clone());
                        self.finish_fetches();
                        self.flush_transfers();
                    }
                }
            }
        }
        Handled::OK
    }
}

impl Require<Timer> for NodeHost {
    fn handle(&mut self, t: Timeout) -> HandlerResult {
        if self.ticker.is_mine(&t) && !self.fetches.is_empty() {
            for f in self.fetches.values_mut() {
                f.tick();
            }
            self.finish_fetches();
            self.reconcile();
        }
        Handled::OK
    }
}

impl Actor for NodeHost {
    type Message = HostMsg;

    fn receive_local(&mut self, msg: HostMsg) -> HandlerResult {
        match msg {
            HostMsg::EpochEnded(e) => self.on_epoch_ended(e),
        }
        Handled::OK
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

/// A running node's components.
pub struct Node {
    /// The node's configuration.
    pub cfg: NodeConfig,
    /// PerfectLink.
    pub link: Arc<Component<PerfectLinkComp>>,
    /// Failure detector.
    pub epfd: Arc<Component<EpfdComp>>,
    /// Cluster formation.
    pub boot: Arc<Component<Bootstrap>>,
    /// Front door.
    pub overlay: Arc<Component<Overlay>>,
    /// Creates the partition replicas.
    pub host: Arc<Component<NodeHost>>,
    /// What the host built.
    pub hosted: Arc<Mutex<Hosted>>,
    /// Answers `kvstore status`.
    pub status: Arc<Component<StatusComp>>,
    /// Reads the node's state on demand (what `status` answers with).
    pub status_source: StatusSource,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
    /// The metrics endpoint, when `metrics-address` is set and could be bound.
    pub metrics_server: Option<MetricsServer>,
}

impl Node {
    /// Build the node's component graph in `system` over the given timer and network
    /// providers, and start it. `incarnation` should differ between two starts of a
    /// node at the same address (a random number in production).
    pub fn start(
        system: &KompactSystem,
        cfg: NodeConfig,
        timer: Connector<Timer>,
        net: Connector<Network>,
        incarnation: u64,
    ) -> Node {
        let me = cfg.address;
        let metrics = Metrics::new();
        let link = system.create(|| {
            PerfectLinkComp::new(PerfectLinkConfig {
                me,
                cluster: kv_ports::cluster_fingerprint(&cfg.cluster_name),
                incarnation,
                tick_period: cfg.tick_period,
                retransmit_period: cfg.link.retransmit_period,
                max_unacked: cfg.link.max_unacked,
                unreachable_warning: cfg.link.unreachable_warning,
                max_frame_bytes: cfg.limits.max_frame_bytes,
            })
        });
        connect_to(&net, &link);
        connect_to(&timer, &link);
        let link_conn: Connector<PerfectLink> = connector::<PerfectLink, _>(&link);

        let epfd = system.create(|| {
            EpfdComp::new(EpfdSettings {
                me,
                tick_period: cfg.tick_period,
                initial_delay: cfg.failure_detector.initial_delay,
                delay_increment: cfg.failure_detector.delay_increment,
            })
            .with_metrics(metrics.clone())
        });
        connect_to(&link_conn, &epfd);
        connect_to(&timer, &epfd);

        let boot = system.create(|| {
            Bootstrap::new(BootSettings {
                me,
                incarnation,
                server: cfg.bootstrap_address,
                seeds: cfg.seeds.clone(),
                boot_threshold: cfg.boot_threshold,
                partitions: cfg.partitions,
                replication_degree: cfg.replication_degree,
                cluster: cfg.cluster_name.clone(),
                keep_alive_period: cfg.keep_alive_period,
                tick_period: cfg.tick_period,
                heartbeat_period: cfg.leader_election.heartbeat_period,
                resend_period: cfg.paxos.resend_period,
                replace_after: cfg.membership.replace_after,
            })
        });
        connect_to(&link_conn, &boot);
        connect_to(&timer, &boot);
        biconnect_components::<EventuallyPerfectFailureDetector, _, _>(&epfd, &boot)
            .expect("connect epfd → boot");

        let overlay = system.create(|| {
            Overlay::new(OverlaySettings {
                me,
                cluster: cfg.cluster_name.clone(),
                max_key_bytes: cfg.limits.max_key_bytes,
                max_value_bytes: cfg.limits.max_value_bytes,
                boot_threshold: cfg.boot_threshold,
            })
            .with_metrics(metrics.clone())
        });
        connect_to(&net, &overlay);
        connect_to(&link_conn, &overlay);
        biconnect_components::<EventuallyPerfectFailureDetector, _, _>(&epfd, &overlay)
            .expect("connect epfd → overlay");
        biconnect_components::<Bootstrapping, _, _>(&boot, &overlay)
            .expect("connect boot → overlay");

        let hosted = Arc::new(Mutex::new(Hosted::default()));
        let host = system.create(|| {
            NodeHost::new(
                cfg.clone(),
                incarnation,
                timer.clone(),
                link_conn.clone(),
                connector::<Routing, _>(&overlay),
                hosted.clone(),
                metrics.clone(),
            )
        });
        biconnect_components::<Bootstrapping, _, _>(&boot, &host).expect("connect boot → host");
        biconnect_components::<EventuallyPerfectFailureDetector, _, _>(&epfd, &host)
            .expect("connect epfd → host");
        connect_to(&link_conn, &host);
        connect_to(&timer, &host);

        let status_source = StatusSource::new(
            me,
            incarnation,
            cfg.cluster_name.clone(),
            epfd.clone(),
            link.clone(),
            hosted.clone(),
        );
        let admin = boot.actor_ref();
        let status = system.create(|| StatusComp::new(status_source.clone(), admin));
        connect_to(&net, &status);

        let log = system.logger().clone();
        info!(log, "node starting";
            "bootstrap_server" => %cfg.bootstrap_address, "boot_threshold" => cfg.boot_threshold,
            "metrics" => cfg.metrics_address.map_or_else(|| "off".to_string(), |a| a.to_string()));
        let metrics_server = cfg.metrics_address.and_then(|addr| {
            let source = status_source.clone();
            let err_log = log.clone();
            match MetricsServer::start(
                addr,
                metrics.clone(),
                Box::new(move || source.gauges()),
                Box::new(move |e| debug!(err_log, "metrics request failed"; "error" => %e)),
            ) {
                Ok(s) => {
                    info!(log, "serving metrics"; "address" => %s.address());
                    Some(s)
                }
                Err(e) => {
                    error!(log, "cannot serve metrics, continuing without them";
                        "address" => %addr, "error" => %e);
                    None
                }
            }
        });

        system.start(&link);
        system.start(&epfd);
        system.start(&overlay);
        system.start(&host);
        system.start(&status);
        system.start(&boot);
        Node {
            cfg,
            link,
            epfd,
            boot,
            overlay,
            host,
            hosted,
            status,
            status_source,
            metrics,
            metrics_server,
        }
    }
}

//! Typed Kompact ports of kompact-kv and the messages that travel on them.
//!
//! Port names name the abstraction (`BallotLeaderElection`), component names name the
//! algorithm (`Ble`). Requests are imperative (`Send`, `Propose`), indications are
//! facts (`Deliver`, `Decided`, `Suspect`). Every component of a node talks to the
//! others only through these ports, so a component can be replaced (a simulated
//! `Network`, a virtual-time `Timer`) without touching the rest, and the components
//! can be embedded in other Kompact applications.
//!
//! | port | provided by | required by |
//! |---|---|---|
//! | [`Timer`] | timer provider (real or simulated) | every component that needs time |
//! | [`Network`] | network provider (our TCP transport or simulated) | `PerfectLink`, `Overlay`, client |
//! | [`PerfectLink`] | `PerfectLink` | `Epfd`, `Bootstrap`, `Ble`, `SequencePaxos`, `Overlay` |
//! | [`EventuallyPerfectFailureDetector`] | `Epfd` | `Overlay` |
//! | [`BallotLeaderElection`] | `Ble` | `SequencePaxos` |
//! | [`SequenceConsensus`] | `SequencePaxos` | `KvReplica` |
//! | [`Bootstrapping`] | `Bootstrap` | the node host, `Overlay`, `Epfd` |
//! | [`Routing`] | `Overlay` | `KvReplica` |
//! | [`KeyValue`] | the client component | applications |
#![deny(missing_docs)]

pub mod messages;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kompact::prelude::Port;
pub use kv_protocols::ballot::Ballot;
pub use kv_protocols::directory::{DirCommand, Directory, Member};
pub use kv_protocols::kv::{ClientId, KvCommand, KvEntry, KvOp, KvResult, StopSign};
pub use kv_protocols::membership::MembershipMsg;
pub use kv_protocols::partition::LookupTable;
pub use kv_protocols::sequence_paxos::messages::Snapshot;
pub use kv_protocols::{NodeId, PartitionId};
pub use messages::*;

// ---------------------------------------------------------------------------------
// Timer

/// Identifies one scheduled timeout.
///
/// A timer provider is shared by many components and every connected component sees
/// every `Timeout`, so each component only reacts to the ids it created. Ids come from
/// one process-wide counter, so two components never pick the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub u64);

static NEXT_TIMER_ID: AtomicU64 = AtomicU64::new(1);

impl TimerId {
    /// A timer id no other caller in this process has been given.
    pub fn fresh() -> TimerId {
        TimerId(NEXT_TIMER_ID.fetch_add(1, Ordering::Relaxed))
    }
}

/// Requests on the [`Timer`] port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerRequest {
    /// Deliver `Timeout(id)` once, after `delay`.
    ScheduleOnce {
        /// The id the `Timeout` will carry.
        id: TimerId,
        /// How long from now.
        delay: Duration,
    },
    /// Deliver `Timeout(id)` after `delay` and then every `period` until cancelled.
    SchedulePeriodic {
        /// The id every `Timeout` will carry.
        id: TimerId,
        /// Time to the first timeout.
        delay: Duration,
        /// Time between timeouts.
        period: Duration,
    },
    /// Stop a scheduled timer; a timeout already on its way may still arrive, so
    /// receivers ignore ids they no longer expect.
    Cancel(TimerId),
}

/// A timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub TimerId);

/// Time, as a port: the only way components learn that time passes.
pub struct Timer;

impl Port for Timer {
    type Indication = Timeout;
    type Request = TimerRequest;
}

// ---------------------------------------------------------------------------------
// Network

/// Requests on the [`Network`] port.
#[derive(Clone, Debug)]
pub enum NetRequest {
    /// Send `msg` to the node (or client) listening at `dst`. Best effort: a message
    /// may be lost when a connection drops. Messages to one destination that do
    /// arrive, arrive in order.
    Send {
        /// Destination address.
        dst: NodeId,
        /// The message.
        msg: NetMessage,
    },
}

/// Indications on the [`Network`] port.
#[derive(Clone, Debug)]
pub enum NetIndication {
    /// A message from `src` arrived.
    Deliver {
        /// Address of the sender's system.
        src: NodeId,
        /// The message.
        msg: NetMessage,
    },
    /// A connection to `peer` was (re-)established; messages sent before may have
    /// been lost in between.
    ConnectionEstablished(NodeId),
    /// The connection to `peer` was lost; messages queued for it may be lost.
    ConnectionLost(NodeId),
}

/// Best-effort, FIFO-per-connection message transport between systems.
pub struct Network;

impl Port for Network {
    type Indication = NetIndication;
    type Request = NetRequest;
}

// ---------------------------------------------------------------------------------
// PerfectLink

/// Requests on the [`PerfectLink`] port.
#[derive(Clone, Debug)]
pub enum PlRequest {
    /// Deliver `payload` to `dst` exactly once, after everything sent to `dst` before.
    Send {
        /// Destination node.
        dst: NodeId,
        /// The payload.
        payload: PlPayload,
    },
}

/// Indications on the [`PerfectLink`] port.
#[derive(Clone, Debug)]
pub enum PlIndication {
    /// A payload from `src`, delivered exactly once and in the order it was sent.
    Deliver {
        /// The sending node.
        src: NodeId,
        /// The payload; shared because every component on the port sees it.
        payload: Arc<PlPayload>,
    },
    /// The link to `peer` came back after a connection loss (retransmission is under
    /// way); protocols that resynchronise on reconnection (Sequence Paxos) use this.
    Reconnected(NodeId),
}

/// Exactly-once, FIFO delivery between two correct nodes.
pub struct PerfectLink;

impl Port for PerfectLink {
    type Indication = PlIndication;
    type Request = PlRequest;
}

// ---------------------------------------------------------------------------------
// EventuallyPerfectFailureDetector

/// Requests on the [`EventuallyPerfectFailureDetector`] port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpfdRequest {
    /// Start monitoring these nodes (in addition to those already monitored).
    Monitor(Vec<NodeId>),
}

/// Indications on the [`EventuallyPerfectFailureDetector`] port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpfdIndication {
    /// The node is suspected to have crashed.
    Suspect(NodeId),
    /// The node, suspected before, is alive after all.
    Restore(NodeId),
}

impl EpfdIndication {
    /// Applies the indication to a component's own set of suspected nodes.
    pub fn apply(self, suspected: &mut std::collections::BTreeSet<NodeId>) {
        match self {
            EpfdIndication::Suspect(n) => {
                suspected.insert(n);
            }
            EpfdIndication::Restore(n) => {
                suspected.remove(&n);
            }
        }
    }
}

/// Eventually perfect failure detector: eventually suspects every crashed node and
/// eventually stops suspecting every correct one.
pub struct EventuallyPerfectFailureDetector;

impl Port for EventuallyPerfectFailureDetector {
    type Indication = EpfdIndication;
    type Request = EpfdRequest;
}

// ---------------------------------------------------------------------------------
// BallotLeaderElection

/// `Leader(ballot)`: the node `ballot.pid` is leader with `ballot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leader(pub Ballot);

/// Leader election for one replication group: at most one leader per ballot, and
/// eventually one leader among a connected majority.
pub struct BallotLeaderElection;

impl Port for BallotLeaderElection {
    type Indication = Leader;
    type Request = kompact::prelude::Never;
}

// ---------------------------------------------------------------------------------
// SequenceConsensus

/// Requests on the [`SequenceConsensus`] port.
#[derive(Clone, Debug)]
pub enum ScRequest {
    /// Append commands to the replicated log, in this order (they may share one
    /// Accept round).
    Propose(Vec<KvCommand>),
    /// The state after applying entries `0..snapshot.idx`; lets the log be trimmed.
    Snapshot(Snapshot),
}

/// Indications on the [`SequenceConsensus`] port.
#[derive(Clone, Debug)]
pub enum ScIndication {
    /// Entries `idx, idx + 1, ...` of the log are decided: one indication per run of
    /// consecutive entries decided together (never empty). Every index is delivered
    /// exactly once, in order, except for indexes covered by an `InstallSnapshot`.
    Decided {
        /// Log index of `cmds[0]`.
        idx: u64,
        /// The decided commands, in log order.
        cmds: Vec<KvCommand>,
    },
    /// A proposal this replica knows will not be decided through it (leadership
    /// changed and no leader could take it over); the proposer may retry.
    Dropped(KvCommand),
    /// Replace the state machine with this snapshot; decisions continue after it.
    InstallSnapshot(Snapshot),
    /// The stop-sign at `idx` is decided: every entry before it has been delivered,
    /// and this epoch of the log decides nothing more. The state after those entries
    /// is what the group's next epoch starts from.
    Stopped {
        /// The stop-sign's index.
        idx: u64,
        /// The epoch that ended.
        epoch: u64,
    },
    /// The replica's view of the leader changed.
    LeaderChanged(Option<Ballot>),
}

/// A replicated log: every replica sees the same sequence of decided commands.
pub struct SequenceConsensus;

impl Port for SequenceConsensus {
    type Indication = ScIndication;
    type Request = ScRequest;
}

// ---------------------------------------------------------------------------------
// Bootstrapping

/// The cluster's layout as this node knows it: the directory (members with their
/// incarnations, each group's epoch and replicas) and the routing table derived from
/// it.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The directory.
    pub directory: Arc<Directory>,
    /// Members and each partition's replicas, by address (for routing).
    pub table: Arc<LookupTable>,
}

impl Layout {
    /// The layout of `directory`.
    pub fn of(directory: Arc<Directory>) -> Layout {
        let table = Arc::new(directory.lookup_table());
        Layout { directory, table }
    }
}

/// Indications on the [`Bootstrapping`] port.
#[derive(Clone, Debug)]
pub enum BootIndication {
    /// This process is a member of the cluster; this is the layout it starts from.
    Booted(Layout),
    /// A newer layout (a node joined, a group moved); after `Booted` only.
    Changed(Layout),
    /// The cluster was formed without this node (it checked in too late or was
    /// refused); the reason says why.
    NotInTable(String),
}

/// Requests on the [`Bootstrapping`] port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootRequest {
    /// Get this command decided by the directory (sent again until the directory
    /// shows its effect): a replica reports its epoch's stop-sign with it.
    Submit(DirCommand),
}

/// Cluster formation: nodes check in with the bootstrap server until enough are
/// there; then everyone receives the lookup table, and every change to it.
pub struct Bootstrapping;

impl Port for Bootstrapping {
    type Indication = BootIndication;
    type Request = BootRequest;
}

// ---------------------------------------------------------------------------------
// Routing (Overlay → the replicas on this node)

/// Client requests routed to a partition's replica: the requests of one client
/// address whose keys belong to `partition`, in the order the client sent them.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The partition that owns the keys.
    pub partition: PartitionId,
    /// The requests.
    pub requests: Vec<ClientRequest>,
    /// Where the client listens for the answers.
    pub reply_to: NodeId,
}

/// Requests on the [`Routing`] port: replicas tell the overlay who leads them (so
/// the overlay can send to the leader directly), and hand it their answers to
/// clients (the overlay owns the node's client traffic).
#[derive(Clone, Debug)]
pub enum RoutingRequest {
    /// Send `msg` to the client listening at `to`.
    Reply {
        /// The client's address.
        to: NodeId,
        /// The answer.
        msg: ClientMessage,
    },
    /// Whether this node's replica of `partition` takes requests: it started
    /// (true), or its epoch ended (false).
    Serving {
        /// The partition.
        partition: PartitionId,
        /// Whether requests for it go to the local replica.
        serving: bool,
    },
    /// The leader of `partition`, as seen by the replica on this node.
    LeaderOf {
        /// The partition.
        partition: PartitionId,
        /// Its leader, if one is known.
        leader: Option<NodeId>,
    },
}

/// From the overlay to the replicas hosted on this node.
pub struct Routing;

impl Port for Routing {
    type Indication = Routed;
    type Request = RoutingRequest;
}

// ---------------------------------------------------------------------------------
// KeyValue (client-facing)

/// Requests on the [`KeyValue`] port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvRequest {
    /// A tag chosen by the caller; the response carries it back.
    pub tag: u64,
    /// The operation.
    pub op: KvOp,
}

/// Why an operation has no result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// No node answered within the deadline (the outcome of a PUT or CAS is unknown:
    /// it may or may not have taken effect).
    Unavailable(String),
    /// The request was refused (too large, wrong cluster, ...).
    Rejected(String),
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::Unavailable(s) | KvError::Rejected(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for KvError {}

/// Indications on the [`KeyValue`] port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvResponse {
    /// The caller's tag.
    pub tag: u64,
    /// The result.
    pub result: Result<KvResult, KvError>,
}

/// Linearizable GET, PUT and CAS on the store, as offered by the client component.
pub struct KeyValue;

impl Port for KeyValue {
    type Indication = KvResponse;
    type Request = KvRequest;
}

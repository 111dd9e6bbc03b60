//! Messages that cross the network: between nodes (inside PerfectLink frames) and
//! between clients and nodes. Their wire encoding is protobuf (`kv-wire`).

use std::sync::Arc;

use kv_protocols::ballot::Ballot;
use kv_protocols::ble::BleMsg;
use kv_protocols::directory::Directory;
use kv_protocols::epfd::EpfdMsg;
use kv_protocols::kv::{ClientId, KvEntry, KvOp, KvResult};
use kv_protocols::membership::MembershipMsg;
use kv_protocols::partition::LookupTable;
use kv_protocols::sequence_paxos::messages::PaxosMsg;
use kv_protocols::transfer::TransferMsg;
use kv_protocols::{NodeId, PartitionId};

/// Everything a node or client sends over the [`crate::Network`] port.
#[derive(Clone, Debug)]
pub enum NetMessage {
    /// A PerfectLink frame between two nodes.
    Link(LinkFrame),
    /// A client talking to a node, or a node answering a client.
    Client(ClientMessage),
    /// An operator's tool asking a node for its view of the cluster, or the answer.
    Status(StatusMessage),
}

/// A PerfectLink frame: a run of sequenced payloads and/or an acknowledgement.
///
/// Each side of a link numbers its payloads 1, 2, 3, ... within an *incarnation* (a
/// random number drawn when the sending node starts), so a receiver can tell a
/// restarted peer from a duplicate.
#[derive(Clone, Debug)]
pub struct LinkFrame {
    /// A fingerprint of the sender's cluster name; frames from another cluster are
    /// dropped.
    pub cluster: u64,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// Sequence number of `payloads[0]` (meaningless when `payloads` is empty).
    pub first_seq: u64,
    /// Payloads `first_seq, first_seq + 1, ...`.
    pub payloads: Vec<Arc<PlPayload>>,
    /// Cumulative acknowledgement of what the sender received from the receiver.
    pub ack: Option<LinkAck>,
}

/// "I have delivered every payload up to and including `seq` of your incarnation
/// `incarnation`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkAck {
    /// The receiver's incarnation being acknowledged.
    pub incarnation: u64,
    /// Highest sequence number delivered in order.
    pub seq: u64,
}

/// What travels over a PerfectLink between two nodes.
#[derive(Clone, Debug)]
pub enum PlPayload {
    /// Failure detector heartbeat.
    Epfd(EpfdMsg),
    /// Leader election of one partition's group in one epoch.
    Ble {
        /// The partition.
        partition: PartitionId,
        /// The group's configuration epoch.
        epoch: u64,
        /// The message.
        msg: BleMsg,
    },
    /// Sequence Paxos of one partition's group in one epoch.
    Paxos {
        /// The partition.
        partition: PartitionId,
        /// The group's configuration epoch.
        epoch: u64,
        /// The message.
        msg: PaxosMsg<KvEntry>,
    },
    /// A Sequence Paxos message of one partition's group in one epoch that is too
    /// large to send in one piece (`paxos.max-message-bytes`).
    PaxosLarge {
        /// The partition.
        partition: PartitionId,
        /// The group's configuration epoch.
        epoch: u64,
        /// The message.
        msg: LargePaxosMsg,
    },
    /// State transfer to a new replica.
    Transfer(TransferMsg),
    /// Cluster formation.
    Bootstrap(BootstrapMsg),
    /// The directory: its replicas' protocol, joins, and its state for members.
    Membership(MembershipMsg),
    /// A client request forwarded to a node that hosts the key's partition.
    Forward(crate::Routed),
}

/// How a Sequence Paxos message larger than `paxos.max-message-bytes` (a snapshot
/// for a lagging replica, a long log suffix) travels: the sender keeps its encoding
/// (`kv_wire::encode_paxos`) and offers it; the receiver pulls it in chunks, with
/// the flow control of a state transfer, and handles it once it is whole.
#[derive(Clone, Debug)]
pub enum LargePaxosMsg {
    /// "Message `id`, `len` bytes, is waiting for you."
    Offer {
        /// Names the message among the sender's offers.
        id: u64,
        /// Length of its encoding.
        len: u64,
    },
    /// The fetch of message `id`: requests, chunks and refusals (each names the
    /// partition as its group, and the epoch).
    Transfer {
        /// The message.
        id: u64,
        /// The transfer message.
        msg: TransferMsg,
    },
}

/// Cluster formation messages.
#[derive(Clone, Debug)]
pub enum BootstrapMsg {
    /// Node → bootstrap server (or, once the cluster runs, any member): "I am here
    /// and want to be a member".
    CheckIn {
        /// The cluster the node belongs to.
        cluster: String,
        /// The incarnation the checking-in process drew at start.
        incarnation: u64,
    },
    /// Bootstrap server → node: the cluster is formed, here is its first layout.
    Boot(Arc<Directory>),
    /// Bootstrap server → node: you are not part of the cluster.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// An operation as sent by a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// The client's session id.
    pub client: ClientId,
    /// The client's sequence number for this operation (a retry reuses it).
    pub seq: u64,
    /// The operation.
    pub op: KvOp,
}

/// The result of one operation, as carried in [`ClientMessage::Responses`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientResponse {
    /// The session the answer is for.
    pub client: ClientId,
    /// The client's sequence number.
    pub seq: u64,
    /// The decided result.
    pub result: KvResult,
}

/// Why a node refused or could not serve a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Key or value over the configured size limit.
    TooLarge(String),
    /// The node is saturated; back off and retry.
    Busy,
    /// The cluster is not formed yet, or this node is not part of it.
    NotReady(String),
    /// The client named another cluster.
    WrongCluster(String),
    /// The key's partition is served by configuration `epoch` of its group now (the
    /// refusing replica's epoch ended): retry the same operation there.
    Moved {
        /// The partition.
        partition: PartitionId,
        /// The epoch that serves it.
        epoch: u64,
        /// Its replicas, when the refusing node knows them (else empty).
        replicas: Vec<NodeId>,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooLarge(s) => write!(f, "request too large: {s}"),
            Refusal::Busy => f.write_str("node is busy, retry later"),
            Refusal::NotReady(s) => write!(f, "not ready: {s}"),
            Refusal::WrongCluster(s) => write!(f, "wrong cluster: {s}"),
            Refusal::Moved {
                partition, epoch, ..
            } => write!(f, "partition {partition} moved to epoch {epoch}"),
        }
    }
}

/// Client ⇄ node messages.
#[derive(Clone, Debug)]
pub enum ClientMessage {
    /// Client → any node: "give me an entry point".
    Connect {
        /// The cluster the client wants to talk to.
        cluster: String,
    },
    /// Node → client: a node the answering node does not suspect, and all nodes.
    ConnectAck {
        /// The entry node to send operations to.
        entry: NodeId,
        /// Every node of the cluster, for fail-over.
        nodes: Vec<NodeId>,
        /// Partitions of the key space, so the client can tell which partition a key
        /// belongs to and send it to the node that last answered for that partition
        /// (its leader).
        partitions: u32,
    },
    /// Client → node: an operation.
    Request(ClientRequest),
    /// Client → node: several operations (of different sessions) in one message.
    /// A node treats it exactly as the same `Request`s one after another.
    Requests(Vec<ClientRequest>),
    /// Node → client: the result of operation `seq`.
    Response {
        /// The session the answer is for (several sessions may share an address).
        client: ClientId,
        /// The client's sequence number.
        seq: u64,
        /// The decided result.
        result: KvResult,
    },
    /// Node → client: the results of several operations (of sessions that share the
    /// client's address) in one message; the same as that many `Response`s.
    Responses(Vec<ClientResponse>),
    /// Node → client: the request (or connect, when `seq` is 0) was refused.
    Refused {
        /// The session the answer is for (0 for a Connect).
        client: ClientId,
        /// The client's sequence number (0 for a Connect).
        seq: u64,
        /// Why.
        reason: Refusal,
    },
}

/// Status queries: an operator's tool (`kvstore status`) asks any node for its own
/// view of the cluster. They are answered by every node, booted or not, and change
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusMessage {
    /// Tool → node: "describe yourself".
    Request(StatusRequest),
    /// Node → tool: the node's view.
    Reply(Box<NodeStatus>),
    /// Tool → node: an operator's change of the layout (`kvstore remove`,
    /// `kvstore rebalance`). Only a booted node acts on it.
    Admin(AdminRequest),
    /// Node → tool: what the node did about an [`AdminRequest`].
    AdminReply(AdminReply),
}

/// An operator's request: plan the next step of `op` from the node's directory and
/// failure detector, and submit it to the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminRequest {
    /// Chosen by the asker and echoed in the reply.
    pub nonce: u64,
    /// What to do.
    pub op: AdminOp,
}

/// The operations of [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminOp {
    /// Take the member at this address out, moving its replicas first.
    Remove(NodeId),
    /// Move replicas until every live member's load is within one of the others'.
    Rebalance,
}

/// The answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminReply {
    /// The request's nonce.
    pub nonce: u64,
    /// What the node did.
    pub result: AdminResult,
}

/// One replica move submitted to the directory: in `group` (a partition, or
/// [`kv_protocols::directory::DIRECTORY_GROUP`]), `from` is replaced by `to` and the
/// group goes from epoch `from_epoch` to `from_epoch + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaMove {
    /// The group.
    pub group: PartitionId,
    /// The epoch the move starts from.
    pub from_epoch: u64,
    /// The replica taken out of the group.
    pub from: NodeId,
    /// The member that takes its place.
    pub to: NodeId,
}

/// What a node did about an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminResult {
    /// These moves are submitted to the directory (or were already under way); ask
    /// again once they took effect.
    Moving(Vec<ReplicaMove>),
    /// The member holds no replicas any more; its removal is submitted.
    Removing,
    /// The address is not a member (any more).
    NotAMember,
    /// Every live member holds `min` to `max` replicas, `max <= min + 1`: nothing to
    /// move.
    Balanced {
        /// The fewest replicas a live member holds.
        min: u64,
        /// The most replicas a live member holds.
        max: u64,
    },
    /// A group is still moving (or a submitted move has not taken effect yet); ask
    /// again shortly.
    Wait(String),
    /// The operation cannot proceed, and why (for example: no other live member can
    /// take a replica).
    Refused(String),
    /// This node is not a booted member and cannot plan anything.
    NotReady,
}

/// A status query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRequest {
    /// Chosen by the asker and echoed in the reply, to match the two.
    pub nonce: u64,
}

/// One node's view of itself and of the cluster, as of the moment it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The request's nonce.
    pub nonce: u64,
    /// The answering node.
    pub node: NodeId,
    /// Its cluster name.
    pub cluster: String,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// The lookup table, once the cluster is formed (`None` while booting).
    pub table: Option<Arc<LookupTable>>,
    /// Why this node serves nothing, when the bootstrap server left it out.
    pub not_in_table: Option<String>,
    /// One entry per partition hosted here, by partition.
    pub replicas: Vec<ReplicaStatus>,
    /// Nodes this node's failure detector suspects (sorted).
    pub suspected: Vec<NodeId>,
    /// The answering process's incarnation (drawn at start).
    pub incarnation: u64,
    /// The members in the answering node's directory, with their incarnations
    /// (empty while booting).
    pub members: Vec<kv_protocols::directory::Member>,
    /// The version of that directory (`None` while booting).
    pub directory_version: Option<u64>,
}

/// The state of one partition's replica on the answering node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The partition.
    pub partition: PartitionId,
    /// The leader (and its ballot) this replica follows, itself included.
    pub leader: Option<Ballot>,
    /// Whether this replica leads and has finished its prepare phase.
    pub is_leader: bool,
    /// The highest ballot this replica promised.
    pub promised: Option<Ballot>,
    /// Entries `0..decided_idx` are decided.
    pub decided_idx: u64,
    /// Length of the log, trimmed prefix included.
    pub log_len: u64,
    /// Index of the first entry still held (entries before it are in the snapshot).
    pub first_retained_idx: u64,
    /// Entries `0..applied_idx` are applied to the state machine.
    pub applied_idx: u64,
    /// Keys stored in the state machine.
    pub keys: u64,
    /// This replica's proposals waiting for a decision.
    pub inflight: u64,
    /// Proposals buffered in Sequence Paxos, not yet in the log.
    pub pending: u64,
    /// The configuration epoch of the partition's group this replica serves.
    pub epoch: u64,
}

/// A 64-bit fingerprint of a cluster name (FNV-1a), carried in every link frame.
pub fn cluster_fingerprint(name: &str) -> u64 {
    kv_protocols::partition::fnv1a(name.as_bytes())
}

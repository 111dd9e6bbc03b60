//! Conversions between the Rust message types and the generated protobuf types.
//!
//! Encoding (`to_pb`) borrows the Rust value and builds the protobuf value in one
//! pass. Decoding (`from_pb`) consumes the protobuf value, so strings and byte
//! vectors are moved rather than copied, and checks everything the protobuf type
//! cannot express: required sub-messages, `oneof`s, address lengths, ports, integer
//! ranges and the lookup table's invariant.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use kv_ports::{
    AdminOp, AdminReply, AdminRequest, AdminResult, BootstrapMsg, ClientMessage, ClientRequest,
    ClientResponse, LargePaxosMsg, LinkAck, LinkFrame, NodeStatus, PlPayload, Refusal, ReplicaMove,
    ReplicaStatus, Routed,
};
use kv_protocols::ballot::Ballot;
use kv_protocols::ble::BleMsg;
use kv_protocols::directory::{DirCommand, Directory, Member};
use kv_protocols::epfd::EpfdMsg;
use kv_protocols::kv::{KvCommand, KvEntry, KvOp, KvResult, StopSign};
use kv_protocols::membership::MembershipMsg;
use kv_protocols::partition::LookupTable;
use kv_protocols::sequence_paxos::messages::{
    AcceptDecide, AcceptSync, Accepted, Decide, PaxosMsg, Prepare, Promise, Snapshot,
};
use kv_protocols::transfer::TransferMsg;

use crate::error::WireError;
use crate::pb;

type Result<T> = std::result::Result<T, WireError>;

/// A required sub-message.
fn req<T>(v: Option<T>, message: &'static str, field: &'static str) -> Result<T> {
    v.ok_or(WireError::MissingField { message, field })
}

/// A required `oneof`.
fn one<T>(v: Option<T>, message: &'static str, field: &'static str) -> Result<T> {
    v.ok_or(WireError::UnknownVariant { message, field })
}

pub(crate) fn map_vec<P, R>(v: Vec<P>, f: impl FnMut(P) -> Result<R>) -> Result<Vec<R>> {
    v.into_iter().map(f).collect()
}

// ---------------------------------------------------------------------------------
// Addresses and ballots

pub(crate) fn addr_to_pb(a: &SocketAddr) -> pb::Addr {
    let ip = match a.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    pb::Addr {
        ip,
        port: u32::from(a.port()),
    }
}

pub(crate) fn addr_from_pb(a: pb::Addr) -> Result<SocketAddr> {
    let ip = if let Ok(b) = <[u8; 4]>::try_from(a.ip.as_slice()) {
        IpAddr::V4(Ipv4Addr::from(b))
    } else if let Ok(b) = <[u8; 16]>::try_from(a.ip.as_slice()) {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        return Err(WireError::BadIpLength(a.ip.len()));
    };
    let port = u16::try_from(a.port).map_err(|_| WireError::BadPort(a.port))?;
    Ok(SocketAddr::new(ip, port))
}

fn req_addr(a: Option<pb::Addr>, message: &'static str, field: &'static str) -> Result<SocketAddr> {
    addr_from_pb(req(a, message, field)?)
}

fn ballot_to_pb(b: &Ballot) -> pb::Ballot {
    pb::Ballot {
        n: b.n,
        pid: Some(addr_to_pb(&b.pid)),
    }
}

fn ballot_from_pb(b: pb::Ballot) -> Result<Ballot> {
    Ok(Ballot {
        n: b.n,
        pid: req_addr(b.pid, "Ballot", "pid")?,
    })
}

fn req_ballot(b: Option<pb::Ballot>, message: &'static str, field: &'static str) -> Result<Ballot> {
    ballot_from_pb(req(b, message, field)?)
}

// ---------------------------------------------------------------------------------
// Key-value operations, results, commands

pub(crate) fn kv_op_to_pb(op: &KvOp) -> pb::KvOp {
    use pb::kv_op::{Cas, CasAbsent, Delete, Get, Op, Put};
    let op = match op {
        KvOp::Get { key } => Op::Get(Get { key: key.clone() }),
        KvOp::Put { key, value } => Op::Put(Put {
            key: key.clone(),
            value: value.clone(),
        }),
        KvOp::Cas {
            key,
            expected: Some(expected),
            new,
        } => Op::Cas(Cas {
            key: key.clone(),
            expected: expected.clone(),
            new: new.clone(),
        }),
        KvOp::Cas {
            key,
            expected: None,
            new,
        } => Op::CasAbsent(CasAbsent {
            key: key.clone(),
            new: new.clone(),
        }),
        KvOp::Delete { key } => Op::Delete(Delete { key: key.clone() }),
    };
    pb::KvOp { op: Some(op) }
}

pub(crate) fn kv_op_from_pb(op: pb::KvOp) -> Result<KvOp> {
    use pb::kv_op::Op;
    Ok(match one(op.op, "KvOp", "op")? {
        Op::Get(g) => KvOp::Get { key: g.key },
        Op::Put(p) => KvOp::Put {
            key: p.key,
            value: p.value,
        },
        Op::Cas(c) => KvOp::Cas {
            key: c.key,
            expected: Some(c.expected),
            new: c.new,
        },
        Op::CasAbsent(c) => KvOp::Cas {
            key: c.key,
            expected: None,
            new: c.new,
        },
        Op::Delete(d) => KvOp::Delete { key: d.key },
    })
}

fn req_kv_op(op: Option<pb::KvOp>, message: &'static str) -> Result<KvOp> {
    kv_op_from_pb(req(op, message, "op")?)
}

pub(crate) fn kv_result_to_pb(r: &KvResult) -> pb::KvResult {
    use pb::kv_result::{CasMismatch, Result as R};
    let r = match r {
        KvResult::Value(v) => R::Value(v.clone()),
        KvResult::Done => R::Done(pb::Empty {}),
        KvResult::NotFound => R::NotFound(pb::Empty {}),
        KvResult::CasMismatch { current } => R::CasMismatch(CasMismatch {
            current: current.clone(),
        }),
    };
    pb::KvResult { result: Some(r) }
}

pub(crate) fn kv_result_from_pb(r: pb::KvResult) -> Result<KvResult> {
    use pb::kv_result::Result as R;
    Ok(match one(r.result, "KvResult", "result")? {
        R::Value(v) => KvResult::Value(v),
        R::Done(_) => KvResult::Done,
        R::NotFound(_) => KvResult::NotFound,
        R::CasMismatch(m) => KvResult::CasMismatch { current: m.current },
    })
}

pub(crate) fn kv_command_to_pb(c: &KvCommand) -> pb::KvCommand {
    pb::KvCommand {
        client: c.client,
        seq: c.seq,
        reply_to: Some(addr_to_pb(&c.reply_to)),
        origin: Some(addr_to_pb(&c.origin)),
        stamp_ms: c.stamp_ms,
        op: Some(kv_op_to_pb(&c.op)),
    }
}

pub(crate) fn kv_command_from_pb(c: pb::KvCommand) -> Result<KvCommand> {
    Ok(KvCommand {
        client: c.client,
        seq: c.seq,
        reply_to: req_addr(c.reply_to, "KvCommand", "reply_to")?,
        origin: req_addr(c.origin, "KvCommand", "origin")?,
        stamp_ms: c.stamp_ms,
        op: req_kv_op(c.op, "KvCommand")?,
    })
}

/// A type that travels as an entry of a replicated log ([`pb::LogEntry`]).
pub(crate) trait WireEntry: Sized {
    fn to_entry(&self) -> pb::log_entry::Entry;
    fn from_entry(e: pb::log_entry::Entry) -> Result<Self>;
}

impl WireEntry for KvEntry {
    fn to_entry(&self) -> pb::log_entry::Entry {
        match self {
            KvEntry::Cmd(c) => pb::log_entry::Entry::Kv(kv_command_to_pb(c)),
            KvEntry::Stop(s) => pb::log_entry::Entry::Stop(pb::StopSign { epoch: s.epoch }),
        }
    }

    fn from_entry(e: pb::log_entry::Entry) -> Result<Self> {
        match e {
            pb::log_entry::Entry::Kv(c) => Ok(KvEntry::Cmd(kv_command_from_pb(c)?)),
            pb::log_entry::Entry::Stop(s) => Ok(KvEntry::Stop(StopSign { epoch: s.epoch })),
            pb::log_entry::Entry::Dir(_) => Err(WireError::UnknownVariant {
                message: "LogEntry",
                field: "entry (a directory command in a partition's log)",
            }),
        }
    }
}

impl WireEntry for DirCommand {
    fn to_entry(&self) -> pb::log_entry::Entry {
        pb::log_entry::Entry::Dir(dir_command_to_pb(self))
    }

    fn from_entry(e: pb::log_entry::Entry) -> Result<Self> {
        match e {
            pb::log_entry::Entry::Dir(c) => dir_command_from_pb(c),
            pb::log_entry::Entry::Kv(_) | pb::log_entry::Entry::Stop(_) => {
                Err(WireError::UnknownVariant {
                    message: "LogEntry",
                    field: "entry (a partition's entry in the directory's log)",
                })
            }
        }
    }
}

fn entries_to_pb<T: WireEntry>(es: &[T]) -> Vec<pb::LogEntry> {
    es.iter()
        .map(|e| pb::LogEntry {
            entry: Some(e.to_entry()),
        })
        .collect()
}

fn entries_from_pb<T: WireEntry>(es: Vec<pb::LogEntry>) -> Result<Vec<T>> {
    map_vec(es, |e| T::from_entry(one(e.entry, "LogEntry", "entry")?))
}

// ---------------------------------------------------------------------------------
// Membership

pub(crate) fn member_to_pb(m: &Member) -> pb::Member {
    pb::Member {
        addr: Some(addr_to_pb(&m.addr)),
        incarnation: m.incarnation,
    }
}

pub(crate) fn member_from_pb(m: pb::Member) -> Result<Member> {
    Ok(Member {
        addr: req_addr(m.addr, "Member", "addr")?,
        incarnation: m.incarnation,
    })
}

fn dir_command_to_pb(c: &DirCommand) -> pb::DirCommand {
    use pb::dir_command::{Cmd, Reconfigure};
    let cmd = match c {
        DirCommand::Join(m) => Cmd::Join(member_to_pb(m)),
        DirCommand::Reconfigure {
            group,
            from_epoch,
            replicas,
        } => Cmd::Reconfigure(Reconfigure {
            group: *group,
            from_epoch: *from_epoch,
            replicas: replicas.iter().map(member_to_pb).collect(),
        }),
        DirCommand::Remove(a) => Cmd::Remove(addr_to_pb(a)),
        DirCommand::Stopped { group, epoch } => Cmd::Stopped(pb::dir_command::Stopped {
            group: *group,
            epoch: *epoch,
        }),
    };
    pb::DirCommand { cmd: Some(cmd) }
}

fn dir_command_from_pb(c: pb::DirCommand) -> Result<DirCommand> {
    use pb::dir_command::Cmd;
    Ok(match one(c.cmd, "DirCommand", "cmd")? {
        Cmd::Join(m) => DirCommand::Join(member_from_pb(m)?),
        Cmd::Reconfigure(r) => DirCommand::Reconfigure {
            group: r.group,
            from_epoch: r.from_epoch,
            replicas: map_vec(r.replicas, member_from_pb)?,
        },
        Cmd::Remove(a) => DirCommand::Remove(addr_from_pb(a)?),
        Cmd::Stopped(s) => DirCommand::Stopped {
            group: s.group,
            epoch: s.epoch,
        },
    })
}

fn directory_from_bytes(b: &[u8]) -> Result<Arc<Directory>> {
    Directory::decode(b)
        .map(Arc::new)
        .map_err(WireError::InvalidDirectory)
}

fn membership_to_pb(m: &MembershipMsg) -> pb::MembershipMsg {
    use pb::membership_msg::{Ble, Msg, Paxos};
    let msg = match m {
        MembershipMsg::Paxos { epoch, msg } => Msg::Paxos(Paxos {
            epoch: *epoch,
            msg: Some(paxos_to_pb(msg)),
        }),
        MembershipMsg::Ble { epoch, msg } => Msg::Ble(Ble {
            epoch: *epoch,
            msg: Some(ble_to_pb(msg)),
        }),
        MembershipMsg::Join(m) => Msg::Join(member_to_pb(m)),
        MembershipMsg::State(d) => Msg::State(d.encode()),
        MembershipMsg::Propose(c) => Msg::Propose(dir_command_to_pb(c)),
    };
    pb::MembershipMsg { msg: Some(msg) }
}

fn membership_from_pb(m: pb::MembershipMsg) -> Result<MembershipMsg> {
    use pb::membership_msg::Msg;
    Ok(match one(m.msg, "MembershipMsg", "msg")? {
        Msg::Paxos(p) => MembershipMsg::Paxos {
            epoch: p.epoch,
            msg: paxos_from_pb(req(p.msg, "MembershipMsg.Paxos", "msg")?)?,
        },
        Msg::Ble(b) => MembershipMsg::Ble {
            epoch: b.epoch,
            msg: ble_from_pb(req(b.msg, "MembershipMsg.Ble", "msg")?)?,
        },
        Msg::Join(m) => MembershipMsg::Join(member_from_pb(m)?),
        Msg::State(b) => MembershipMsg::State(directory_from_bytes(&b)?),
        Msg::Propose(c) => MembershipMsg::Propose(dir_command_from_pb(c)?),
    })
}

pub(crate) fn client_request_to_pb(r: &ClientRequest) -> pb::ClientRequest {
    pb::ClientRequest {
        client: r.client,
        seq: r.seq,
        op: Some(kv_op_to_pb(&r.op)),
    }
}

pub(crate) fn client_request_from_pb(r: pb::ClientRequest) -> Result<ClientRequest> {
    Ok(ClientRequest {
        client: r.client,
        seq: r.seq,
        op: req_kv_op(r.op, "ClientRequest")?,
    })
}

// ---------------------------------------------------------------------------------
// Failure detection and leader election

fn epfd_to_pb(m: &EpfdMsg) -> pb::EpfdMsg {
    use pb::epfd_msg::{HeartbeatReply, HeartbeatRequest, Msg};
    let msg = match *m {
        EpfdMsg::HeartbeatRequest { seq } => Msg::HeartbeatRequest(HeartbeatRequest { seq }),
        EpfdMsg::HeartbeatReply { seq } => Msg::HeartbeatReply(HeartbeatReply { seq }),
    };
    pb::EpfdMsg { msg: Some(msg) }
}

fn epfd_from_pb(m: pb::EpfdMsg) -> Result<EpfdMsg> {
    use pb::epfd_msg::Msg;
    Ok(match one(m.msg, "EpfdMsg", "msg")? {
        Msg::HeartbeatRequest(r) => EpfdMsg::HeartbeatRequest { seq: r.seq },
        Msg::HeartbeatReply(r) => EpfdMsg::HeartbeatReply { seq: r.seq },
    })
}

fn ble_to_pb(m: &BleMsg) -> pb::BleMsg {
    use pb::ble_msg::{HeartbeatReply, HeartbeatRequest, Msg};
    let msg = match m {
        BleMsg::HeartbeatRequest { round } => {
            Msg::HeartbeatRequest(HeartbeatRequest { round: *round })
        }
        BleMsg::HeartbeatReply {
            round,
            ballot,
            quorum_connected,
        } => Msg::HeartbeatReply(HeartbeatReply {
            round: *round,
            ballot: Some(ballot_to_pb(ballot)),
            quorum_connected: *quorum_connected,
        }),
    };
    pb::BleMsg { msg: Some(msg) }
}

fn ble_from_pb(m: pb::BleMsg) -> Result<BleMsg> {
    use pb::ble_msg::Msg;
    Ok(match one(m.msg, "BleMsg", "msg")? {
        Msg::HeartbeatRequest(r) => BleMsg::HeartbeatRequest { round: r.round },
        Msg::HeartbeatReply(r) => BleMsg::HeartbeatReply {
            round: r.round,
            ballot: req_ballot(r.ballot, "BleMsg.HeartbeatReply", "ballot")?,
            quorum_connected: r.quorum_connected,
        },
    })
}

// ---------------------------------------------------------------------------------
// Sequence Paxos

fn snapshot_to_pb(s: &Snapshot) -> pb::Snapshot {
    pb::Snapshot {
        idx: s.idx,
        data: s.data.to_vec(),
    }
}

fn snapshot_from_pb(s: pb::Snapshot) -> Snapshot {
    Snapshot {
        idx: s.idx,
        data: std::sync::Arc::new(s.data),
    }
}

pub(crate) fn paxos_to_pb<T: WireEntry>(m: &PaxosMsg<T>) -> pb::PaxosMsg {
    use pb::paxos_msg as p;
    let msg = match m {
        PaxosMsg::Prepare(x) => p::Msg::Prepare(p::Prepare {
            n: Some(ballot_to_pb(&x.n)),
            decided_idx: x.decided_idx,
            n_accepted: Some(ballot_to_pb(&x.n_accepted)),
            accepted_idx: x.accepted_idx,
        }),
        PaxosMsg::Promise(x) => p::Msg::Promise(p::Promise {
            n: Some(ballot_to_pb(&x.n)),
            n_accepted: Some(ballot_to_pb(&x.n_accepted)),
            decided_idx: x.decided_idx,
            accepted_idx: x.accepted_idx,
            log_suffix: entries_to_pb(&x.suffix),
            snapshot: x.snapshot.as_ref().map(snapshot_to_pb),
        }),
        PaxosMsg::AcceptSync(x) => p::Msg::AcceptSync(p::AcceptSync {
            n: Some(ballot_to_pb(&x.n)),
            sync_idx: x.sync_idx,
            log_suffix: entries_to_pb(&x.suffix),
            decided_idx: x.decided_idx,
            snapshot: x.snapshot.as_ref().map(snapshot_to_pb),
        }),
        PaxosMsg::AcceptDecide(x) => p::Msg::AcceptDecide(p::AcceptDecide {
            n: Some(ballot_to_pb(&x.n)),
            start_idx: x.start_idx,
            log_entries: entries_to_pb(&x.entries),
            decided_idx: x.decided_idx,
        }),
        PaxosMsg::Accepted(x) => p::Msg::Accepted(p::Accepted {
            n: Some(ballot_to_pb(&x.n)),
            accepted_idx: x.accepted_idx,
        }),
        PaxosMsg::Decide(x) => p::Msg::Decide(p::Decide {
            n: Some(ballot_to_pb(&x.n)),
            decided_idx: x.decided_idx,
        }),
        PaxosMsg::ProposalForward(entries) => p::Msg::ProposalForward(p::ProposalForward {
            log_entries: entries_to_pb(entries),
        }),
        PaxosMsg::PrepareReq => p::Msg::PrepareReq(p::PrepareReq {}),
        PaxosMsg::Compaction { n, applied_idx } => p::Msg::Compaction(p::Compaction {
            n: Some(ballot_to_pb(n)),
            applied_idx: *applied_idx,
        }),
    };
    pb::PaxosMsg { msg: Some(msg) }
}

pub(crate) fn paxos_from_pb<T: WireEntry>(m: pb::PaxosMsg) -> Result<PaxosMsg<T>> {
    use pb::paxos_msg as p;
    Ok(match one(m.msg, "PaxosMsg", "msg")? {
        p::Msg::Prepare(x) => PaxosMsg::Prepare(Prepare {
            n: req_ballot(x.n, "PaxosMsg.Prepare", "n")?,
            decided_idx: x.decided_idx,
            n_accepted: req_ballot(x.n_accepted, "PaxosMsg.Prepare", "n_accepted")?,
            accepted_idx: x.accepted_idx,
        }),
        p::Msg::Promise(x) => PaxosMsg::Promise(Promise {
            n: req_ballot(x.n, "PaxosMsg.Promise", "n")?,
            n_accepted: req_ballot(x.n_accepted, "PaxosMsg.Promise", "n_accepted")?,
            decided_idx: x.decided_idx,
            accepted_idx: x.accepted_idx,
            suffix: entries_from_pb(x.log_suffix)?,
            snapshot: x.snapshot.map(snapshot_from_pb),
        }),
        p::Msg::AcceptSync(x) => PaxosMsg::AcceptSync(AcceptSync {
            n: req_ballot(x.n, "PaxosMsg.AcceptSync", "n")?,
            sync_idx: x.sync_idx,
            suffix: entries_from_pb(x.log_suffix)?,
            decided_idx: x.decided_idx,
            snapshot: x.snapshot.map(snapshot_from_pb),
        }),
        p::Msg::AcceptDecide(x) => PaxosMsg::AcceptDecide(AcceptDecide {
            n: req_ballot(x.n, "PaxosMsg.AcceptDecide", "n")?,
            start_idx: x.start_idx,
            entries: entries_from_pb(x.log_entries)?,
            decided_idx: x.decided_idx,
        }),
        p::Msg::Accepted(x) => PaxosMsg::Accepted(Accepted {
            n: req_ballot(x.n, "PaxosMsg.Accepted", "n")?,
            accepted_idx: x.accepted_idx,
        }),
        p::Msg::Decide(x) => PaxosMsg::Decide(Decide {
            n: req_ballot(x.n, "PaxosMsg.Decide", "n")?,
            decided_idx: x.decided_idx,
        }),
        p::Msg::ProposalForward(x) => PaxosMsg::ProposalForward(entries_from_pb(x.log_entries)?),
        p::Msg::PrepareReq(_) => PaxosMsg::PrepareReq,
        p::Msg::Compaction(x) => PaxosMsg::Compaction {
            n: req_ballot(x.n, "PaxosMsg.Compaction", "n")?,
            applied_idx: x.applied_idx,
        },
    })
}

// ---------------------------------------------------------------------------------
// Cluster formation

fn table_to_pb(t: &LookupTable) -> pb::LookupTable {
    pb::LookupTable {
        partitions: t.partitions,
        replication_degree: t.replication_degree as u64,
        nodes: t.nodes.iter().map(addr_to_pb).collect(),
        groups: t
            .groups
            .iter()
            .map(|g| pb::lookup_table::Group {
                members: g.iter().map(addr_to_pb).collect(),
            })
            .collect(),
    }
}

fn table_from_pb(t: pb::LookupTable) -> Result<LookupTable> {
    let replication_degree =
        usize::try_from(t.replication_degree).map_err(|_| WireError::Overflow {
            field: "LookupTable.replication_degree",
            value: t.replication_degree,
        })?;
    let table = LookupTable {
        partitions: t.partitions,
        replication_degree,
        nodes: map_vec(t.nodes, addr_from_pb)?,
        groups: map_vec(t.groups, |g| map_vec(g.members, addr_from_pb))?,
    };
    table.validate().map_err(WireError::InvalidTable)?;
    Ok(table)
}

fn bootstrap_to_pb(m: &BootstrapMsg) -> pb::BootstrapMsg {
    use pb::bootstrap_msg::{CheckIn, Msg, Rejected};
    let msg = match m {
        BootstrapMsg::CheckIn {
            cluster,
            incarnation,
        } => Msg::CheckIn(CheckIn {
            cluster: cluster.clone(),
            incarnation: *incarnation,
        }),
        BootstrapMsg::Boot(d) => Msg::BootDirectory(d.encode()),
        BootstrapMsg::Rejected { reason } => Msg::Rejected(Rejected {
            reason: reason.clone(),
        }),
    };
    pb::BootstrapMsg { msg: Some(msg) }
}

fn bootstrap_from_pb(m: pb::BootstrapMsg) -> Result<BootstrapMsg> {
    use pb::bootstrap_msg::Msg;
    Ok(match one(m.msg, "BootstrapMsg", "msg")? {
        Msg::CheckIn(c) => BootstrapMsg::CheckIn {
            cluster: c.cluster,
            incarnation: c.incarnation,
        },
        Msg::BootDirectory(b) => BootstrapMsg::Boot(directory_from_bytes(&b)?),
        Msg::Rejected(r) => BootstrapMsg::Rejected { reason: r.reason },
    })
}

// ---------------------------------------------------------------------------------
// PerfectLink

fn routed_to_pb(r: &Routed) -> pb::Routed {
    pb::Routed {
        partition: r.partition,
        requests: r.requests.iter().map(client_request_to_pb).collect(),
        reply_to: Some(addr_to_pb(&r.reply_to)),
    }
}

fn routed_from_pb(r: pb::Routed) -> Result<Routed> {
    Ok(Routed {
        partition: r.partition,
        requests: map_vec(r.requests, client_request_from_pb)?,
        reply_to: req_addr(r.reply_to, "Routed", "reply_to")?,
    })
}

pub(crate) fn payload_to_pb(p: &PlPayload) -> pb::PlPayload {
    use pb::pl_payload::{Ble, Paxos, Payload};
    let payload = match p {
        PlPayload::Epfd(m) => Payload::Epfd(epfd_to_pb(m)),
        PlPayload::Ble {
            partition,
            epoch,
            msg,
        } => Payload::Ble(Ble {
            partition: *partition,
            epoch: *epoch,
            msg: Some(ble_to_pb(msg)),
        }),
        PlPayload::Paxos {
            partition,
            epoch,
            msg,
        } => Payload::Paxos(Paxos {
            partition: *partition,
            epoch: *epoch,
            msg: Some(paxos_to_pb(msg)),
        }),
        PlPayload::Transfer(m) => Payload::Transfer(transfer_to_pb(m)),
        PlPayload::PaxosLarge {
            partition,
            epoch,
            msg,
        } => {
            use pb::paxos_large::Msg;
            Payload::PaxosLarge(pb::PaxosLarge {
                partition: *partition,
                epoch: *epoch,
                msg: Some(match msg {
                    LargePaxosMsg::Offer { id, len } => {
                        Msg::Offer(pb::paxos_large::Offer { id: *id, len: *len })
                    }
                    LargePaxosMsg::Transfer { id, msg } => {
                        Msg::Transfer(pb::paxos_large::Transfer {
                            id: *id,
                            msg: Some(transfer_to_pb(msg)),
                        })
                    }
                }),
            })
        }
        PlPayload::Bootstrap(m) => Payload::Bootstrap(bootstrap_to_pb(m)),
        PlPayload::Forward(r) => Payload::Forward(routed_to_pb(r)),
        PlPayload::Membership(m) => Payload::Membership(membership_to_pb(m)),
    };
    pb::PlPayload {
        payload: Some(payload),
    }
}

pub(crate) fn payload_from_pb(p: pb::PlPayload) -> Result<PlPayload> {
    use pb::pl_payload::Payload;
    Ok(match one(p.payload, "PlPayload", "payload")? {
        Payload::Epfd(m) => PlPayload::Epfd(epfd_from_pb(m)?),
        Payload::Ble(b) => PlPayload::Ble {
            partition: b.partition,
            epoch: b.epoch,
            msg: ble_from_pb(req(b.msg, "PlPayload.Ble", "msg")?)?,
        },
        Payload::Paxos(x) => PlPayload::Paxos {
            partition: x.partition,
            epoch: x.epoch,
            msg: paxos_from_pb(req(x.msg, "PlPayload.Paxos", "msg")?)?,
        },
        Payload::Transfer(m) => PlPayload::Transfer(transfer_from_pb(m)?),
        Payload::PaxosLarge(x) => {
            use pb::paxos_large::Msg;
            PlPayload::PaxosLarge {
                partition: x.partition,
                epoch: x.epoch,
                msg: match one(x.msg, "PaxosLarge", "msg")? {
                    Msg::Offer(o) => LargePaxosMsg::Offer {
                        id: o.id,
                        len: o.len,
                    },
                    Msg::Transfer(t) => LargePaxosMsg::Transfer {
                        id: t.id,
                        msg: transfer_from_pb(req(t.msg, "PaxosLarge.Transfer", "msg")?)?,
                    },
                },
            }
        }
        Payload::Bootstrap(m) => PlPayload::Bootstrap(bootstrap_from_pb(m)?),
        Payload::Forward(r) => PlPayload::Forward(routed_from_pb(r)?),
        Payload::Membership(m) => PlPayload::Membership(membership_from_pb(m)?),
    })
}

fn transfer_to_pb(m: &TransferMsg) -> pb::TransferMsg {
    use pb::transfer_msg::{Chunk, Msg, Request, Unavailable};
    let msg = match m {
        TransferMsg::Request {
            group,
            epoch,
            offset,
            len,
        } => Msg::Request(Request {
            group: *group,
            epoch: *epoch,
            offset: *offset,
            len: *len,
        }),
        TransferMsg::Chunk {
            group,
            epoch,
            total_len,
            checksum,
            offset,
            data,
        } => Msg::Chunk(Chunk {
            group: *group,
            epoch: *epoch,
            total_len: *total_len,
            checksum: *checksum,
            offset: *offset,
            data: data.clone(),
        }),
        TransferMsg::Unavailable { group, epoch } => Msg::Unavailable(Unavailable {
            group: *group,
            epoch: *epoch,
        }),
    };
    pb::TransferMsg { msg: Some(msg) }
}

fn transfer_from_pb(m: pb::TransferMsg) -> Result<TransferMsg> {
    use pb::transfer_msg::Msg;
    Ok(match one(m.msg, "TransferMsg", "msg")? {
        Msg::Request(r) => TransferMsg::Request {
            group: r.group,
            epoch: r.epoch,
            offset: r.offset,
            len: r.len,
        },
        Msg::Chunk(c) => TransferMsg::Chunk {
            group: c.group,
            epoch: c.epoch,
            total_len: c.total_len,
            checksum: c.checksum,
            offset: c.offset,
            data: c.data,
        },
        Msg::Unavailable(u) => TransferMsg::Unavailable {
            group: u.group,
            epoch: u.epoch,
        },
    })
}

pub(crate) fn link_frame_to_pb(f: &LinkFrame) -> pb::LinkFrame {
    pb::LinkFrame {
        cluster: f.cluster,
        incarnation: f.incarnation,
        first_seq: f.first_seq,
        payloads: f.payloads.iter().map(|p| payload_to_pb(p)).collect(),
        ack: f.ack.map(|a| pb::LinkAck {
            incarnation: a.incarnation,
            seq: a.seq,
        }),
    }
}

pub(crate) fn link_frame_from_pb(f: pb::LinkFrame) -> Result<LinkFrame> {
    Ok(LinkFrame {
        cluster: f.cluster,
        incarnation: f.incarnation,
        first_seq: f.first_seq,
        payloads: map_vec(f.payloads, |p| payload_from_pb(p).map(Arc::new))?,
        ack: f.ack.map(|a| LinkAck {
            incarnation: a.incarnation,
            seq: a.seq,
        }),
    })
}

// ---------------------------------------------------------------------------------
// Client messages (each variant is its own top-level protobuf message)

pub(crate) fn connect_from_pb(m: pb::Connect) -> ClientMessage {
    ClientMessage::Connect { cluster: m.cluster }
}

pub(crate) fn connect_ack_to_pb(
    entry: &SocketAddr,
    nodes: &[SocketAddr],
    partitions: u32,
) -> pb::ConnectAck {
    pb::ConnectAck {
        entry: Some(addr_to_pb(entry)),
        nodes: nodes.iter().map(addr_to_pb).collect(),
        partitions,
    }
}

pub(crate) fn connect_ack_from_pb(m: pb::ConnectAck) -> Result<ClientMessage> {
    Ok(ClientMessage::ConnectAck {
        entry: req_addr(m.entry, "ConnectAck", "entry")?,
        nodes: map_vec(m.nodes, addr_from_pb)?,
        partitions: m.partitions,
    })
}

/// One operation's answer, as sent alone (`Response`) or in a `ResponseBatch`.
pub(crate) fn response_to_pb(client: u64, seq: u64, result: &KvResult) -> pb::Response {
    pb::Response {
        client,
        seq,
        result: Some(kv_result_to_pb(result)),
    }
}

pub(crate) fn client_response_to_pb(r: &ClientResponse) -> pb::Response {
    response_to_pb(r.client, r.seq, &r.result)
}

pub(crate) fn client_response_from_pb(m: pb::Response) -> Result<ClientResponse> {
    Ok(ClientResponse {
        client: m.client,
        seq: m.seq,
        result: kv_result_from_pb(req(m.result, "Response", "result")?)?,
    })
}

pub(crate) fn response_from_pb(m: pb::Response) -> Result<ClientMessage> {
    let ClientResponse {
        client,
        seq,
        result,
    } = client_response_from_pb(m)?;
    Ok(ClientMessage::Response {
        client,
        seq,
        result,
    })
}

pub(crate) fn refusal_to_pb(r: &Refusal) -> pb::Refusal {
    use pb::refusal::Reason;
    let reason = match r {
        Refusal::TooLarge(s) => Reason::TooLarge(s.clone()),
        Refusal::Busy => Reason::Busy(pb::Empty {}),
        Refusal::NotReady(s) => Reason::NotReady(s.clone()),
        Refusal::WrongCluster(s) => Reason::WrongCluster(s.clone()),
        Refusal::Moved {
            partition,
            epoch,
            replicas,
        } => Reason::Moved(pb::Moved {
            partition: *partition,
            epoch: *epoch,
            replicas: replicas.iter().map(addr_to_pb).collect(),
        }),
    };
    pb::Refusal {
        reason: Some(reason),
    }
}

pub(crate) fn refused_from_pb(m: pb::Refused) -> Result<ClientMessage> {
    use pb::refusal::Reason;
    let reason = match one(
        req(m.reason, "Refused", "reason")?.reason,
        "Refusal",
        "reason",
    )? {
        Reason::TooLarge(s) => Refusal::TooLarge(s),
        Reason::Busy(_) => Refusal::Busy,
        Reason::NotReady(s) => Refusal::NotReady(s),
        Reason::WrongCluster(s) => Refusal::WrongCluster(s),
        Reason::Moved(m) => Refusal::Moved {
            partition: m.partition,
            epoch: m.epoch,
            replicas: map_vec(m.replicas, addr_from_pb)?,
        },
    };
    Ok(ClientMessage::Refused {
        client: m.client,
        seq: m.seq,
        reason,
    })
}

// ---------------------------------------------------------------------------------
// Status queries

fn replica_status_to_pb(r: &ReplicaStatus) -> pb::status_reply::ReplicaStatus {
    pb::status_reply::ReplicaStatus {
        partition: r.partition,
        leader: r.leader.as_ref().map(ballot_to_pb),
        is_leader: r.is_leader,
        promised: r.promised.as_ref().map(ballot_to_pb),
        decided_idx: r.decided_idx,
        log_len: r.log_len,
        first_retained_idx: r.first_retained_idx,
        applied_idx: r.applied_idx,
        keys: r.keys,
        inflight: r.inflight,
        pending: r.pending,
        epoch: r.epoch,
    }
}

fn replica_status_from_pb(r: pb::status_reply::ReplicaStatus) -> Result<ReplicaStatus> {
    Ok(ReplicaStatus {
        partition: r.partition,
        leader: r.leader.map(ballot_from_pb).transpose()?,
        is_leader: r.is_leader,
        promised: r.promised.map(ballot_from_pb).transpose()?,
        decided_idx: r.decided_idx,
        log_len: r.log_len,
        first_retained_idx: r.first_retained_idx,
        applied_idx: r.applied_idx,
        keys: r.keys,
        inflight: r.inflight,
        pending: r.pending,
        epoch: r.epoch,
    })
}

pub(crate) fn status_reply_to_pb(s: &NodeStatus) -> pb::StatusReply {
    pb::StatusReply {
        nonce: s.nonce,
        node: Some(addr_to_pb(&s.node)),
        cluster: s.cluster.clone(),
        uptime_ms: s.uptime_ms,
        table: s.table.as_deref().map(table_to_pb),
        not_in_table: s.not_in_table.clone(),
        replicas: s.replicas.iter().map(replica_status_to_pb).collect(),
        suspected: s.suspected.iter().map(addr_to_pb).collect(),
        incarnation: s.incarnation,
        members: s.members.iter().map(member_to_pb).collect(),
        directory_version: s.directory_version,
    }
}

pub(crate) fn status_reply_from_pb(m: pb::StatusReply) -> Result<NodeStatus> {
    Ok(NodeStatus {
        nonce: m.nonce,
        node: req_addr(m.node, "StatusReply", "node")?,
        cluster: m.cluster,
        uptime_ms: m.uptime_ms,
        table: m.table.map(table_from_pb).transpose()?.map(Arc::new),
        not_in_table: m.not_in_table,
        replicas: map_vec(m.replicas, replica_status_from_pb)?,
        suspected: map_vec(m.suspected, addr_from_pb)?,
        incarnation: m.incarnation,
        members: map_vec(m.members, member_from_pb)?,
        directory_version: m.directory_version,
    })
}

// ---------------------------------------------------------------------------------
// Admin requests (`kvstore remove`, `kvstore rebalance`)

pub(crate) fn admin_request_to_pb(r: &AdminRequest) -> pb::AdminRequest {
    use pb::admin_request::{Op, Rebalance, Remove};
    pb::AdminRequest {
        nonce: r.nonce,
        op: Some(match &r.op {
            AdminOp::Remove(a) => Op::Remove(Remove {
                node: Some(addr_to_pb(a)),
            }),
            AdminOp::Rebalance => Op::Rebalance(Rebalance {}),
        }),
    }
}

pub(crate) fn admin_request_from_pb(m: pb::AdminRequest) -> Result<AdminRequest> {
    use pb::admin_request::Op;
    Ok(AdminRequest {
        nonce: m.nonce,
        op: match one(m.op, "AdminRequest", "op")? {
            Op::Remove(r) => AdminOp::Remove(req_addr(r.node, "AdminRequest.Remove", "node")?),
            Op::Rebalance(_) => AdminOp::Rebalance,
        },
    })
}

pub(crate) fn admin_reply_to_pb(r: &AdminReply) -> pb::AdminReply {
    use pb::admin_reply::{Balanced, Empty, Move, Moving, Result as R};
    let result = match &r.result {
        AdminResult::Moving(moves) => R::Moving(Moving {
            moves: moves
                .iter()
                .map(|m| Move {
                    group: m.group,
                    from_epoch: m.from_epoch,
                    from: Some(addr_to_pb(&m.from)),
                    to: Some(addr_to_pb(&m.to)),
                })
                .collect(),
        }),
        AdminResult::Removing => R::Removing(Empty {}),
        AdminResult::NotAMember => R::NotAMember(Empty {}),
        AdminResult::Balanced { min, max } => R::Balanced(Balanced {
            min: *min,
            max: *max,
        }),
        AdminResult::Wait(why) => R::Wait(why.clone()),
        AdminResult::Refused(why) => R::Refused(why.clone()),
        AdminResult::NotReady => R::NotReady(Empty {}),
    };
    pb::AdminReply {
        nonce: r.nonce,
        result: Some(result),
    }
}

pub(crate) fn admin_reply_from_pb(m: pb::AdminReply) -> Result<AdminReply> {
    use pb::admin_reply::Result as R;
    let result = match one(m.result, "AdminReply", "result")? {
        R::Moving(mv) => {
            if mv.moves.is_empty() {
                return Err(WireError::Invalid {
                    message: "AdminReply.Moving",
                    field: "moves",
                    rule: "at least one move",
                });
            }
            AdminResult::Moving(map_vec(mv.moves, |m| {
                let from = req_addr(m.from, "AdminReply.Move", "from")?;
                let to = req_addr(m.to, "AdminReply.Move", "to")?;
                if from == to {
                    return Err(WireError::Invalid {
                        message: "AdminReply.Move",
                        field: "to",
                        rule: "a move must go to another node",
                    });
                }
                if m.from_epoch == u64::MAX {
                    return Err(WireError::Invalid {
                        message: "AdminReply.Move",
                        field: "from_epoch",
                        rule: "the last epoch has no next one",
                    });
                }
                Ok(ReplicaMove {
                    group: m.group,
                    from_epoch: m.from_epoch,
                    from,
                    to,
                })
            })?)
        }
        R::Removing(_) => AdminResult::Removing,
        R::NotAMember(_) => AdminResult::NotAMember,
        R::Balanced(b) => {
            if b.max < b.min || b.max - b.min > 1 {
                return Err(WireError::Invalid {
                    message: "AdminReply.Balanced",
                    field: "max",
                    rule: "min <= max <= min + 1",
                });
            }
            AdminResult::Balanced {
                min: b.min,
                max: b.max,
            }
        }
        R::Wait(why) => AdminResult::Wait(why),
        R::Refused(why) => AdminResult::Refused(why),
        R::NotReady(_) => AdminResult::NotReady,
    };
    Ok(AdminReply {
        nonce: m.nonce,
        result,
    })
}

//! Encoding and decoding of whole network messages, and their Kompact glue.

use std::any::Any;

use bytes::{Buf, BufMut};
use kompact::messaging::NetData;
use kompact::prelude::{Deserialiser, SerError, SerId, Serialisable, UnpackError};
use kv_ports::{
    BootstrapMsg, ClientMessage, LinkFrame, NetMessage, NodeStatus, PlPayload, StatusMessage,
    StatusRequest,
};
use kv_protocols::kv::{KvCommand, KvEntry, KvOp, KvResult};
use kv_protocols::membership::MembershipMsg;
use kv_protocols::sequence_paxos::messages::PaxosMsg;
use prost::Message;

use crate::convert as c;
use crate::error::WireError;
use crate::ids;
use crate::pb;

/// The serialisation id `msg` is sent under (one per message type, see [`ids`]).
pub fn ser_id_of(msg: &NetMessage) -> SerId {
    match msg {
        NetMessage::Link(_) => ids::LINK_FRAME,
        NetMessage::Client(m) => match m {
            ClientMessage::Connect { .. } => ids::CONNECT,
            ClientMessage::ConnectAck { .. } => ids::CONNECT_ACK,
            ClientMessage::Request(_) => ids::REQUEST,
            ClientMessage::Response { .. } => ids::RESPONSE,
            ClientMessage::Requests(_) => ids::REQUEST_BATCH,
            ClientMessage::Responses(_) => ids::RESPONSE_BATCH,
            ClientMessage::Refused { .. } => ids::REFUSED,
        },
        NetMessage::Status(m) => match m {
            StatusMessage::Request(_) => ids::STATUS_REQUEST,
            StatusMessage::Reply(_) => ids::STATUS_REPLY,
            StatusMessage::Admin(_) => ids::ADMIN_REQUEST,
            StatusMessage::AdminReply(_) => ids::ADMIN_REPLY,
        },
    }
}

/// Appends the protobuf encoding of `msg` to `buf`; the receiver needs
/// [`ser_id_of`]`(msg)` as well to decode it.
///
/// The encoding does not check `remaining_mut` up front, so `buf` must grow as
/// needed (a `Vec` does). Kompact's network encoder does not grow under prost's
/// small writes through `&mut dyn BufMut`; [`Wire::serialise`] therefore encodes
/// into a scratch `Vec` and copies it with one `put_slice`.
pub fn encode(msg: &NetMessage, buf: &mut impl BufMut) {
    // `encode_raw` is what `Message::encode` calls after checking that the buffer
    // has room for the whole message; a growing buffer needs no such check.
    match msg {
        NetMessage::Link(f) => c::link_frame_to_pb(f).encode_raw(buf),
        NetMessage::Client(m) => match m {
            ClientMessage::Connect { cluster } => pb::Connect {
                cluster: cluster.clone(),
            }
            .encode_raw(buf),
            ClientMessage::ConnectAck {
                entry,
                nodes,
                partitions,
            } => c::connect_ack_to_pb(entry, nodes, *partitions).encode_raw(buf),
            ClientMessage::Request(r) => c::client_request_to_pb(r).encode_raw(buf),
            ClientMessage::Requests(rs) => pb::RequestBatch {
                requests: rs.iter().map(c::client_request_to_pb).collect(),
            }
            .encode_raw(buf),
            ClientMessage::Responses(rs) => pb::ResponseBatch {
                responses: rs.iter().map(c::client_response_to_pb).collect(),
            }
            .encode_raw(buf),
            ClientMessage::Response {
                client,
                seq,
                result,
            } => c::response_to_pb(*client, *seq, result).encode_raw(buf),
            ClientMessage::Refused {
                client,
                seq,
                reason,
            } => pb::Refused {
                client: *client,
                seq: *seq,
                reason: Some(c::refusal_to_pb(reason)),
            }
            .encode_raw(buf),
        },
        NetMessage::Status(m) => match m {
            StatusMessage::Request(r) => pb::StatusRequest { nonce: r.nonce }.encode_raw(buf),
            StatusMessage::Reply(s) => c::status_reply_to_pb(s).encode_raw(buf),
            StatusMessage::Admin(r) => c::admin_request_to_pb(r).encode_raw(buf),
            StatusMessage::AdminReply(r) => c::admin_reply_to_pb(r).encode_raw(buf),
        },
    }
}

/// Decodes a message that arrived under serialisation id `ser_id`, consuming all
/// of `buf`.
///
/// Never panics: malformed, truncated or semantically invalid input gives a
/// [`WireError`], an id that is not one of [`ids`] gives [`WireError::UnknownId`].
pub fn decode(ser_id: SerId, buf: &mut dyn Buf) -> Result<NetMessage, WireError> {
    Ok(match ser_id {
        ids::LINK_FRAME => NetMessage::Link(c::link_frame_from_pb(pb::LinkFrame::decode(buf)?)?),
        ids::CONNECT => NetMessage::Client(c::connect_from_pb(pb::Connect::decode(buf)?)),
        ids::CONNECT_ACK => {
            NetMessage::Client(c::connect_ack_from_pb(pb::ConnectAck::decode(buf)?)?)
        }
        ids::REQUEST => NetMessage::Client(ClientMessage::Request(c::client_request_from_pb(
            pb::ClientRequest::decode(buf)?,
        )?)),
        ids::RESPONSE => NetMessage::Client(c::response_from_pb(pb::Response::decode(buf)?)?),
        ids::REQUEST_BATCH => NetMessage::Client(ClientMessage::Requests(c::map_vec(
            pb::RequestBatch::decode(buf)?.requests,
            c::client_request_from_pb,
        )?)),
        ids::RESPONSE_BATCH => NetMessage::Client(ClientMessage::Responses(c::map_vec(
            pb::ResponseBatch::decode(buf)?.responses,
            c::client_response_from_pb,
        )?)),
        ids::REFUSED => NetMessage::Client(c::refused_from_pb(pb::Refused::decode(buf)?)?),
        ids::STATUS_REQUEST => NetMessage::Status(StatusMessage::Request(StatusRequest {
            nonce: pb::StatusRequest::decode(buf)?.nonce,
        })),
        ids::STATUS_REPLY => NetMessage::Status(StatusMessage::Reply(Box::new(
            c::status_reply_from_pb(pb::StatusReply::decode(buf)?)?,
        ))),
        ids::ADMIN_REQUEST => NetMessage::Status(StatusMessage::Admin(c::admin_request_from_pb(
            pb::AdminRequest::decode(buf)?,
        )?)),
        ids::ADMIN_REPLY => NetMessage::Status(StatusMessage::AdminReply(c::admin_reply_from_pb(
            pb::AdminReply::decode(buf)?,
        )?)),
        other => return Err(WireError::UnknownId(other)),
    })
}

/// Encodes `msg` into a fresh vector sized from [`size_hint`]; returns the id to
/// send it under as well.
pub fn encode_to_vec(msg: &NetMessage) -> (SerId, Vec<u8>) {
    let mut v = Vec::with_capacity(size_hint(msg));
    encode(msg, &mut v);
    (ser_id_of(msg), v)
}

/// The encoding of one partition's Sequence Paxos message on its own: what a
/// replica offers in chunks when the message is too large to send in one piece
/// (`kv_ports::LargePaxosMsg`).
pub fn encode_paxos(msg: &PaxosMsg<KvEntry>) -> Vec<u8> {
    c::paxos_to_pb(msg).encode_to_vec()
}

/// Decodes what [`encode_paxos`] made, checking it like any message from the
/// network.
pub fn decode_paxos(bytes: &[u8]) -> Result<PaxosMsg<KvEntry>, WireError> {
    c::paxos_from_pb(pb::PaxosMsg::decode(bytes)?)
}

/// An upper bound on the encoded length of one link payload, without encoding it.
pub fn payload_size_hint(p: &PlPayload) -> usize {
    payload_len(p)
}

/// An upper bound on the length of [`encode_paxos`]`(msg)`, without encoding it.
pub fn paxos_size_hint(msg: &PaxosMsg<KvEntry>) -> usize {
    paxos_len(msg, entries_len)
}

/// Decodes `bytes`, which arrived under serialisation id `ser_id`.
pub fn decode_slice(ser_id: SerId, mut bytes: &[u8]) -> Result<NetMessage, WireError> {
    decode(ser_id, &mut bytes)
}

// ---------------------------------------------------------------------------------
// Size estimate

/// Upper bound on the encoding of an address (two tags, a length, 16 bytes, a
/// varint port) plus the enclosing field's tag and length.
const ADDR: usize = 2 + 16 + 1 + 3 + 2;
/// A tag plus a varint of up to 10 bytes.
const U64: usize = 11;
/// Tag and length prefix of a sub-message or string (lengths below 2 MiB).
const LEN: usize = 4;

fn op_len(op: &KvOp) -> usize {
    LEN * 2
        + match op {
            KvOp::Get { key } | KvOp::Delete { key } => LEN + key.len(),
            KvOp::Put { key, value } => 2 * LEN + key.len() + value.len(),
            KvOp::Cas { key, expected, new } => {
                3 * LEN + key.len() + expected.as_ref().map_or(0, String::len) + new.len()
            }
        }
}

fn command_len(c: &KvCommand) -> usize {
    LEN + 3 * U64 + 2 * ADDR + op_len(&c.op)
}

fn entries_len(es: &[KvEntry]) -> usize {
    es.iter()
        .map(|e| match e {
            KvEntry::Cmd(c) => LEN + command_len(c),
            KvEntry::Stop(_) => 2 * LEN + U64,
        })
        .sum()
}

fn result_len(r: &KvResult) -> usize {
    2 * LEN
        + match r {
            KvResult::Value(v) => v.len(),
            KvResult::Done | KvResult::NotFound => 0,
            KvResult::CasMismatch { current } => LEN + current.len(),
        }
}

fn paxos_len<T>(m: &PaxosMsg<T>, entries_len: fn(&[T]) -> usize) -> usize {
    const BALLOT: usize = LEN + U64 + ADDR;
    let body = match m {
        PaxosMsg::Prepare(_) => 2 * BALLOT + 2 * U64,
        PaxosMsg::Promise(p) => {
            2 * BALLOT
                + 2 * U64
                + entries_len(&p.suffix)
                + p.snapshot
                    .as_ref()
                    .map_or(0, |s| LEN + U64 + LEN + s.data.len())
        }
        PaxosMsg::AcceptSync(a) => {
            BALLOT
                + 2 * U64
                + entries_len(&a.suffix)
                + a.snapshot
                    .as_ref()
                    .map_or(0, |s| LEN + U64 + LEN + s.data.len())
        }
        PaxosMsg::AcceptDecide(a) => BALLOT + 2 * U64 + entries_len(&a.entries),
        PaxosMsg::ProposalForward(es) => LEN + entries_len(es),
        PaxosMsg::Accepted(_) | PaxosMsg::Decide(_) | PaxosMsg::Compaction { .. } => BALLOT + U64,
        PaxosMsg::PrepareReq => 0,
    };
    2 * LEN + body
}

fn payload_len(p: &PlPayload) -> usize {
    2 * LEN
        + match p {
            PlPayload::Epfd(_) => LEN + U64,
            PlPayload::Ble { .. } => 2 * LEN + 2 * U64 + 2 * U64 + LEN + U64 + ADDR + 2,
            PlPayload::Paxos { msg, .. } => LEN + 2 * U64 + paxos_len(msg, entries_len),
            PlPayload::Transfer(t) => transfer_len(t),
            PlPayload::PaxosLarge { msg, .. } => {
                LEN + 2 * U64
                    + LEN
                    + match msg {
                        kv_ports::LargePaxosMsg::Offer { .. } => 2 * U64,
                        kv_ports::LargePaxosMsg::Transfer { msg, .. } => {
                            U64 + LEN + transfer_len(msg)
                        }
                    }
            }
            PlPayload::Bootstrap(b) => {
                LEN + match b {
                    BootstrapMsg::CheckIn { cluster, .. } => 2 * LEN + cluster.len() + U64,
                    BootstrapMsg::Rejected { reason } => LEN + reason.len(),
                    BootstrapMsg::Boot(d) => LEN + directory_len(d),
                }
            }
            PlPayload::Membership(m) => {
                LEN + match m {
                    MembershipMsg::Paxos { msg, .. } => {
                        LEN + U64 + paxos_len(msg, dir_commands_len)
                    }
                    MembershipMsg::Ble { .. } => 2 * LEN + U64 + 2 * U64 + LEN + U64 + ADDR + 2,
                    MembershipMsg::Join(_) => LEN + ADDR + U64,
                    MembershipMsg::State(d) => LEN + directory_len(d),
                    MembershipMsg::Propose(c) => LEN + dir_commands_len(std::slice::from_ref(c)),
                }
            }
            PlPayload::Forward(r) => {
                2 * U64
                    + ADDR
                    + r.requests
                        .iter()
                        .map(|q| LEN + 2 * U64 + op_len(&q.op))
                        .sum::<usize>()
            }
        }
}

fn transfer_len(t: &kv_protocols::transfer::TransferMsg) -> usize {
    LEN + 6 * U64
        + match t {
            kv_protocols::transfer::TransferMsg::Chunk { data, .. } => LEN + data.len(),
            _ => 0,
        }
}

/// The directory's own encoding: 25 bytes per member, 29 per replica slot, plus
/// headers (an upper bound, without computing it).
fn directory_len(d: &kv_ports::Directory) -> usize {
    let slots: usize = d
        .group_ids()
        .filter_map(|g| d.group(g))
        .map(|c| 13 + 29 * (c.replicas.len() + c.previous.len()))
        .sum();
    32 + 25 * d.members().len() + slots
}

fn dir_commands_len(cs: &[kv_ports::DirCommand]) -> usize {
    cs.iter()
        .map(|c| {
            3 * LEN
                + match c {
                    kv_ports::DirCommand::Join(_) | kv_ports::DirCommand::Remove(_) => ADDR + U64,
                    kv_ports::DirCommand::Reconfigure { replicas, .. } => {
                        2 * U64 + replicas.len() * (LEN + ADDR + U64)
                    }
                    kv_ports::DirCommand::Stopped { .. } => 2 * U64,
                }
        })
        .sum()
}

fn table_len(t: &kv_ports::LookupTable) -> usize {
    2 * U64 + ADDR * t.nodes.len() + t.groups.iter().map(|g| LEN + ADDR * g.len()).sum::<usize>()
}

fn status_len(s: &NodeStatus) -> usize {
    const BALLOT: usize = LEN + U64 + ADDR;
    const REPLICA: usize = LEN + 2 * BALLOT + 11 * U64;
    2 * U64
        + ADDR
        + LEN
        + s.cluster.len()
        + s.table.as_deref().map_or(0, |t| LEN + table_len(t))
        + s.not_in_table.as_ref().map_or(0, |r| LEN + r.len())
        + REPLICA * s.replicas.len()
        + ADDR * s.suspected.len()
        + 2 * U64
        + (LEN + ADDR + U64) * s.members.len()
}

fn frame_len(f: &LinkFrame) -> usize {
    3 * U64 + f.payloads.iter().map(|p| payload_len(p)).sum::<usize>() + LEN + 2 * U64
}

/// A cheap upper estimate of the encoded size of `msg` (it walks the message but
/// encodes nothing), for reserving buffer space.
pub fn size_hint(msg: &NetMessage) -> usize {
    match msg {
        NetMessage::Link(f) => frame_len(f),
        NetMessage::Client(m) => match m {
            ClientMessage::Connect { cluster } => LEN + cluster.len(),
            ClientMessage::ConnectAck { nodes, .. } => ADDR * (1 + nodes.len()),
            ClientMessage::Request(r) => 2 * U64 + op_len(&r.op),
            ClientMessage::Response { result, .. } => U64 + result_len(result),
            ClientMessage::Requests(rs) => rs
                .iter()
                .map(|r| LEN + 2 * U64 + op_len(&r.op))
                .sum::<usize>(),
            ClientMessage::Responses(rs) => rs
                .iter()
                .map(|r| LEN + 2 * U64 + result_len(&r.result))
                .sum::<usize>(),
            ClientMessage::Refused { reason, .. } => U64 + 3 * LEN + reason.to_string().len(),
        },
        NetMessage::Status(StatusMessage::Request(_)) => U64,
        NetMessage::Status(StatusMessage::Reply(s)) => status_len(s),
        NetMessage::Status(StatusMessage::Admin(_)) => U64 + ADDR + 4 * LEN,
        NetMessage::Status(StatusMessage::AdminReply(r)) => {
            U64 + 4 * LEN
                + match &r.result {
                    kv_ports::AdminResult::Moving(m) => m.len() * (2 * LEN + 3 * U64 + 2 * ADDR),
                    kv_ports::AdminResult::Wait(s) | kv_ports::AdminResult::Refused(s) => s.len(),
                    _ => 2 * U64,
                }
        }
    }
}

// ---------------------------------------------------------------------------------
// Kompact glue

/// A [`NetMessage`] as Kompact sends it: encoded with prost when it leaves the
/// process, handed over as is (no encoding) when the receiver is local.
///
/// The receiving side gets the message back with [`unpack`] (or [`decode`] on the
/// raw bytes).
#[derive(Clone, Debug)]
pub struct Wire(pub NetMessage);

impl From<NetMessage> for Wire {
    fn from(m: NetMessage) -> Wire {
        Wire(m)
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest scratch buffer kept between two encodings.
const SCRATCH_KEEP: usize = 1 << 20;

impl Serialisable for Wire {
    fn ser_id(&self) -> SerId {
        ser_id_of(&self.0)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(size_hint(&self.0))
    }

    fn serialise(&self, buf: &mut dyn BufMut) -> Result<(), SerError> {
        // Encode into a reusable scratch buffer first, then copy it with one
        // `put_slice`. Kompact's network encoder reports only the room left in its
        // current chunk, and prost's small writes through `&mut dyn BufMut` (for
        // example the 4 bytes of an address) panic when they straddle a chunk end;
        // its `put_slice` chains chunks, so frames of any size are safe this way.
        SCRATCH.with(|scratch| {
            let mut v = scratch.borrow_mut();
            v.clear();
            encode(&self.0, &mut *v);
            buf.put_slice(&v);
            if v.capacity() > SCRATCH_KEEP {
                *v = Vec::new(); // do not pin the memory of one huge frame
            }
        });
        Ok(())
    }

    fn local(self: Box<Self>) -> Result<Box<dyn Any + Send>, Box<dyn Serialisable>> {
        Ok(Box::new(self.0))
    }

    fn cloned(&self) -> Option<Box<dyn Serialisable>> {
        // Link frames share their payloads (`Arc`), so a clone is cheap.
        Some(Box::new(self.clone()))
    }
}

/// A Kompact [`Deserialiser`] of [`NetMessage`] for the one serialisation id `ID`,
/// for use with `match_deser!` or `NetMessage::try_deserialise`, e.g.
/// `Deser::<{ kv_wire::ids::LINK_FRAME }>`. [`unpack`] covers every id at once.
///
/// A decoding failure is reported as a `SerError` whose `source()` is the
/// [`WireError`].
pub struct Deser<const ID: SerId>;

impl<const ID: SerId> Deserialiser<NetMessage> for Deser<ID> {
    const SER_ID: SerId = ID;

    fn deserialise(buf: &mut dyn Buf) -> Result<NetMessage, SerError> {
        decode(ID, buf).map_err(|e| SerError::third_party("decoding a kompact-kv message", e))
    }
}

fn from_unpack_error(id: SerId, e: UnpackError<NetData>) -> WireError {
    match e {
        UnpackError::NoIdMatch(_) => WireError::UnknownId(id),
        UnpackError::NoCast(_) => WireError::Unpack(format!(
            "local message under id {id} is not a kv_ports::NetMessage"
        )),
        UnpackError::DeserError(e) => std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<WireError>())
            .cloned()
            .unwrap_or_else(|| WireError::Unpack(e.to_string())),
    }
}

/// Turns the data of a message Kompact delivered to `receive_network` back into a
/// [`NetMessage`], whether it was sent locally (no copy, no decoding) or arrived
/// encoded. Pass `msg.data` of the Kompact message.
pub fn unpack(data: NetData) -> Result<NetMessage, WireError> {
    let id = data.ser_id;
    macro_rules! with {
        ($id:path) => {
            data.try_deserialise_unchecked::<NetMessage, Deser<{ $id }>>()
        };
    }
    let r = match id {
        ids::LINK_FRAME => with!(ids::LINK_FRAME),
        ids::CONNECT => with!(ids::CONNECT),
        ids::CONNECT_ACK => with!(ids::CONNECT_ACK),
        ids::REQUEST => with!(ids::REQUEST),
        ids::RESPONSE => with!(ids::RESPONSE),
        ids::REQUEST_BATCH => with!(ids::REQUEST_BATCH),
        ids::RESPONSE_BATCH => with!(ids::RESPONSE_BATCH),
        ids::REFUSED => with!(ids::REFUSED),
        ids::STATUS_REQUEST => with!(ids::STATUS_REQUEST),
        ids::STATUS_REPLY => with!(ids::STATUS_REPLY),
        ids::ADMIN_REQUEST => with!(ids::ADMIN_REQUEST),
        ids::ADMIN_REPLY => with!(ids::ADMIN_REPLY),
        other => return Err(WireError::UnknownId(other)),
    };
    r.map_err(|e| from_unpack_error(id, e))
}

//! Rust → bytes → Rust for every message type.

mod common;

use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use common::*;
use kompact::messaging::{HeapOrSer, NetData};
use kompact::prelude::Serialisable;
use kv_ports::{
    ClientMessage, ClientRequest, LinkFrame, NetMessage, NodeStatus, PlPayload, ReplicaStatus,
    StatusMessage, StatusRequest,
};
use kv_protocols::kv::{KvCommand, KvEntry, KvOp, StopSign};
use kv_protocols::sequence_paxos::messages::{AcceptDecide, PaxosMsg};
use kv_wire::{Wire, WireError, ids};
use proptest::prelude::*;

fn roundtrip(msg: &NetMessage) -> NetMessage {
    let (id, bytes) = kv_wire::encode_to_vec(msg);
    assert_eq!(id, kv_wire::ser_id_of(msg));
    kv_wire::decode_slice(id, &bytes).unwrap_or_else(|e| panic!("{e} decoding {msg:?}"))
}

#[test]
fn every_sample_message_round_trips() {
    let all = all_messages();
    assert!(all.len() > 40);
    for msg in &all {
        assert_eq!(dbg(&roundtrip(msg)), dbg(msg));
    }
}

#[test]
fn every_paxos_variant_round_trips_with_equality() {
    for msg in paxos_msgs() {
        let frame = NetMessage::Link(frame(
            vec![PlPayload::Paxos {
                partition: 5,
                epoch: 3,
                msg: msg.clone(),
            }],
            None,
        ));
        let NetMessage::Link(back) = roundtrip(&frame) else {
            panic!("not a link frame");
        };
        match &*back.payloads[0] {
            PlPayload::Paxos {
                partition: 5,
                epoch: 3,
                msg: m,
            } => assert_eq!(m, &msg),
            other => panic!("wrong payload {other:?}"),
        }
    }
}

#[test]
fn directory_round_trips_in_the_first_layout() {
    let d = directory();
    let msg = NetMessage::Link(frame(
        vec![PlPayload::Bootstrap(kv_ports::BootstrapMsg::Boot(
            d.clone().into(),
        ))],
        None,
    ));
    let NetMessage::Link(back) = roundtrip(&msg) else {
        panic!()
    };
    match &*back.payloads[0] {
        PlPayload::Bootstrap(kv_ports::BootstrapMsg::Boot(b)) => assert_eq!(**b, d),
        other => panic!("wrong payload {other:?}"),
    }
}

#[test]
fn status_messages_round_trip_with_equality() {
    for m in status_messages() {
        let msg = NetMessage::Status(m.clone());
        match roundtrip(&msg) {
            NetMessage::Status(back) => assert_eq!(back, m),
            other => panic!("decoded {other:?}"),
        }
    }
}

#[test]
fn a_status_reply_without_its_node_is_rejected() {
    let mut pb = kv_wire::pb::StatusReply::default();
    let bytes = prost::Message::encode_to_vec(&pb);
    assert_eq!(
        kv_wire::decode_slice(ids::STATUS_REPLY, &bytes).unwrap_err(),
        WireError::MissingField {
            message: "StatusReply",
            field: "node"
        }
    );
    // A lookup table that breaks its invariant is rejected here too.
    pb.node = Some(kv_wire::pb::Addr {
        ip: vec![127, 0, 0, 1],
        port: 1,
    });
    pb.table = Some(kv_wire::pb::LookupTable {
        partitions: 1,
        replication_degree: 2,
        nodes: vec![],
        groups: vec![],
    });
    let bytes = prost::Message::encode_to_vec(&pb);
    assert!(matches!(
        kv_wire::decode_slice(ids::STATUS_REPLY, &bytes),
        Err(WireError::InvalidTable(_))
    ));
}

#[test]
fn ids_follow_the_message_type() {
    use kv_wire::ser_id_of;
    for msg in all_messages() {
        let expected = match &msg {
            NetMessage::Link(_) => ids::LINK_FRAME,
            NetMessage::Client(ClientMessage::Connect { .. }) => ids::CONNECT,
            NetMessage::Client(ClientMessage::ConnectAck { .. }) => ids::CONNECT_ACK,
            NetMessage::Client(ClientMessage::Request(_)) => ids::REQUEST,
            NetMessage::Client(ClientMessage::Response { .. }) => ids::RESPONSE,
            NetMessage::Client(ClientMessage::Requests(_)) => ids::REQUEST_BATCH,
            NetMessage::Client(ClientMessage::Responses(_)) => ids::RESPONSE_BATCH,
            NetMessage::Client(ClientMessage::Refused { .. }) => ids::REFUSED,
            NetMessage::Status(StatusMessage::Request(_)) => ids::STATUS_REQUEST,
            NetMessage::Status(StatusMessage::Reply(_)) => ids::STATUS_REPLY,
            NetMessage::Status(StatusMessage::Admin(_)) => ids::ADMIN_REQUEST,
            NetMessage::Status(StatusMessage::AdminReply(_)) => ids::ADMIN_REPLY,
        };
        assert_eq!(ser_id_of(&msg), expected);
    }
}

#[test]
fn size_hint_is_an_upper_bound_and_not_wildly_off() {
    for msg in all_messages() {
        let (_, bytes) = kv_wire::encode_to_vec(&msg);
        let hint = kv_wire::size_hint(&msg);
        assert!(
            hint >= bytes.len(),
            "hint {hint} < {} for {msg:?}",
            bytes.len()
        );
        assert!(
            hint <= 4 * bytes.len() + 64,
            "hint {hint} vs {} for {msg:?}",
            bytes.len()
        );
    }
}

#[test]
fn encode_appends_to_a_buffer() {
    let msgs = all_messages();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(b"prefix");
    kv_wire::encode(&msgs[0], &mut buf);
    let (_, alone) = kv_wire::encode_to_vec(&msgs[0]);
    assert_eq!(&buf[..6], b"prefix");
    assert_eq!(&buf[6..], &alone[..]);
    let mut bytes = buf.freeze().slice(6..);
    let back = kv_wire::decode(kv_wire::ser_id_of(&msgs[0]), &mut bytes).unwrap();
    assert_eq!(dbg(&back), dbg(&msgs[0]));
}

#[test]
fn wire_is_a_kompact_serialisable() {
    for msg in all_messages() {
        let wire = Wire(msg.clone());
        assert_eq!(wire.ser_id(), kv_wire::ser_id_of(&msg));
        assert!(wire.size_hint().is_some());
        let mut buf = BytesMut::new();
        wire.serialise(&mut buf).unwrap();
        assert_eq!(buf.to_vec(), kv_wire::encode_to_vec(&msg).1);
        let copy = wire.cloned().expect("cheap clone");
        assert_eq!(copy.ser_id(), wire.ser_id());
        let local = Box::new(wire).local().map_err(|_| "not local").unwrap();
        let back = local
            .downcast::<NetMessage>()
            .expect("a kv_ports::NetMessage");
        assert_eq!(dbg(&*back), dbg(&msg));
    }
}

#[test]
fn unpack_handles_local_and_serialised_data() {
    for msg in all_messages() {
        let id = kv_wire::ser_id_of(&msg);
        let local = NetData::with(id, HeapOrSer::Boxed(Box::new(Wire(msg.clone()))));
        assert_eq!(dbg(&kv_wire::unpack(local).unwrap()), dbg(&msg));
        let (_, bytes) = kv_wire::encode_to_vec(&msg);
        let remote = NetData::with(id, HeapOrSer::Serialised(bytes.into()));
        assert_eq!(dbg(&kv_wire::unpack(remote).unwrap()), dbg(&msg));
    }
}

#[test]
fn unpack_reports_wire_errors() {
    let unknown = NetData::with(99, HeapOrSer::Serialised(vec![].into()));
    assert_eq!(
        kv_wire::unpack(unknown).unwrap_err(),
        WireError::UnknownId(99)
    );
    // A ConnectAck without its entry.
    let bad = NetData::with(ids::CONNECT_ACK, HeapOrSer::Serialised(vec![].into()));
    assert_eq!(
        kv_wire::unpack(bad).unwrap_err(),
        WireError::MissingField {
            message: "ConnectAck",
            field: "entry"
        }
    );
    // Something local that is not ours.
    let foreign = NetData::with(ids::CONNECT, HeapOrSer::Boxed(Box::new(String::from("x"))));
    assert!(matches!(
        kv_wire::unpack(foreign),
        Err(WireError::Unpack(_))
    ));
}

// ---------------------------------------------------------------------------------
// Property tests

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
    ]
}

fn op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        any::<String>().prop_map(|key| KvOp::Get { key }),
        (any::<String>(), any::<String>()).prop_map(|(key, value)| KvOp::Put { key, value }),
        (any::<String>(), any::<Option<String>>(), any::<String>())
            .prop_map(|(key, expected, new)| KvOp::Cas { key, expected, new }),
        any::<String>().prop_map(|key| KvOp::Delete { key }),
    ]
}

fn ballot() -> impl Strategy<Value = kv_protocols::ballot::Ballot> {
    (any::<u64>(), addr()).prop_map(|(n, pid)| kv_protocols::ballot::Ballot { n, pid })
}

fn replica_status() -> impl Strategy<Value = ReplicaStatus> {
    (
        any::<u32>(),
        prop::option::of(ballot()),
        any::<bool>(),
        prop::option::of(ballot()),
        any::<[u64; 8]>(),
    )
        .prop_map(
            |(partition, leader, is_leader, promised, n)| ReplicaStatus {
                partition,
                leader,
                is_leader,
                promised,
                decided_idx: n[0],
                log_len: n[1],
                first_retained_idx: n[2],
                applied_idx: n[3],
                keys: n[4],
                inflight: n[5],
                pending: n[6],
                epoch: n[7],
            },
        )
}

fn node_status() -> impl Strategy<Value = NodeStatus> {
    (
        any::<u64>(),
        addr(),
        any::<String>(),
        any::<u64>(),
        prop::option::of(any::<String>()),
        prop::collection::vec(replica_status(), 0..4),
        prop::collection::vec(addr(), 0..4),
        (
            any::<u64>(),
            prop::collection::vec((addr(), any::<u64>()), 0..4),
            prop::option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |(
                nonce,
                node,
                cluster,
                uptime_ms,
                not_in_table,
                replicas,
                suspected,
                (incarnation, members, directory_version),
            )| NodeStatus {
                nonce,
                node,
                cluster,
                uptime_ms,
                table: None,
                not_in_table,
                replicas,
                suspected,
                incarnation,
                members: members
                    .into_iter()
                    .map(|(addr, incarnation)| kv_ports::Member { addr, incarnation })
                    .collect(),
                directory_version,
            },
        )
}

fn command() -> impl Strategy<Value = KvCommand> {
    (
        any::<u64>(),
        any::<u64>(),
        addr(),
        addr(),
        any::<u64>(),
        op(),
    )
        .prop_map(|(client, seq, reply_to, origin, stamp_ms, op)| KvCommand {
            client,
            seq,
            reply_to,
            origin,
            stamp_ms,
            op,
        })
}

fn entry() -> impl Strategy<Value = KvEntry> {
    prop_oneof![
        8 => command().prop_map(KvEntry::Cmd),
        1 => any::<u64>().prop_map(|epoch| KvEntry::Stop(StopSign { epoch })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Integration tests have no lib.rs for proptest to file regressions next to.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_kv_op_round_trips(client in any::<u64>(), seq in any::<u64>(), op in op()) {
        let req = ClientRequest { client, seq, op };
        let msg = NetMessage::Client(ClientMessage::Request(req.clone()));
        match roundtrip(&msg) {
            NetMessage::Client(ClientMessage::Request(back)) => prop_assert_eq!(back, req),
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }

    #[test]
    fn any_status_message_round_trips(nonce in any::<u64>(), status in node_status()) {
        let req = NetMessage::Status(StatusMessage::Request(StatusRequest { nonce }));
        prop_assert_eq!(dbg(&roundtrip(&req)), dbg(&req));
        let reply = StatusMessage::Reply(Box::new(status));
        match roundtrip(&NetMessage::Status(reply.clone())) {
            NetMessage::Status(back) => prop_assert_eq!(back, reply),
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }

    #[test]
    fn any_kv_command_batch_round_trips(
        entries in prop::collection::vec(entry(), 0..8),
        start_idx in any::<u64>(),
        decided_idx in any::<u64>(),
        partition in any::<u32>(),
        epoch in any::<u64>(),
        pid in addr(),
        n in any::<u64>(),
    ) {
        let msg = PaxosMsg::AcceptDecide(AcceptDecide {
            n: kv_protocols::ballot::Ballot { n, pid },
            start_idx,
            entries,
            decided_idx,
        });
        let net = NetMessage::Link(LinkFrame {
            cluster: 1,
            incarnation: 2,
            first_seq: 3,
            payloads: vec![std::sync::Arc::new(PlPayload::Paxos { partition, epoch, msg: msg.clone() })],
            ack: None,
        });
        let NetMessage::Link(back) = roundtrip(&net) else { panic!() };
        match &*back.payloads[0] {
            PlPayload::Paxos { partition: p, epoch: e, msg: m } => {
                prop_assert_eq!(*p, partition);
                prop_assert_eq!(*e, epoch);
                prop_assert_eq!(m, &msg);
            }
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }
}

/// The edge refuses admin messages that break their rules, each with its own error.
#[test]
fn malformed_admin_messages_are_refused_specifically() {
    use kv_wire::pb;
    use kv_wire::pb::admin_reply::{Balanced, Move, Moving, Result as R};
    use prost::Message;
    let cases: Vec<(u64, Vec<u8>, &str)> = vec![
        (
            ids::ADMIN_REQUEST,
            pb::AdminRequest { nonce: 1, op: None }.encode_to_vec(),
            "AdminRequest.op",
        ),
        (
            ids::ADMIN_REQUEST,
            pb::AdminRequest {
                nonce: 1,
                op: Some(pb::admin_request::Op::Remove(pb::admin_request::Remove {
                    node: None,
                })),
            }
            .encode_to_vec(),
            "AdminRequest.Remove.node",
        ),
        (
            ids::ADMIN_REPLY,
            pb::AdminReply {
                nonce: 1,
                result: None,
            }
            .encode_to_vec(),
            "AdminReply.result",
        ),
        (
            ids::ADMIN_REPLY,
            pb::AdminReply {
                nonce: 1,
                result: Some(R::Moving(Moving { moves: vec![] })),
            }
            .encode_to_vec(),
            "at least one move",
        ),
        (
            ids::ADMIN_REPLY,
            pb::AdminReply {
                nonce: 1,
                result: Some(R::Moving(Moving {
                    moves: vec![Move {
                        group: 0,
                        from_epoch: 0,
                        from: None,
                        to: None,
                    }],
                })),
            }
            .encode_to_vec(),
            "AdminReply.Move.from",
        ),
        (
            ids::ADMIN_REPLY,
            pb::AdminReply {
                nonce: 1,
                result: Some(R::Balanced(Balanced { min: 1, max: 3 })),
            }
            .encode_to_vec(),
            "min <= max <= min + 1",
        ),
    ];
    for (id, bytes, expect) in cases {
        let err = kv_wire::decode_slice(id as _, &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{expect:?} not in {err:?}");
    }
}

#[test]
fn create_if_absent_and_a_cas_expecting_the_empty_string_stay_distinct() {
    let req = |expected: Option<String>| {
        NetMessage::Client(ClientMessage::Request(ClientRequest {
            client: 1,
            seq: 1,
            op: KvOp::Cas {
                key: "k".into(),
                expected,
                new: "v".into(),
            },
        }))
    };
    let absent = req(None);
    let empty = req(Some(String::new()));
    let (id_a, bytes_a) = kv_wire::encode_to_vec(&absent);
    let (id_e, bytes_e) = kv_wire::encode_to_vec(&empty);
    assert_ne!(bytes_a, bytes_e);
    assert_eq!(dbg(&roundtrip(&absent)), dbg(&absent));
    assert_eq!(dbg(&roundtrip(&empty)), dbg(&empty));
    assert_eq!((id_a, id_e), (ids::REQUEST, ids::REQUEST));
}

//! Bad input never panics, and the errors say what is wrong.

mod common;

use common::*;
use kompact::prelude::SerId;
use kv_protocols::partition::TableError;
use kv_wire::{WireError, ids, pb};
use proptest::prelude::*;
use prost::Message;

/// Every id we know, and a few we do not.
fn some_ids() -> Vec<SerId> {
    let mut v: Vec<SerId> = ids::ALL.iter().map(|(id, _)| *id).collect();
    v.extend([0, 20, 99, 101, 121, 255]);
    v
}

#[test]
fn unknown_ids_are_rejected() {
    let (_, bytes) = kv_wire::encode_to_vec(&all_messages()[0]);
    for id in [0, 1, 20, 99, 101, 109, 121, 199, SerId::MAX] {
        assert_eq!(
            kv_wire::decode_slice(id, &bytes).unwrap_err(),
            WireError::UnknownId(id)
        );
    }
}

#[test]
fn truncated_messages_fail_cleanly() {
    for msg in all_messages() {
        let (id, bytes) = kv_wire::encode_to_vec(&msg);
        // Every prefix decodes or fails, without panicking.
        for cut in 0..bytes.len() {
            let _ = kv_wire::decode_slice(id, &bytes[..cut]);
        }
        // Losing the last byte always breaks the last field.
        if !bytes.is_empty() {
            assert!(
                kv_wire::decode_slice(id, &bytes[..bytes.len() - 1]).is_err(),
                "{msg:?}"
            );
        }
    }
}

#[test]
fn valid_bytes_under_the_wrong_id_do_not_panic() {
    for msg in all_messages() {
        let (_, bytes) = kv_wire::encode_to_vec(&msg);
        for id in some_ids() {
            let _ = kv_wire::decode_slice(id, &bytes);
        }
    }
}

fn decode_pb<M: Message>(id: SerId, m: &M) -> Result<kv_ports::NetMessage, WireError> {
    kv_wire::decode_slice(id, &m.encode_to_vec())
}

fn good_addr() -> pb::Addr {
    pb::Addr {
        ip: vec![127, 0, 0, 1],
        port: 4000,
    }
}

#[test]
fn bad_addresses_are_rejected() {
    for len in [0, 1, 3, 5, 15, 17, 32] {
        let m = pb::ConnectAck {
            entry: Some(pb::Addr {
                ip: vec![1; len],
                port: 1,
            }),
            nodes: vec![],
            partitions: 0,
        };
        assert_eq!(
            decode_pb(ids::CONNECT_ACK, &m).unwrap_err(),
            WireError::BadIpLength(len)
        );
    }
    let m = pb::ConnectAck {
        entry: Some(good_addr()),
        nodes: vec![pb::Addr {
            ip: vec![0; 16],
            port: 65536,
        }],
        partitions: 0,
    };
    assert!(matches!(
        decode_pb(ids::CONNECT_ACK, &m),
        Err(WireError::BadPort(65536))
    ));
    let m = pb::ConnectAck {
        entry: Some(pb::Addr {
            ip: vec![0; 16],
            port: 65535,
        }),
        nodes: vec![],
        partitions: 0,
    };
    assert!(decode_pb(ids::CONNECT_ACK, &m).is_ok());
}

#[test]
fn missing_sub_messages_are_rejected() {
    let m = pb::ClientRequest {
        client: 1,
        seq: 1,
        op: None,
    };
    assert!(matches!(
        decode_pb(ids::REQUEST, &m),
        Err(WireError::MissingField {
            message: "ClientRequest",
            field: "op"
        })
    ));
    let m = pb::ClientRequest {
        client: 1,
        seq: 1,
        op: Some(pb::KvOp { op: None }),
    };
    assert!(matches!(
        decode_pb(ids::REQUEST, &m),
        Err(WireError::UnknownVariant {
            message: "KvOp",
            field: "op"
        })
    ));
    let m = pb::Response {
        seq: 1,
        result: None,
        ..Default::default()
    };
    assert!(matches!(
        decode_pb(ids::RESPONSE, &m),
        Err(WireError::MissingField { .. })
    ));
    let m = pb::Refused {
        seq: 1,
        reason: Some(pb::Refusal { reason: None }),
        ..Default::default()
    };
    assert!(matches!(
        decode_pb(ids::REFUSED, &m),
        Err(WireError::UnknownVariant { .. })
    ));

    // A ballot without its pid, deep inside a frame.
    let frame = pb::LinkFrame {
        payloads: vec![pb::PlPayload {
            payload: Some(pb::pl_payload::Payload::Paxos(pb::pl_payload::Paxos {
                partition: 0,
                epoch: 0,
                msg: Some(pb::PaxosMsg {
                    msg: Some(pb::paxos_msg::Msg::Decide(pb::paxos_msg::Decide {
                        n: Some(pb::Ballot { n: 1, pid: None }),
                        decided_idx: 1,
                    })),
                }),
            })),
        }],
        ..Default::default()
    };
    assert!(matches!(
        decode_pb(ids::LINK_FRAME, &frame),
        Err(WireError::MissingField {
            message: "Ballot",
            field: "pid"
        })
    ));
}

#[test]
fn unknown_oneof_variants_are_rejected() {
    // A PlPayload whose only field is number 15 (a variant from the future).
    let mut payload = Vec::new();
    prost::encoding::encode_key(15, prost::encoding::WireType::Varint, &mut payload);
    prost::encoding::encode_varint(1, &mut payload);
    let mut frame = Vec::new();
    prost::encoding::encode_key(4, prost::encoding::WireType::LengthDelimited, &mut frame);
    prost::encoding::encode_varint(payload.len() as u64, &mut frame);
    frame.extend_from_slice(&payload);
    assert_eq!(
        kv_wire::decode_slice(ids::LINK_FRAME, &frame).unwrap_err(),
        WireError::UnknownVariant {
            message: "PlPayload",
            field: "payload"
        }
    );
}

#[test]
fn invalid_lookup_tables_are_rejected() {
    let t = table();
    let good = pb::LookupTable {
        partitions: t.partitions,
        replication_degree: t.replication_degree as u64,
        nodes: t
            .nodes
            .iter()
            .map(|a| pb::Addr {
                ip: match a.ip() {
                    std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
                    std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
                },
                port: u32::from(a.port()),
            })
            .collect(),
        groups: vec![],
    };
    let mut good = good;
    good.groups = t
        .groups
        .iter()
        .map(|g| pb::lookup_table::Group {
            members: g
                .iter()
                .map(|a| good.nodes[t.nodes.binary_search(a).unwrap()].clone())
                .collect(),
        })
        .collect();
    assert!(!good.nodes.is_empty());

    // Tables travel in status replies.
    let wrap = |t: pb::LookupTable| pb::StatusReply {
        node: Some(good_addr()),
        table: Some(t),
        ..Default::default()
    };
    let ids_link = ids::STATUS_REPLY;
    assert!(decode_pb(ids_link, &wrap(good.clone())).is_ok());
    let mut unsorted = good.clone();
    unsorted.nodes.swap(0, 1);
    assert_eq!(
        decode_pb(ids_link, &wrap(unsorted)).unwrap_err(),
        WireError::InvalidTable(TableError::NodesNotSorted)
    );
    let mut even = good.clone();
    even.replication_degree = 2;
    assert_eq!(
        decode_pb(ids_link, &wrap(even)).unwrap_err(),
        WireError::InvalidTable(TableError::EvenReplication(2))
    );
    let mut huge = good.clone();
    huge.replication_degree = u64::MAX;
    assert!(matches!(
        decode_pb(ids_link, &wrap(huge)),
        Err(WireError::Overflow { .. } | WireError::InvalidTable(_))
    ));
    let mut short = good.clone();
    short.groups.pop();
    assert!(matches!(
        decode_pb(ids_link, &wrap(short)),
        Err(WireError::InvalidTable(TableError::GroupCount { .. }))
    ));
    let mut empty = good;
    empty.nodes.clear();
    empty.groups.clear();
    assert!(matches!(
        decode_pb(ids_link, &wrap(empty)),
        Err(WireError::InvalidTable(_))
    ));
}

#[test]
fn invalid_directory_states_are_rejected() {
    let wrap = |state: Vec<u8>| pb::LinkFrame {
        payloads: vec![pb::PlPayload {
            payload: Some(pb::pl_payload::Payload::Membership(pb::MembershipMsg {
                msg: Some(pb::membership_msg::Msg::State(state)),
            })),
        }],
        ..Default::default()
    };
    assert!(matches!(
        decode_pb(ids::LINK_FRAME, &wrap(b"not a directory".to_vec())),
        Err(WireError::InvalidDirectory(_))
    ));
    let boot = pb::LinkFrame {
        payloads: vec![pb::PlPayload {
            payload: Some(pb::pl_payload::Payload::Bootstrap(pb::BootstrapMsg {
                msg: Some(pb::bootstrap_msg::Msg::BootDirectory(vec![0; 40])),
            })),
        }],
        ..Default::default()
    };
    assert!(matches!(
        decode_pb(ids::LINK_FRAME, &boot),
        Err(WireError::InvalidDirectory(_))
    ));
    // A directory command in a partition's log, and an entry with no variant.
    let entry = |e: Option<pb::log_entry::Entry>| pb::LinkFrame {
        payloads: vec![pb::PlPayload {
            payload: Some(pb::pl_payload::Payload::Paxos(pb::pl_payload::Paxos {
                partition: 0,
                epoch: 0,
                msg: Some(pb::PaxosMsg {
                    msg: Some(pb::paxos_msg::Msg::ProposalForward(
                        pb::paxos_msg::ProposalForward {
                            log_entries: vec![pb::LogEntry { entry: e }],
                        },
                    )),
                }),
            })),
        }],
        ..Default::default()
    };
    let join = pb::DirCommand {
        cmd: Some(pb::dir_command::Cmd::Join(pb::Member {
            addr: Some(good_addr()),
            incarnation: 1,
        })),
    };
    assert!(matches!(
        decode_pb(
            ids::LINK_FRAME,
            &entry(Some(pb::log_entry::Entry::Dir(join)))
        ),
        Err(WireError::UnknownVariant { .. })
    ));
    assert!(matches!(
        decode_pb(ids::LINK_FRAME, &entry(None)),
        Err(WireError::UnknownVariant { .. })
    ));
}

#[test]
fn invalid_utf8_is_rejected() {
    // Connect { cluster: <0xff> }
    let bytes = [0x0a, 0x01, 0xff];
    assert!(matches!(
        kv_wire::decode_slice(ids::CONNECT, &bytes),
        Err(WireError::Protobuf(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        // Integration tests have no lib.rs for proptest to file regressions next to.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(
        id_index in 0usize..12,
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let ids = some_ids();
        let id = ids[id_index % ids.len()];
        let r = kv_wire::decode_slice(id, &bytes);
        if !ids::is_known(id) {
            prop_assert_eq!(r.unwrap_err(), WireError::UnknownId(id));
        }
    }

    #[test]
    fn corrupted_messages_never_panic(
        which in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let all = all_messages();
        let msg = which.get(&all);
        let (id, mut bytes) = kv_wire::encode_to_vec(msg);
        if bytes.is_empty() {
            return Ok(());
        }
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        let _ = kv_wire::decode_slice(id, &bytes);
    }
}

/// `KvOp` as a reader knew it before create-if-absent CAS and DELETE existed
/// (variants 1 to 3), to check what such a reader makes of the new variants.
#[derive(Clone, PartialEq, Message)]
struct KvOpBeforeDelete {
    #[prost(oneof = "kv_op_before_delete::Op", tags = "1, 2, 3")]
    op: Option<kv_op_before_delete::Op>,
}

mod kv_op_before_delete {
    use kv_wire::pb::kv_op::{Cas, Get, Put};

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Op {
        #[prost(message, tag = "1")]
        Get(Get),
        #[prost(message, tag = "2")]
        Put(Put),
        #[prost(message, tag = "3")]
        Cas(Cas),
    }
}

#[test]
fn an_older_reader_sees_no_operation_in_create_if_absent_or_delete() {
    // Its own variant, not a flag on `Cas`: an older reader must not run a
    // create-if-absent as a CAS expecting "" (or a DELETE as anything at all); it
    // finds the `oneof` unset and refuses the request as `UnknownVariant`.
    use pb::kv_op::{CasAbsent, Delete, Op};
    for op in [
        Op::CasAbsent(CasAbsent {
            key: "k".into(),
            new: "v".into(),
        }),
        Op::Delete(Delete { key: "k".into() }),
    ] {
        let bytes = pb::KvOp {
            op: Some(op.clone()),
        }
        .encode_to_vec();
        let old = KvOpBeforeDelete::decode(bytes.as_slice()).expect("valid protobuf");
        assert_eq!(old.op, None, "{op:?}");
    }
    // And the variants this version knows keep their numbers.
    let cas = Op::Cas(pb::kv_op::Cas {
        key: "k".into(),
        expected: "a".into(),
        new: "b".into(),
    });
    let bytes = pb::KvOp { op: Some(cas) }.encode_to_vec();
    let old = KvOpBeforeDelete::decode(bytes.as_slice()).expect("valid protobuf");
    assert!(matches!(old.op, Some(kv_op_before_delete::Op::Cas(_))));
}

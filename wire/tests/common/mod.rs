//! Sample messages shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use kv_ports::{AdminOp, AdminReply, AdminRequest, AdminResult, ReplicaMove};
use kv_ports::{
    BootstrapMsg, ClientMessage, ClientRequest, ClientResponse, LinkAck, LinkFrame, NetMessage,
    NodeStatus, PlPayload, Refusal, ReplicaStatus, Routed, StatusMessage, StatusRequest,
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

pub fn v4(i: u8) -> SocketAddr {
    format!("10.0.0.{i}:{}", 4000 + u16::from(i))
        .parse()
        .unwrap()
}

pub fn v6(i: u8) -> SocketAddr {
    format!("[2001:db8::{i:x}]:{}", 65535 - u16::from(i))
        .parse()
        .unwrap()
}

pub fn ballot(n: u64, i: u8) -> Ballot {
    Ballot { n, pid: v4(i) }
}

pub fn ops() -> Vec<KvOp> {
    vec![
        KvOp::Get { key: "k".into() },
        KvOp::Get { key: String::new() },
        KvOp::Put {
            key: "känguru".into(),
            value: "v".repeat(300),
        },
        KvOp::Cas {
            key: "k".into(),
            expected: Some(String::new()),
            new: "🦀".into(),
        },
        KvOp::Cas {
            key: "k".into(),
            expected: None,
            new: "🦀".into(),
        },
        KvOp::Cas {
            key: String::new(),
            expected: None,
            new: String::new(),
        },
        KvOp::Delete { key: "k".into() },
        KvOp::Delete { key: String::new() },
    ]
}

pub fn commands(n: usize) -> Vec<KvCommand> {
    let ops = ops();
    (0..n)
        .map(|i| KvCommand {
            client: 0xdead_beef_0000_0000 + i as u64,
            seq: i as u64 + 1,
            reply_to: if i % 2 == 0 { v4(200) } else { v6(200) },
            origin: v4((i % 3) as u8 + 1),
            stamp_ms: 1_700_000_000_000 + i as u64,
            op: ops[i % ops.len()].clone(),
        })
        .collect()
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        idx: 42,
        data: std::sync::Arc::new((0..=255u8).cycle().take(1000).collect()),
    }
}

/// `n` log entries: client commands, the last one a stop-sign when `n > 2`.
pub fn entries(n: usize) -> Vec<KvEntry> {
    let mut es: Vec<KvEntry> = commands(n).into_iter().map(KvEntry::Cmd).collect();
    if n > 2 {
        es[n - 1] = KvEntry::Stop(StopSign { epoch: n as u64 });
    }
    es
}

pub fn paxos_msgs() -> Vec<PaxosMsg<KvEntry>> {
    vec![
        PaxosMsg::Prepare(Prepare {
            n: ballot(7, 1),
            decided_idx: 10,
            n_accepted: ballot(6, 2),
            accepted_idx: 12,
        }),
        PaxosMsg::Promise(Promise {
            n: ballot(7, 1),
            n_accepted: ballot(5, 3),
            decided_idx: 3,
            accepted_idx: 9,
            suffix: entries(5),
            snapshot: Some(snapshot()),
        }),
        PaxosMsg::Promise(Promise {
            n: ballot(7, 1),
            n_accepted: Ballot::initial(v6(3)),
            decided_idx: 0,
            accepted_idx: 0,
            suffix: vec![],
            snapshot: None,
        }),
        PaxosMsg::AcceptSync(AcceptSync {
            n: ballot(8, 2),
            sync_idx: 42,
            suffix: entries(3),
            decided_idx: 43,
            snapshot: Some(snapshot()),
        }),
        PaxosMsg::AcceptSync(AcceptSync {
            n: ballot(8, 2),
            sync_idx: 0,
            suffix: vec![],
            decided_idx: 0,
            snapshot: Some(Snapshot {
                idx: 0,
                data: std::sync::Arc::new(vec![]),
            }),
        }),
        PaxosMsg::AcceptDecide(AcceptDecide {
            n: ballot(8, 2),
            start_idx: 100,
            entries: entries(64),
            decided_idx: 99,
        }),
        PaxosMsg::Accepted(Accepted {
            n: ballot(8, 2),
            accepted_idx: u64::MAX,
        }),
        PaxosMsg::Decide(Decide {
            n: ballot(u64::MAX, 3),
            decided_idx: 164,
        }),
        PaxosMsg::ProposalForward(entries(2)),
        PaxosMsg::ProposalForward(vec![]),
        PaxosMsg::PrepareReq,
        PaxosMsg::Compaction {
            n: ballot(8, 2),
            applied_idx: 150,
        },
    ]
}

/// A directory with a joined member and a moved group.
pub fn directory() -> Directory {
    let members = vec![v4(1), v4(2), v4(3), v6(4), v6(5)]
        .into_iter()
        .enumerate()
        .map(|(i, addr)| Member {
            addr,
            incarnation: 100 + i as u64,
        })
        .collect();
    let mut d = Directory::seed(members, 4, 3).unwrap();
    d.apply(&DirCommand::Join(Member {
        addr: v4(9),
        incarnation: 9,
    }));
    for cmd in d.plan_repair(&[v4(1)].into_iter().collect()) {
        d.apply(&cmd);
    }
    d
}

pub fn table() -> LookupTable {
    let nodes = vec![v4(1), v4(2), v4(3), v6(4), v6(5)];
    LookupTable::build(nodes, 4, 3).unwrap()
}

pub fn payloads() -> Vec<PlPayload> {
    let mut ps = vec![
        PlPayload::Epfd(EpfdMsg::HeartbeatRequest { seq: 1 }),
        PlPayload::Epfd(EpfdMsg::HeartbeatReply { seq: u64::MAX }),
        PlPayload::Ble {
            partition: 3,
            epoch: 0,
            msg: BleMsg::HeartbeatRequest { round: 9 },
        },
        PlPayload::Ble {
            partition: 0,
            epoch: 12,
            msg: BleMsg::HeartbeatReply {
                round: 9,
                ballot: ballot(4, 5),
                quorum_connected: true,
            },
        },
        PlPayload::Ble {
            partition: u32::MAX,
            epoch: u64::MAX,
            msg: BleMsg::HeartbeatReply {
                round: 0,
                ballot: Ballot::initial(v6(1)),
                quorum_connected: false,
            },
        },
        PlPayload::Bootstrap(BootstrapMsg::CheckIn {
            cluster: "course".into(),
            incarnation: u64::MAX,
        }),
        PlPayload::Bootstrap(BootstrapMsg::Boot(Arc::new(directory()))),
        PlPayload::Membership(MembershipMsg::Join(Member {
            addr: v6(7),
            incarnation: 42,
        })),
        PlPayload::Membership(MembershipMsg::State(Arc::new(directory()))),
        PlPayload::Membership(MembershipMsg::Ble {
            epoch: 3,
            msg: BleMsg::HeartbeatRequest { round: 9 },
        }),
        PlPayload::Membership(MembershipMsg::Paxos {
            epoch: u64::MAX,
            msg: PaxosMsg::AcceptDecide(AcceptDecide {
                n: ballot(2, 1),
                start_idx: 4,
                entries: vec![
                    DirCommand::Join(Member {
                        addr: v4(8),
                        incarnation: 0,
                    }),
                    DirCommand::Reconfigure {
                        group: u32::MAX,
                        from_epoch: 2,
                        replicas: vec![
                            Member {
                                addr: v4(1),
                                incarnation: 5,
                            },
                            Member {
                                addr: v6(4),
                                incarnation: 6,
                            },
                        ],
                    },
                    DirCommand::Remove(v6(5)),
                    DirCommand::Stopped { group: 3, epoch: 9 },
                ],
                decided_idx: 3,
            }),
        }),
        PlPayload::Membership(MembershipMsg::Propose(DirCommand::Stopped {
            group: 0,
            epoch: 0,
        })),
        PlPayload::Transfer(TransferMsg::Request {
            group: 2,
            epoch: 5,
            offset: 1 << 40,
            len: 256 * 1024,
        }),
        PlPayload::Transfer(TransferMsg::Chunk {
            group: 2,
            epoch: 5,
            total_len: 3000,
            checksum: 0xfeed_f00d,
            offset: 1000,
            data: (0..=255u8).cycle().take(1000).collect(),
        }),
        PlPayload::Transfer(TransferMsg::Unavailable {
            group: u32::MAX,
            epoch: 1,
        }),
        PlPayload::PaxosLarge {
            partition: 4,
            epoch: 2,
            msg: kv_ports::LargePaxosMsg::Offer {
                id: 9,
                len: 500 << 20,
            },
        },
        PlPayload::PaxosLarge {
            partition: u32::MAX,
            epoch: u64::MAX,
            msg: kv_ports::LargePaxosMsg::Transfer {
                id: u64::MAX,
                msg: TransferMsg::Chunk {
                    group: u32::MAX,
                    epoch: u64::MAX,
                    total_len: 3000,
                    checksum: 7,
                    offset: 0,
                    data: vec![1, 2, 3],
                },
            },
        },
        PlPayload::Bootstrap(BootstrapMsg::Rejected {
            reason: "too late".into(),
        }),
        PlPayload::Forward(Routed {
            partition: 2,
            requests: vec![
                ClientRequest {
                    client: 77,
                    seq: 3,
                    op: KvOp::Put {
                        key: "a".into(),
                        value: "b".into(),
                    },
                },
                ClientRequest {
                    client: 78,
                    seq: 1,
                    op: KvOp::Get { key: "c".into() },
                },
            ],
            reply_to: v6(9),
        }),
    ];
    ps.extend(
        paxos_msgs()
            .into_iter()
            .enumerate()
            .map(|(i, msg)| PlPayload::Paxos {
                partition: i as u32,
                epoch: i as u64 * 7,
                msg,
            }),
    );
    ps
}

pub fn client_messages() -> Vec<ClientMessage> {
    let mut ms = vec![
        ClientMessage::Connect {
            cluster: "course".into(),
        },
        ClientMessage::Connect {
            cluster: String::new(),
        },
        ClientMessage::ConnectAck {
            entry: v4(1),
            nodes: vec![v4(1), v4(2), v6(3)],
            partitions: 2,
        },
        ClientMessage::ConnectAck {
            entry: v6(1),
            nodes: vec![],
            partitions: 0,
        },
        ClientMessage::Response {
            client: 0x5e55_5101,
            seq: 1,
            result: KvResult::Value("x".into()),
        },
        ClientMessage::Response {
            client: 0x5e55_5102,
            seq: 2,
            result: KvResult::Value(String::new()),
        },
        ClientMessage::Response {
            client: 0x5e55_5103,
            seq: 3,
            result: KvResult::Done,
        },
        ClientMessage::Response {
            client: 0x5e55_5104,
            seq: 4,
            result: KvResult::NotFound,
        },
        ClientMessage::Response {
            client: 0x5e55_5105,
            seq: 5,
            result: KvResult::CasMismatch {
                current: "cur".into(),
            },
        },
        ClientMessage::Refused {
            client: 0,
            seq: 0,
            reason: Refusal::Busy,
        },
        ClientMessage::Refused {
            client: u64::MAX,
            seq: 6,
            reason: Refusal::TooLarge("key of 2 MiB".into()),
        },
        ClientMessage::Refused {
            client: u64::MAX,
            seq: 7,
            reason: Refusal::NotReady("booting".into()),
        },
        ClientMessage::Refused {
            client: u64::MAX,
            seq: 8,
            reason: Refusal::WrongCluster("other".into()),
        },
        ClientMessage::Refused {
            client: 3,
            seq: 9,
            reason: Refusal::Moved {
                partition: 7,
                epoch: 12,
                replicas: vec![v4(1), v6(2)],
            },
        },
        ClientMessage::Refused {
            client: 3,
            seq: 10,
            reason: Refusal::Moved {
                partition: 0,
                epoch: 1,
                replicas: vec![],
            },
        },
    ];
    let requests: Vec<ClientRequest> = ops()
        .into_iter()
        .enumerate()
        .map(|(i, op)| ClientRequest {
            client: u64::MAX - i as u64,
            seq: i as u64,
            op,
        })
        .collect();
    ms.extend(requests.iter().cloned().map(ClientMessage::Request));
    ms.push(ClientMessage::Requests(requests));
    ms.push(ClientMessage::Requests(Vec::new()));
    let responses: Vec<ClientResponse> = ms
        .iter()
        .filter_map(|m| match m {
            ClientMessage::Response {
                client,
                seq,
                result,
            } => Some(ClientResponse {
                client: *client,
                seq: *seq,
                result: result.clone(),
            }),
            _ => None,
        })
        .collect();
    ms.push(ClientMessage::Responses(responses));
    ms.push(ClientMessage::Responses(Vec::new()));
    ms
}

pub fn frame(payloads: Vec<PlPayload>, ack: Option<LinkAck>) -> LinkFrame {
    LinkFrame {
        cluster: kv_ports::cluster_fingerprint("course"),
        incarnation: 0x0123_4567_89ab_cdef,
        first_seq: 17,
        payloads: payloads.into_iter().map(Arc::new).collect(),
        ack,
    }
}

/// Every sample message: each client message, a frame per payload, a frame with all
/// payloads, an ack-only frame and an empty frame.
pub fn all_messages() -> Vec<NetMessage> {
    let mut ms: Vec<NetMessage> = client_messages()
        .into_iter()
        .map(NetMessage::Client)
        .collect();
    ms.extend(
        payloads()
            .into_iter()
            .map(|p| NetMessage::Link(frame(vec![p], None))),
    );
    ms.push(NetMessage::Link(frame(
        payloads(),
        Some(LinkAck {
            incarnation: u64::MAX,
            seq: 5,
        }),
    )));
    ms.push(NetMessage::Link(frame(
        vec![],
        Some(LinkAck {
            incarnation: 1,
            seq: 0,
        }),
    )));
    ms.push(NetMessage::Link(frame(vec![], None)));
    ms.extend(status_messages().into_iter().map(NetMessage::Status));
    ms
}

/// Status queries: requests, and replies of a booted node (leader and follower
/// replicas, suspicions, IPv6), a node still booting and a node left out.
pub fn status_messages() -> Vec<StatusMessage> {
    let table = LookupTable::build(vec![v4(1), v4(2), v4(3), v6(4), v6(5)], 3, 3).unwrap();
    let booted = NodeStatus {
        nonce: 0x1234_5678_9abc_def0,
        node: v4(2),
        cluster: "course".into(),
        uptime_ms: 86_400_000,
        table: Some(Arc::new(table)),
        not_in_table: None,
        replicas: vec![
            ReplicaStatus {
                partition: 0,
                leader: Some(ballot(7, 2)),
                is_leader: true,
                promised: Some(ballot(7, 2)),
                decided_idx: 1_000,
                log_len: 1_003,
                first_retained_idx: 900,
                applied_idx: 1_000,
                keys: 17,
                inflight: 3,
                pending: 2,
                epoch: 4,
            },
            ReplicaStatus {
                partition: 2,
                leader: Some(Ballot {
                    n: u64::MAX,
                    pid: v6(5),
                }),
                is_leader: false,
                promised: Some(Ballot {
                    n: u64::MAX,
                    pid: v6(5),
                }),
                decided_idx: u64::MAX,
                log_len: u64::MAX,
                first_retained_idx: u64::MAX - 1,
                applied_idx: u64::MAX,
                keys: 1,
                inflight: 0,
                pending: 0,
                epoch: 0,
            },
            ReplicaStatus {
                partition: 1,
                ..ReplicaStatus::default()
            },
        ],
        suspected: vec![v4(3), v6(4)],
        incarnation: u64::MAX,
        members: directory().members(),
        directory_version: Some(3),
    };
    let booting = NodeStatus {
        nonce: 1,
        node: v6(9),
        cluster: String::new(),
        uptime_ms: 5,
        table: None,
        not_in_table: None,
        replicas: vec![],
        suspected: vec![],
        incarnation: 0,
        members: vec![],
        directory_version: None,
    };
    let left_out = NodeStatus {
        nonce: 2,
        node: v4(9),
        cluster: "course".into(),
        uptime_ms: 0,
        table: None,
        not_in_table: Some("checked in after the cluster formed".into()),
        replicas: vec![],
        suspected: vec![v4(1)],
        incarnation: 12,
        members: vec![],
        directory_version: None,
    };
    vec![
        StatusMessage::Request(StatusRequest { nonce: 0 }),
        StatusMessage::Request(StatusRequest { nonce: u64::MAX }),
        StatusMessage::Reply(Box::new(booted)),
        StatusMessage::Reply(Box::new(booting)),
        StatusMessage::Reply(Box::new(left_out)),
    ]
    .into_iter()
    .chain(admin_messages())
    .collect()
}

/// Every kind of admin request and reply (`kvstore remove`, `kvstore rebalance`).
pub fn admin_messages() -> Vec<StatusMessage> {
    let reply = |nonce, result| StatusMessage::AdminReply(AdminReply { nonce, result });
    vec![
        StatusMessage::Admin(AdminRequest {
            nonce: 1,
            op: AdminOp::Remove(v4(2)),
        }),
        StatusMessage::Admin(AdminRequest {
            nonce: u64::MAX,
            op: AdminOp::Remove(v6(5)),
        }),
        StatusMessage::Admin(AdminRequest {
            nonce: 0,
            op: AdminOp::Rebalance,
        }),
        reply(
            7,
            AdminResult::Moving(vec![
                ReplicaMove {
                    group: 0,
                    from_epoch: 2,
                    from: v4(1),
                    to: v6(4),
                },
                ReplicaMove {
                    group: u32::MAX,
                    from_epoch: 0,
                    from: v4(1),
                    to: v4(3),
                },
            ]),
        ),
        reply(8, AdminResult::Removing),
        reply(9, AdminResult::NotAMember),
        reply(10, AdminResult::Balanced { min: 1, max: 2 }),
        reply(11, AdminResult::Balanced { min: 0, max: 0 }),
        reply(12, AdminResult::Wait("partition 3 is still moving".into())),
        reply(13, AdminResult::Refused("no other live member".into())),
        reply(u64::MAX, AdminResult::NotReady),
    ]
}

pub fn dbg<T: std::fmt::Debug>(t: &T) -> String {
    format!("{t:?}")
}

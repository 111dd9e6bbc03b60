//! Hand-built message sequences, one behaviour each.
//!
//! The settings use 1 ms ticks, so a tick count reads as milliseconds: request
//! timeout 100 ticks, deadline 1000 ticks.

use std::net::SocketAddr;
use std::time::Duration;

use kv_ports::ClientResponse;

use super::*;

const ME: ClientId = 7;

fn node(i: u16) -> NodeId {
    SocketAddr::from(([10, 0, 0, 1], 7000 + i))
}

fn settings() -> ClientSettings {
    ClientSettings {
        endpoint: node(0),
        cluster: "test".to_string(),
        client_id: ME,
        request_timeout: Duration::from_millis(100),
        deadline: Duration::from_secs(1),
        tick_period: Duration::from_millis(1),
    }
}

/// The outputs of one step, sorted by kind (each kind keeps its order).
#[derive(Debug, Default)]
struct Out {
    sends: Vec<(NodeId, ClientMessage)>,
    done: Vec<Completion>,
    connected: Vec<(u64, Result<Vec<NodeId>, KvError>)>,
}

impl Out {
    /// Every request sent, with its destination, batches unpacked.
    fn requests(&self) -> Vec<(NodeId, ClientRequest)> {
        let mut v = Vec::new();
        for (to, m) in &self.sends {
            match m {
                ClientMessage::Request(r) => v.push((*to, r.clone())),
                ClientMessage::Requests(rs) => v.extend(rs.iter().map(|r| (*to, r.clone()))),
                _ => {}
            }
        }
        v
    }

    fn connects(&self) -> Vec<NodeId> {
        self.sends
            .iter()
            .filter(|(_, m)| matches!(m, ClientMessage::Connect { .. }))
            .map(|(to, _)| *to)
            .collect()
    }
}

fn out(core: &mut ClientCore) -> Out {
    let mut o = Out::default();
    for x in core.take_outputs() {
        match x {
            ClientOutput::Send { to, msg } => o.sends.push((to, msg)),
            ClientOutput::Completed(c) => o.done.push(c),
            ClientOutput::Connected { token, result } => o.connected.push((token, result)),
        }
    }
    o
}

fn ticks(core: &mut ClientCore, n: u64) -> Out {
    let mut all = Out::default();
    for _ in 0..n {
        core.tick();
        let o = out(core);
        all.sends.extend(o.sends);
        all.done.extend(o.done);
        all.connected.extend(o.connected);
    }
    all
}

fn cluster() -> Vec<NodeId> {
    vec![node(1), node(2), node(3)]
}

/// A core whose connect was answered: entry node 1, nodes 1..=3.
fn connected(partitions: u32) -> ClientCore {
    let mut core = ClientCore::new(settings());
    out(&mut core);
    core.handle(
        node(0),
        ClientMessage::ConnectAck {
            entry: node(1),
            nodes: cluster(),
            partitions,
        },
    );
    out(&mut core);
    core
}

fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn response(client: ClientId, seq: u64, v: &str) -> ClientMessage {
    ClientMessage::Response {
        client,
        seq,
        result: KvResult::Value(v.to_string()),
    }
}

fn refused(seq: u64, reason: Refusal) -> ClientMessage {
    ClientMessage::Refused {
        client: ME,
        seq,
        reason,
    }
}

/// A key of partition `p` (of `partitions`).
fn key_in(core: &ClientCore, p: PartitionId) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| core.partition_of_key(k) == Some(p))
        .expect("some key falls in every partition")
}

fn only_request(o: &Out) -> (NodeId, ClientRequest) {
    let r = o.requests();
    assert_eq!(r.len(), 1, "{o:?}");
    r[0].clone()
}

#[test]
fn the_first_output_is_a_connect_to_the_endpoint_repeated_every_timeout() {
    let mut core = ClientCore::new(settings());
    let o = out(&mut core);
    assert_eq!(o.connects(), vec![node(0)]);
    match &o.sends[0].1 {
        ClientMessage::Connect { cluster } => assert_eq!(cluster, "test"),
        m => panic!("{m:?}"),
    }
    assert!(ticks(&mut core, 99).connects().is_empty());
    assert_eq!(ticks(&mut core, 1).connects(), vec![node(0)]);
    assert_eq!(ticks(&mut core, 100).connects(), vec![node(0)]);
}

#[test]
fn a_connect_ack_gives_the_entry_and_the_nodes_and_answers_waiters() {
    let mut core = ClientCore::new(settings());
    out(&mut core);
    core.await_connected(1);
    assert!(out(&mut core).connected.is_empty());
    // An ack without nodes is not an answer.
    core.handle(
        node(0),
        ClientMessage::ConnectAck {
            entry: node(1),
            nodes: vec![],
            partitions: 1,
        },
    );
    assert!(!core.is_connected());
    core.handle(
        node(0),
        ClientMessage::ConnectAck {
            entry: node(2),
            nodes: cluster(),
            partitions: 1,
        },
    );
    let o = out(&mut core);
    assert_eq!(o.connected, vec![(1, Ok(cluster()))]);
    assert_eq!(core.nodes(), &cluster()[..]);
    // A later ack changes nothing; later waiters are answered at once.
    core.handle(
        node(0),
        ClientMessage::ConnectAck {
            entry: node(3),
            nodes: vec![node(3)],
            partitions: 4,
        },
    );
    core.await_connected(2);
    assert_eq!(out(&mut core).connected, vec![(2, Ok(cluster()))]);
    // Operations go to the entry node; no more connects.
    core.submit(ME, 1, put("k", "v"));
    assert_eq!(only_request(&out(&mut core)).0, node(2));
    assert!(ticks(&mut core, 500).connects().is_empty());
}

#[test]
fn waiters_fail_at_the_deadline_when_no_node_answers() {
    let mut core = ClientCore::new(settings());
    out(&mut core);
    core.await_connected(5);
    assert!(ticks(&mut core, 999).connected.is_empty());
    let o = ticks(&mut core, 1);
    assert_eq!(o.connected.len(), 1);
    let (token, result) = &o.connected[0];
    assert_eq!(*token, 5);
    match result {
        Err(KvError::Unavailable(m)) => {
            assert!(m.contains("no answer from 10.0.0.1:7000 within 1s"), "{m}")
        }
        r => panic!("{r:?}"),
    }
    // The client keeps trying, and a late ack still connects it.
    assert!(!ticks(&mut core, 100).connects().is_empty());
    core.handle(
        node(0),
        ClientMessage::ConnectAck {
            entry: node(1),
            nodes: cluster(),
            partitions: 1,
        },
    );
    assert!(core.is_connected());
}

#[test]
fn a_wrong_cluster_refusal_of_the_connect_fails_every_operation() {
    let mut core = ClientCore::new(settings());
    out(&mut core);
    core.await_connected(1);
    core.submit(ME, 10, put("a", "1"));
    core.submit(ME, 11, put("b", "2"));
    assert_eq!(only_request(&out(&mut core)).0, node(0));
    core.handle(
        node(0),
        ClientMessage::Refused {
            client: 0,
            seq: 0,
            reason: Refusal::WrongCluster("other".to_string()),
        },
    );
    let o = out(&mut core);
    let err = KvError::Rejected("wrong cluster: other".to_string());
    assert_eq!(o.connected, vec![(1, Err(err.clone()))]);
    assert_eq!(
        o.done,
        vec![(ME, 10, Err(err.clone())), (ME, 11, Err(err.clone()))]
    );
    assert!(o.sends.is_empty());
    core.submit(ME, 12, put("c", "3"));
    assert_eq!(out(&mut core).done, vec![(ME, 12, Err(err.clone()))]);
    core.await_connected(2);
    assert_eq!(out(&mut core).connected, vec![(2, Err(err))]);
    assert!(ticks(&mut core, 300).sends.is_empty());
}

#[test]
fn a_not_ready_refusal_of_the_connect_is_retried_on_the_next_timeout() {
    let mut core = ClientCore::new(settings());
    out(&mut core);
    core.handle(
        node(0),
        ClientMessage::Refused {
            client: 0,
            seq: 0,
            reason: Refusal::NotReady("booting".to_string()),
        },
    );
    assert!(out(&mut core).sends.is_empty());
    assert_eq!(ticks(&mut core, 100).connects(), vec![node(0)]);
}

#[test]
fn a_session_runs_one_operation_at_a_time_with_increasing_sequence_numbers() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "a"));
    core.submit(ME, 2, put("k", "b"));
    core.submit(ME, 3, put("k", "c"));
    let (_, r) = only_request(&out(&mut core));
    assert_eq!((r.client, r.seq, r.op.clone()), (ME, 1, put("k", "a")));
    assert_eq!(core.in_progress(), 1);
    for (seq, tag, next) in [(1, 1, Some("b")), (2, 2, Some("c")), (3, 3, None)] {
        core.handle(node(1), response(ME, seq, "x"));
        let o = out(&mut core);
        assert_eq!(
            o.done,
            vec![(ME, tag, Ok(KvResult::Value("x".to_string())))]
        );
        match next {
            Some(v) => {
                let (_, r) = only_request(&o);
                assert_eq!((r.seq, r.op), (seq + 1, put("k", v)));
            }
            None => assert!(o.sends.is_empty()),
        }
    }
    assert_eq!(core.in_progress(), 0);
}

#[test]
fn an_unanswered_attempt_goes_to_the_next_node_with_the_same_sequence_number() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    core.submit(ME, 2, put("k", "w"));
    assert_eq!(only_request(&out(&mut core)).0, node(1));
    assert!(ticks(&mut core, 99).sends.is_empty());
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (to, r) = only_request(&ticks(&mut core, 100));
        assert_eq!((r.client, r.seq, r.op), (ME, 1, put("k", "v")));
        seen.push(to);
    }
    assert_eq!(seen, vec![node(2), node(3), node(1), node(2)]);
    // The answer to the first attempt still counts.
    core.handle(node(1), response(ME, 1, "late"));
    let o = out(&mut core);
    assert_eq!(o.done.len(), 1);
    assert_eq!(only_request(&o).1.seq, 2);
}

#[test]
fn deletes_and_creates_are_routed_by_their_key_and_retried_with_the_same_sequence_number() {
    let mut core = connected(2);
    let k1 = key_in(&core, 1);
    core.submit(ME, 1, put(&k1, "v"));
    out(&mut core);
    core.handle(node(3), response(ME, 1, "ok"));
    out(&mut core);
    let delete = KvOp::Delete { key: k1.clone() };
    let create = KvOp::Cas {
        key: k1,
        expected: None,
        new: "w".to_string(),
    };
    core.submit(ME, 2, delete.clone());
    core.submit(ME, 3, create.clone());
    // To the partition's leader hint, like any operation on that key.
    let first = ClientRequest {
        client: ME,
        seq: 2,
        op: delete.clone(),
    };
    assert_eq!(only_request(&out(&mut core)), (node(3), first));
    // A lost answer: the retry carries the same (client, seq), so the state
    // machine answers it from the session instead of deleting again.
    let (to, r) = only_request(&ticks(&mut core, 100));
    assert_eq!((to, r.seq, r.op), (node(1), 2, delete));
    let done = |seq, result| ClientMessage::Response {
        client: ME,
        seq,
        result,
    };
    core.handle(node(1), done(2, KvResult::Done));
    let o = out(&mut core);
    assert_eq!(o.done, vec![(ME, 2, Ok(KvResult::Done))]);
    assert_eq!(only_request(&o).1.op, create);
    let current = KvResult::CasMismatch {
        current: "x".to_string(),
    };
    core.handle(node(1), done(3, current.clone()));
    assert_eq!(out(&mut core).done, vec![(ME, 3, Ok(current))]);
}

#[test]
fn the_node_that_answers_becomes_the_partitions_leader_hint() {
    let mut core = connected(2);
    let (k0, k1) = (key_in(&core, 0), key_in(&core, 1));
    core.submit(ME, 1, put(&k0, "v"));
    assert_eq!(only_request(&out(&mut core)).0, node(1));
    core.handle(node(3), response(ME, 1, "ok"));
    out(&mut core);
    assert_eq!(core.leader_hint(0), Some(node(3)));
    assert_eq!(core.leader_hint(1), None);
    core.submit(ME, 2, put(&k0, "w"));
    assert_eq!(only_request(&out(&mut core)).0, node(3));
    core.handle(node(3), response(ME, 2, "ok"));
    out(&mut core);
    // Another partition still goes to the entry node.
    core.submit(ME, 3, put(&k1, "w"));
    assert_eq!(only_request(&out(&mut core)).0, node(1));
}

#[test]
fn a_fail_over_forgets_the_leader_hint() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    out(&mut core);
    core.handle(node(2), response(ME, 1, "ok"));
    out(&mut core);
    core.submit(ME, 2, put("k", "w"));
    assert_eq!(only_request(&out(&mut core)).0, node(2));
    assert_eq!(only_request(&ticks(&mut core, 100)).0, node(3));
    assert_eq!(core.leader_hint(0), None);
    // Answered by the node it failed over to: that one is the leader now.
    core.handle(node(3), response(ME, 2, "ok"));
    out(&mut core);
    assert_eq!(core.leader_hint(0), Some(node(3)));
}

#[test]
fn busy_backs_off_with_jitter_and_resends_to_the_same_node() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    out(&mut core);
    core.handle(node(1), refused(1, Refusal::Busy));
    assert!(out(&mut core).sends.is_empty());
    assert_eq!(core.stats().busy, 1);
    // First back-off: 20 ms plus 0..=10 ms of jitter.
    assert!(ticks(&mut core, 19).sends.is_empty());
    let mut waited = 19;
    let (to, r) = loop {
        waited += 1;
        let o = ticks(&mut core, 1);
        if !o.sends.is_empty() {
            break only_request(&o);
        }
    };
    assert!((20..=30).contains(&waited), "{waited}");
    assert_eq!((to, r.seq), (node(1), 1));
    // NotReady backs off the same way without counting as busy.
    core.handle(node(1), refused(1, Refusal::NotReady("booting".into())));
    assert!(out(&mut core).sends.is_empty());
    assert_eq!(core.stats().busy, 1);
    let o = ticks(&mut core, 50);
    assert_eq!(only_request(&o), (node(1), r));
}

#[test]
fn the_back_off_doubles_up_to_640_ms() {
    let mut s = settings();
    s.deadline = Duration::from_secs(10);
    let mut core = ClientCore::new(s);
    out(&mut core);
    core.submit(ME, 1, put("k", "v"));
    out(&mut core);
    let mut waits = Vec::new();
    for _ in 0..8 {
        core.handle(node(0), refused(1, Refusal::Busy));
        out(&mut core);
        let mut w = 0;
        loop {
            w += 1;
            if !ticks(&mut core, 1).requests().is_empty() {
                break;
            }
        }
        waits.push(w);
    }
    let bases = [20, 40, 80, 160, 320, 640, 640, 640];
    for (w, b) in waits.iter().zip(bases) {
        assert!((b..=b + 10).contains(w), "{waits:?}");
    }
    assert_eq!(core.stats().busy, 8);
}

#[test]
fn the_back_off_is_rounded_up_to_whole_ticks() {
    let mut s = settings();
    s.tick_period = Duration::from_millis(7);
    s.request_timeout = Duration::from_millis(100);
    let mut core = ClientCore::new(s);
    assert_eq!(core.request_timeout_ticks(), 15);
    assert_eq!(core.deadline_ticks(), 143);
    out(&mut core);
    core.submit(ME, 1, put("k", "v"));
    out(&mut core);
    core.handle(node(0), refused(1, Refusal::Busy));
    // 20..=30 ms is 3..=5 ticks of 7 ms.
    let mut w = 0;
    while ticks(&mut core, 1).requests().is_empty() {
        w += 1;
    }
    assert!((2..=4).contains(&w), "{w}");
}

#[test]
fn an_operation_unanswered_by_its_deadline_is_unavailable() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    core.submit(ME, 2, put("k", "w"));
    out(&mut core);
    let o = ticks(&mut core, 999);
    assert!(o.done.is_empty());
    assert_eq!(o.requests().len(), 9, "one attempt per request timeout");
    let o = ticks(&mut core, 1);
    match &o.done[..] {
        [(ME, 1, Err(KvError::Unavailable(m)))] => {
            assert!(m.contains("within 1s (is the cluster up?)"), "{m}")
        }
        d => panic!("{d:?}"),
    }
    // The next operation starts at once, with the next sequence number.
    assert_eq!(only_request(&o).1.seq, 2);
}

#[test]
fn the_deadline_holds_while_backing_off() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    out(&mut core);
    let mut done = Vec::new();
    for _ in 0..1000 {
        core.tick();
        let o = out(&mut core);
        for (to, r) in o.requests() {
            core.handle(to, refused(r.seq, Refusal::Busy));
        }
        done.extend(o.done);
        done.extend(out(&mut core).done);
    }
    assert!(matches!(done[..], [(ME, 1, Err(KvError::Unavailable(_)))]));
}

#[test]
fn other_refusals_reject_the_operation() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    core.submit(ME, 2, put("k", "w"));
    out(&mut core);
    core.handle(node(1), refused(1, Refusal::TooLarge("value 9 MB".into())));
    let o = out(&mut core);
    assert_eq!(
        o.done,
        vec![(ME, 1, Err(KvError::Rejected("value 9 MB".into())))]
    );
    core.handle(node(1), refused(2, Refusal::WrongCluster("x".into())));
    assert_eq!(
        out(&mut core).done,
        vec![(ME, 2, Err(KvError::Rejected("wrong cluster: x".into())))]
    );
}

#[test]
fn stale_duplicate_and_foreign_answers_are_ignored() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    core.submit(ME, 2, put("k", "w"));
    out(&mut core);
    core.handle(node(1), response(ME, 1, "one"));
    assert_eq!(out(&mut core).done.len(), 1);
    // A second copy of the answer to 1, an answer to a future 3, another session's
    // answer, and refusals of finished or future operations: nothing happens.
    core.handle(node(1), response(ME, 1, "one"));
    core.handle(node(1), response(ME, 3, "three"));
    core.handle(node(1), response(ME + 1, 2, "other"));
    core.handle(node(1), refused(1, Refusal::TooLarge("x".into())));
    core.handle(node(1), refused(3, Refusal::Busy));
    core.handle(
        node(1),
        ClientMessage::Connect {
            cluster: "x".into(),
        },
    );
    let o = out(&mut core);
    assert!(o.done.is_empty() && o.sends.is_empty(), "{o:?}");
    assert_eq!(core.stats().busy, 0);
    core.handle(node(1), response(ME, 2, "two"));
    assert_eq!(
        out(&mut core).done,
        vec![(ME, 2, Ok(KvResult::Value("two".into())))]
    );
}

#[test]
fn an_unknown_session_is_rejected() {
    let mut core = connected(1);
    core.submit(99, 4, put("k", "v"));
    let o = out(&mut core);
    assert_eq!(
        o.done,
        vec![(
            99,
            4,
            Err(KvError::Rejected("no session 99 on this client".into()))
        )]
    );
    assert!(o.sends.is_empty());
}

#[test]
fn requests_of_several_sessions_gather_per_node_until_the_flush() {
    let mut core = connected(2);
    let (k0, k1) = (key_in(&core, 0), key_in(&core, 1));
    for s in [11, 12, 13] {
        core.open_session(s);
    }
    // Learn a leader for partition 1.
    core.submit(11, 0, put(&k1, "x"));
    assert_eq!(only_request(&out(&mut core)).0, node(1));
    assert!(!core.take_flush_request(), "a lone request leaves at once");
    core.handle(node(2), response(11, 1, "ok"));
    out(&mut core);

    core.submit_batch(vec![
        (11, 1, put(&k0, "a")),
        (12, 2, put(&k1, "b")),
        (13, 3, put(&k0, "c")),
    ]);
    assert!(core.take_flush_request());
    assert!(!core.take_flush_request(), "asked once");
    assert!(out(&mut core).sends.is_empty());
    core.flush();
    let o = out(&mut core);
    assert_eq!(o.sends.len(), 2, "{o:?}");
    match &o.sends[..] {
        [
            (a, ClientMessage::Requests(rs)),
            (b, ClientMessage::Request(r)),
        ] => {
            assert_eq!(*a, node(1));
            assert_eq!(
                rs.iter().map(|r| r.client).collect::<Vec<_>>(),
                vec![11, 13]
            );
            assert_eq!((*b, r.client), (node(2), 12));
        }
        s => panic!("{s:?}"),
    }
    // With others in progress, a new one gathers too.
    core.open_session(14);
    core.submit(14, 4, put(&k0, "d"));
    assert!(core.take_flush_request());
    assert!(out(&mut core).sends.is_empty());
    core.flush();
    assert_eq!(only_request(&out(&mut core)).1.client, 14);
}

#[test]
fn a_responses_batch_is_the_same_as_its_responses() {
    let mut core = connected(1);
    core.open_session(8);
    core.submit_batch(vec![(ME, 1, put("a", "1")), (8, 2, put("b", "2"))]);
    core.flush();
    out(&mut core);
    let r = |client, v: &str| ClientResponse {
        client,
        seq: 1,
        result: KvResult::Value(v.into()),
    };
    core.handle(
        node(1),
        ClientMessage::Responses(vec![r(8, "b"), r(ME, "a"), r(8, "dup")]),
    );
    assert_eq!(
        out(&mut core).done,
        vec![
            (8, 2, Ok(KvResult::Value("b".into()))),
            (ME, 1, Ok(KvResult::Value("a".into()))),
        ]
    );
}

#[test]
fn a_redirect_resends_to_the_new_group_with_the_same_sequence_number() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    assert_eq!(only_request(&out(&mut core)).0, node(1));
    ticks(&mut core, 30);
    core.redirect(0, 1, vec![node(4), node(5)]);
    let (to, r) = only_request(&out(&mut core));
    assert_eq!((to, r.client, r.seq), (node(4), ME, 1));
    // Fail-over now stays within the group, and the deadline still counts from the
    // start of the operation.
    assert!(ticks(&mut core, 99).sends.is_empty());
    assert_eq!(only_request(&ticks(&mut core, 1)).0, node(5));
    assert_eq!(only_request(&ticks(&mut core, 100)).0, node(4));
    let o = ticks(&mut core, 1000 - 30 - 200);
    assert!(matches!(
        o.done[..],
        [(ME, 1, Err(KvError::Unavailable(_)))]
    ));
}

#[test]
fn a_redirect_of_an_old_epoch_or_of_no_nodes_is_ignored() {
    let mut core = connected(1);
    core.redirect(0, 3, vec![node(4)]);
    core.redirect(0, 3, vec![node(5)]);
    core.redirect(0, 2, vec![node(6)]);
    core.redirect(0, 9, vec![]);
    core.submit(ME, 1, put("k", "v"));
    assert_eq!(only_request(&out(&mut core)).0, node(4));
}

#[test]
fn a_redirect_keeps_a_leader_hint_in_the_group_and_leaves_attempts_there_alone() {
    let mut core = connected(2);
    let (k0, k1) = (key_in(&core, 0), key_in(&core, 1));
    core.open_session(8);
    core.submit(ME, 1, put(&k0, "v"));
    out(&mut core);
    core.handle(node(2), response(ME, 1, "ok"));
    core.submit(ME, 2, put(&k0, "w"));
    core.submit(8, 3, put(&k1, "x"));
    core.flush();
    let o = out(&mut core);
    assert_eq!(o.requests().len(), 2);
    // Partition 0 moves to {2, 4}: its leader (2) is a member, so the attempt there
    // stands; partition 1 is untouched.
    core.redirect(0, 1, vec![node(4), node(2)]);
    assert!(out(&mut core).sends.is_empty());
    assert_eq!(core.leader_hint(0), Some(node(2)));
    // Moved again to {5}: the hint goes and the attempt follows.
    core.redirect(0, 2, vec![node(5)]);
    assert_eq!(core.leader_hint(0), None);
    core.flush();
    let (to, r) = only_request(&out(&mut core));
    assert_eq!((to, r.client, r.seq), (node(5), ME, 2));
    // A one-node group: fail-over stays on it.
    let o = ticks(&mut core, 100);
    core.flush();
    let mut reqs = o.requests();
    reqs.extend(out(&mut core).requests());
    let mine: Vec<_> = reqs.iter().filter(|(_, r)| r.client == ME).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].0, node(5));
    // The other partition fails over through the node list.
    let other: Vec<_> = reqs.iter().filter(|(_, r)| r.client == 8).collect();
    assert_eq!(other[0].0, node(2));
}

#[test]
fn a_gathered_request_whose_operation_completed_is_not_sent() {
    let mut core = connected(1);
    core.open_session(8);
    core.submit_batch(vec![(ME, 1, put("a", "1")), (8, 2, put("b", "2"))]);
    // The answer overtakes the flush (an earlier attempt's answer, say).
    core.handle(node(1), response(ME, 1, "a"));
    core.submit(ME, 3, put("c", "3"));
    core.flush();
    let o = out(&mut core);
    let sent: Vec<_> = o
        .requests()
        .into_iter()
        .map(|(_, r)| (r.client, r.seq))
        .collect();
    assert_eq!(sent, vec![(8, 1), (ME, 2)]);
}

#[test]
fn a_moved_refusal_naming_the_new_group_resends_there_at_once() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    assert_eq!(only_request(&out(&mut core)).0, node(1));
    let moved = Refusal::Moved {
        partition: 0,
        epoch: 1,
        replicas: vec![node(4), node(5)],
    };
    core.handle(node(1), refused(1, moved));
    let (to, r) = only_request(&out(&mut core));
    assert_eq!((to, r.client, r.seq), (node(4), ME, 1));
    // The answer from the new group completes the operation once.
    core.handle(node(4), response(ME, 1, "ok"));
    assert!(matches!(out(&mut core).done[..], [(ME, 1, Ok(_))]));
}

#[test]
fn a_moved_refusal_without_a_new_group_backs_off_and_resends_to_the_same_node() {
    let mut core = connected(1);
    core.submit(ME, 1, put("k", "v"));
    out(&mut core);
    // The refusing node did not know the new replicas yet (or they are the ones the
    // client knows): no resend at once, which could loop at network speed.
    for replicas in [vec![], vec![node(1)]] {
        let moved = Refusal::Moved {
            partition: 0,
            epoch: 1,
            replicas,
        };
        core.handle(node(1), refused(1, moved));
        assert!(out(&mut core).sends.is_empty());
        let o = ticks(&mut core, 60);
        let (to, r) = only_request(&o);
        assert_eq!((to, r.seq), (node(1), 1));
    }
}

#[test]
fn a_closed_session_drops_its_queue_and_is_forgotten_after_its_current_operation() {
    let mut core = connected(1);
    assert_eq!(core.sessions(), 1);
    // Closed while idle: gone at once.
    core.open_session(8);
    core.close_session(8);
    assert_eq!(core.sessions(), 1);
    // Closed with one operation in progress and one queued: the queued one never
    // leaves, the current one still completes, and then the session is gone.
    core.open_session(9);
    core.submit(9, 1, put("a", "1"));
    core.submit(9, 2, put("a", "2"));
    let (to, r) = only_request(&out(&mut core));
    core.close_session(9);
    assert_eq!(core.sessions(), 2);
    core.handle(to, response(9, r.seq, "ignored"));
    let o = out(&mut core);
    assert!(o.requests().is_empty(), "{o:?}");
    assert_eq!(o.done.len(), 1, "{o:?}");
    assert_eq!((o.done[0].0, o.done[0].1), (9, 1));
    assert_eq!(core.sessions(), 1);
    // An operation submitted to it now is refused; the default session stays open.
    core.submit(9, 3, put("a", "3"));
    assert!(matches!(
        out(&mut core).done[..],
        [(9, 3, Err(KvError::Rejected(_)))]
    ));
    core.close_session(ME);
    assert_eq!(core.sessions(), 1);
}

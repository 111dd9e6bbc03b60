//! Unit tests pinning the tricky cases of Sequence Paxos with hand-built message
//! sequences.

use super::*;

fn id(i: u16) -> NodeId {
    NodeId::from(([127, 0, 0, 1], 7000 + i))
}

fn cfg(me: u16, n: u16, max_log_entries: u64) -> PaxosConfig {
    PaxosConfig {
        me: id(me),
        peers: (0..n).map(id).collect(),
        max_batch: 8,
        max_batch_bytes: usize::MAX,
        max_inflight_batches: 2,
        resend_ticks: 3,
        max_log_entries,
        max_pending: 100,
    }
}

fn ballot(n: u64, pid: u16) -> Ballot {
    Ballot { n, pid: id(pid) }
}

fn out<T: LogEntry>(sp: &mut SequencePaxos<T>) -> Vec<(NodeId, PaxosMsg<T>)> {
    let mut v = Vec::new();
    sp.take_outgoing(&mut v);
    v
}

fn events<T: LogEntry>(sp: &mut SequencePaxos<T>) -> Vec<PaxosEvent<T>> {
    let mut v = Vec::new();
    sp.take_events(&mut v);
    v
}

fn decided<T: Clone + std::fmt::Debug>(evs: &[PaxosEvent<T>]) -> Vec<(u64, T)> {
    evs.iter()
        .filter_map(|e| match e {
            PaxosEvent::Decided { idx, entry } => Some((*idx, entry.clone())),
            _ => None,
        })
        .collect()
}

fn promise(n: Ballot, n_accepted: Ballot, decided_idx: u64, suffix: Vec<u32>) -> PaxosMsg<u32> {
    PaxosMsg::Promise(Promise {
        n,
        n_accepted,
        decided_idx,
        accepted_idx: suffix.len() as u64,
        suffix,
        snapshot: None,
    })
}

/// A group of replicas with a hand-operated network: `deliver` moves every message
/// unless `drop` says otherwise, until nothing is left.
struct Net {
    nodes: Vec<SequencePaxos<u32>>,
}

impl Net {
    fn new(n: u16, max_log_entries: u64) -> Net {
        Net {
            nodes: (0..n)
                .map(|i| SequencePaxos::new(cfg(i, n, max_log_entries)))
                .collect(),
        }
    }

    fn deliver(&mut self, mut drop: impl FnMut(usize, usize, &PaxosMsg<u32>) -> bool) {
        loop {
            let mut moved = false;
            for from in 0..self.nodes.len() {
                for (to, msg) in out(&mut self.nodes[from]) {
                    let to = (to.port() - 7000) as usize;
                    moved = true;
                    if !drop(from, to, &msg) {
                        self.nodes[to].handle(id(from as u16), msg);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn elect(&mut self, leader: u16, n: u64) {
        for node in &mut self.nodes {
            node.handle_leader(ballot(n, leader));
        }
        self.deliver(|_, _, _| false);
    }
}

#[test]
fn new_leader_adopts_the_suffix_of_the_highest_round_over_a_longer_lower_one() {
    // Five replicas, majority three: the leader and two promises.
    let mut l: SequencePaxos<u32> = SequencePaxos::new(cfg(0, 5, 1000));
    l.handle_leader(ballot(5, 0));
    assert_eq!(out(&mut l).len(), 4, "Prepare to every other member");
    // Node 1 accepted two entries in round 3; node 2 four entries in round 2.
    l.handle(id(1), promise(ballot(5, 0), ballot(3, 4), 0, vec![1, 2]));
    l.handle(
        id(2),
        promise(ballot(5, 0), ballot(2, 3), 0, vec![9, 9, 9, 9]),
    );
    assert!(l.is_leader());
    assert_eq!(l.log_len(), 2, "the shorter log of the higher round wins");
    // Node 2 must drop its round-2 entries: it is synced from its decided index.
    let msgs = out(&mut l);
    let sync_to_2 = msgs.iter().find_map(|(to, m)| match m {
        PaxosMsg::AcceptSync(a) if *to == id(2) => Some(a.clone()),
        _ => None,
    });
    let sync_to_2 = sync_to_2.expect("AcceptSync to node 2");
    assert_eq!((sync_to_2.sync_idx, sync_to_2.suffix), (0, vec![1, 2]));
    // Once a majority accepted, the adopted entries are decided in order.
    l.handle(
        id(1),
        PaxosMsg::Accepted(Accepted {
            n: ballot(5, 0),
            accepted_idx: 2,
        }),
    );
    l.handle(
        id(2),
        PaxosMsg::Accepted(Accepted {
            n: ballot(5, 0),
            accepted_idx: 2,
        }),
    );
    assert_eq!(decided(&events(&mut l)), vec![(0, 1), (1, 2)]);
}

#[test]
fn new_leader_adopts_the_longest_suffix_within_the_highest_round() {
    let mut l: SequencePaxos<u32> = SequencePaxos::new(cfg(0, 5, 1000));
    l.handle_leader(ballot(5, 0));
    l.handle(id(1), promise(ballot(5, 0), ballot(3, 4), 0, vec![1, 2]));
    l.handle(id(2), promise(ballot(5, 0), ballot(3, 4), 0, vec![1, 2, 3]));
    assert!(l.is_leader());
    assert_eq!(l.log_len(), 3);
    // Node 1 holds a prefix of the adopted log: it is synced from its own length.
    let sync_to_1 = out(&mut l).into_iter().find_map(|(to, m)| match m {
        PaxosMsg::AcceptSync(a) if to == id(1) => Some(a),
        _ => None,
    });
    let sync_to_1 = sync_to_1.expect("AcceptSync to node 1");
    assert_eq!((sync_to_1.sync_idx, sync_to_1.suffix), (2, vec![3]));
}

#[test]
fn late_promise_from_an_old_ballot_is_ignored() {
    let mut l: SequencePaxos<u32> = SequencePaxos::new(cfg(0, 3, 1000));
    l.handle_leader(ballot(1, 0));
    // Someone else takes over, then BLE makes us leader again with a higher ballot.
    l.handle_leader(ballot(2, 1));
    l.handle_leader(ballot(3, 0));
    assert!(!l.is_leader());
    // A promise for our first ballot arrives late: it must not complete the prepare.
    l.handle(
        id(1),
        promise(ballot(1, 0), Ballot::initial(id(1)), 0, vec![]),
    );
    assert!(!l.is_leader());
    l.handle(
        id(1),
        promise(ballot(3, 0), Ballot::initial(id(1)), 0, vec![]),
    );
    assert!(l.is_leader());
}

#[test]
fn late_accepted_from_an_old_ballot_is_ignored() {
    let mut l: SequencePaxos<u32> = SequencePaxos::new(cfg(0, 3, 1000));
    l.handle_leader(ballot(3, 0));
    l.handle(
        id(1),
        promise(ballot(3, 0), Ballot::initial(id(1)), 0, vec![]),
    );
    assert!(l.is_leader());
    l.propose(10);
    l.propose(11);
    assert_eq!(l.log_len(), 2);
    // An Accepted of an earlier ballot of ours says nothing about this log.
    l.handle(
        id(1),
        PaxosMsg::Accepted(Accepted {
            n: ballot(1, 0),
            accepted_idx: 2,
        }),
    );
    assert_eq!(l.decided_idx(), 0);
    l.handle(
        id(1),
        PaxosMsg::Accepted(Accepted {
            n: ballot(3, 0),
            accepted_idx: 2,
        }),
    );
    assert_eq!(l.decided_idx(), 2);
    assert_eq!(decided(&events(&mut l)), vec![(0, 10), (1, 11)]);
}

#[test]
fn follower_that_missed_an_accept_decide_resyncs() {
    let mut net = Net::new(3, 1000);
    net.elect(0, 1);
    assert!(net.nodes[0].is_leader());
    for v in 0..3 {
        net.nodes[0].propose(v);
    }
    net.deliver(|_, _, _| false);
    // Node 2 loses one batch.
    net.nodes[0].propose(100);
    net.deliver(|_, to, m| to == 2 && matches!(m, PaxosMsg::AcceptDecide(_)));
    assert_eq!(net.nodes[2].log_len(), 3);
    // The next batch shows the gap; node 2 asks to be prepared again and catches up.
    net.nodes[0].propose(101);
    let mut saw_req = false;
    net.deliver(|_, _, m| {
        saw_req |= matches!(m, PaxosMsg::PrepareReq);
        false
    });
    assert!(saw_req, "the follower asked for a resync");
    assert_eq!(net.nodes[2].log_len(), 5);
    for _ in 0..3 {
        for n in &mut net.nodes {
            n.tick();
        }
        net.deliver(|_, _, _| false);
    }
    let want: Vec<(u64, u32)> = [0, 1, 2, 100, 101]
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v))
        .collect();
    assert_eq!(decided(&events(&mut net.nodes[2])), want);
}

#[test]
fn reconnected_follower_resyncs() {
    let mut net = Net::new(3, 1000);
    net.elect(0, 1);
    // Node 2 is cut off while two batches go out.
    net.nodes[0].propose(1);
    net.nodes[0].propose(2);
    net.deliver(|_, to, _| to == 2);
    assert_eq!(net.nodes[2].log_len(), 0);
    net.nodes[0].reconnected(id(2));
    net.deliver(|_, _, _| false);
    assert_eq!(net.nodes[2].log_len(), 2);
}

fn snapshot_of(node: &SequencePaxos<u32>, idx: u64) -> Snapshot {
    Snapshot {
        idx,
        data: std::sync::Arc::new(vec![node.decided_idx() as u8]),
    }
}

#[test]
fn trimming_waits_for_every_member_unless_the_log_is_over_its_bound() {
    let mut net = Net::new(3, 1000);
    net.elect(0, 1);
    for v in 0..10 {
        net.nodes[0].propose(v);
        net.deliver(|_, to, _| to == 2); // node 2 is down
    }
    assert_eq!(net.nodes[0].decided_idx(), 10);
    let s = snapshot_of(&net.nodes[0], 10);
    net.nodes[0].set_snapshot(s);
    let s = snapshot_of(&net.nodes[1], 10);
    net.nodes[1].set_snapshot(s);
    net.deliver(|_, to, _| to == 2);
    // Node 2 reported nothing: the leader keeps the entries it still needs.
    assert_eq!(net.nodes[0].first_retained_idx(), 0);
    assert_eq!(net.nodes[0].log_len(), 10);
}

#[test]
fn lagging_replica_gets_a_snapshot_once_the_log_was_trimmed() {
    // Bound of 4 retained entries: a dead-looking replica must not pin the log.
    let mut net = Net::new(3, 4);
    net.elect(0, 1);
    for v in 0..10 {
        net.nodes[0].propose(v);
        net.deliver(|_, to, _| to == 2);
    }
    let s = snapshot_of(&net.nodes[0], 8);
    net.nodes[0].set_snapshot(s);
    net.deliver(|_, to, _| to == 2);
    assert_eq!(
        net.nodes[0].first_retained_idx(),
        8,
        "trimmed up to its own snapshot only"
    );
    // Node 2 comes back: it is behind the trimmed prefix, so it gets the snapshot
    // and then the suffix.
    net.nodes[0].reconnected(id(2));
    net.deliver(|_, _, _| false);
    let evs = events(&mut net.nodes[2]);
    assert!(
        matches!(evs.first(), Some(PaxosEvent::InstallSnapshot(s)) if s.idx == 8),
        "{evs:?}"
    );
    assert_eq!(decided(&evs), vec![(8, 8), (9, 9)]);
    assert_eq!(net.nodes[2].log_len(), 10);
    assert_eq!(net.nodes[2].first_retained_idx(), 8);
}

#[test]
fn proposals_are_forwarded_to_the_leader_and_buffered_without_one() {
    let mut net = Net::new(3, 1000);
    // No leader yet: buffered, up to the bound.
    let mut f: SequencePaxos<u32> = SequencePaxos::new(PaxosConfig {
        max_pending: 2,
        ..cfg(1, 3, 1000)
    });
    f.propose(1);
    f.propose(2);
    f.propose(3);
    assert_eq!(f.pending_len(), 2);
    assert_eq!(events(&mut f), vec![PaxosEvent::Dropped(3)]);
    assert!(out(&mut f).is_empty());
    // With a leader the buffer goes there.
    net.nodes[1] = f;
    net.elect(0, 1);
    for _ in 0..2 {
        for n in &mut net.nodes {
            n.tick();
        }
        net.deliver(|_, _, _| false);
    }
    assert_eq!(net.nodes[0].decided_idx(), 2);
    assert_eq!(net.nodes[1].pending_len(), 0);
}

#[test]
fn deposed_leader_forwards_what_it_never_logged() {
    let mut l: SequencePaxos<u32> = SequencePaxos::new(cfg(0, 3, 1000));
    l.handle_leader(ballot(1, 0));
    l.propose(7); // still preparing: held, not in the log
    assert_eq!(l.log_len(), 0);
    out(&mut l);
    l.handle_leader(ballot(2, 1));
    assert!(
        events(&mut l).is_empty(),
        "not dropped: there is a new leader"
    );
    let fwd: Vec<_> = out(&mut l)
        .into_iter()
        .filter(|(to, m)| {
            *to == id(1) && matches!(m, PaxosMsg::ProposalForward(v) if v == &vec![7])
        })
        .collect();
    assert_eq!(fwd.len(), 1);
}

#[test]
fn malformed_messages_are_ignored() {
    let mut f: SequencePaxos<u32> = SequencePaxos::new(cfg(1, 3, 1000));
    // From outside the group, with a ballot not owned by the sender, with a gap.
    f.handle(
        id(9),
        PaxosMsg::Prepare(Prepare {
            n: ballot(1, 9),
            decided_idx: 0,
            n_accepted: ballot(0, 9),
            accepted_idx: 0,
        }),
    );
    f.handle(
        id(2),
        PaxosMsg::Prepare(Prepare {
            n: ballot(1, 0),
            decided_idx: 0,
            n_accepted: ballot(0, 0),
            accepted_idx: 0,
        }),
    );
    assert!(out(&mut f).is_empty());
    f.handle(
        id(0),
        PaxosMsg::Prepare(Prepare {
            n: ballot(1, 0),
            decided_idx: 0,
            n_accepted: ballot(0, 0),
            accepted_idx: 0,
        }),
    );
    out(&mut f);
    f.handle(
        id(0),
        PaxosMsg::AcceptSync(AcceptSync {
            n: ballot(1, 0),
            sync_idx: 50,
            suffix: vec![1],
            decided_idx: 99,
            snapshot: None,
        }),
    );
    assert_eq!(f.log_len(), 0);
    assert_eq!(f.decided_idx(), 0);
    let mut l: SequencePaxos<u32> = SequencePaxos::new(cfg(0, 3, 1000));
    l.handle_leader(ballot(1, 0));
    // A promise whose suffix is longer than its log.
    l.handle(
        id(1),
        PaxosMsg::Promise(Promise {
            n: ballot(1, 0),
            n_accepted: ballot(9, 2),
            decided_idx: 0,
            accepted_idx: 1,
            suffix: vec![1, 2],
            snapshot: None,
        }),
    );
    assert!(!l.is_leader());
}

#[test]
fn overtaken_leader_learns_of_the_higher_promise_from_a_follower_that_ignores_it() {
    let mut net = Net::new(3, 1000);
    net.elect(1, 1);
    net.nodes[1].propose(1);
    net.deliver(|_, _, _| false);
    assert!(net.nodes[1].is_leader());
    // Node 0 is told it leads and prepares ballot 5, but its Prepares are lost: node
    // 1 still leads with ballot 1 and holds node 0's Accepted for its whole log.
    net.nodes[0].handle_leader(ballot(5, 0));
    let _ = out(&mut net.nodes[0]);
    // Node 1's next batch reaches node 0, which ignores it but answers with its
    // promise instead of staying silent...
    net.nodes[1].propose(2);
    let to_zero: Vec<_> = out(&mut net.nodes[1])
        .into_iter()
        .filter(|(to, _)| *to == id(0))
        .collect();
    for (_, m) in to_zero {
        net.nodes[0].handle(id(1), m);
    }
    let notices: Vec<_> = out(&mut net.nodes[0])
        .into_iter()
        .filter(|(to, m)| {
            *to == id(1) && matches!(m, PaxosMsg::Compaction { n, .. } if *n == ballot(5, 0))
        })
        .collect();
    assert_eq!(notices.len(), 1);
    // ...so node 1 steps down instead of counting on node 0 for ever.
    for (_, m) in notices {
        net.nodes[1].handle(id(0), m);
    }
    assert!(!net.nodes[1].is_leader());
}

#[test]
fn followers_that_each_believe_the_other_leads_pass_proposals_once_per_tick() {
    let mut a: SequencePaxos<u32> = SequencePaxos::new(cfg(0, 3, 1000));
    a.handle_leader(ballot(3, 1));
    // A proposal forwarded to node 0 while node 0 does not lead: it is not sent on
    // at once (node 1 might send it straight back), only at the next tick.
    a.handle(id(1), PaxosMsg::ProposalForward(vec![7]));
    assert!(out(&mut a).is_empty());
    assert_eq!(a.pending_len(), 1);
    a.tick();
    let sent = out(&mut a);
    assert!(
        matches!(&sent[..], [(to, PaxosMsg::ProposalForward(v))] if *to == id(1) && v == &vec![7])
    );
}

#[test]
fn batches_stop_at_the_byte_bound_and_a_heavier_entry_goes_alone() {
    let mut net = Net::new(3, 1000);
    for (i, node) in net.nodes.iter_mut().enumerate() {
        // u32 entries weigh 4 bytes: three fit in 12.
        *node = SequencePaxos::new(PaxosConfig {
            max_batch_bytes: 12,
            max_inflight_batches: 100,
            ..cfg(i as u16, 3, 1000)
        });
    }
    net.elect(0, 1);
    let mut sizes = Vec::new();
    net.nodes[0].propose_all(0..7u32);
    for (_, msg) in out(&mut net.nodes[0]) {
        if let PaxosMsg::AcceptDecide(a) = msg {
            sizes.push(a.entries.len());
        }
    }
    // To each of the two followers: 3, 3, 1.
    assert_eq!(sizes, vec![3, 3, 3, 3, 1, 1]);

    // Forwarded proposals are cut the same way; a bound below one entry still
    // lets each entry through, alone.
    let mut f: SequencePaxos<u32> = SequencePaxos::new(PaxosConfig {
        max_batch_bytes: 1,
        ..cfg(1, 3, 1000)
    });
    f.handle_leader(ballot(1, 0));
    out(&mut f);
    f.propose_all([1, 2]);
    f.tick();
    let forwarded: Vec<Vec<u32>> = out(&mut f)
        .into_iter()
        .filter_map(|(_, m)| match m {
            PaxosMsg::ProposalForward(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(forwarded, vec![vec![1], vec![2]]);
}

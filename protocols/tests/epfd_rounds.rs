//! Hand-built message sequences for the EPFD core.

use kv_protocols::NodeId;
use kv_protocols::epfd::{Epfd, EpfdConfig, EpfdEvent, EpfdMsg};

fn node(i: u8) -> NodeId {
    NodeId::from(([10, 0, 0, i], 4000))
}

/// A detector on node 1 monitoring nodes 1..=n, rounds of 3 ticks, +2 per mistake.
fn detector(n: u8) -> Epfd {
    Epfd::new(EpfdConfig {
        me: node(1),
        nodes: (1..=n).map(node).collect(),
        initial_delay_ticks: 3,
        delay_increment_ticks: 2,
    })
}

fn ticks(fd: &mut Epfd, n: u64) {
    for _ in 0..n {
        fd.tick();
    }
}

fn outgoing(fd: &mut Epfd) -> Vec<(NodeId, EpfdMsg)> {
    let mut buf = Vec::new();
    fd.take_outgoing(&mut buf);
    buf
}

fn events(fd: &mut Epfd) -> Vec<EpfdEvent> {
    let mut buf = Vec::new();
    fd.take_events(&mut buf);
    buf
}

#[test]
fn a_heartbeat_request_is_answered_with_its_round_whoever_sends_it() {
    let mut fd = detector(2);
    fd.handle(node(9), EpfdMsg::HeartbeatRequest { seq: 42 });
    assert_eq!(
        outgoing(&mut fd),
        vec![(node(9), EpfdMsg::HeartbeatReply { seq: 42 })]
    );
}

#[test]
fn rounds_end_every_delay_ticks_and_ask_every_other_node() {
    let mut fd = detector(3);
    ticks(&mut fd, 2);
    assert!(outgoing(&mut fd).is_empty());
    fd.tick();
    let req = EpfdMsg::HeartbeatRequest { seq: 1 };
    assert_eq!(
        outgoing(&mut fd),
        vec![(node(2), req.clone()), (node(3), req)],
        "never asks itself"
    );
    assert!(
        events(&mut fd).is_empty(),
        "the first round suspects nobody"
    );
    assert_eq!(fd.nodes(), vec![node(2), node(3)]);
}

#[test]
fn a_silent_node_is_suspected_at_the_end_of_the_first_round_it_was_asked_in() {
    let mut fd = detector(3);
    ticks(&mut fd, 3);
    fd.handle(node(2), EpfdMsg::HeartbeatReply { seq: 1 });
    ticks(&mut fd, 3);
    assert_eq!(events(&mut fd), vec![EpfdEvent::Suspect(node(3))]);
    assert_eq!(fd.suspected(), vec![node(3)]);
    assert!(fd.is_suspected(node(3)));
    assert!(!fd.is_suspected(node(1)));
    // Still silent: no repeated event.
    fd.handle(node(2), EpfdMsg::HeartbeatReply { seq: 2 });
    ticks(&mut fd, 3);
    assert!(events(&mut fd).is_empty());
    assert_eq!(fd.delay_ticks(), 3);
}

#[test]
fn a_reply_to_an_old_round_does_not_vouch_for_a_trusted_node() {
    let mut fd = detector(2);
    ticks(&mut fd, 3); // round 1 asked
    ticks(&mut fd, 3); // round 1 ended without answer: suspect, round 2 asked
    assert_eq!(events(&mut fd), vec![EpfdEvent::Suspect(node(2))]);
    fd.handle(node(2), EpfdMsg::HeartbeatReply { seq: 2 });
    ticks(&mut fd, 3); // restored
    assert_eq!(events(&mut fd), vec![EpfdEvent::Restore(node(2))]);
    // Now trusted again: a late reply to round 2 must not count for round 3.
    fd.handle(node(2), EpfdMsg::HeartbeatReply { seq: 2 });
    let d = fd.delay_ticks();
    ticks(&mut fd, d);
    assert_eq!(events(&mut fd), vec![EpfdEvent::Suspect(node(2))]);
}

#[test]
fn a_late_reply_restores_a_suspected_node_and_lengthens_the_rounds() {
    let mut fd = detector(2);
    ticks(&mut fd, 6);
    assert_eq!(events(&mut fd), vec![EpfdEvent::Suspect(node(2))]);
    // The answer to round 1 arrives during round 2: late, but proof of life.
    fd.handle(node(2), EpfdMsg::HeartbeatReply { seq: 1 });
    ticks(&mut fd, 3);
    assert_eq!(events(&mut fd), vec![EpfdEvent::Restore(node(2))]);
    assert_eq!(fd.delay_ticks(), 5);
    assert!(fd.suspected().is_empty());
}

#[test]
fn replies_from_strangers_or_to_rounds_never_sent_are_ignored() {
    let mut fd = detector(2);
    ticks(&mut fd, 6);
    assert_eq!(events(&mut fd), vec![EpfdEvent::Suspect(node(2))]);
    fd.handle(node(2), EpfdMsg::HeartbeatReply { seq: 99 });
    fd.handle(node(7), EpfdMsg::HeartbeatReply { seq: 2 });
    ticks(&mut fd, 3);
    assert!(events(&mut fd).is_empty());
    assert_eq!(fd.suspected(), vec![node(2)]);
}

#[test]
fn an_added_node_gets_a_full_round_before_it_can_be_suspected() {
    let mut fd = detector(2);
    ticks(&mut fd, 2);
    fd.add_node(node(5));
    fd.add_node(node(1)); // itself: ignored
    fd.handle(node(2), EpfdMsg::HeartbeatReply { seq: 0 });
    ticks(&mut fd, 1); // round 1 ends; node 5 counted alive, now asked
    assert!(
        events(&mut fd)
            .iter()
            .all(|e| *e != EpfdEvent::Suspect(node(5)))
    );
    assert!(outgoing(&mut fd).contains(&(node(5), EpfdMsg::HeartbeatRequest { seq: 1 })));
    ticks(&mut fd, 3);
    assert!(events(&mut fd).contains(&EpfdEvent::Suspect(node(5))));
    assert_eq!(fd.nodes(), vec![node(2), node(5)]);
}

#[test]
fn a_zero_initial_delay_is_treated_as_one_tick() {
    let mut fd = Epfd::new(EpfdConfig {
        me: node(1),
        nodes: vec![node(2)],
        initial_delay_ticks: 0,
        delay_increment_ticks: 1,
    });
    assert_eq!(fd.delay_ticks(), 1);
    fd.tick();
    assert_eq!(outgoing(&mut fd).len(), 1);
}

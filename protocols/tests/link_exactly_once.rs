//! PerfectLink core under connection loss: every payload is delivered exactly once
//! and in order, whatever is dropped in between.

use kv_protocols::NodeId;
use kv_protocols::link::{Frame, LinkConfig, LinkCore, LinkEvent};
use kv_protocols::rng::SplitMix64;
use proptest::prelude::*;

fn addr(i: u16) -> NodeId {
    NodeId::from(([10, 0, 0, 1], 4000 + i))
}

fn cfg(incarnation: u64) -> LinkConfig {
    LinkConfig {
        incarnation,
        max_unacked: 100_000,
        retransmit_ticks: 5,
        unreachable_ticks: 50,
        max_frame_payloads: 16,
        max_frame_bytes: 10,
        // Every payload weighs 1: at most 24 in flight, so the window closes and
        // reopens all the time in these runs.
        max_inflight_bytes: 24,
    }
}

/// Every payload in `frames`, in order.
fn payloads_in(frames: &[(NodeId, Frame<u64>)]) -> Vec<u64> {
    frames
        .iter()
        .flat_map(|(_, f)| f.payloads.clone())
        .collect()
}

/// `c` with a window no test run fills.
fn wide(c: LinkConfig) -> LinkConfig {
    LinkConfig {
        max_inflight_bytes: usize::MAX,
        ..c
    }
}

/// Two nodes; frames in flight travel in FIFO order on a "connection" that the
/// schedule drops now and then (losing everything in flight), like a TCP connection
/// that breaks. Returns what b delivered.
fn run(seed: u64, n: u64) -> Vec<u64> {
    let (a, b) = (addr(1), addr(2));
    let mut la: LinkCore<u64> = LinkCore::new(cfg(11));
    let mut lb: LinkCore<u64> = LinkCore::new(cfg(22));
    let mut rng = SplitMix64::new(seed);
    let mut wire_ab: std::collections::VecDeque<Frame<u64>> = Default::default();
    let mut wire_ba: std::collections::VecDeque<Frame<u64>> = Default::default();
    let mut got = Vec::new();
    let mut next = 1;
    let mut buf = Vec::new();
    let mut deliver = Vec::new();
    let mut steps = 0u64;
    while got.len() < n as usize {
        steps += 1;
        assert!(
            steps < 200_000,
            "seed {seed}: no progress, delivered {}",
            got.len()
        );
        match rng.below(10) {
            0..=3 if next <= n => {
                la.send(b, next);
                next += 1;
            }
            4 => la.tick(),
            5 => lb.tick(),
            6 if rng.chance(0.05) => {
                // The connection drops: everything queued is lost, then it comes back.
                wire_ab.clear();
                wire_ba.clear();
                la.reconnected(b);
                lb.reconnected(a);
            }
            _ => {
                if let Some(f) = wire_ab.pop_front() {
                    lb.receive(a, f, &mut deliver);
                    got.extend(deliver.drain(..).map(|(_, p)| p));
                }
                if let Some(f) = wire_ba.pop_front() {
                    la.receive(b, f, &mut deliver);
                    assert!(deliver.is_empty());
                }
            }
        }
        la.take_frames(&mut buf);
        for (dst, f) in buf.drain(..) {
            assert_eq!(dst, b);
            wire_ab.push_back(f);
        }
        lb.take_frames(&mut buf);
        for (dst, f) in buf.drain(..) {
            assert_eq!(dst, a);
            wire_ba.push_back(f);
        }
    }
    got
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn every_payload_delivered_exactly_once_in_order(seed in any::<u64>()) {
        let got = run(seed, 500);
        let expected: Vec<u64> = (1..=500).collect();
        prop_assert_eq!(got, expected, "seed {}", seed);
    }
}

#[test]
fn acknowledged_payloads_are_released() {
    let (a, b) = (addr(1), addr(2));
    let mut la: LinkCore<u64> = LinkCore::new(wide(cfg(1)));
    let mut lb: LinkCore<u64> = LinkCore::new(wide(cfg(2)));
    let mut frames = Vec::new();
    let mut deliver = Vec::new();
    for i in 0..100 {
        la.send(b, i);
    }
    la.take_frames(&mut frames);
    for (_, f) in frames.drain(..) {
        lb.receive(a, f, &mut deliver);
    }
    assert_eq!(deliver.len(), 100);
    assert_eq!(la.unacked(b), 100);
    lb.tick(); // the acknowledgement goes out on the next tick
    lb.take_frames(&mut frames);
    for (_, f) in frames.drain(..) {
        la.receive(b, f, &mut deliver);
    }
    assert_eq!(la.unacked(b), 0);
}

#[test]
fn a_restarted_peer_is_detected_and_its_numbering_restarts() {
    let a = addr(1);
    let mut lb: LinkCore<u64> = LinkCore::new(cfg(2));
    let mut deliver = Vec::new();
    let first = |inc, seq, p| Frame {
        incarnation: inc,
        first_seq: seq,
        payloads: vec![p],
        ack: None,
    };
    lb.receive(a, first(7, 1, 100), &mut deliver);
    lb.receive(a, first(7, 2, 101), &mut deliver);
    lb.receive(a, first(9, 1, 200), &mut deliver); // a restarted
    assert_eq!(
        deliver.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
        vec![100, 101, 200]
    );
    let mut ev = Vec::new();
    lb.take_events(&mut ev);
    assert_eq!(ev, vec![LinkEvent::PeerRestarted(a)]);
}

/// A node restarted at the same address hears from us again from sequence number 1:
/// what we had numbered for its former process is dropped, not waited for.
#[test]
fn a_restarted_peer_gets_a_new_stream_from_us() {
    let (a, b) = (addr(1), addr(2));
    let mut la: LinkCore<u64> = LinkCore::new(wide(cfg(1)));
    let mut lb: LinkCore<u64> = LinkCore::new(wide(cfg(2)));
    let mut frames = Vec::new();
    let mut deliver = Vec::new();
    // b's first process talks to a, a sends it 1..=5, b acknowledges 1..=3 only.
    lb.send(a, 900);
    lb.take_frames(&mut frames);
    for (_, f) in frames.drain(..) {
        la.receive(b, f, &mut deliver);
    }
    for p in 1..=5 {
        la.send(b, p);
    }
    la.take_frames(&mut frames);
    for (_, f) in frames.drain(..) {
        lb.receive(a, f, &mut deliver);
    }
    assert_eq!(la.unacked(b), 5);
    // b crashes; its new process (another incarnation) sends a its check-in.
    let mut lb2: LinkCore<u64> = LinkCore::new(wide(cfg(3)));
    lb2.send(a, 901);
    lb2.take_frames(&mut frames);
    deliver.clear();
    for (_, f) in frames.drain(..) {
        la.receive(b, f, &mut deliver);
    }
    assert_eq!(deliver, vec![(b, 901)]);
    let mut ev = Vec::new();
    la.take_events(&mut ev);
    assert!(ev.contains(&LinkEvent::PeerRestarted(b)), "{ev:?}");
    // Nothing of the former stream is kept for the new process...
    assert_eq!(la.unacked(b), 0);
    // ...and what a sends now reaches it, from sequence number 1.
    la.send(b, 42);
    la.take_frames(&mut frames);
    deliver.clear();
    for (_, f) in frames.drain(..) {
        assert_eq!(f.first_seq, 1);
        lb2.receive(a, f, &mut deliver);
    }
    assert_eq!(deliver, vec![(a, 42)]);
}

#[test]
fn a_silent_peer_is_reported_and_memory_stays_bounded() {
    let b = addr(2);
    let mut c = cfg(1);
    c.max_unacked = 10;
    c.unreachable_ticks = 3;
    let mut la: LinkCore<u64> = LinkCore::new(c);
    for i in 0..15 {
        la.send(b, i);
    }
    assert_eq!(la.unacked(b), 10);
    for _ in 0..5 {
        la.tick();
    }
    let mut ev = Vec::new();
    la.take_events(&mut ev);
    assert!(
        ev.contains(&LinkEvent::Overflow {
            peer: b,
            dropped: 1
        }),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, LinkEvent::Unreachable { peer, unacked: 10, .. } if *peer == b)),
        "{ev:?}"
    );
}

#[test]
fn a_silent_peer_gets_no_new_frames_until_it_acknowledges_or_reconnects() {
    let b = addr(2);
    let mut la: LinkCore<u64> = LinkCore::new(wide(cfg(1)));
    let mut frames = Vec::new();
    la.send(b, 0);
    la.take_frames(&mut frames);
    assert_eq!(frames.len(), 1);
    frames.clear();
    for _ in 0..5 {
        la.tick(); // one retransmission period without an acknowledgement
    }
    la.take_frames(&mut frames); // the retransmission of payload 0
    frames.clear();
    for i in 1..100 {
        la.send(b, i);
    }
    la.take_frames(&mut frames);
    assert!(
        frames.is_empty(),
        "{} frames went to a silent peer",
        frames.len()
    );
    la.reconnected(b);
    la.take_frames(&mut frames);
    let sent = payloads_in(&frames);
    assert_eq!(sent, (0..100).collect::<Vec<u64>>());
    assert_eq!(la.unacked(b), 100);
}

#[test]
fn at_most_a_window_is_in_flight_and_acknowledgements_release_the_rest_in_order() {
    let (a, b) = (addr(1), addr(2));
    let mut la: LinkCore<u64> = LinkCore::new(cfg(1)); // window: 24 payloads
    let mut lb: LinkCore<u64> = LinkCore::new(cfg(2));
    let mut frames = Vec::new();
    let mut deliver = Vec::new();
    for i in 0..100 {
        la.send(b, i);
    }
    la.take_frames(&mut frames);
    let sent = payloads_in(&frames).len();
    assert_eq!(
        sent, 24,
        "only a window's worth goes out before an acknowledgement"
    );
    // Deliver, acknowledge, repeat: the rest follows in order, a window at a time.
    let mut rounds = 0;
    while deliver.len() < 100 {
        rounds += 1;
        assert!(rounds <= 10, "stuck after {} deliveries", deliver.len());
        for (_, f) in frames.drain(..) {
            lb.receive(a, f, &mut deliver);
        }
        lb.tick(); // the acknowledgement
        lb.take_frames(&mut frames);
        let mut none = Vec::new();
        for (_, f) in frames.drain(..) {
            la.receive(b, f, &mut none);
        }
        la.take_frames(&mut frames);
        let in_flight = payloads_in(&frames).len();
        assert!(in_flight <= 24, "{in_flight} payloads in flight");
    }
    let got: Vec<u64> = deliver.iter().map(|(_, p)| *p).collect();
    assert_eq!(got, (0..100).collect::<Vec<u64>>());
    assert_eq!(rounds, 5, "100 payloads, 24 per acknowledgement round");
}

#[test]
fn a_reconnected_peer_gets_its_backlog_a_window_at_a_time() {
    let b = addr(2);
    let mut la: LinkCore<u64> = LinkCore::new(cfg(1));
    let mut frames = Vec::new();
    la.send(b, 0);
    la.take_frames(&mut frames);
    frames.clear(); // lost with the connection
    la.disconnected(b);
    for i in 1..1000 {
        la.send(b, i);
    }
    la.take_frames(&mut frames);
    assert!(frames.is_empty(), "nothing goes to a peer that is down");
    la.reconnected(b);
    la.take_frames(&mut frames);
    let sent = payloads_in(&frames);
    assert_eq!(
        sent,
        (0..24).collect::<Vec<u64>>(),
        "the oldest window, in order"
    );
    assert_eq!(la.unacked(b), 1000);
}

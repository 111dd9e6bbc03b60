//! Ballot leader election (BLE) core, one instance per replication group.
//!
//! Messages and public API are fixed here; see `docs/protocols.md`.

use std::collections::BTreeMap;

use crate::NodeId;
use crate::ballot::Ballot;

/// A message exchanged between the BLE instances of one replication group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BleMsg {
    /// Start of a heartbeat round: "tell me your ballot".
    HeartbeatRequest {
        /// The sender's round number.
        round: u64,
    },
    /// Answer to a `HeartbeatRequest`.
    HeartbeatReply {
        /// The round number copied from the request.
        round: u64,
        /// The replier's current ballot.
        ballot: Ballot,
        /// Whether the replier currently sees a majority of its group (only such
        /// nodes may be elected; this keeps a node that is cut off from becoming
        /// leader and causing churn when it comes back).
        quorum_connected: bool,
    },
}

/// What BLE tells its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BleEvent {
    /// `ballot.pid` is the leader with `ballot`. Emitted each time the elected
    /// leader (or its ballot) changes. At most one leader per ballot.
    Leader(Ballot),
}

/// Configuration of one BLE instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BleConfig {
    /// The node this instance runs on.
    pub me: NodeId,
    /// The whole replication group, `me` included (order does not matter).
    pub peers: Vec<NodeId>,
    /// Length of a heartbeat round, in ticks (0 is treated as 1).
    pub hb_round_ticks: u64,
}

/// What this node last heard from one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PeerView {
    /// The round (of ours) the latest accepted reply answered.
    /// Invariant: `round <= Ble::round`.
    round: u64,
    /// The ballot the peer reported.
    ballot: Ballot,
    /// Whether the peer reported that it sees a majority.
    quorum_connected: bool,
}

/// The ballot leader election of one node in one replication group.
///
/// Every `hb_round_ticks` ticks a round ends and a new one starts: the node asks all
/// other members for their ballot. At the end of a round, if a majority of the group
/// (counting this node) answered in this round or the one before, the node is
/// quorum-connected and picks the highest ballot among the quorum-connected members
/// that answered (itself included). If that ballot is higher than the current leader's
/// it becomes the leader; if it is lower, the leader is gone and the node raises its
/// own ballot above every ballot it has seen, so that it can be elected next round.
///
/// Accepting replies from the previous round too is what keeps a slow reply from
/// deposing a live leader: the leader must miss two consecutive rounds.
#[derive(Clone, Debug)]
pub struct Ble {
    /// This node.
    me: NodeId,
    /// The other members of the group, sorted. Invariant: `me ∉ others`.
    others: Vec<NodeId>,
    /// Size of a majority of the whole group (`others.len() + 1`).
    majority: usize,
    /// Round length in ticks. Invariant: `>= 1`.
    hb_round_ticks: u64,
    /// The current round. Invariant: `>= 1` after `new`; never decreases.
    round: u64,
    /// Ticks elapsed in the current round. Invariant: `< hb_round_ticks` between calls.
    ticks_in_round: u64,
    /// This node's ballot. Invariant: `ballot.pid == me`; never decreases.
    ballot: Ballot,
    /// The highest ballot this node has heard of (its own included).
    /// Invariant: `max_seen >= ballot`.
    max_seen: Ballot,
    /// The elected leader, if any. Invariant: only ever replaced by a higher ballot,
    /// except when the leader is judged gone (then by a ballot above it, later).
    leader: Option<Ballot>,
    /// Whether the last finished round heard from a majority.
    quorum_connected: bool,
    /// The latest reply from each peer (only peers in `others`).
    heard: BTreeMap<NodeId, PeerView>,
    /// Messages for the host to send.
    outgoing: Vec<(NodeId, BleMsg)>,
    /// Events for the host to deliver.
    events: Vec<BleEvent>,
}

impl Ble {
    /// A new instance; it starts its first heartbeat round at once (the requests are
    /// in the outbox).
    pub fn new(cfg: BleConfig) -> Self {
        let mut others: Vec<NodeId> = cfg.peers.into_iter().filter(|p| *p != cfg.me).collect();
        others.sort();
        others.dedup();
        let group = others.len() + 1;
        let majority = group / 2 + 1;
        let ballot = Ballot::initial(cfg.me);
        let mut ble = Ble {
            me: cfg.me,
            others,
            majority,
            hb_round_ticks: cfg.hb_round_ticks.max(1),
            round: 0,
            ticks_in_round: 0,
            ballot,
            max_seen: ballot,
            leader: None,
            quorum_connected: false,
            heard: BTreeMap::new(),
            outgoing: Vec::new(),
            events: Vec::new(),
        };
        ble.start_round();
        ble
    }

    /// Handles a message from `from`. Messages from outside the group, replies to
    /// rounds that are neither the current nor the previous one, are ignored.
    pub fn handle(&mut self, from: NodeId, msg: BleMsg) {
        if from == self.me || self.others.binary_search(&from).is_err() {
            return;
        }
        match msg {
            BleMsg::HeartbeatRequest { round } => self.handle_heartbeat_request(from, round),
            BleMsg::HeartbeatReply {
                round,
                ballot,
                quorum_connected,
            } => self.handle_heartbeat_reply(from, round, ballot, quorum_connected),
        }
    }

    /// Advances the logical clock by one tick; ends the round when it is over.
    pub fn tick(&mut self) {
        self.ticks_in_round += 1;
        if self.ticks_in_round >= self.hb_round_ticks {
            self.ticks_in_round = 0;
            self.end_round();
            self.start_round();
        }
    }

    /// Moves every message waiting to be sent into `buf`.
    pub fn take_outgoing(&mut self, buf: &mut Vec<(NodeId, BleMsg)>) {
        buf.append(&mut self.outgoing);
    }

    /// Moves every pending event into `buf`.
    pub fn take_events(&mut self, buf: &mut Vec<BleEvent>) {
        buf.append(&mut self.events);
    }

    /// The currently elected leader, if any.
    pub fn leader(&self) -> Option<Ballot> {
        self.leader
    }

    /// This node's own current ballot.
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// Whether the last finished round heard from a majority of the group.
    pub fn quorum_connected(&self) -> bool {
        self.quorum_connected
    }

    fn handle_heartbeat_request(&mut self, from: NodeId, round: u64) {
        self.outgoing.push((
            from,
            BleMsg::HeartbeatReply {
                round,
                ballot: self.ballot,
                quorum_connected: self.quorum_connected,
            },
        ));
    }

    fn handle_heartbeat_reply(
        &mut self,
        from: NodeId,
        round: u64,
        ballot: Ballot,
        quorum_connected: bool,
    ) {
        // A reply to a round we have not started is bogus; one older than the previous
        // round is too stale to say anything about the present.
        if round > self.round || round + 1 < self.round {
            return;
        }
        // A peer reports its own ballot; anything else is malformed.
        if ballot.pid != from {
            return;
        }
        if ballot > self.max_seen {
            self.max_seen = ballot;
        }
        let view = PeerView {
            round,
            ballot,
            quorum_connected,
        };
        match self.heard.get_mut(&from) {
            Some(old) if old.round > round => {}
            Some(old) => *old = view,
            None => {
                self.heard.insert(from, view);
            }
        }
    }

    fn start_round(&mut self) {
        self.round += 1;
        let round = self.round;
        for peer in &self.others {
            self.outgoing
                .push((*peer, BleMsg::HeartbeatRequest { round }));
        }
    }

    /// The end of round `self.round`: decide with whatever answered in this round or
    /// the previous one.
    fn end_round(&mut self) {
        let round = self.round;
        let fresh = |v: &&PeerView| v.round + 1 >= round;
        let answered = self.heard.values().filter(fresh).count();
        if answered + 1 < self.majority {
            // Cut off from a majority: we must neither elect nor raise our ballot, so a
            // node that comes back from isolation cannot depose a working leader.
            self.quorum_connected = false;
            return;
        }
        self.quorum_connected = true;
        let top = self
            .heard
            .values()
            .filter(fresh)
            .filter(|v| v.quorum_connected)
            .map(|v| v.ballot)
            .fold(self.ballot, Ballot::max);
        if top.n == 0 {
            // Nobody has a real ballot yet: enter the race.
            self.raise_ballot();
            return;
        }
        match self.leader {
            Some(leader) if top == leader => {}
            Some(leader) if top < leader => {
                // The leader was not heard (with a majority) for two rounds.
                self.raise_ballot();
            }
            _ => {
                self.leader = Some(top);
                self.events.push(BleEvent::Leader(top));
            }
        }
    }

    fn raise_ballot(&mut self) {
        let n = self.max_seen.n.max(self.leader.map_or(0, |l| l.n)) + 1;
        self.ballot = Ballot { n, pid: self.me };
        self.max_seen = self.ballot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u16) -> NodeId {
        NodeId::from(([127, 0, 0, 1], 8000 + i))
    }

    fn group(n: u16) -> Vec<Ble> {
        (0..n)
            .map(|i| {
                Ble::new(BleConfig {
                    me: id(i),
                    peers: (0..n).map(id).collect(),
                    hb_round_ticks: 4,
                })
            })
            .collect()
    }

    /// Delivers everything at once, except what `cut` says is lost.
    fn deliver(nodes: &mut [Ble], cut: &dyn Fn(usize, usize) -> bool) {
        loop {
            let mut moved = false;
            for from in 0..nodes.len() {
                let mut out = Vec::new();
                nodes[from].take_outgoing(&mut out);
                for (to, msg) in out {
                    moved = true;
                    let to = (to.port() - 8000) as usize;
                    if !cut(from, to) {
                        nodes[to].handle(id(from as u16), msg);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn rounds(nodes: &mut [Ble], k: u64, cut: &dyn Fn(usize, usize) -> bool) {
        for _ in 0..k * 4 {
            deliver(nodes, cut);
            for n in nodes.iter_mut() {
                n.tick();
            }
        }
        deliver(nodes, cut);
    }

    fn leader_events(n: &mut Ble) -> Vec<Ballot> {
        let mut evs = Vec::new();
        n.take_events(&mut evs);
        evs.into_iter().map(|BleEvent::Leader(b)| b).collect()
    }

    #[test]
    fn connected_group_elects_the_highest_ballot_once() {
        let mut nodes = group(3);
        rounds(&mut nodes, 20, &|_, _| false);
        let leader = nodes[0].leader().expect("elected");
        assert_eq!(leader.pid, id(2), "ties in n go to the highest id");
        for n in &mut nodes {
            assert_eq!(leader_events(n), vec![leader]);
        }
    }

    #[test]
    fn majority_replaces_a_crashed_leader_and_keeps_the_new_one() {
        let mut nodes = group(3);
        rounds(&mut nodes, 5, &|_, _| false);
        let old = nodes[0].leader().expect("elected");
        let dead = (old.pid.port() - 8000) as usize;
        let down = move |a: usize, b: usize| a == dead || b == dead;
        rounds(&mut nodes, 20, &down);
        let alive: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
        let new = nodes[alive[0]].leader().expect("re-elected");
        assert_ne!(new.pid, old.pid);
        assert!(new > old);
        for &i in &alive {
            assert_eq!(nodes[i].leader(), Some(new));
            assert_eq!(leader_events(&mut nodes[i]), vec![old, new]);
        }
    }

    #[test]
    fn isolated_node_neither_raises_its_ballot_nor_steals_leadership_on_return() {
        let mut nodes = group(3);
        rounds(&mut nodes, 5, &|_, _| false);
        let leader = nodes[0].leader().expect("elected");
        // Cut off a follower for a long time.
        let x = (0..3)
            .find(|&i| nodes[i].ballot() != leader)
            .expect("a follower");
        let before = nodes[x].ballot();
        let cut = move |a: usize, b: usize| a == x || b == x;
        rounds(&mut nodes, 30, &cut);
        assert_eq!(nodes[x].ballot(), before, "no majority, no new ballot");
        assert!(!nodes[x].quorum_connected());
        rounds(&mut nodes, 10, &|_, _| false);
        for n in &mut nodes {
            assert_eq!(n.leader(), Some(leader));
        }
    }

    #[test]
    fn a_reply_one_round_late_does_not_depose_the_leader() {
        let mut nodes = group(3);
        rounds(&mut nodes, 5, &|_, _| false);
        let leader = nodes[0].leader().expect("elected");
        for n in &mut nodes {
            leader_events(n);
        }
        let l = (leader.pid.port() - 8000) as usize;
        // For several rounds, every reply of the leader arrives one round late.
        let mut late: Vec<(usize, BleMsg)> = Vec::new();
        for _ in 0..10 {
            for _ in 0..4 {
                for from in 0..3 {
                    let mut out = Vec::new();
                    nodes[from].take_outgoing(&mut out);
                    for (to, msg) in out {
                        let to = (to.port() - 8000) as usize;
                        if from == l && matches!(msg, BleMsg::HeartbeatReply { .. }) {
                            late.push((to, msg));
                        } else {
                            nodes[to].handle(id(from as u16), msg);
                        }
                    }
                }
                for n in nodes.iter_mut() {
                    n.tick();
                }
            }
            // The previous round's replies land in the next round.
            for (to, msg) in late.drain(..) {
                nodes[to].handle(id(l as u16), msg);
            }
        }
        for n in &mut nodes {
            assert_eq!(n.leader(), Some(leader));
            assert!(leader_events(n).is_empty(), "no churn");
        }
    }

    #[test]
    fn replies_with_foreign_ballots_or_future_rounds_are_ignored() {
        let mut nodes = group(3);
        let fake = Ballot { n: 99, pid: id(2) };
        nodes[0].handle(
            id(1),
            BleMsg::HeartbeatReply {
                round: 1,
                ballot: fake,
                quorum_connected: true,
            },
        );
        nodes[0].handle(
            id(1),
            BleMsg::HeartbeatReply {
                round: 50,
                ballot: Ballot { n: 99, pid: id(1) },
                quorum_connected: true,
            },
        );
        nodes[0].handle(id(7), BleMsg::HeartbeatRequest { round: 1 });
        rounds(&mut nodes, 5, &|_, _| false);
        assert!(nodes[0].leader().is_some_and(|b| b.n < 99));
    }
}

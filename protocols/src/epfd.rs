//! Eventually perfect failure detector (EPFD) core.
//!
//! The course's increasing-timeout algorithm, as a sans-IO state machine: the host
//! calls [`Epfd::tick`] once per tick period and [`Epfd::handle`] for every message,
//! then drains [`Epfd::take_outgoing`] and [`Epfd::take_events`]. A round lasts
//! `delay` ticks; at its end every monitored node that did not answer is suspected,
//! and every suspected node that did answer is restored. Each time a round finds a
//! node that was wrongly suspected, the delay grows by a fixed increment, so in a
//! partially synchronous system the delay eventually exceeds the real round-trip
//! time and false suspicions stop. See `docs/protocols.md`.

use std::collections::BTreeSet;

use crate::NodeId;

/// A message exchanged between the failure detectors of two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpfdMsg {
    /// "Are you alive?" for round `seq`.
    HeartbeatRequest {
        /// The sender's round number.
        seq: u64,
    },
    /// "Yes, I am", answering the request of round `seq`.
    HeartbeatReply {
        /// The round number copied from the request.
        seq: u64,
    },
}

/// What the failure detector tells its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpfdEvent {
    /// The node is now suspected to have crashed.
    Suspect(NodeId),
    /// A previously suspected node answered after all: it is alive.
    Restore(NodeId),
}

/// Configuration of one failure detector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpfdConfig {
    /// The node this detector runs on; it never suspects itself.
    pub me: NodeId,
    /// The nodes to monitor (`me` may be included; it is ignored).
    pub nodes: Vec<NodeId>,
    /// Length of the first round, in ticks (0 is treated as 1).
    pub initial_delay_ticks: u64,
    /// How much a round grows after it found a false suspicion, in ticks.
    pub delay_increment_ticks: u64,
}

/// The eventually perfect failure detector of one node.
///
/// Invariant: `suspected ⊆ nodes`, `alive ⊆ nodes`, `me ∉ nodes`;
/// `ticks_in_round < delay` between calls; `delay >= 1` and never decreases;
/// `seq` is the number of rounds ended so far.
#[derive(Clone, Debug)]
pub struct Epfd {
    /// This node.
    me: NodeId,
    /// The monitored nodes (never `me`).
    nodes: BTreeSet<NodeId>,
    /// Nodes that answered the current round (or, if suspected, any earlier one).
    alive: BTreeSet<NodeId>,
    /// Nodes currently suspected.
    suspected: BTreeSet<NodeId>,
    /// Round length in ticks.
    delay: u64,
    /// Growth of `delay` after a round that found a false suspicion.
    increment: u64,
    /// Ticks elapsed in the current round.
    ticks_in_round: u64,
    /// The current round; requests carry it and replies echo it.
    seq: u64,
    /// Messages for the host to send.
    outgoing: Vec<(NodeId, EpfdMsg)>,
    /// Events for the host to deliver.
    events: Vec<EpfdEvent>,
}

impl Epfd {
    /// A detector that trusts every node at first; the first round ends after
    /// `initial_delay_ticks` ticks.
    pub fn new(cfg: EpfdConfig) -> Self {
        let nodes: BTreeSet<NodeId> = cfg.nodes.into_iter().filter(|n| *n != cfg.me).collect();
        Epfd {
            me: cfg.me,
            // Everybody starts alive: nobody has been asked anything yet, so nobody
            // can be suspected at the end of the first round.
            alive: nodes.clone(),
            nodes,
            suspected: BTreeSet::new(),
            delay: cfg.initial_delay_ticks.max(1),
            increment: cfg.delay_increment_ticks,
            ticks_in_round: 0,
            seq: 0,
            outgoing: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Handles a message from `from`.
    ///
    /// A request is answered whoever sent it (so nodes not yet in our table can
    /// still monitor us). A reply counts if it answers the current round, or if its
    /// sender is suspected and it answers any round we sent: a node whose round
    /// trip is longer than the current delay only ever sends late replies, and
    /// without this rule it could never be restored and the delay would never grow
    /// (eventual strong accuracy would fail). Replies from unmonitored nodes and
    /// replies to rounds we never started are ignored.
    pub fn handle(&mut self, from: NodeId, msg: EpfdMsg) {
        match msg {
            EpfdMsg::HeartbeatRequest { seq } => {
                self.outgoing.push((from, EpfdMsg::HeartbeatReply { seq }));
            }
            EpfdMsg::HeartbeatReply { seq } => {
                if !self.nodes.contains(&from) || seq == 0 || seq > self.seq {
                    return;
                }
                if seq == self.seq || self.suspected.contains(&from) {
                    self.alive.insert(from);
                }
            }
        }
    }

    /// Advances time by one tick; ends the round after `delay` ticks.
    pub fn tick(&mut self) {
        self.ticks_in_round += 1;
        if self.ticks_in_round >= self.delay {
            self.ticks_in_round = 0;
            self.end_round();
        }
    }

    /// The course's timeout handler.
    fn end_round(&mut self) {
        if self.alive.intersection(&self.suspected).next().is_some() {
            // A node we suspected was alive after all: our timeout was too short.
            self.delay = self.delay.saturating_add(self.increment);
        }
        self.seq += 1;
        for &n in &self.nodes {
            let alive = self.alive.contains(&n);
            let suspected = self.suspected.contains(&n);
            if !alive && !suspected {
                self.suspected.insert(n);
                self.events.push(EpfdEvent::Suspect(n));
            } else if alive && suspected {
                self.suspected.remove(&n);
                self.events.push(EpfdEvent::Restore(n));
            }
            self.outgoing
                .push((n, EpfdMsg::HeartbeatRequest { seq: self.seq }));
        }
        self.alive.clear();
    }

    /// Starts monitoring `node` (e.g. once the lookup table names it). It is
    /// counted as alive for the current round, so it is not suspected before it has
    /// been asked. Adding `me` or a known node does nothing.
    pub fn add_node(&mut self, node: NodeId) {
        if node != self.me && self.nodes.insert(node) {
            self.alive.insert(node);
        }
    }

    /// Moves the messages to send into `buf` (appending).
    pub fn take_outgoing(&mut self, buf: &mut Vec<(NodeId, EpfdMsg)>) {
        buf.append(&mut self.outgoing);
    }

    /// Moves the pending events into `buf` (appending), oldest first.
    pub fn take_events(&mut self, buf: &mut Vec<EpfdEvent>) {
        buf.append(&mut self.events);
    }

    /// The nodes currently suspected, sorted.
    pub fn suspected(&self) -> Vec<NodeId> {
        self.suspected.iter().copied().collect()
    }

    /// Whether `node` is currently suspected.
    pub fn is_suspected(&self, node: NodeId) -> bool {
        self.suspected.contains(&node)
    }

    /// The current round length in ticks.
    pub fn delay_ticks(&self) -> u64 {
        self.delay
    }

    /// The monitored nodes, sorted (never includes this node).
    pub fn nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().copied().collect()
    }
}

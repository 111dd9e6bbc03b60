//! PerfectLink core: exactly-once, FIFO delivery over a transport that may lose
//! whatever was queued on a connection when it drops (a TCP connection does).
//!
//! Each sender numbers its payloads per destination (1, 2, 3, ...) within an
//! *incarnation*, a random number drawn when the node starts. The receiver delivers
//! payload `delivered + 1` and nothing else (go-back-N): duplicates are skipped, a
//! gap stops delivery of the frame. Cumulative acknowledgements flow back (piggybacked
//! on data, or alone on the next tick); the sender keeps every unacknowledged payload
//! and retransmits all of them when the connection comes back, and, as a safety net,
//! when no acknowledgement arrived for a while (backing off while the peer stays
//! silent).
//!
//! Flow control: at most `max_inflight_bytes` (as weighed by the host) of payloads are
//! on the transport and unacknowledged per peer; the rest wait, in order, and go out
//! as acknowledgements come back. A peer that reconnects after a long cut therefore
//! gets its backlog paced by its own acknowledgements instead of in one burst, which
//! would fill the transport's buffers (shared by all peers) and delay everything else,
//! heartbeats included.
//!
//! Memory is bounded: at most `max_unacked` payloads wait per peer. A peer that has
//! not acknowledged that many is unreachable (crashed or cut off) for a long time;
//! further payloads to it are dropped and counted, and the protocols above recover
//! (Sequence Paxos resynchronises a follower that missed messages). The host logs
//! [`LinkEvent::Unreachable`] once per episode and [`LinkEvent::Overflow`] when
//! payloads are dropped.

use std::collections::{BTreeMap, VecDeque};

use crate::NodeId;

/// Settings of a link core; times are in ticks of the host's clock.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// This node's incarnation (random per process start).
    pub incarnation: u64,
    /// Most payloads kept for retransmission per peer.
    pub max_unacked: usize,
    /// Ticks without acknowledgement progress before retransmitting (doubles while
    /// the peer stays silent, up to 32 times this).
    pub retransmit_ticks: u64,
    /// Ticks a payload may wait for its acknowledgement before the peer is reported
    /// unreachable.
    pub unreachable_ticks: u64,
    /// Most payloads per frame when retransmitting.
    pub max_frame_payloads: usize,
    /// Most bytes (as weighed by the host's weigher) per frame; a single heavier
    /// payload still goes alone. Transports limit frame sizes.
    pub max_frame_bytes: usize,
    /// Most bytes (as weighed) on the transport and not yet acknowledged, per peer;
    /// a single heavier payload still goes out when nothing else is in flight.
    pub max_inflight_bytes: usize,
}

/// A cumulative acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The incarnation of the node whose payloads are acknowledged.
    pub incarnation: u64,
    /// Every payload up to and including this sequence number was delivered.
    pub seq: u64,
}

/// One frame on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<P> {
    /// The sender's incarnation.
    pub incarnation: u64,
    /// Sequence number of `payloads[0]`.
    pub first_seq: u64,
    /// Consecutive payloads.
    pub payloads: Vec<P>,
    /// Acknowledgement of what the sender received from the receiver.
    pub ack: Option<Ack>,
}

/// What the link tells its host besides deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The peer has not acknowledged anything for `waiting_ticks`; `unacked` payloads
    /// wait. Reported once until it acknowledges again.
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// Payloads waiting.
        unacked: usize,
        /// Age of the oldest one, in ticks.
        waiting_ticks: u64,
    },
    /// The peer acknowledged again after being reported unreachable.
    Reachable(NodeId),
    /// The retransmission buffer for `peer` was full; `dropped` payloads (in total
    /// for this episode) were not sent.
    Overflow {
        /// The peer.
        peer: NodeId,
        /// Payloads dropped so far in this episode.
        dropped: u64,
    },
    /// The peer restarted (new incarnation): both directions were reset, and what
    /// was still unacknowledged for its former process is dropped.
    PeerRestarted(NodeId),
}

#[derive(Debug)]
struct Outgoing<P> {
    /// Next sequence number to assign. Invariant: `next_seq > 0`.
    next_seq: u64,
    /// Unacknowledged payloads with their weight. Invariant: sequence numbers are
    /// consecutive, ending at `next_seq - 1`.
    unacked: VecDeque<(u64, P, u64 /* tick queued */, usize /* weight */)>,
    /// First unacknowledged payload not yet handed to the transport since the last
    /// (re)transmission started. Invariant: the front's sequence number (or
    /// `next_seq` when empty) `<= unsent <= next_seq`.
    unsent: u64,
    /// Weight of the unacknowledged payloads before `unsent` (on the transport).
    inflight_bytes: usize,
    /// Tick of the last acknowledgement progress (or first send after idle).
    last_progress: u64,
    /// Tick of the last acknowledgement progress (or first send after idle).
    /// Invariant: `last_ack <= now`.
    last_ack: u64,
    /// The transport reported the connection lost and has not reported it back.
    down: bool,
    /// Current retransmission interval (backs off while silent).
    backoff: u64,
    unreachable_reported: bool,
    dropped: u64,
}

#[derive(Debug, Default)]
struct Incoming {
    incarnation: Option<u64>,
    /// Highest sequence number delivered in order.
    delivered: u64,
    /// An acknowledgement is owed to the peer.
    ack_owed: bool,
}

/// The PerfectLink state of one node towards all its peers.
#[derive(Debug)]
pub struct LinkCore<P> {
    cfg: LinkConfig,
    /// Approximate encoded size of a payload, for packing retransmissions.
    weigh: fn(&P) -> usize,
    now: u64,
    out: BTreeMap<NodeId, Outgoing<P>>,
    inc: BTreeMap<NodeId, Incoming>,
    frames: Vec<(NodeId, Frame<P>)>,
    events: Vec<LinkEvent>,
}

impl<P: Clone> LinkCore<P> {
    /// A link with no peers yet (peers appear as they are sent to or heard from),
    /// weighing every payload as one byte.
    pub fn new(cfg: LinkConfig) -> Self {
        Self::with_weigher(cfg, |_| 1)
    }

    /// A link that packs retransmissions by `weigh`, the approximate encoded size of
    /// a payload, up to `max_frame_bytes` per frame.
    pub fn with_weigher(cfg: LinkConfig, weigh: fn(&P) -> usize) -> Self {
        LinkCore {
            cfg,
            weigh,
            now: 0,
            out: BTreeMap::new(),
            inc: BTreeMap::new(),
            frames: Vec::new(),
            events: Vec::new(),
        }
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.cfg.incarnation
    }

    fn outgoing(&mut self, dst: NodeId) -> &mut Outgoing<P> {
        let now = self.now;
        let base = self.cfg.retransmit_ticks.max(1);
        self.out.entry(dst).or_insert_with(|| Outgoing {
            next_seq: 1,
            unacked: VecDeque::new(),
            unsent: 1,
            inflight_bytes: 0,
            last_progress: now,
            last_ack: now,
            down: false,
            backoff: base,
            unreachable_reported: false,
            dropped: 0,
        })
    }

    fn take_ack(&mut self, peer: NodeId) -> Option<Ack> {
        let inc = self.inc.get_mut(&peer)?;
        let incarnation = inc.incarnation?;
        inc.ack_owed = false;
        Some(Ack {
            incarnation,
            seq: inc.delivered,
        })
    }

    /// Send `payload` to `dst`. Returns `false` if it was dropped because the
    /// retransmission buffer for `dst` is full.
    pub fn send(&mut self, dst: NodeId, payload: P) -> bool {
        let w = (self.weigh)(&payload);
        self.send_weighed(dst, payload, w)
    }

    /// [`send`](Self::send) for a payload the host has already weighed (`w` is
    /// what its weigher would return), so that it is not weighed twice.
    pub fn send_weighed(&mut self, dst: NodeId, payload: P, w: usize) -> bool {
        let now = self.now;
        let max = self.cfg.max_unacked;
        let stall_ticks = self.cfg.retransmit_ticks.max(1);
        let o = self.outgoing(dst);
        if o.unacked.len() >= max {
            o.dropped += 1;
            let dropped = o.dropped;
            // Report the first drop of an episode and then every 10,000th.
            if dropped == 1 || dropped.is_multiple_of(10_000) {
                self.events.push(LinkEvent::Overflow { peer: dst, dropped });
            }
            return false;
        }
        if o.unacked.is_empty() {
            o.last_progress = now;
            o.last_ack = now;
        }
        // A peer that is down, or has acknowledged nothing for a retransmission
        // period, gets nothing new on the transport: the payload waits here and goes
        // out with the next retransmission (on reconnection or after the back-off).
        // The transport would otherwise queue frame after frame for a silent peer
        // and run out of buffers for the healthy ones.
        let stalled =
            !o.unacked.is_empty() && (o.down || now.saturating_sub(o.last_ack) >= stall_ticks);
        let seq = o.next_seq;
        o.next_seq += 1;
        o.unacked.push_back((seq, payload, now, w));
        if !stalled {
            self.pump(dst);
        }
        true
    }

    /// Hands `peer` the unsent payloads that fit in its window, packed into frames
    /// (the first carrying the acknowledgement we owe it, if any).
    fn pump(&mut self, peer: NodeId) {
        let chunk = self.cfg.max_frame_payloads.max(1);
        let max_frame = self.cfg.max_frame_bytes.max(1);
        let window = self.cfg.max_inflight_bytes.max(1);
        let incarnation = self.cfg.incarnation;
        // Whether the window lets the next unsent payload go: always when nothing is
        // in flight, so a payload heavier than the window still goes.
        let fits = |o: &Outgoing<P>, idx: usize| {
            o.unacked
                .get(idx)
                .is_some_and(|e| o.inflight_bytes == 0 || o.inflight_bytes + e.3 <= window)
        };
        let start = match self.out.get(&peer) {
            Some(o) if !o.down => {
                let front = o.unacked.front().map_or(o.next_seq, |e| e.0);
                let idx = (o.unsent - front) as usize;
                if !fits(o, idx) {
                    return;
                }
                idx
            }
            _ => return,
        };
        let mut ack = self.take_ack(peer);
        let Some(o) = self.out.get_mut(&peer) else {
            return;
        };
        let mut idx = start;
        while fits(o, idx) {
            let first_seq = o.unacked[idx].0;
            let mut payloads = Vec::new();
            let mut bytes = 0usize;
            while fits(o, idx) {
                let (_, p, _, w) = &o.unacked[idx];
                if !payloads.is_empty() && (payloads.len() >= chunk || bytes + w > max_frame) {
                    break;
                }
                bytes += w;
                o.inflight_bytes += w;
                payloads.push(p.clone());
                idx += 1;
            }
            o.unsent = first_seq + payloads.len() as u64;
            self.frames.push((
                peer,
                Frame {
                    incarnation,
                    first_seq,
                    payloads,
                    ack: ack.take(),
                },
            ));
        }
    }

    /// Handle a frame from `src`; returns the payloads to deliver, in order.
    pub fn receive(&mut self, src: NodeId, frame: Frame<P>, deliver: &mut Vec<(NodeId, P)>) {
        let inc = self.inc.entry(src).or_default();
        if inc.incarnation != Some(frame.incarnation) {
            let restarted = inc.incarnation.is_some();
            inc.incarnation = Some(frame.incarnation);
            inc.delivered = 0;
            if restarted {
                // A new process at that address. What we numbered for its former
                // self is not for it (and it would wait for sequence numbers it
                // never saw, delivering nothing of ours ever again): start a new
                // stream at 1.
                self.events.push(LinkEvent::PeerRestarted(src));
                self.out.remove(&src);
            }
        }
        if let Some(ack) = frame.ack {
            self.handle_ack(src, ack);
        }
        if frame.payloads.is_empty() {
            return;
        }
        let Some(inc) = self.inc.get_mut(&src) else {
            return;
        };
        for (seq, p) in (frame.first_seq..).zip(frame.payloads) {
            if seq == inc.delivered + 1 {
                inc.delivered = seq;
                deliver.push((src, p));
            } else if seq > inc.delivered + 1 {
                // A gap: something before was lost. Everything from here will be
                // retransmitted after the sender learns our acknowledgement.
                break;
            }
        }
        inc.ack_owed = true;
    }

    fn handle_ack(&mut self, src: NodeId, ack: Ack) {
        if ack.incarnation != self.cfg.incarnation {
            return; // acknowledges a previous life of ours
        }
        let now = self.now;
        let base = self.cfg.retransmit_ticks.max(1);
        let Some(o) = self.out.get_mut(&src) else {
            return;
        };
        let before = o.unacked.len();
        while o.unacked.front().is_some_and(|e| e.0 <= ack.seq) {
            if let Some((seq, _, _, w)) = o.unacked.pop_front()
                && seq < o.unsent
            {
                o.inflight_bytes = o.inflight_bytes.saturating_sub(w);
            }
        }
        let front = o.unacked.front().map_or(o.next_seq, |e| e.0);
        if o.unsent < front {
            // Acknowledged before this round handed them over again.
            o.unsent = front;
        }
        if o.unacked.len() < before {
            o.last_progress = now;
            o.last_ack = now;
            o.down = false;
            o.backoff = base;
            o.dropped = 0;
            if o.unreachable_reported {
                o.unreachable_reported = false;
                self.events.push(LinkEvent::Reachable(src));
            }
            self.pump(src);
        }
    }

    /// The transport re-established a connection to `peer`: whatever was queued on
    /// the old one may be lost, so retransmit everything unacknowledged now.
    pub fn reconnected(&mut self, peer: NodeId) {
        if let Some(o) = self.out.get_mut(&peer) {
            o.down = false;
            o.last_ack = self.now;
        }
        self.retransmit(peer);
    }

    /// The transport lost the connection to `peer`: hold new payloads for it until
    /// it comes back (or the back-off retransmission, which also makes the
    /// transport try to reconnect).
    pub fn disconnected(&mut self, peer: NodeId) {
        if let Some(o) = self.out.get_mut(&peer) {
            o.down = true;
        }
    }

    /// Starts a new transmission round towards `peer`: everything unacknowledged is
    /// handed to the transport again, from the oldest, as the window allows.
    fn retransmit(&mut self, peer: NodeId) {
        let Some(o) = self.out.get_mut(&peer) else {
            if let Some(ack) = self.take_ack(peer) {
                self.frames.push((
                    peer,
                    Frame {
                        incarnation: self.cfg.incarnation,
                        first_seq: 0,
                        payloads: Vec::new(),
                        ack: Some(ack),
                    },
                ));
            }
            return;
        };
        o.unsent = o.unacked.front().map_or(o.next_seq, |e| e.0);
        o.inflight_bytes = 0;
        self.pump(peer);
        if let Some(ack) = self.take_ack(peer) {
            self.frames.push((
                peer,
                Frame {
                    incarnation: self.cfg.incarnation,
                    first_seq: 0,
                    payloads: Vec::new(),
                    ack: Some(ack),
                },
            ));
        }
    }

    /// Advance the clock by one tick: send owed acknowledgements, retransmit to
    /// silent peers, report unreachable ones.
    pub fn tick(&mut self) {
        self.now += 1;
        let now = self.now;
        let owed: Vec<NodeId> = self
            .inc
            .iter()
            .filter(|(_, i)| i.ack_owed)
            .map(|(p, _)| *p)
            .collect();
        for peer in owed {
            if let Some(ack) = self.take_ack(peer) {
                self.frames.push((
                    peer,
                    Frame {
                        incarnation: self.cfg.incarnation,
                        first_seq: 0,
                        payloads: Vec::new(),
                        ack: Some(ack),
                    },
                ));
            }
        }
        let max_backoff = self.cfg.retransmit_ticks.max(1) * 32;
        let mut resend = Vec::new();
        for (peer, o) in self.out.iter_mut() {
            let Some((_, _, oldest, _)) = o.unacked.front() else {
                continue;
            };
            let waiting = now.saturating_sub(*oldest);
            if !o.unreachable_reported && waiting >= self.cfg.unreachable_ticks {
                o.unreachable_reported = true;
                self.events.push(LinkEvent::Unreachable {
                    peer: *peer,
                    unacked: o.unacked.len(),
                    waiting_ticks: waiting,
                });
            }
            if now.saturating_sub(o.last_progress) >= o.backoff {
                o.last_progress = now;
                o.backoff = (o.backoff * 2).min(max_backoff);
                resend.push(*peer);
            }
        }
        for peer in resend {
            self.retransmit(peer);
        }
    }

    /// Drain the frames to put on the transport.
    pub fn take_frames(&mut self, buf: &mut Vec<(NodeId, Frame<P>)>) {
        buf.append(&mut self.frames);
    }

    /// Drain the events to report.
    pub fn take_events(&mut self, buf: &mut Vec<LinkEvent>) {
        buf.append(&mut self.events);
    }

    /// Payloads waiting for acknowledgement from `peer`.
    pub fn unacked(&self, peer: NodeId) -> usize {
        self.out.get(&peer).map_or(0, |o| o.unacked.len())
    }
}

//! Sequence Paxos messages too large to send in one piece.
//!
//! A replica that fell behind the leader's trimmed log is synced with a snapshot,
//! and one that missed many entries with a long log suffix: an `AcceptSync` (or a
//! `Promise`) of hundreds of megabytes for a large partition. Sent as one message it
//! would exceed the network frame limit and never arrive. [`LargeMessages`] sits
//! between a replica's core and its link instead:
//!
//! * A message whose size estimate exceeds `max_inline` is encoded
//!   ([`kv_wire::encode_paxos`]) and kept as an *offer* for its receiver, which is
//!   sent [`LargePaxosMsg::Offer`] in its place.
//! * The receiver pulls the encoding in chunks with a [`SnapshotFetch`] (the same
//!   windowed, checksummed, retried fetch as a state transfer), decodes it as it
//!   would any message from the network, and hands it to its core.
//!
//! Sequence Paxos tolerates lost and late messages (a replica that misses one asks
//! to be prepared again, and leaders resend), which keeps this simple: at most one
//! offer per receiver and one fetch per replica. While a receiver is still pulling
//! an offer, further large messages to it are dropped (the core sends them again
//! later), so a slow fetch is never restarted by the leader's resends; an offer
//! nobody asks for is forgotten after a while, which bounds the memory kept.
//!
//! No Kompact here: the `SequencePaxos` component feeds it and sends what it
//! returns.

use std::collections::BTreeMap;
use std::sync::Arc;

use kv_ports::{LargePaxosMsg, NodeId, PartitionId, PlPayload};
use kv_protocols::kv::KvEntry;
use kv_protocols::sequence_paxos::messages::PaxosMsg;
use kv_protocols::transfer::{
    FETCH_WINDOW, FetchConfig, SnapshotFetch, SnapshotSource, TransferMsg,
};

/// An offer or a fetch counts as in progress while its peer was heard from within
/// this many fetch timeouts.
const BUSY_TIMEOUTS: u64 = 2;
/// An offer not asked for within this many fetch timeouts is forgotten.
const FORGET_TIMEOUTS: u64 = 10;

/// Settings of [`LargeMessages`].
#[derive(Clone, Debug)]
pub struct LargeConfig {
    /// The partition.
    pub partition: PartitionId,
    /// The group's configuration epoch.
    pub epoch: u64,
    /// Messages estimated larger than this are offered instead of sent.
    pub max_inline: usize,
    /// Chunk size of a fetch (at most `max_inline` keeps chunks within a frame).
    pub chunk: u32,
    /// Ticks without an answer before a fetch asks again.
    pub timeout_ticks: u64,
    /// The largest message a fetch accepts.
    pub max_bytes: u64,
}

/// What happened, for the component's log and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LargeEvent {
    /// A message to `to` was offered instead of sent.
    Offered {
        /// The receiver.
        to: NodeId,
        /// The offer.
        id: u64,
        /// Its encoded length.
        len: u64,
    },
    /// A large message to `to` was dropped: `to` is still pulling the previous one.
    Held {
        /// The receiver.
        to: NodeId,
    },
    /// A fetch began.
    Fetching {
        /// The sender.
        from: NodeId,
        /// The offer.
        id: u64,
        /// Its announced length.
        len: u64,
    },
    /// A message arrived whole.
    Fetched {
        /// The sender.
        from: NodeId,
        /// Its length.
        len: u64,
    },
    /// A fetch ended without a message.
    Failed {
        /// The sender.
        from: NodeId,
        /// Why.
        reason: String,
    },
}

struct Offer {
    id: u64,
    source: SnapshotSource,
    /// When it was made or last asked for.
    last_used: u64,
    /// Whether its receiver asked for it at all.
    requested: bool,
}

struct Fetching {
    from: NodeId,
    id: u64,
    fetch: SnapshotFetch,
    /// When the sender last answered.
    last_heard: u64,
}

/// The large messages of one replica: its offers, and the one it is fetching.
pub struct LargeMessages {
    cfg: LargeConfig,
    ticks: u64,
    next_id: u64,
    offers: BTreeMap<NodeId, Offer>,
    fetching: Option<Fetching>,
    requests: Vec<(NodeId, TransferMsg)>,
    events: Vec<LargeEvent>,
}

impl LargeMessages {
    /// No offers, no fetch.
    pub fn new(cfg: LargeConfig) -> Self {
        LargeMessages {
            cfg,
            ticks: 0,
            next_id: 1,
            offers: BTreeMap::new(),
            fetching: None,
            requests: Vec::new(),
            events: Vec::new(),
        }
    }

    fn payload(&self, msg: LargePaxosMsg) -> PlPayload {
        PlPayload::PaxosLarge {
            partition: self.cfg.partition,
            epoch: self.cfg.epoch,
            msg,
        }
    }

    fn busy_ticks(&self) -> u64 {
        BUSY_TIMEOUTS * self.cfg.timeout_ticks.max(1)
    }

    /// Sends `msg` to `dst`: as it is when it is small, else as an offer (or not at
    /// all while `dst` is still pulling the previous offer).
    pub fn send(
        &mut self,
        dst: NodeId,
        msg: PaxosMsg<KvEntry>,
        out: &mut Vec<(NodeId, PlPayload)>,
    ) {
        if kv_wire::paxos_size_hint(&msg) <= self.cfg.max_inline {
            out.push((
                dst,
                PlPayload::Paxos {
                    partition: self.cfg.partition,
                    epoch: self.cfg.epoch,
                    msg,
                },
            ));
            return;
        }
        let busy = self.busy_ticks();
        if let Some(o) = self.offers.get(&dst)
            && o.requested
            && self.ticks < o.last_used + busy
        {
            self.events.push(LargeEvent::Held { to: dst });
            return;
        }
        let bytes = Arc::new(kv_wire::encode_paxos(&msg));
        let len = bytes.len() as u64;
        let id = self.next_id;
        self.next_id += 1;
        let mut source = SnapshotSource::new(self.cfg.chunk);
        source.offer(self.cfg.partition, self.cfg.epoch, bytes);
        self.offers.insert(
            dst,
            Offer {
                id,
                source,
                last_used: self.ticks,
                requested: false,
            },
        );
        self.events.push(LargeEvent::Offered { to: dst, id, len });
        out.push((dst, self.payload(LargePaxosMsg::Offer { id, len })));
    }

    /// Handles a [`LargePaxosMsg`] from `src` (a member of the group); returns a
    /// message that arrived whole, for the core.
    pub fn receive(
        &mut self,
        src: NodeId,
        msg: LargePaxosMsg,
        out: &mut Vec<(NodeId, PlPayload)>,
    ) -> Option<PaxosMsg<KvEntry>> {
        match msg {
            LargePaxosMsg::Offer { id, len } => {
                self.on_offer(src, id, len);
                self.flush_requests(out);
                None
            }
            LargePaxosMsg::Transfer {
                id,
                msg: req @ TransferMsg::Request { .. },
            } => {
                let answer = match self.offers.get_mut(&src) {
                    Some(o) if o.id == id => {
                        o.last_used = self.ticks;
                        o.requested = true;
                        o.source.handle(&req)
                    }
                    _ => Some(TransferMsg::Unavailable {
                        group: self.cfg.partition,
                        epoch: self.cfg.epoch,
                    }),
                };
                if let Some(a) = answer {
                    out.push((src, self.payload(LargePaxosMsg::Transfer { id, msg: a })));
                }
                None
            }
            LargePaxosMsg::Transfer { id, msg } => {
                let done = self.on_answer(src, id, msg);
                self.flush_requests(out);
                done
            }
        }
    }

    fn on_offer(&mut self, src: NodeId, id: u64, len: u64) {
        if let Some(f) = &self.fetching
            && self.ticks < f.last_heard + self.busy_ticks()
            && (f.from != src || f.id == id || f.fetch.progress().0 > 0)
        {
            // Still pulling a message: finish it first. A newer one is sent again
            // if it is still needed then. (A newer offer from the same sender before
            // anything of the old one arrived replaces it: the sender dropped the
            // old one when it offered the new.)
            return;
        }
        if len > self.cfg.max_bytes {
            self.events.push(LargeEvent::Failed {
                from: src,
                reason: format!(
                    "offered {len} bytes, over the limit of {}",
                    self.cfg.max_bytes
                ),
            });
            return;
        }
        let mut fetch = SnapshotFetch::new(
            self.cfg.partition,
            self.cfg.epoch,
            vec![src],
            FetchConfig {
                chunk: self.cfg.chunk,
                window: FETCH_WINDOW,
                timeout_ticks: self.cfg.timeout_ticks.max(1),
                max_bytes: self.cfg.max_bytes,
            },
        );
        fetch.take_outgoing(&mut self.requests);
        self.events
            .push(LargeEvent::Fetching { from: src, id, len });
        self.fetching = Some(Fetching {
            from: src,
            id,
            fetch,
            last_heard: self.ticks,
        });
    }

    fn on_answer(&mut self, src: NodeId, id: u64, msg: TransferMsg) -> Option<PaxosMsg<KvEntry>> {
        let f = self.fetching.as_mut()?;
        if f.from != src || f.id != id {
            return None;
        }
        if matches!(msg, TransferMsg::Unavailable { .. }) {
            self.fetching = None;
            self.events.push(LargeEvent::Failed {
                from: src,
                reason: "the sender no longer offers it".into(),
            });
            return None;
        }
        f.last_heard = self.ticks;
        f.fetch.handle(src, msg);
        f.fetch.take_outgoing(&mut self.requests);
        let result = f.fetch.take_result()?;
        self.fetching = None;
        let failed = |reason: String| LargeEvent::Failed { from: src, reason };
        match result {
            Ok(bytes) => match kv_wire::decode_paxos(&bytes) {
                Ok(m) if is_large_kind(&m) => {
                    self.events.push(LargeEvent::Fetched {
                        from: src,
                        len: bytes.len() as u64,
                    });
                    Some(m)
                }
                Ok(_) => {
                    self.events
                        .push(failed("not a message that is ever sent this way".into()));
                    None
                }
                Err(e) => {
                    self.events.push(failed(format!("undecodable: {e}")));
                    None
                }
            },
            Err(e) => {
                self.events.push(failed(e.to_string()));
                None
            }
        }
    }

    fn flush_requests(&mut self, out: &mut Vec<(NodeId, PlPayload)>) {
        let Some(id) = self.fetching.as_ref().map(|f| f.id) else {
            self.requests.clear();
            return;
        };
        for (to, msg) in std::mem::take(&mut self.requests) {
            out.push((to, self.payload(LargePaxosMsg::Transfer { id, msg })));
        }
    }

    /// Advances the clock: a fetch asks again where answers stopped, and offers
    /// nobody asks for are forgotten.
    pub fn tick(&mut self, out: &mut Vec<(NodeId, PlPayload)>) {
        self.ticks += 1;
        if let Some(f) = &mut self.fetching {
            f.fetch.tick();
            f.fetch.take_outgoing(&mut self.requests);
        }
        self.flush_requests(out);
        let forget = FORGET_TIMEOUTS * self.cfg.timeout_ticks.max(1);
        let now = self.ticks;
        self.offers.retain(|_, o| now < o.last_used + forget);
    }

    /// Moves what happened since the last call into `buf`.
    pub fn take_events(&mut self, buf: &mut Vec<LargeEvent>) {
        buf.append(&mut self.events);
    }

    /// Offers kept (at most one per receiver).
    pub fn offers(&self) -> usize {
        self.offers.len()
    }
}

/// Only the messages that carry a snapshot or a log suffix (or a batch) can be
/// large; anything else arriving this way is a peer's mistake.
fn is_large_kind(m: &PaxosMsg<KvEntry>) -> bool {
    matches!(
        m,
        PaxosMsg::Promise(_)
            | PaxosMsg::AcceptSync(_)
            | PaxosMsg::AcceptDecide(_)
            | PaxosMsg::ProposalForward(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_protocols::ballot::Ballot;
    use kv_protocols::kv::{KvCommand, KvOp};
    use kv_protocols::sequence_paxos::messages::{AcceptSync, Decide, Snapshot};

    fn node(i: u8) -> NodeId {
        NodeId::from(([127, 0, 0, i], 7000))
    }

    fn cfg() -> LargeConfig {
        LargeConfig {
            partition: 3,
            epoch: 1,
            max_inline: 1000,
            chunk: 700,
            timeout_ticks: 5,
            max_bytes: 1 << 20,
        }
    }

    fn big_sync(values: usize) -> PaxosMsg<KvEntry> {
        let cmd = |i: usize| {
            KvEntry::Cmd(KvCommand {
                client: 1,
                seq: i as u64,
                reply_to: node(9),
                origin: node(1),
                stamp_ms: 0,
                op: KvOp::Put {
                    key: format!("k{i}"),
                    value: "v".repeat(100),
                },
            })
        };
        PaxosMsg::AcceptSync(AcceptSync {
            n: Ballot { n: 2, pid: node(1) },
            sync_idx: 10,
            suffix: (0..values).map(cmd).collect(),
            decided_idx: 10,
            snapshot: Some(Snapshot {
                idx: 10,
                data: Arc::new(vec![7; 3000]),
            }),
        })
    }

    /// Moves payloads between `a` (node 1) and `b` (node 2) until none is left;
    /// returns the Paxos messages each side got, whole.
    fn exchange(
        a: &mut LargeMessages,
        b: &mut LargeMessages,
        mut queue: Vec<(NodeId, NodeId, PlPayload)>,
        mut drop: impl FnMut(&PlPayload) -> bool,
    ) -> Vec<(NodeId, PaxosMsg<KvEntry>)> {
        let mut got = Vec::new();
        while !queue.is_empty() {
            let mut next = Vec::new();
            for (from, to, p) in queue.drain(..) {
                if drop(&p) {
                    continue;
                }
                let (me, _) = if to == node(1) {
                    (&mut *a, 0)
                } else {
                    (&mut *b, 1)
                };
                let mut out = Vec::new();
                match p {
                    PlPayload::Paxos { msg, .. } => got.push((to, msg)),
                    PlPayload::PaxosLarge { msg, .. } => {
                        if let Some(m) = me.receive(from, msg, &mut out) {
                            got.push((to, m));
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
                next.extend(out.into_iter().map(|(dst, p)| (to, dst, p)));
            }
            queue = next;
        }
        got
    }

    fn send(
        a: &mut LargeMessages,
        to: NodeId,
        m: PaxosMsg<KvEntry>,
    ) -> Vec<(NodeId, NodeId, PlPayload)> {
        let mut out = Vec::new();
        a.send(to, m, &mut out);
        out.into_iter().map(|(dst, p)| (node(1), dst, p)).collect()
    }

    #[test]
    fn a_small_message_goes_as_it_is() {
        let mut a = LargeMessages::new(cfg());
        let d = PaxosMsg::Decide(Decide {
            n: Ballot::NONE,
            decided_idx: 4,
        });
        let out = send(&mut a, node(2), d.clone());
        assert!(
            matches!(&out[..], [(_, _, PlPayload::Paxos { msg, partition: 3, epoch: 1 })] if *msg == d)
        );
        assert_eq!(a.offers(), 0);
    }

    #[test]
    fn a_large_message_is_pulled_in_chunks_and_arrives_whole() {
        let (mut a, mut b) = (LargeMessages::new(cfg()), LargeMessages::new(cfg()));
        let msg = big_sync(50);
        let out = send(&mut a, node(2), msg.clone());
        assert!(matches!(
            &out[..],
            [(
                _,
                _,
                PlPayload::PaxosLarge {
                    msg: LargePaxosMsg::Offer { .. },
                    ..
                }
            )]
        ));
        let mut chunks = 0;
        let got = exchange(&mut a, &mut b, out, |p| {
            if let PlPayload::PaxosLarge {
                msg:
                    LargePaxosMsg::Transfer {
                        msg: TransferMsg::Chunk { data, .. },
                        ..
                    },
                ..
            } = p
            {
                assert!(data.len() <= 700);
                chunks += 1;
            }
            false
        });
        assert_eq!(got, vec![(node(2), msg)]);
        assert!(chunks > 1, "{chunks} chunks");
        let mut ev = Vec::new();
        b.take_events(&mut ev);
        assert!(
            matches!(ev.last(), Some(LargeEvent::Fetched { .. })),
            "{ev:?}"
        );
    }

    #[test]
    fn lost_chunks_are_asked_again_on_ticks() {
        let (mut a, mut b) = (LargeMessages::new(cfg()), LargeMessages::new(cfg()));
        let msg = big_sync(40);
        let out = send(&mut a, node(2), msg.clone());
        // Every chunk of the first round is lost.
        let got = exchange(&mut a, &mut b, out, |p| {
            matches!(
                p,
                PlPayload::PaxosLarge {
                    msg: LargePaxosMsg::Transfer {
                        msg: TransferMsg::Chunk { .. },
                        ..
                    },
                    ..
                }
            )
        });
        assert!(got.is_empty());
        let mut got = Vec::new();
        for _ in 0..50 {
            let mut out = Vec::new();
            b.tick(&mut out);
            a.tick(&mut Vec::new());
            let q = out.into_iter().map(|(dst, p)| (node(2), dst, p)).collect();
            got.extend(exchange(&mut a, &mut b, q, |_| false));
        }
        assert_eq!(got, vec![(node(2), msg)]);
    }

    #[test]
    fn while_the_receiver_pulls_an_offer_newer_large_messages_to_it_are_held() {
        let (mut a, mut b) = (LargeMessages::new(cfg()), LargeMessages::new(cfg()));
        let out = send(&mut a, node(2), big_sync(40));
        // The offer and the first requests arrive; the answers are in flight.
        let mut out_b = Vec::new();
        let PlPayload::PaxosLarge { msg, .. } = out[0].2.clone() else {
            panic!()
        };
        assert_eq!(b.receive(node(1), msg, &mut out_b), None);
        let (_, req) = &out_b[0];
        let PlPayload::PaxosLarge { msg, .. } = req.clone() else {
            panic!()
        };
        a.receive(node(2), msg, &mut Vec::new());
        // A resend of the sync is held back rather than replacing the offer.
        assert!(send(&mut a, node(2), big_sync(41)).is_empty());
        let mut ev = Vec::new();
        a.take_events(&mut ev);
        assert_eq!(ev.last(), Some(&LargeEvent::Held { to: node(2) }));
        // Once the receiver has been quiet for a while, a new one is offered.
        for _ in 0..(BUSY_TIMEOUTS * 5) {
            a.tick(&mut Vec::new());
        }
        assert_eq!(send(&mut a, node(2), big_sync(41)).len(), 1);
    }

    #[test]
    fn offers_nobody_fetches_are_forgotten_and_then_refused() {
        let (mut a, mut b) = (LargeMessages::new(cfg()), LargeMessages::new(cfg()));
        let out = send(&mut a, node(2), big_sync(40));
        assert_eq!(a.offers(), 1);
        for _ in 0..(FORGET_TIMEOUTS * 5) {
            a.tick(&mut Vec::new());
        }
        assert_eq!(a.offers(), 0);
        // The late receiver is told the offer is gone, and gives up.
        let got = exchange(&mut a, &mut b, out, |_| false);
        assert!(got.is_empty());
        let mut ev = Vec::new();
        b.take_events(&mut ev);
        assert!(
            matches!(ev.last(), Some(LargeEvent::Failed { .. })),
            "{ev:?}"
        );
    }

    #[test]
    fn an_offer_over_the_limit_or_a_forged_message_is_refused() {
        let mut b = LargeMessages::new(cfg());
        let mut out = Vec::new();
        b.receive(
            node(1),
            LargePaxosMsg::Offer {
                id: 1,
                len: 1 << 30,
            },
            &mut out,
        );
        assert!(out.is_empty());
        let mut ev = Vec::new();
        b.take_events(&mut ev);
        assert!(matches!(&ev[..], [LargeEvent::Failed { .. }]), "{ev:?}");

        // A peer offering something that is not a sync, a promise or a batch.
        let mut a = LargeMessages::new(LargeConfig {
            max_inline: 0,
            ..cfg()
        });
        let d = PaxosMsg::Decide(Decide {
            n: Ballot::NONE,
            decided_idx: 1,
        });
        let q = send(&mut a, node(2), d);
        assert!(exchange(&mut a, &mut b, q, |_| false).is_empty());
        b.take_events(&mut ev);
        assert!(
            matches!(ev.last(), Some(LargeEvent::Failed { .. })),
            "{ev:?}"
        );
    }
}

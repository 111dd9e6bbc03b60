//! The `PerfectLink` component: exactly-once, FIFO delivery between correct nodes
//! over the best-effort [`Network`] port. The protocol is the sans-IO
//! [`LinkCore`](kv_protocols::link::LinkCore); this component feeds it frames, ticks
//! and reconnections, and puts its frames on the network.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kompact::prelude::*;
use kv_ports::{
    LinkAck, LinkFrame, NetIndication, NetMessage, NetRequest, Network, NodeId, PerfectLink,
    PlIndication, PlPayload, PlRequest, Timer,
};
use kv_protocols::link::{Ack, Frame, LinkConfig, LinkCore, LinkEvent};

use crate::ticker::{Ticker, tick_driven_component, ticks};

/// Retransmissions are packed into frames of at most this many (estimated) bytes,
/// the smallest `limits.max-frame-bytes` a node accepts, so that a packed frame never
/// crosses the limit and one frame does not hold a connection for long.
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Most bytes per peer on the transport and not yet acknowledged (flow control;
/// see [`kv_protocols::link`]). Far above what one peer needs between two
/// acknowledgements at full load, far below the transport's queue for one peer.
const MAX_INFLIGHT_BYTES: usize = 1 << 20;

/// An upper estimate of a payload's encoded size (the wire codec's, without
/// encoding).
fn approx_size(p: &Arc<PlPayload>) -> usize {
    kv_wire::payload_size_hint(p)
}

/// What kind of payload `p` is, for log lines.
fn payload_kind(p: &PlPayload) -> &'static str {
    match p {
        PlPayload::Epfd(_) => "failure detector",
        PlPayload::Ble { .. } => "leader election",
        PlPayload::Paxos { .. } => "sequence paxos",
        PlPayload::PaxosLarge { .. } => "large sequence paxos message",
        PlPayload::Transfer(_) => "state transfer",
        PlPayload::Bootstrap(_) => "bootstrap",
        PlPayload::Membership(_) => "membership",
        PlPayload::Forward(_) => "forwarded requests",
    }
}

/// Settings of the PerfectLink component.
#[derive(Clone, Debug)]
pub struct PerfectLinkConfig {
    /// This node's address.
    pub me: NodeId,
    /// Fingerprint of the cluster name (see `kv_ports::cluster_fingerprint`).
    pub cluster: u64,
    /// Random per process start.
    pub incarnation: u64,
    /// Clock tick of the link core.
    pub tick_period: Duration,
    /// Time without acknowledgement before retransmitting.
    pub retransmit_period: Duration,
    /// Most unacknowledged payloads kept per peer.
    pub max_unacked: usize,
    /// Time after which a silent peer is reported unreachable.
    pub unreachable_warning: Duration,
    /// The network's frame limit (`limits.max-frame-bytes`). A payload that could
    /// not fit in a frame is refused at once: sent, it would be dropped by the
    /// network and resent for ever, and nothing behind it would arrive.
    pub max_frame_bytes: usize,
}

/// Room in a frame for the frame's own fields around one payload.
const FRAME_OVERHEAD: usize = 1024;

/// Provides [`PerfectLink`] over [`Network`] and [`Timer`].
#[derive(ComponentDefinition)]
pub struct PerfectLinkComp {
    ctx: ComponentContext<Self>,
    pl_port: ProvidedPort<PerfectLink>,
    net_port: RequiredPort<Network>,
    timer_port: RequiredPort<Timer>,
    cfg: PerfectLinkConfig,
    core: LinkCore<Arc<PlPayload>>,
    ticker: Ticker,
    frames: Vec<(NodeId, Frame<Arc<PlPayload>>)>,
    deliveries: Vec<(NodeId, Arc<PlPayload>)>,
    events: Vec<LinkEvent>,
    /// Peers of another cluster we already logged (log once per peer).
    foreign_logged: BTreeSet<NodeId>,
}

impl PerfectLinkComp {
    /// A link component with the given settings.
    pub fn new(cfg: PerfectLinkConfig) -> Self {
        let core = LinkCore::with_weigher(
            LinkConfig {
                incarnation: cfg.incarnation,
                max_unacked: cfg.max_unacked,
                retransmit_ticks: ticks(cfg.retransmit_period, cfg.tick_period),
                unreachable_ticks: ticks(cfg.unreachable_warning, cfg.tick_period),
                max_frame_payloads: 256,
                max_frame_bytes: MAX_FRAME_BYTES,
                max_inflight_bytes: MAX_INFLIGHT_BYTES,
            },
            approx_size,
        );
        PerfectLinkComp {
            ctx: ComponentContext::uninitialised(),
            pl_port: ProvidedPort::uninitialised(),
            net_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            ticker: Ticker::new(cfg.tick_period),
            cfg,
            core,
            frames: Vec::new(),
            deliveries: Vec::new(),
            events: Vec::new(),
            foreign_logged: BTreeSet::new(),
        }
    }

    fn flush(&mut self) {
        self.core.take_frames(&mut self.frames);
        for (dst, f) in self.frames.drain(..) {
            let msg = NetMessage::Link(LinkFrame {
                cluster: self.cfg.cluster,
                incarnation: f.incarnation,
                first_seq: f.first_seq,
                payloads: f.payloads,
                ack: f.ack.map(|a| LinkAck {
                    incarnation: a.incarnation,
                    seq: a.seq,
                }),
            });
            self.net_port.trigger(NetRequest::Send { dst, msg });
        }
        for (src, payload) in self.deliveries.drain(..) {
            self.pl_port.trigger(PlIndication::Deliver { src, payload });
        }
        self.core.take_events(&mut self.events);
        for e in self.events.drain(..) {
            match e {
                LinkEvent::Unreachable {
                    peer,
                    unacked,
                    waiting_ticks,
                } => {
                    let waited = self.cfg.tick_period * waiting_ticks as u32;
                    warn!(self.ctx.log(), "peer unreachable";
                        "peer" => %peer, "unacked" => unacked, "waiting" => ?waited);
                }
                LinkEvent::Reachable(peer) => {
                    info!(self.ctx.log(), "peer reachable again"; "peer" => %peer);
                }
                LinkEvent::Overflow { peer, dropped } => {
                    warn!(self.ctx.log(), "retransmission buffer full, dropping messages";
                        "peer" => %peer, "dropped" => dropped, "limit" => self.cfg.max_unacked);
                }
                LinkEvent::PeerRestarted(peer) => {
                    info!(self.ctx.log(), "peer restarted"; "peer" => %peer);
                }
            }
        }
    }

    /// Payloads sent to `peer` and not acknowledged yet (retransmission queue).
    pub fn unacked(&self, peer: NodeId) -> usize {
        self.core.unacked(peer)
    }

    fn on_frame(&mut self, src: NodeId, f: LinkFrame) {
        if f.cluster != self.cfg.cluster {
            if self.foreign_logged.insert(src) {
                warn!(self.ctx.log(), "dropping messages from a node of another cluster";
                    "peer" => %src, "their_cluster" => format!("{:016x}", f.cluster));
            }
            return;
        }
        let frame = Frame {
            incarnation: f.incarnation,
            first_seq: f.first_seq,
            payloads: f.payloads,
            ack: f.ack.map(|a| Ack {
                incarnation: a.incarnation,
                seq: a.seq,
            }),
        };
        self.core.receive(src, frame, &mut self.deliveries);
    }
}

impl Provide<PerfectLink> for PerfectLinkComp {
    fn handle(&mut self, req: PlRequest) -> HandlerResult {
        match req {
            PlRequest::Send { dst, payload } => {
                if dst == self.cfg.me {
                    // Loopback: delivered at once, in order, exactly once.
                    self.pl_port.trigger(PlIndication::Deliver {
                        src: dst,
                        payload: Arc::new(payload),
                    });
                } else {
                    let payload = Arc::new(payload);
                    let size = approx_size(&payload);
                    if size + FRAME_OVERHEAD > self.cfg.max_frame_bytes {
                        error!(self.ctx.log(), "message refused: larger than a network frame";
                            "to" => %dst, "bytes" => size,
                            "max_frame_bytes" => self.cfg.max_frame_bytes,
                            "kind" => payload_kind(&payload));
                    } else {
                        self.core.send_weighed(dst, payload, size);
                    }
                }
            }
        }
        self.flush();
        Handled::OK
    }
}

impl Require<Network> for PerfectLinkComp {
    fn handle(&mut self, ind: NetIndication) -> HandlerResult {
        match ind {
            NetIndication::Deliver {
                src,
                msg: NetMessage::Link(f),
            } => self.on_frame(src, f),
            NetIndication::Deliver { .. } => return Handled::OK, // client traffic
            NetIndication::ConnectionEstablished(peer) => {
                self.core.reconnected(peer);
                self.pl_port.trigger(PlIndication::Reconnected(peer));
            }
            NetIndication::ConnectionLost(peer) => {
                self.core.disconnected(peer);
                return Handled::OK;
            }
        }
        self.flush();
        Handled::OK
    }
}

tick_driven_component!(PerfectLinkComp);

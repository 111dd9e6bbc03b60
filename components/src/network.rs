//! The real [`Network`] provider: our own TCP transport (`kv-transport`).
//!
//! Each node's (and client's) Kompact system runs one `TcpNetwork` over one
//! transport, which owns a network thread with one connection per peer. A peer is
//! known by the address it listens on (`ip:port`), proven in the transport's
//! handshake; clients listen too, so a node answers a client at its address, over
//! the connection the client opened while that one lasts.
//!
//! - Out: every [`NetMessage`] becomes one frame, encoded by `kv-wire` behind a
//!   two-byte serialisation id ([`encode_frame`]), and is handed to the transport.
//! - In: the network thread `tell`s each transport [`Event`] to this component, which
//!   decodes frames here, at the edge ([`decode_frame`]): a frame that fails to decode
//!   is logged with its sender, counted in [`TcpNetwork::dropped_frames`] and dropped,
//!   and nothing else is disturbed.
//! - A message to this system's own address is delivered at once, without encoding
//!   (a bootstrap server checks in with itself).
//! - A dial refused because the answering node is of another cluster, or does not
//!   share our cluster secret, is reported upwards as that node's refusal of a
//!   `Connect` (`Refusal::WrongCluster`), so a client learns at once why.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use kompact::prelude::*;
use kv_ports::{ClientMessage, NetIndication, NetMessage, NetRequest, Network, NodeId, Refusal};
use kv_transport::handshake::HandshakeError;
pub use kv_transport::tls::TlsItem;
use kv_transport::{ConnectionError, TlsError, TransportHandle};
pub use kv_transport::{Event, SendError, Stats as TransportStats, TlsConfig, TransportConfig};
use kv_wire::{SerId, WireError};

/// Bytes in front of every frame's protobuf body: the serialisation id, big-endian.
pub const ID_BYTES: usize = 2;

/// Most distinct (peer, reason) pairs whose first connection error is logged as a
/// warning; later ones are logged at debug level, so that connections from many
/// addresses cannot grow this set without bound.
const MAX_LOGGED_ERRORS: usize = 1024;

/// A transport event, handed from the network thread to the component.
#[derive(Debug)]
pub struct TransportEvent(pub Event);

/// Why a frame could not be turned back into a [`NetMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameDecodeError {
    /// Shorter than its serialisation id.
    Short(usize),
    /// The body did not decode under the id.
    Wire {
        /// The frame's serialisation id.
        id: SerId,
        /// What was wrong.
        error: WireError,
    },
}

impl fmt::Display for FrameDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameDecodeError::Short(n) => {
                write!(f, "frame of {n} bytes has no serialisation id")
            }
            FrameDecodeError::Wire { id, error } => write!(
                f,
                "{} (id {id}): {error}",
                kv_wire::ids::name_of(*id).unwrap_or("unknown message")
            ),
        }
    }
}

/// Encodes `msg` as one frame: its serialisation id (`u16`, big-endian) and its
/// protobuf encoding. `None` only if the id does not fit in two bytes, which the
/// id table (100–199) rules out.
pub fn encode_frame(msg: &NetMessage) -> Option<Vec<u8>> {
    let id = u16::try_from(kv_wire::ser_id_of(msg)).ok()?;
    let mut v = Vec::with_capacity(ID_BYTES + kv_wire::size_hint(msg));
    v.extend_from_slice(&id.to_be_bytes());
    kv_wire::encode(msg, &mut v);
    Some(v)
}

/// Decodes a frame made by [`encode_frame`]; never panics on any input.
pub fn decode_frame(frame: &[u8]) -> Result<NetMessage, FrameDecodeError> {
    let (Some(id), Some(body)) = (frame.get(..ID_BYTES), frame.get(ID_BYTES..)) else {
        return Err(FrameDecodeError::Short(frame.len()));
    };
    let id = SerId::from(u16::from_be_bytes([id[0], id[1]]));
    kv_wire::decode_slice(id, body).map_err(|error| FrameDecodeError::Wire { id, error })
}

/// Provides the [`Network`] port over `kv-transport`. Created by
/// [`crate::runtime::Runtime::start`], which starts the transport with a handler
/// that `tell`s this component every [`TransportEvent`].
#[derive(ComponentDefinition)]
pub struct TcpNetwork {
    ctx: ComponentContext<Self>,
    net_port: ProvidedPort<Network>,
    /// The transport; `None` before [`TcpNetwork::attach`] and after the
    /// component was killed.
    transport: Option<TransportHandle>,
    /// This system's own address (its identity in handshakes).
    me: Option<NodeId>,
    /// Peers with an open connection, as the transport reported them.
    connected: BTreeSet<NodeId>,
    /// Peers cut off by [`TcpNetwork::set_blocked`].
    blocked: BTreeSet<NodeId>,
    /// (peer, reason) pairs whose connection error was already logged as a warning.
    logged_errors: BTreeSet<(SocketAddr, &'static str)>,
    /// Frames dropped because they could not be decoded.
    pub dropped_frames: u64,
    /// Messages the transport did not take (too large, its queue full, stopped).
    pub dropped_sends: u64,
}

impl TcpNetwork {
    /// A network provider without a transport yet; see [`TcpNetwork::attach`].
    pub fn new() -> Self {
        TcpNetwork {
            ctx: ComponentContext::uninitialised(),
            net_port: ProvidedPort::uninitialised(),
            transport: None,
            me: None,
            connected: BTreeSet::new(),
            blocked: BTreeSet::new(),
            logged_errors: BTreeSet::new(),
            dropped_frames: 0,
            dropped_sends: 0,
        }
    }

    /// Hands the running transport to the component (once, before it starts).
    pub fn attach(&mut self, transport: TransportHandle) {
        self.me = Some(transport.identity().addr);
        self.transport = Some(transport);
    }

    /// The transport's counters, if it is running.
    pub fn transport_stats(&self) -> Option<TransportStats> {
        self.transport.as_ref().map(TransportHandle::stats)
    }

    /// Cut (`true`) or restore (`false`) the traffic with `peer`, as a crashed switch
    /// would: while cut, messages to and from it are dropped and the connection is
    /// reported lost; when restored, the connection is closed, so that both sides
    /// see it come back as a new one (and their links resend what was lost).
    /// Meant for tests and fault injection.
    pub fn set_blocked(&mut self, peer: NodeId, blocked: bool) {
        if blocked {
            if self.blocked.insert(peer) && self.connected.contains(&peer) {
                self.net_port.trigger(NetIndication::ConnectionLost(peer));
            }
        } else if self.blocked.remove(&peer) {
            // Reported as lost when cut: forget it, so that the transport's next
            // `Connected` is reported as a new connection.
            self.connected.remove(&peer);
            if let Some(t) = &self.transport {
                let _ = t.disconnect(peer);
            }
        }
    }

    fn send(&mut self, dst: NodeId, msg: NetMessage) {
        if Some(dst) == self.me {
            self.net_port
                .trigger(NetIndication::Deliver { src: dst, msg });
            return;
        }
        if self.blocked.contains(&dst) {
            return;
        }
        let Some(frame) = encode_frame(&msg) else {
            self.dropped_sends += 1;
            error!(self.log(), "message has a serialisation id over two bytes";
                "to" => %dst, "ser_id" => kv_wire::ser_id_of(&msg));
            return;
        };
        let Some(transport) = &self.transport else {
            self.dropped_sends += 1;
            return;
        };
        match transport.send(dst, frame) {
            Ok(()) => {}
            Err(e @ SendError::TooLarge { .. }) => {
                self.dropped_sends += 1;
                warn!(self.log(), "dropped a message larger than limits.max-frame-bytes";
                    "to" => %dst,
                    "message" => kv_wire::ids::name_of(kv_wire::ser_id_of(&msg)).unwrap_or("unknown"),
                    "error" => %e);
            }
            Err(e) => {
                // The link above retransmits; the transport counts its own drops.
                self.dropped_sends += 1;
                debug!(self.log(), "the transport did not take a message"; "to" => %dst, "error" => %e);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected { peer, incarnation } => {
                debug!(self.log(), "connection established";
                    "peer" => %peer, "incarnation" => incarnation);
                if self.connected.insert(peer) && !self.blocked.contains(&peer) {
                    self.net_port
                        .trigger(NetIndication::ConnectionEstablished(peer));
                }
            }
            Event::Disconnected { peer } => {
                debug!(self.log(), "connection lost"; "peer" => %peer);
                if self.connected.remove(&peer) && !self.blocked.contains(&peer) {
                    self.net_port.trigger(NetIndication::ConnectionLost(peer));
                }
            }
            Event::Frame { peer, data } => {
                if self.blocked.contains(&peer) {
                    return;
                }
                match decode_frame(&data) {
                    Ok(msg) => self
                        .net_port
                        .trigger(NetIndication::Deliver { src: peer, msg }),
                    Err(e) => {
                        self.dropped_frames += 1;
                        warn!(self.log(), "dropped a frame that failed to decode";
                            "from" => %peer, "bytes" => data.len(), "error" => %e);
                    }
                }
            }
            Event::ConnectionError {
                remote,
                peer,
                dialed,
                error,
            } => self.on_connection_error(remote, peer, dialed, error),
        }
    }

    fn on_connection_error(
        &mut self,
        remote: SocketAddr,
        peer: Option<SocketAddr>,
        dialed: bool,
        error: ConnectionError,
    ) {
        let who = peer.unwrap_or(remote);
        let (kind, quiet) = match &error {
            // Dials to a node that is down, resets, timeouts: routine while nodes
            // come and go; the failure detector reports what matters.
            ConnectionError::Io { .. } | ConnectionError::IdleTimeout => ("io", true),
            ConnectionError::HandshakeTimeout => ("handshake timeout", false),
            ConnectionError::Handshake(HandshakeError::ClusterMismatch { .. }) => {
                ("other cluster", false)
            }
            ConnectionError::Handshake(h) if h.is_auth_failure() => ("authentication", false),
            ConnectionError::Tls(TlsError::RefusedByPeer(_)) => ("refused by peer", false),
            ConnectionError::Tls(t) if t.is_auth_failure() => ("certificate", false),
            ConnectionError::Tls(_) => ("tls", false),
            ConnectionError::Handshake(_) => ("handshake", false),
            ConnectionError::Frame(_) | ConnectionError::UnknownKind(_) => ("bad frame", false),
        };
        let first = !quiet
            && self.logged_errors.len() < MAX_LOGGED_ERRORS
            && self.logged_errors.insert((who, kind));
        let what = match (kind, dialed) {
            ("other cluster", false) => "refused a connection from a peer of another cluster",
            ("other cluster", true) => "the node dialed belongs to another cluster",
            ("authentication", _) => "refused a connection that failed the cluster-secret check",
            ("certificate", false) => "refused a TLS connection that failed the certificate check",
            ("refused by peer", _) => "the peer refused our TLS certificate",
            ("certificate", true) => "a node dialed failed the certificate check",
            ("tls", _) => "closed a connection that did not speak TLS as configured",
            (_, _) => "connection closed",
        };
        if first {
            warn!(self.log(), "{}", what;
                "peer" => %who, "remote" => %remote, "dialed" => dialed, "reason" => %error);
        } else {
            debug!(self.log(), "{}", what;
                "peer" => %who, "remote" => %remote, "dialed" => dialed, "reason" => %error);
        }
        // A dial refused for not belonging to the node's cluster (another name, or
        // no shared secret) will fail the same way on every retry. Report it as the
        // node's refusal of a `Connect`, which is what it means, so that a client
        // fails at once with the reason instead of timing out.
        let refusal = match (&error, dialed, peer) {
            (ConnectionError::Handshake(h), true, Some(peer)) => match h {
                HandshakeError::ClusterMismatch { theirs, ours } => Some((
                    peer,
                    format!("this node belongs to cluster {theirs:?}, not {ours:?}"),
                )),
                h if h.is_auth_failure() => Some((
                    peer,
                    format!("this node does not share our cluster secret ({h})"),
                )),
                _ => None,
            },
            // The node's certificate is not from our CA, it refused ours, or one
            // side has no TLS: every retry ends the same way.
            (ConnectionError::Tls(t), true, Some(peer)) => match t {
                TlsError::Protocol(_) | TlsError::CannotAccept => None,
                TlsError::NotTls => Some((
                    peer,
                    format!("this node does not speak TLS, and we do ({t})"),
                )),
                TlsError::PeerSpeaksTls => Some((
                    peer,
                    format!(
                        "this node requires TLS (a client gives the cluster CA with --tls-ca): {t}"
                    ),
                )),
                t => Some((peer, format!("TLS certificate check failed: {t}"))),
            },
            _ => None,
        };
        if let Some((peer, reason)) = refusal {
            self.net_port.trigger(NetIndication::Deliver {
                src: peer,
                msg: NetMessage::Client(ClientMessage::Refused {
                    client: 0,
                    seq: 0,
                    reason: Refusal::WrongCluster(reason),
                }),
            });
        }
    }
}

impl Default for TcpNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl ComponentLifecycle for TcpNetwork {
    fn on_kill(&mut self) -> HandlerResult {
        if let Some(t) = self.transport.take()
            && let Err(e) = t.shutdown()
        {
            warn!(self.log(), "the network thread stopped with an error"; "error" => %e);
        }
        Handled::OK
    }
}

impl Provide<Network> for TcpNetwork {
    fn handle(&mut self, req: NetRequest) -> HandlerResult {
        match req {
            NetRequest::Send { dst, msg } => self.send(dst, msg),
        }
        Handled::OK
    }
}

impl Actor for TcpNetwork {
    type Message = TransportEvent;

    fn receive_local(&mut self, TransportEvent(event): TransportEvent) -> HandlerResult {
        self.on_event(event);
        Handled::OK
    }

    fn receive_network(&mut self, _msg: kompact::prelude::NetMessage) -> HandlerResult {
        // Nothing arrives through Kompact's own networking; kompact's `distributed`
        // feature (on for kv-wire's serialisation traits) still asks for this.
        Handled::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_decodes_to_the_message_it_was_made_from() {
        let msg = NetMessage::Client(ClientMessage::Connect {
            cluster: "c".into(),
        });
        let frame = encode_frame(&msg).unwrap();
        assert_eq!(&frame[..ID_BYTES], &110u16.to_be_bytes());
        let back = decode_frame(&frame).unwrap();
        assert_eq!(format!("{back:?}"), format!("{msg:?}"));
    }

    #[test]
    fn short_unknown_and_garbage_frames_are_errors() {
        assert_eq!(decode_frame(&[]).err(), Some(FrameDecodeError::Short(0)));
        assert_eq!(decode_frame(&[0]).err(), Some(FrameDecodeError::Short(1)));
        assert!(matches!(
            decode_frame(&[0, 7, 1, 2]),
            Err(FrameDecodeError::Wire { id: 7, .. })
        ));
        assert!(matches!(
            decode_frame(&[0, 100, 0xff, 0xff, 0xff]),
            Err(FrameDecodeError::Wire { id: 100, .. })
        ));
    }
}

//! The real [`Network`] provider: kompact-net over TCP.
//!
//! Each node's (and client's) Kompact system runs one `TcpNetwork`, registered under
//! the alias [`NETWORK_ALIAS`], so a peer at `ip:port` is always reachable at
//! `tcp://ip:port/kvstore`. Outgoing messages are encoded with protobuf by `kv-wire`
//! (one serialisation id per message type); incoming frames are decoded and checked
//! here, at the edge: a frame that fails to decode or carries an unknown id is logged
//! with its sender and dropped, and nothing else is disturbed.

use std::collections::HashMap;
use std::sync::Arc;

use kompact::prelude::*;
use kompact_net::{NetworkStatus, NetworkStatusPort, NetworkStatusRequest};
use kv_ports::{NetIndication, NetRequest, Network, NodeId};
use kv_wire::Wire;

use crate::receive_buffers::{DeferredFreeAllocator, Reclaim};

/// The alias every system registers its network component under.
pub const NETWORK_ALIAS: &str = "kvstore";

/// Provides the [`Network`] port over kompact-net.
#[derive(ComponentDefinition)]
pub struct TcpNetwork {
    ctx: ComponentContext<Self>,
    net_port: ProvidedPort<Network>,
    /// Connection status from kompact-net's dispatcher; connected by the host with
    /// `NetworkSystemExt::connect_network_status_port`.
    pub status_port: RequiredPort<NetworkStatusPort>,
    /// Destination paths, built once per peer (lookups only).
    paths: HashMap<NodeId, ActorPath>,
    /// Frames dropped because they could not be decoded.
    pub dropped_frames: u64,
    /// The network thread's chunk allocator, whose released chunks this component
    /// frees on [`Reclaim`] (see [`crate::receive_buffers`]).
    receive_buffers: Option<Arc<DeferredFreeAllocator>>,
}

impl TcpNetwork {
    /// A network provider; register it with [`NETWORK_ALIAS`].
    pub fn new() -> Self {
        TcpNetwork {
            ctx: ComponentContext::uninitialised(),
            net_port: ProvidedPort::uninitialised(),
            status_port: RequiredPort::uninitialised(),
            paths: HashMap::new(),
            dropped_frames: 0,
            receive_buffers: None,
        }
    }

    /// A network provider that frees the chunks `receive_buffers` parks, in order with
    /// the frames it decodes (see [`crate::receive_buffers`]).
    pub fn with_receive_buffers(receive_buffers: Arc<DeferredFreeAllocator>) -> Self {
        TcpNetwork {
            receive_buffers: Some(receive_buffers),
            ..Self::new()
        }
    }

    fn path_to(&mut self, dst: NodeId) -> ActorPath {
        self.paths
            .entry(dst)
            .or_insert_with(|| {
                ActorPath::Named(NamedPath::with_socket(
                    Transport::Tcp,
                    dst,
                    vec![NETWORK_ALIAS.to_string()],
                ))
            })
            .clone()
    }

    /// Cut (`true`) or restore (`false`) the connection to `peer` at the transport,
    /// as a crashed switch would. Meant for tests and fault injection.
    pub fn set_blocked(&mut self, peer: NodeId, blocked: bool) {
        let sys = SystemPath::with_socket(Transport::Tcp, peer);
        self.status_port.trigger(if blocked {
            NetworkStatusRequest::BlockSystem(sys)
        } else {
            NetworkStatusRequest::AllowSystem(sys)
        });
    }
}

impl Default for TcpNetwork {
    fn default() -> Self {
        Self::new()
    }
}

ignore_lifecycle!(TcpNetwork);

impl Provide<Network> for TcpNetwork {
    fn handle(&mut self, req: NetRequest) -> HandlerResult {
        match req {
            NetRequest::Send { dst, msg } => {
                let path = self.path_to(dst);
                path.tell(Wire(msg), self);
            }
        }
        Handled::OK
    }
}

impl Require<NetworkStatusPort> for TcpNetwork {
    fn handle(&mut self, status: NetworkStatus) -> HandlerResult {
        match status {
            NetworkStatus::ConnectionEstablished(sys, _) => {
                debug!(self.log(), "connection established"; "peer" => %sys.socket_address());
                self.net_port
                    .trigger(NetIndication::ConnectionEstablished(sys.socket_address()));
            }
            NetworkStatus::ConnectionLost(sys, _)
            | NetworkStatus::ConnectionDropped(sys)
            | NetworkStatus::ConnectionClosed(sys, _) => {
                debug!(self.log(), "connection lost"; "peer" => %sys.socket_address());
                self.net_port
                    .trigger(NetIndication::ConnectionLost(sys.socket_address()));
            }
            other => {
                debug!(self.log(), "network status"; "status" => ?other);
            }
        }
        Handled::OK
    }
}

impl Actor for TcpNetwork {
    type Message = Reclaim;

    fn receive_local(&mut self, Reclaim(upto): Reclaim) -> HandlerResult {
        if let Some(buffers) = &self.receive_buffers {
            buffers.reclaim(upto);
        }
        Handled::OK
    }

    fn receive_network(&mut self, msg: NetMessage) -> HandlerResult {
        let src = msg.sender.system().socket_address();
        let id = *msg.data.ser_id();
        match kv_wire::unpack(msg.data) {
            Ok(m) => self
                .net_port
                .trigger(NetIndication::Deliver { src, msg: m }),
            Err(e) => {
                self.dropped_frames += 1;
                warn!(self.log(), "dropped a frame that failed to decode";
                    "from" => %src, "ser_id" => id,
                    "message" => kv_wire::ids::name_of(id).unwrap_or("unknown"),
                    "error" => %e);
            }
        }
        Handled::OK
    }
}

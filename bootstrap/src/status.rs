//! A node's view of itself, for `kvstore status` and the metrics endpoint.
//!
//! [`StatusSource`] reads the components' state through their `Arc<Component<_>>`
//! handles (`on_definition`) when someone asks, so keeping a status costs nothing on
//! the hot path. [`StatusComp`] answers `StatusRequest`s that arrive over the
//! network with it; the metrics endpoint renders its gauges from it.
//!
//! Locking: `collect` copies the handles out of [`Hosted`] and releases that lock
//! before it locks any component, and no component locks another's definition, so
//! no two locks are ever waited on in opposite orders.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kompact::prelude::*;
use kv_components::epfd::EpfdComp;
use kv_components::metrics::Gauges;
use kv_components::network::TransportStats;
use kv_components::perfect_link::PerfectLinkComp;
use kv_ports::{
    NetIndication, NetRequest, Network, NodeId, NodeStatus, ReplicaStatus, StatusMessage,
};

use crate::boot::{AdminAnswer, AdminAsk};
use crate::node::Hosted;

/// Reads a node's state from its components on demand.
#[derive(Clone)]
pub struct StatusSource {
    me: NodeId,
    incarnation: u64,
    cluster: String,
    started: Instant,
    epfd: Arc<Component<EpfdComp>>,
    link: Arc<Component<PerfectLinkComp>>,
    hosted: Arc<Mutex<Hosted>>,
    /// Reads the network provider's counters, when it has any (our TCP transport).
    transport: Arc<Mutex<Option<TransportStatsFn>>>,
}

/// Reads the transport's counters.
pub type TransportStatsFn = Box<dyn Fn() -> Option<TransportStats> + Send>;

impl StatusSource {
    /// Lets the metrics include the transport's counters (connections, bad frames,
    /// failed handshakes), read with `read` on every scrape.
    pub fn set_transport_stats(&self, read: TransportStatsFn) {
        *self.transport.lock().unwrap_or_else(|e| e.into_inner()) = Some(read);
    }

    /// A source over the given components of node `me` (this process is
    /// `incarnation`).
    pub fn new(
        me: NodeId,
        incarnation: u64,
        cluster: String,
        epfd: Arc<Component<EpfdComp>>,
        link: Arc<Component<PerfectLinkComp>>,
        hosted: Arc<Mutex<Hosted>>,
    ) -> StatusSource {
        StatusSource {
            me,
            incarnation,
            cluster,
            started: Instant::now(),
            epfd,
            link,
            hosted,
            transport: Arc::default(),
        }
    }

    /// The node's view now, answering the request `nonce`.
    pub fn collect(&self, nonce: u64) -> NodeStatus {
        let (table, directory, not_in_table, replicas) = {
            let h = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
            let handles: Vec<_> = h
                .replicas
                .iter()
                .map(|r| (r.paxos.clone(), r.replica.clone()))
                .collect();
            (
                h.table.clone(),
                h.directory.clone(),
                h.refused.clone(),
                handles,
            )
        };
        let mut replicas: Vec<ReplicaStatus> = replicas
            .into_iter()
            .map(|(paxos, replica)| {
                let mut r = paxos.on_definition(|c| c.status());
                replica.on_definition(|c| {
                    r.applied_idx = c.applied();
                    r.keys = c.keys();
                    r.inflight = c.inflight();
                });
                r
            })
            .collect();
        replicas.sort_by_key(|r| r.partition);
        NodeStatus {
            nonce,
            node: self.me,
            cluster: self.cluster.clone(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            table,
            not_in_table,
            replicas,
            suspected: self.epfd.on_definition(|c| c.suspected()),
            incarnation: self.incarnation,
            members: directory.as_ref().map(|d| d.members()).unwrap_or_default(),
            directory_version: directory.as_ref().map(|d| d.version()),
        }
    }

    /// The gauges of the metrics endpoint.
    pub fn gauges(&self) -> Gauges {
        let status = self.collect(0);
        let peers: Vec<NodeId> = status
            .table
            .as_ref()
            .map(|t| t.nodes.iter().copied().filter(|n| *n != self.me).collect())
            .unwrap_or_default();
        let link_unacked = self.link.on_definition(|c| {
            peers
                .iter()
                .map(|p| (*p, c.unacked(*p) as u64))
                .collect::<Vec<_>>()
        });
        let transport = self
            .transport
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|read| read());
        Gauges {
            status,
            link_unacked,
            transport,
        }
    }
}

/// Answers status queries: requires [`Network`], replies to whoever asked. Admin
/// requests (`kvstore remove`, `kvstore rebalance`) go to the `Bootstrap`
/// component, which holds the membership core; its answer comes back as an
/// [`AdminAnswer`] message and is sent on from here.
#[derive(ComponentDefinition)]
pub struct StatusComp {
    ctx: ComponentContext<Self>,
    net_port: RequiredPort<Network>,
    source: StatusSource,
    admin: ActorRef<AdminAsk>,
}

impl StatusComp {
    /// A component answering with what `source` reads, passing admin requests to
    /// `admin`.
    pub fn new(source: StatusSource, admin: ActorRef<AdminAsk>) -> StatusComp {
        StatusComp {
            ctx: ComponentContext::uninitialised(),
            net_port: RequiredPort::uninitialised(),
            source,
            admin,
        }
    }
}

ignore_lifecycle!(StatusComp);

impl Require<Network> for StatusComp {
    fn handle(&mut self, ind: NetIndication) -> HandlerResult {
        match ind {
            NetIndication::Deliver {
                src,
                msg: kv_ports::NetMessage::Status(StatusMessage::Request(req)),
            } => {
                debug!(self.ctx.log(), "answering a status query"; "from" => %src);
                let status = self.source.collect(req.nonce);
                self.net_port.trigger(NetRequest::Send {
                    dst: src,
                    msg: kv_ports::NetMessage::Status(StatusMessage::Reply(Box::new(status))),
                });
            }
            NetIndication::Deliver {
                src,
                msg: kv_ports::NetMessage::Status(StatusMessage::Admin(req)),
            } => {
                debug!(self.ctx.log(), "passing on an operator request"; "from" => %src);
                self.admin.tell(AdminAsk {
                    src,
                    req,
                    reply_to: self.actor_ref().recipient(),
                });
            }
            _ => {}
        }
        Handled::OK
    }
}

impl Actor for StatusComp {
    type Message = AdminAnswer;

    fn receive_local(&mut self, a: AdminAnswer) -> HandlerResult {
        self.net_port.trigger(NetRequest::Send {
            dst: a.dst,
            msg: kv_ports::NetMessage::Status(StatusMessage::AdminReply(a.reply)),
        });
        Handled::OK
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

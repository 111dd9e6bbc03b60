//! The `Overlay` component: the node's front door.
//!
//! It answers a client's `Connect` with a random node the failure detector does not
//! suspect plus the node list, checks every client request at the edge (cluster,
//! sizes, readiness), and routes it to the partition that owns the key: to the
//! replica on this node if there is one, else over the PerfectLink to a member of the
//! partition's group (its leader, when known). Replicas answer clients through it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kompact::prelude::*;
use kv_ports::{
    BootIndication, Bootstrapping, ClientMessage, ClientRequest, EpfdIndication,
    EventuallyPerfectFailureDetector, LookupTable, NetIndication, NetMessage, NetRequest, Network,
    NodeId, PartitionId, PerfectLink, PlIndication, PlPayload, PlRequest, Refusal, Routed, Routing,
    RoutingRequest,
};
use kv_protocols::rng::SplitMix64;

use crate::kv_replica::check_limits;
use crate::metrics::{Metrics, OpKind, Outcome};

/// Settings of the overlay.
#[derive(Clone, Debug)]
pub struct OverlaySettings {
    /// This node.
    pub me: NodeId,
    /// The cluster name clients must name.
    pub cluster: String,
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Longest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Nodes expected before the cluster forms (for the "not ready" message).
    pub boot_threshold: usize,
}

/// Routes client operations to partitions; provides [`Routing`] to the replicas.
#[derive(ComponentDefinition)]
pub struct Overlay {
    ctx: ComponentContext<Self>,
    routing_port: ProvidedPort<Routing>,
    net_port: RequiredPort<Network>,
    pl_port: RequiredPort<PerfectLink>,
    epfd_port: RequiredPort<EventuallyPerfectFailureDetector>,
    boot_port: RequiredPort<Bootstrapping>,
    s: OverlaySettings,
    table: Option<Arc<LookupTable>>,
    directory: Option<Arc<kv_ports::Directory>>,
    /// Why this node serves nobody, once it knows it is not in the table.
    not_in_table: Option<String>,
    /// Partitions with a replica on this node.
    local: BTreeSet<PartitionId>,
    suspected: BTreeSet<NodeId>,
    leaders: BTreeMap<PartitionId, NodeId>,
    rng: SplitMix64,
    /// Nodes outside the table whose forwarded requests were dropped (log once each).
    outsiders_logged: BTreeSet<NodeId>,
    /// Requests refused at the edge, by reason (for logs and metrics).
    pub refused: u64,
    metrics: Arc<Metrics>,
}

impl Overlay {
    /// An overlay that serves nothing until the lookup table arrives.
    pub fn new(s: OverlaySettings) -> Self {
        let seed = kv_protocols::partition::key_hash(s.me.to_string().as_bytes());
        Overlay {
            ctx: ComponentContext::uninitialised(),
            routing_port: ProvidedPort::uninitialised(),
            net_port: RequiredPort::uninitialised(),
            pl_port: RequiredPort::uninitialised(),
            epfd_port: RequiredPort::uninitialised(),
            boot_port: RequiredPort::uninitialised(),
            s,
            table: None,
            directory: None,
            not_in_table: None,
            local: BTreeSet::new(),
            suspected: BTreeSet::new(),
            leaders: BTreeMap::new(),
            rng: SplitMix64::new(seed),
            outsiders_logged: BTreeSet::new(),
            refused: 0,
            metrics: Arc::default(),
        }
    }

    /// Counts the requests refused here into `m`.
    pub fn with_metrics(mut self, m: Arc<Metrics>) -> Self {
        self.metrics = m;
        self
    }

    /// Refuses an operation: counted, and logged at info (these are about the
    /// request or the cluster's state, not load, so they stay rare).
    fn refuse_request(&mut self, src: NodeId, req: &ClientRequest, reason: Refusal) {
        self.metrics
            .count_op(OpKind::of(&req.op), Outcome::of_refusal(&reason));
        info!(self.ctx.log(), "request refused";
            "client" => %src, "seq" => req.seq, "reason" => %reason);
        self.refuse(src, req.client, req.seq, reason);
    }

    fn reply(&mut self, to: NodeId, msg: ClientMessage) {
        self.net_port.trigger(NetRequest::Send {
            dst: to,
            msg: NetMessage::Client(msg),
        });
    }

    fn refuse(&mut self, to: NodeId, client: u64, seq: u64, reason: Refusal) {
        self.refused += 1;
        debug!(self.ctx.log(), "request refused"; "client" => %to, "seq" => seq, "reason" => %reason);
        self.reply(
            to,
            ClientMessage::Refused {
                client,
                seq,
                reason,
            },
        );
    }

    fn not_ready(&self) -> Refusal {
        match &self.not_in_table {
            Some(r) => Refusal::NotReady(r.clone()),
            None => Refusal::NotReady(format!(
                "the cluster is still forming (waiting for {} nodes to check in)",
                self.s.boot_threshold
            )),
        }
    }

    fn on_client(&mut self, src: NodeId, msg: ClientMessage) {
        match msg {
            ClientMessage::Connect { cluster } => {
                if cluster != self.s.cluster {
                    let reason = Refusal::WrongCluster(format!(
                        "this node belongs to cluster {:?}, not {:?}",
                        self.s.cluster, cluster
                    ));
                    info!(self.ctx.log(), "connect refused"; "client" => %src, "reason" => %reason);
                    self.refuse(src, 0, 0, reason);
                    return;
                }
                let Some(table) = self.table.clone() else {
                    let r = self.not_ready();
                    self.refuse(src, 0, 0, r);
                    return;
                };
                let alive: Vec<NodeId> = table
                    .nodes
                    .iter()
                    .copied()
                    .filter(|n| !self.suspected.contains(n))
                    .collect();
                let entry = if alive.is_empty() {
                    self.s.me
                } else {
                    alive[self.rng.below(alive.len() as u64) as usize]
                };
                self.reply(
                    src,
                    ClientMessage::ConnectAck {
                        entry,
                        nodes: table.nodes.clone(),
                        partitions: table.partitions,
                    },
                );
            }
            ClientMessage::Request(req) => self.on_requests(src, vec![req]),
            ClientMessage::Requests(reqs) => self.on_requests(src, reqs),
            other => {
                debug!(self.ctx.log(), "ignoring unexpected client message"; "from" => %src, "msg" => ?other);
            }
        }
    }

    /// Checks the requests of one client message at the edge and routes them, one
    /// batch per partition, in the order the client sent them.
    fn on_requests(&mut self, src: NodeId, reqs: Vec<ClientRequest>) {
        let mut by_partition: BTreeMap<PartitionId, Vec<ClientRequest>> = BTreeMap::new();
        let table = self.table.clone();
        for req in reqs {
            if let Err(reason) = check_limits(&req.op, self.s.max_key_bytes, self.s.max_value_bytes)
            {
                self.refuse_request(src, &req, reason);
                continue;
            }
            let Some(table) = &table else {
                let r = self.not_ready();
                self.refuse_request(src, &req, r);
                continue;
            };
            by_partition
                .entry(table.partition_for_key(req.op.key()))
                .or_default()
                .push(req);
        }
        let Some(table) = table else { return };
        for (partition, requests) in by_partition {
            let routed = Routed {
                partition,
                requests,
                reply_to: src,
            };
            self.route(&table, routed);
        }
    }

    fn route(&mut self, table: &LookupTable, routed: Routed) {
        let partition = routed.partition;
        if self.local.contains(&partition) {
            // Send straight to the partition's leader when it is another node we do
            // not suspect: the leader proposes and answers without the extra
            // forwarding hop inside Sequence Paxos.
            match self.leaders.get(&partition) {
                Some(l) if *l != self.s.me && !self.suspected.contains(l) => {
                    self.pl_port.trigger(PlRequest::Send {
                        dst: *l,
                        payload: PlPayload::Forward(routed),
                    });
                }
                _ => self.routing_port.trigger(routed),
            }
            return;
        }
        let group = table.group(partition);
        let target = match self.leaders.get(&partition) {
            Some(l) if !self.suspected.contains(l) => Some(*l),
            _ => {
                let alive: Vec<NodeId> = group
                    .iter()
                    .copied()
                    .filter(|n| !self.suspected.contains(n))
                    .collect();
                if alive.is_empty() {
                    None
                } else {
                    Some(alive[self.rng.below(alive.len() as u64) as usize])
                }
            }
        };
        match target {
            Some(dst) => self.pl_port.trigger(PlRequest::Send {
                dst,
                payload: PlPayload::Forward(routed),
            }),
            None => {
                // Every replica is suspected: the client's deadline will expire and it
                // reports the partition unavailable.
                debug!(self.ctx.log(), "no live replica for partition"; "partition" => partition);
            }
        }
    }
}

ignore_lifecycle!(Overlay);

impl Provide<Routing> for Overlay {
    fn handle(&mut self, req: RoutingRequest) -> HandlerResult {
        match req {
            RoutingRequest::Reply { to, msg } => self.reply(to, msg),
            RoutingRequest::Serving { partition, serving } => {
                if serving {
                    self.local.insert(partition);
                } else {
                    self.local.remove(&partition);
                    self.leaders.remove(&partition);
                }
            }
            RoutingRequest::LeaderOf { partition, leader } => match leader {
                Some(l) => {
                    self.leaders.insert(partition, l);
                }
                None => {
                    self.leaders.remove(&partition);
                }
            },
        }
        Handled::OK
    }
}

impl Require<Network> for Overlay {
    fn handle(&mut self, ind: NetIndication) -> HandlerResult {
        if let NetIndication::Deliver {
            src,
            msg: NetMessage::Client(m),
        } = ind
        {
            self.on_client(src, m);
        }
        Handled::OK
    }
}

impl Require<PerfectLink> for Overlay {
    fn handle(&mut self, ind: PlIndication) -> HandlerResult {
        let PlIndication::Deliver { src, payload } = ind else {
            return Handled::OK;
        };
        let PlPayload::Forward(routed) = &*payload else {
            return Handled::OK;
        };
        let Some(table) = self.table.clone() else {
            return Handled::OK;
        };
        if !table.contains(src) {
            if self.outsiders_logged.insert(src) {
                warn!(self.ctx.log(), "dropping forwarded requests from a node outside the lookup table (logged once per node)"; "from" => %src);
            }
            return Handled::OK;
        }
        if self.local.contains(&routed.partition) {
            self.routing_port.trigger(routed.clone());
        } else {
            // Sent here by a node whose layout is older than ours, or just as this
            // node's replica of the partition ended its epoch: the client retries
            // with the group the layout names now.
            debug!(self.ctx.log(), "request forwarded for a partition not served here";
                "from" => %src, "partition" => routed.partition);
            let (epoch, replicas) = self
                .directory
                .as_ref()
                .and_then(|d| d.group(routed.partition))
                .map(|g| (g.epoch, g.addrs()))
                .unwrap_or_default();
            for req in &routed.requests {
                let reason = Refusal::Moved {
                    partition: routed.partition,
                    epoch,
                    replicas: replicas.clone(),
                };
                self.metrics
                    .count_op(OpKind::of(&req.op), Outcome::of_refusal(&reason));
                self.refuse(routed.reply_to, req.client, req.seq, reason);
            }
        }
        Handled::OK
    }
}

impl Require<EventuallyPerfectFailureDetector> for Overlay {
    fn handle(&mut self, ind: EpfdIndication) -> HandlerResult {
        ind.apply(&mut self.suspected);
        Handled::OK
    }
}

impl Require<Bootstrapping> for Overlay {
    fn handle(&mut self, ind: BootIndication) -> HandlerResult {
        match ind {
            BootIndication::Booted(layout) | BootIndication::Changed(layout) => {
                // Which partitions are served here is told by the replicas
                // themselves (`Serving`): a replica of a new epoch may still be
                // fetching its state.
                self.table = Some(layout.table);
                self.directory = Some(layout.directory);
            }
            BootIndication::NotInTable(reason) => {
                self.not_in_table = Some(reason);
            }
        }
        Handled::OK
    }
}

impl Actor for Overlay {
    type Message = Never;

    fn receive_local(&mut self, msg: Self::Message) -> HandlerResult {
        match msg {}
    }

    fn receive_network(&mut self, _msg: kompact::prelude::NetMessage) -> HandlerResult {
        Handled::OK
    }
}

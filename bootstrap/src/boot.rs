//! The `Bootstrap` component: cluster formation.
//!
//! Every node but the bootstrap server checks in with the server every
//! keep-alive period until it receives the lookup table. The server (the node whose
//! `address` equals `bootstrap-address`) counts the nodes that checked in, itself
//! included; when `boot-threshold` are there it builds the lookup table from exactly
//! those nodes and sends it to each of them. A node that checks in later is told
//! that it is not part of the table. The server is a single point of failure during
//! boot only: once the table is out, the cluster does not need it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kompact::prelude::*;
use kv_components::ticker::Ticker;
use kv_ports::{
    BootIndication, BootstrapMsg, Bootstrapping, LookupTable, NodeId, PerfectLink, PlIndication,
    PlPayload, PlRequest, Timeout, Timer,
};

/// Settings of cluster formation.
#[derive(Clone, Debug)]
pub struct BootSettings {
    /// This node.
    pub me: NodeId,
    /// The bootstrap server.
    pub server: NodeId,
    /// Nodes needed to form the cluster.
    pub boot_threshold: usize,
    /// Partitions of the key space.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_degree: usize,
    /// The cluster's name; nodes of another cluster are refused.
    pub cluster: String,
    /// Period of check-ins.
    pub keep_alive_period: Duration,
}

enum Role {
    /// Waiting for nodes to check in. Invariant: `checked_in` contains `me`.
    Server { checked_in: BTreeSet<NodeId> },
    /// Checking in with the server until the table arrives.
    Joining,
    /// The table is known (on the server, it was built here).
    Booted(Arc<LookupTable>),
    /// This node is not part of the cluster.
    Refused,
}

/// Provides [`Bootstrapping`] over [`PerfectLink`] and [`Timer`].
#[derive(ComponentDefinition)]
pub struct Bootstrap {
    ctx: ComponentContext<Self>,
    boot_port: ProvidedPort<Bootstrapping>,
    pl_port: RequiredPort<PerfectLink>,
    timer_port: RequiredPort<Timer>,
    s: BootSettings,
    role: Role,
    ticker: Ticker,
    /// Check-ins sent without an answer (joining role), to warn once when the
    /// server stays silent.
    unanswered: u32,
}

/// Unanswered check-ins after which a joining node warns once that the server may
/// still wait for nodes, be down, or be of another cluster (whose links drop our
/// frames without a reply, so no `Rejected` can reach us).
const SILENT_SERVER_WARNING: u32 = 10;

impl Bootstrap {
    /// A bootstrap component in the server or the joining role, by address.
    pub fn new(s: BootSettings) -> Self {
        let role = if s.me == s.server {
            Role::Server {
                checked_in: BTreeSet::from([s.me]),
            }
        } else {
            Role::Joining
        };
        Bootstrap {
            ctx: ComponentContext::uninitialised(),
            boot_port: ProvidedPort::uninitialised(),
            pl_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            ticker: Ticker::new(s.keep_alive_period),
            s,
            role,
            unanswered: 0,
        }
    }

    fn send(&mut self, dst: NodeId, msg: BootstrapMsg) {
        self.pl_port.trigger(PlRequest::Send {
            dst,
            payload: PlPayload::Bootstrap(msg),
        });
    }

    fn check_in(&mut self) {
        let cluster = self.s.cluster.clone();
        self.send(self.s.server, BootstrapMsg::CheckIn { cluster });
    }

    fn maybe_boot(&mut self) {
        let Role::Server { checked_in } = &self.role else {
            return;
        };
        if checked_in.len() < self.s.boot_threshold {
            return;
        }
        let nodes: Vec<NodeId> = checked_in.iter().copied().collect();
        match LookupTable::build(nodes.clone(), self.s.partitions, self.s.replication_degree) {
            Ok(table) => {
                let table = Arc::new(table);
                info!(self.ctx.log(), "cluster formed, sending lookup table";
                    "nodes" => nodes.len(), "partitions" => table.partitions,
                    "replication" => table.replication_degree);
                let me = self.s.me;
                for n in nodes.iter().filter(|n| **n != me) {
                    self.send(*n, BootstrapMsg::Boot(table.clone()));
                }
                self.install(table);
            }
            Err(e) => {
                error!(self.ctx.log(), "cannot build the lookup table"; "error" => %e);
            }
        }
    }

    fn install(&mut self, table: Arc<LookupTable>) {
        info!(self.ctx.log(), "lookup table received";
            "nodes" => table.nodes.len(), "hosted_partitions" => ?table.partitions_of(self.s.me));
        self.timer_port.trigger(self.ticker.stop());
        self.role = Role::Booted(table.clone());
        self.boot_port.trigger(BootIndication::Booted(table));
    }

    fn on_msg(&mut self, src: NodeId, msg: &BootstrapMsg) {
        match msg {
            BootstrapMsg::CheckIn { cluster } => self.on_check_in(src, cluster),
            BootstrapMsg::Boot(table) => {
                if src != self.s.server {
                    warn!(self.ctx.log(), "ignoring a lookup table from a node that is not the bootstrap server"; "from" => %src);
                    return;
                }
                if !matches!(self.role, Role::Joining) {
                    return; // duplicate
                }
                if let Err(e) = table.validate() {
                    error!(self.ctx.log(), "ignoring an invalid lookup table"; "from" => %src, "error" => %e);
                    return;
                }
                if !table.contains(self.s.me) {
                    self.refused(format!(
                        "the lookup table from {src} does not include this node"
                    ));
                    return;
                }
                self.install(table.clone());
            }
            BootstrapMsg::Rejected { reason } => {
                if src == self.s.server && matches!(self.role, Role::Joining) {
                    self.refused(reason.clone());
                }
            }
        }
    }

    fn refused(&mut self, reason: String) {
        error!(self.ctx.log(), "this node is not part of the cluster"; "reason" => &reason);
        self.timer_port.trigger(self.ticker.stop());
        self.role = Role::Refused;
        self.boot_port.trigger(BootIndication::NotInTable(reason));
    }

    fn on_check_in(&mut self, src: NodeId, cluster: &str) {
        if cluster != self.s.cluster {
            warn!(self.ctx.log(), "refusing check-in from a node of another cluster";
                "from" => %src, "their_cluster" => cluster);
            let reason = format!(
                "node {src} names cluster {cluster:?}, but the bootstrap server at {} serves {:?}",
                self.s.me, self.s.cluster
            );
            self.send(src, BootstrapMsg::Rejected { reason });
            return;
        }
        match &mut self.role {
            Role::Server { checked_in } => {
                if checked_in.insert(src) {
                    info!(self.ctx.log(), "node checked in";
                        "from" => %src, "count" => checked_in.len(), "threshold" => self.s.boot_threshold);
                }
                self.maybe_boot();
            }
            Role::Booted(table) => {
                let table = table.clone();
                if table.contains(src) {
                    self.send(src, BootstrapMsg::Boot(table));
                } else {
                    warn!(self.ctx.log(), "refusing late check-in"; "from" => %src);
                    let reason = format!(
                        "the cluster was already formed with {} nodes ({}); node {src} is not part of its lookup table",
                        table.nodes.len(),
                        table
                            .nodes
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.send(src, BootstrapMsg::Rejected { reason });
                }
            }
            Role::Joining | Role::Refused => {
                warn!(self.ctx.log(), "ignoring check-in: this node is not the bootstrap server"; "from" => %src);
            }
        }
    }
}

impl ComponentLifecycle for Bootstrap {
    fn on_start(&mut self) -> HandlerResult {
        match self.role {
            Role::Joining => {
                info!(self.ctx.log(), "checking in with the bootstrap server"; "server" => %self.s.server);
                self.check_in();
                self.timer_port.trigger(self.ticker.start());
            }
            Role::Server { .. } => {
                info!(self.ctx.log(), "bootstrap server waiting for nodes"; "threshold" => self.s.boot_threshold);
                self.maybe_boot();
            }
            _ => {}
        }
        Handled::OK
    }

    fn on_stop(&mut self) -> HandlerResult {
        self.timer_port.trigger(self.ticker.stop());
        Handled::OK
    }
}

impl Provide<Bootstrapping> for Bootstrap {
    fn handle(&mut self, req: Never) -> HandlerResult {
        match req {}
    }
}

impl Require<PerfectLink> for Bootstrap {
    fn handle(&mut self, ind: PlIndication) -> HandlerResult {
        if let PlIndication::Deliver { src, payload } = ind
            && let PlPayload::Bootstrap(msg) = &*payload
        {
            self.on_msg(src, msg);
        }
        Handled::OK
    }
}

impl Require<Timer> for Bootstrap {
    fn handle(&mut self, t: Timeout) -> HandlerResult {
        if self.ticker.is_mine(&t) && matches!(self.role, Role::Joining) {
            self.unanswered += 1;
            if self.unanswered == SILENT_SERVER_WARNING {
                warn!(self.ctx.log(), "no lookup table yet: the bootstrap server may still wait for nodes, be down, or belong to another cluster (whose nodes drop our messages unanswered)";
                    "server" => %self.s.server, "check_ins" => self.unanswered, "cluster" => &self.s.cluster);
            }
            self.check_in();
        }
        Handled::OK
    }
}

impl Actor for Bootstrap {
    type Message = Never;

    fn receive_local(&mut self, msg: Self::Message) -> HandlerResult {
        match msg {}
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

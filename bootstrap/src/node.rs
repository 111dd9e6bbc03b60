//! One kompact-kv node: the component graph of the design, built inside a Kompact
//! system, with the timer and network providers given from outside (real ones for
//! `kvstore start`, simulated ones in the simulator).
//!
//! ```text
//! Timer, Network (given)
//!  ├─ PerfectLink ── Network, Timer
//!  ├─ Epfd ───────── PerfectLink, Timer
//!  ├─ Bootstrap ──── PerfectLink, Timer
//!  ├─ Overlay ────── Network, PerfectLink, Epfd, Bootstrap
//!  └─ NodeHost ───── Bootstrap, Epfd; on Booted, per hosted partition:
//!       Ble ─────────── PerfectLink, Timer
//!       SequencePaxos ─ PerfectLink, Ble, Timer
//!       KvReplica ───── SequencePaxos, Overlay (Routing), Timer
//! Status ─────────── Network (answers `kvstore status`; reads the others)
//! ```
//!
//! Every component counts into one shared [`Metrics`]; when `metrics-address` is
//! set, a [`MetricsServer`] thread serves them in the Prometheus text format.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kompact::prelude::*;
use kv_components::ble::{BleComp, BleSettings};
use kv_components::connect::{Connector, connect_to, connector};
use kv_components::epfd::{EpfdComp, EpfdSettings};
use kv_components::kv_replica::{KvReplica, KvReplicaSettings};
use kv_components::metrics::{Metrics, MetricsServer};
use kv_components::overlay::{Overlay, OverlaySettings};
use kv_components::perfect_link::{PerfectLinkComp, PerfectLinkConfig};
use kv_components::sequence_paxos::{PaxosSettings as PaxosCompSettings, SequencePaxosComp};
use kv_ports::{
    BallotLeaderElection, BootIndication, Bootstrapping, Directory, EpfdIndication, EpfdRequest,
    EventuallyPerfectFailureDetector, LookupTable, Network, PartitionId, PerfectLink, Routing,
    SequenceConsensus, Timer,
};

use crate::boot::{BootSettings, Bootstrap};
use crate::config::NodeConfig;
use crate::status::{StatusComp, StatusSource};

/// The components of one hosted partition.
pub struct PartitionReplica {
    /// The partition.
    pub partition: PartitionId,
    /// Its leader election.
    pub ble: Arc<Component<BleComp>>,
    /// Its replicated log.
    pub paxos: Arc<Component<SequencePaxosComp>>,
    /// Its state machine.
    pub replica: Arc<Component<KvReplica>>,
}

/// What the node host built after boot; shared with whoever holds the [`Node`].
#[derive(Default)]
pub struct Hosted {
    /// The lookup table, once booted.
    pub table: Option<Arc<LookupTable>>,
    /// The directory the table comes from, once booted.
    pub directory: Option<Arc<Directory>>,
    /// The replicas hosted here.
    pub replicas: Vec<PartitionReplica>,
    /// Set when this node was refused by the bootstrap server.
    pub refused: Option<String>,
}

/// Creates the per-partition components when the lookup table arrives.
#[derive(ComponentDefinition)]
pub struct NodeHost {
    ctx: ComponentContext<Self>,
    boot_port: RequiredPort<Bootstrapping>,
    epfd_port: RequiredPort<EventuallyPerfectFailureDetector>,
    cfg: NodeConfig,
    timer: Connector<Timer>,
    link: Connector<PerfectLink>,
    routing: Connector<Routing>,
    hosted: Arc<Mutex<Hosted>>,
    metrics: Arc<Metrics>,
    /// Client operations waiting for a decision over all replicas of this node
    /// (bounded by `limits.max-inflight-per-node`).
    inflight: Arc<std::sync::atomic::AtomicUsize>,
}

impl NodeHost {
    fn new(
        cfg: NodeConfig,
        timer: Connector<Timer>,
        link: Connector<PerfectLink>,
        routing: Connector<Routing>,
        hosted: Arc<Mutex<Hosted>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        NodeHost {
            ctx: ComponentContext::uninitialised(),
            boot_port: RequiredPort::uninitialised(),
            epfd_port: RequiredPort::uninitialised(),
            cfg,
            timer,
            link,
            routing,
            hosted,
            metrics,
            inflight: Arc::default(),
        }
    }

    fn host_partition(&mut self, table: &LookupTable, p: PartitionId) -> PartitionReplica {
        let me = self.cfg.address;
        let group = table.group(p).to_vec();
        let sys = self.ctx.system();
        let ble = sys.create(|| {
            BleComp::new(BleSettings {
                me,
                partition: p,
                group: group.clone(),
                tick_period: self.cfg.tick_period,
                heartbeat_period: self.cfg.leader_election.heartbeat_period,
            })
        });
        let ps = &self.cfg.paxos;
        let paxos = sys.create(|| {
            SequencePaxosComp::new(PaxosCompSettings {
                me,
                partition: p,
                group: group.clone(),
                tick_period: self.cfg.tick_period,
                max_batch: ps.max_batch,
                max_inflight_batches: ps.max_inflight_batches,
                resend_period: ps.resend_period,
                max_log_entries: ps.max_log_entries,
                max_pending: ps.max_pending,
            })
            .with_metrics(self.metrics.partition(p))
        });
        let limits = &self.cfg.limits;
        let replica = sys.create(|| {
            KvReplica::new(KvReplicaSettings {
                me,
                partition: p,
                max_key_bytes: limits.max_key_bytes,
                max_value_bytes: limits.max_value_bytes,
                max_inflight: limits.max_inflight_per_node,
                snapshot_interval: ps.snapshot_interval,
                session_idle: self.cfg.sessions.idle_timeout,
                max_sessions: limits.max_clients,
                tick_period: Duration::from_millis(100),
            })
            .with_metrics(self.metrics.clone())
            .with_node_inflight(self.inflight.clone())
        });
        connect_to(&self.link, &ble);
        connect_to(&self.timer, &ble);
        biconnect_components::<BallotLeaderElection, _, _>(&ble, &paxos)
            .expect("connect ble → paxos");
        connect_to(&self.link, &paxos);
        connect_to(&self.timer, &paxos);
        biconnect_components::<SequenceConsensus, _, _>(&paxos, &replica)
            .expect("connect paxos → replica");
        connect_to(&self.routing, &replica);
        connect_to(&self.timer, &replica);
        sys.start(&replica);
        sys.start(&paxos);
        sys.start(&ble);
        PartitionReplica {
            partition: p,
            ble,
            paxos,
            replica,
        }
    }
}

ignore_lifecycle!(NodeHost);

impl Require<Bootstrapping> for NodeHost {
    fn handle(&mut self, ind: BootIndication) -> HandlerResult {
        match ind {
            BootIndication::Booted(layout) => {
                let table = layout.table.clone();
                self.epfd_port
                    .trigger(EpfdRequest::Monitor(table.nodes.clone()));
                // Only the slots of this very process: one recorded at our address
                // with an earlier incarnation is a lost replica, and this empty
                // process must not vote in its place.
                let mine: Vec<PartitionId> = layout
                    .directory
                    .groups_of(self.cfg.address)
                    .into_iter()
                    .filter(|g| *g < table.partitions)
                    .collect();
                let mut replicas = Vec::new();
                for p in mine {
                    replicas.push(self.host_partition(&table, p));
                }
                info!(self.ctx.log(), "replicas started"; "partitions" => ?replicas.iter().map(|r| r.partition).collect::<Vec<_>>());
                let mut h = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
                h.table = Some(table);
                h.directory = Some(layout.directory);
                h.replicas = replicas;
            }
            BootIndication::Changed(layout) => {
                self.epfd_port
                    .trigger(EpfdRequest::Monitor(layout.table.nodes.clone()));
                let mut h = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
                h.table = Some(layout.table);
                h.directory = Some(layout.directory);
            }
            BootIndication::NotInTable(reason) => {
                let mut h = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
                h.refused = Some(reason);
            }
        }
        Handled::OK
    }
}

impl Require<EventuallyPerfectFailureDetector> for NodeHost {
    fn handle(&mut self, _ind: EpfdIndication) -> HandlerResult {
        Handled::OK
    }
}

impl Actor for NodeHost {
    type Message = Never;

    fn receive_local(&mut self, msg: Self::Message) -> HandlerResult {
        match msg {}
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

/// A running node's components.
pub struct Node {
    /// The node's configuration.
    pub cfg: NodeConfig,
    /// PerfectLink.
    pub link: Arc<Component<PerfectLinkComp>>,
    /// Failure detector.
    pub epfd: Arc<Component<EpfdComp>>,
    /// Cluster formation.
    pub boot: Arc<Component<Bootstrap>>,
    /// Front door.
    pub overlay: Arc<Component<Overlay>>,
    /// Creates the partition replicas.
    pub host: Arc<Component<NodeHost>>,
    /// What the host built.
    pub hosted: Arc<Mutex<Hosted>>,
    /// Answers `kvstore status`.
    pub status: Arc<Component<StatusComp>>,
    /// Reads the node's state on demand (what `status` answers with).
    pub status_source: StatusSource,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
    /// The metrics endpoint, when `metrics-address` is set and could be bound.
    pub metrics_server: Option<MetricsServer>,
}

impl Node {
    /// Build the node's component graph in `system` over the given timer and network
    /// providers, and start it. `incarnation` should differ between two starts of a
    /// node at the same address (a random number in production).
    pub fn start(
        system: &KompactSystem,
        cfg: NodeConfig,
        timer: Connector<Timer>,
        net: Connector<Network>,
        incarnation: u64,
    ) -> Node {
        let me = cfg.address;
        let metrics = Metrics::new();
        let link = system.create(|| {
            PerfectLinkComp::new(PerfectLinkConfig {
                me,
                cluster: kv_ports::cluster_fingerprint(&cfg.cluster_name),
                incarnation,
                tick_period: cfg.tick_period,
                retransmit_period: cfg.link.retransmit_period,
                max_unacked: cfg.link.max_unacked,
                unreachable_warning: cfg.link.unreachable_warning,
            })
        });
        connect_to(&net, &link);
        connect_to(&timer, &link);
        let link_conn: Connector<PerfectLink> = connector::<PerfectLink, _>(&link);

        let epfd = system.create(|| {
            EpfdComp::new(EpfdSettings {
                me,
                tick_period: cfg.tick_period,
                initial_delay: cfg.failure_detector.initial_delay,
                delay_increment: cfg.failure_detector.delay_increment,
            })
            .with_metrics(metrics.clone())
        });
        connect_to(&link_conn, &epfd);
        connect_to(&timer, &epfd);

        let boot = system.create(|| {
            Bootstrap::new(BootSettings {
                me,
                incarnation,
                server: cfg.bootstrap_address,
                seeds: cfg.seeds.clone(),
                boot_threshold: cfg.boot_threshold,
                partitions: cfg.partitions,
                replication_degree: cfg.replication_degree,
                cluster: cfg.cluster_name.clone(),
                keep_alive_period: cfg.keep_alive_period,
                tick_period: cfg.tick_period,
                heartbeat_period: cfg.leader_election.heartbeat_period,
                resend_period: cfg.paxos.resend_period,
            })
        });
        connect_to(&link_conn, &boot);
        connect_to(&timer, &boot);

        let overlay = system.create(|| {
            Overlay::new(OverlaySettings {
                me,
                cluster: cfg.cluster_name.clone(),
                max_key_bytes: cfg.limits.max_key_bytes,
                max_value_bytes: cfg.limits.max_value_bytes,
                boot_threshold: cfg.boot_threshold,
            })
            .with_metrics(metrics.clone())
        });
        connect_to(&net, &overlay);
        connect_to(&link_conn, &overlay);
        biconnect_components::<EventuallyPerfectFailureDetector, _, _>(&epfd, &overlay)
            .expect("connect epfd → overlay");
        biconnect_components::<Bootstrapping, _, _>(&boot, &overlay)
            .expect("connect boot → overlay");

        let hosted = Arc::new(Mutex::new(Hosted::default()));
        let host = system.create(|| {
            NodeHost::new(
                cfg.clone(),
                timer.clone(),
                link_conn.clone(),
                connector::<Routing, _>(&overlay),
                hosted.clone(),
                metrics.clone(),
            )
        });
        biconnect_components::<Bootstrapping, _, _>(&boot, &host).expect("connect boot → host");
        biconnect_components::<EventuallyPerfectFailureDetector, _, _>(&epfd, &host)
            .expect("connect epfd → host");

        let status_source = StatusSource::new(
            me,
            incarnation,
            cfg.cluster_name.clone(),
            epfd.clone(),
            link.clone(),
            hosted.clone(),
        );
        let status = system.create(|| StatusComp::new(status_source.clone()));
        connect_to(&net, &status);

        let log = system.logger().clone();
        info!(log, "node starting";
            "bootstrap_server" => %cfg.bootstrap_address, "boot_threshold" => cfg.boot_threshold,
            "metrics" => cfg.metrics_address.map_or_else(|| "off".to_string(), |a| a.to_string()));
        let metrics_server = cfg.metrics_address.and_then(|addr| {
            let source = status_source.clone();
            let err_log = log.clone();
            match MetricsServer::start(
                addr,
                metrics.clone(),
                Box::new(move || source.gauges()),
                Box::new(move |e| debug!(err_log, "metrics request failed"; "error" => %e)),
            ) {
                Ok(s) => {
                    info!(log, "serving metrics"; "address" => %s.address());
                    Some(s)
                }
                Err(e) => {
                    error!(log, "cannot serve metrics, continuing without them";
                        "address" => %addr, "error" => %e);
                    None
                }
            }
        });

        system.start(&link);
        system.start(&epfd);
        system.start(&overlay);
        system.start(&host);
        system.start(&status);
        system.start(&boot);
        Node {
            cfg,
            link,
            epfd,
            boot,
            overlay,
            host,
            hosted,
            status,
            status_source,
            metrics,
            metrics_server,
        }
    }
}

//! A scenario API in the spirit of Kompics' `SimulationScenario`: a list of things
//! that happen at virtual times (start nodes, start clients with their operations,
//! crash nodes, cut and heal the network), a network model, a seed, and a stop
//! condition. [`Scenario::run`] plays it on the real component graph and returns an
//! [`Outcome`]: every operation the clients saw, the trace hash, and anything the
//! simulator noticed on the way.
//!
//! ```no_run
//! use scenarios::scenario::{Scenario, secs};
//! use kv_ports::KvOp;
//! let outcome = Scenario::new("example")
//!     .cluster(3, 1, 3)
//!     .start_nodes(secs(0), secs(1))
//!     .burst(secs(10), 1, 1, vec![KvOp::Get { key: "k".into() }])
//!     .end_when_done(secs(60))
//!     .run();
//! assert!(outcome.check().is_linearizable());
//! ```
//!
//! Addresses follow the course: server `i` (from 1) is `192.193.0.i:45678`, client
//! `i` is `192.193.1.i:45678`, and server 1 is the bootstrap server.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kompact::prelude::*;
use kv_bootstrap::config::NodeConfig;
use kv_bootstrap::node::Node;
use kv_checker::{CheckResult, HistoryOp, Report};
use kv_client::{ClientComp, ClientSettings};
use kv_components::connect::{connect_to, connector};
use kv_components::timer::KompactTimer;
use kv_ports::{
    Ballot, Directory, KeyValue, KvEntry, Network, NodeId, PartitionId, ScIndication,
    SequenceConsensus, StopSign, Timer,
};
use kv_protocols::rng::mix64;

use crate::sim::{DelayModel, NetStats, Sim, SimNet, SimNetwork};
use crate::workload::{ClientDriver, OpRecord, Plan, Recorder, SharedRecorder};

/// `s` seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `m` milliseconds.
pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Address of server `i` (from 1): `192.193.0.i:45678`.
pub fn node_addr(i: usize) -> NodeId {
    SocketAddr::from((
        Ipv4Addr::new(192, 193, (i / 256) as u8, (i % 256) as u8),
        45678,
    ))
}

/// Address of client `i` (from 1): `192.193.1.i:45678` (from 256 on, the next /24).
pub fn client_addr(i: usize) -> NodeId {
    SocketAddr::from((
        Ipv4Addr::new(192, 193, 1 + (i / 256) as u8, (i % 256) as u8),
        45678,
    ))
}

/// As a client's contact: whichever server is alive (the lowest-numbered) when the
/// client starts.
pub const ANY_LIVE: usize = 0;

/// A client: one system at `192.193.1.id`, contacting server `contact` first, with
/// one session per plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSpec {
    /// Client number (from 1).
    pub id: usize,
    /// The server it knows first; [`ANY_LIVE`] picks the lowest-numbered live
    /// server when the client starts.
    pub contact: usize,
    /// One session per plan, all started at once.
    pub sessions: Vec<Plan>,
}

/// Something that happens at a virtual time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start server `i`.
    StartNode(usize),
    /// Start a client and its sessions.
    StartClient(ClientSpec),
    /// Crash-stop server `i`.
    Kill(usize),
    /// Crash-stop the current leader of a partition (as its live replicas see it).
    KillLeader(PartitionId),
    /// Cut the network between these sets of servers (clients reach everyone).
    Partition(Vec<Vec<usize>>),
    /// Remove every cut.
    Heal,
    /// Break the connection between two servers; it comes back after the duration.
    DropConnection(usize, usize, Duration),
    /// Crash-stop server `i` (if it runs) and start a new process at its address: a
    /// new incarnation, which joins the cluster as an empty member.
    Restart(usize),
}

/// When a run stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// At this virtual time.
    At(Duration),
    /// When every event has happened and every operation has finished, or at the
    /// cap, whichever comes first.
    WhenDone {
        /// Latest stop.
        cap: Duration,
    },
}

/// Client session timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTiming {
    /// Time one attempt waits before trying the next node.
    pub request_timeout: Duration,
    /// Time an operation may take in all before it is reported unavailable.
    pub deadline: Duration,
    /// The session's clock tick.
    pub tick: Duration,
}

impl Default for ClientTiming {
    fn default() -> Self {
        ClientTiming {
            request_timeout: ms(500),
            deadline: secs(10),
            tick: ms(10),
        }
    }
}

/// A scenario: what happens when, on which network, from which seed.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name, for reports.
    pub name: String,
    /// Seed of every random choice (network delays, incarnations).
    pub seed: u64,
    /// Message delays.
    pub delay: DelayModel,
    /// Number of servers.
    pub nodes: usize,
    /// Partitions of the key space.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication: usize,
    /// Servers the bootstrap server waits for (defaults to `nodes`).
    pub boot_threshold: Option<usize>,
    /// Client session timing.
    pub client_timing: ClientTiming,
    /// What happens, by time (events at one time happen in insertion order).
    pub events: Vec<(Duration, Event)>,
    /// When to stop.
    pub end: End,
    /// Print every delivery, fault and operation.
    pub trace: bool,
    /// Send Kompact's logs at this level to stderr.
    pub log: Option<slog::Level>,
    /// Give every server all the others as `seeds` (so a restarted bootstrap server
    /// rejoins through them).
    pub seeds: bool,
    /// `membership.replace-after` of every server (`None`: the default).
    pub replace_after: Option<Duration>,
    /// `paxos.max-message-bytes` of every server (`None`: the default).
    pub max_message_bytes: Option<usize>,
    /// `paxos.snapshot-interval` of every server (`None`: the default).
    pub snapshot_interval: Option<u64>,
}

impl Scenario {
    /// An empty scenario: 3 servers, 1 partition, 3 replicas, zero-latency network,
    /// seed 123 (the course's), stop at 120 s.
    pub fn new(name: impl Into<String>) -> Self {
        Scenario {
            name: name.into(),
            seed: 123,
            delay: DelayModel::zero(),
            nodes: 3,
            partitions: 1,
            replication: 3,
            boot_threshold: None,
            client_timing: ClientTiming::default(),
            events: Vec::new(),
            end: End::At(secs(120)),
            trace: false,
            log: None,
            seeds: false,
            replace_after: None,
            max_message_bytes: None,
            snapshot_interval: None,
        }
    }

    /// Servers send replication messages larger than `bytes` in chunks (keys are
    /// then limited to 16 bytes and values to 64, so that `bytes` may be as small
    /// as 656).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }

    /// Servers snapshot their partitions every `entries` applied entries (and no
    /// more often than their state's size is written), and keep at most twice that
    /// many entries in their logs, so a replica that falls behind gets a snapshot.
    pub fn snapshot_interval(mut self, entries: u64) -> Self {
        self.snapshot_interval = Some(entries);
        self
    }

    /// Servers replace a replica whose node they suspected for `after`.
    pub fn replace_after(mut self, after: Duration) -> Self {
        self.replace_after = Some(after);
        self
    }

    /// Every server lists all the others as seeds.
    pub fn with_seeds(mut self) -> Self {
        self.seeds = true;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the network's delay model.
    pub fn network(mut self, delay: DelayModel) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the cluster's shape.
    pub fn cluster(mut self, nodes: usize, partitions: u32, replication: usize) -> Self {
        self.nodes = nodes;
        self.partitions = partitions;
        self.replication = replication;
        self
    }

    /// Sets the boot threshold (default: every server).
    pub fn boot_threshold(mut self, n: usize) -> Self {
        self.boot_threshold = Some(n);
        self
    }

    /// Sets the client timing.
    pub fn client_timing(mut self, t: ClientTiming) -> Self {
        self.client_timing = t;
        self
    }

    /// Adds an event at `at`.
    pub fn at(mut self, at: Duration, e: Event) -> Self {
        self.events.push((at, e));
        self
    }

    /// Starts server `i` at `at`.
    pub fn start_node(self, at: Duration, i: usize) -> Self {
        self.at(at, Event::StartNode(i))
    }

    /// Starts every server, the first at `first` and the others `gap` apart (the
    /// course: 0 s, 1 s, 2 s, ...).
    pub fn start_nodes(mut self, first: Duration, gap: Duration) -> Self {
        for i in 1..=self.nodes {
            self = self.start_node(first + gap * (i as u32 - 1), i);
        }
        self
    }

    /// Starts client `id` at `at`, contacting server `contact`, with one session per
    /// plan.
    pub fn client(self, at: Duration, id: usize, contact: usize, sessions: Vec<Plan>) -> Self {
        self.at(
            at,
            Event::StartClient(ClientSpec {
                id,
                contact,
                sessions,
            }),
        )
    }

    /// The course's open-loop client: all `ops` sent at once at `at`, each in its
    /// own session so they are concurrent.
    pub fn burst(self, at: Duration, id: usize, contact: usize, ops: Vec<kv_ports::KvOp>) -> Self {
        let sessions = ops.into_iter().map(|op| Plan::Burst(vec![op])).collect();
        self.client(at, id, contact, sessions)
    }

    /// Crash-stops server `i` at `at`.
    pub fn kill(self, at: Duration, i: usize) -> Self {
        self.at(at, Event::Kill(i))
    }

    /// Crash server `i` at `at` and start a new process (a new incarnation) at its
    /// address at once.
    pub fn restart(self, at: Duration, i: usize) -> Self {
        self.at(at, Event::Restart(i))
    }

    /// Crash-stops the leader of partition `p` at `at`.
    pub fn kill_leader(self, at: Duration, p: PartitionId) -> Self {
        self.at(at, Event::KillLeader(p))
    }

    /// Cuts the network between `sides` at `at`.
    pub fn partition(self, at: Duration, sides: Vec<Vec<usize>>) -> Self {
        self.at(at, Event::Partition(sides))
    }

    /// Heals every cut at `at`.
    pub fn heal(self, at: Duration) -> Self {
        self.at(at, Event::Heal)
    }

    /// Stops at `at`.
    pub fn end_at(mut self, at: Duration) -> Self {
        self.end = End::At(at);
        self
    }

    /// Stops when every operation has finished (or at `cap`).
    pub fn end_when_done(mut self, cap: Duration) -> Self {
        self.end = End::WhenDone { cap };
        self
    }

    /// Prints the event trace.
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// The configuration of server `i`.
    pub fn node_config(&self, i: usize) -> NodeConfig {
        let reference = NodeConfig::reference();
        let replace_after = self.replace_after.or(reference.membership.replace_after);
        let snapshot_interval = self
            .snapshot_interval
            .unwrap_or(reference.paxos.snapshot_interval);
        let mut cfg = reference;
        if let Some(entries) = self.snapshot_interval {
            cfg.paxos.max_log_entries = 2 * entries;
        }
        if let Some(bytes) = self.max_message_bytes {
            // Small messages need small requests: the simulated workloads use
            // short keys and values.
            cfg.limits.max_key_bytes = 16;
            cfg.limits.max_value_bytes = 64;
            cfg = cfg.with_max_message_bytes(bytes);
        }
        cfg.with_replace_after(replace_after)
            .with_snapshot_interval(snapshot_interval)
            .with_address(node_addr(i))
            .with_bootstrap_address(node_addr(1))
            .with_boot_threshold(self.boot_threshold.unwrap_or(self.nodes))
            .with_partitions(self.partitions)
            .with_replication_degree(self.replication)
            .with_seeds(if self.seeds {
                (1..=self.nodes)
                    .filter(|j| *j != i)
                    .map(node_addr)
                    .collect()
            } else {
                Vec::new()
            })
    }

    /// Plays the scenario.
    pub fn run(&self) -> Outcome {
        let mut runner = match Runner::new(self) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::failed_to_start(self, format!("{e:#}"));
            }
        };
        runner.run();
        runner.finish()
    }
}

/// What a replica watcher saw: leaders as each replica sees them, and every decided
/// log entry (to check that replicas agree).
#[derive(Default)]
struct Observations {
    /// (server, partition) → the leader that replica follows.
    leaders: BTreeMap<(usize, PartitionId), Option<Ballot>>,
    /// (partition, index) → the entry first decided there, and by which server.
    /// Indexes go on across epochs (an epoch starts one past its predecessor's
    /// stop-sign), so this also checks that no two epochs decide at one index.
    decided: BTreeMap<(PartitionId, u64), (KvEntry, usize)>,
    problems: Vec<String>,
}

type SharedObservations = Arc<Mutex<Observations>>;

fn obs_lock(o: &SharedObservations) -> MutexGuard<'_, Observations> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

/// Listens to one replica's `SequenceConsensus` indications next to its `KvReplica`.
#[derive(ComponentDefinition)]
struct ReplicaWatcher {
    ctx: ComponentContext<Self>,
    sc_port: RequiredPort<SequenceConsensus>,
    node: usize,
    partition: PartitionId,
    obs: SharedObservations,
}

impl Observations {
    fn decided(&mut self, node: usize, partition: PartitionId, idx: u64, entry: KvEntry) {
        let key = (partition, idx);
        match self.decided.get(&key) {
            None => {
                self.decided.insert(key, (entry, node));
            }
            Some((first, by)) if *first != entry => {
                let msg = format!(
                    "replicas disagree on partition {partition} entry {idx}: server {by} \
                     decided {first:?}, server {node} decided {entry:?}"
                );
                self.problems.push(msg);
            }
            Some(_) => {}
        }
    }
}

ignore_lifecycle!(ReplicaWatcher);

impl Require<SequenceConsensus> for ReplicaWatcher {
    fn handle(&mut self, ind: ScIndication) -> HandlerResult {
        let mut o = obs_lock(&self.obs);
        match ind {
            ScIndication::LeaderChanged(b) => {
                o.leaders.insert((self.node, self.partition), b);
            }
            ScIndication::Decided { idx: first, cmds } => {
                for (idx, cmd) in (first..).zip(cmds) {
                    o.decided(self.node, self.partition, idx, KvEntry::Cmd(cmd));
                }
            }
            ScIndication::Stopped { idx, epoch } => {
                o.decided(
                    self.node,
                    self.partition,
                    idx,
                    KvEntry::Stop(StopSign { epoch }),
                );
            }
            _ => {}
        }
        Handled::OK
    }
}

impl Actor for ReplicaWatcher {
    type Message = Never;

    fn receive_local(&mut self, msg: Never) -> HandlerResult {
        match msg {}
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

struct RunningNode {
    label: String,
    node: Node,
    /// (partition, epoch) of the replicas watched.
    watched: BTreeSet<(PartitionId, u64)>,
    watchers: Vec<Arc<Component<ReplicaWatcher>>>,
    system: KompactSystem,
}

struct Runner<'a> {
    sc: &'a Scenario,
    sim: Sim,
    hub: Arc<Component<SimNet>>,
    nodes: BTreeMap<usize, RunningNode>,
    killed: Vec<usize>,
    /// Servers restarted as new processes, in order.
    restarted: Vec<usize>,
    /// Processes started so far per server (the first is generation 0).
    generations: BTreeMap<usize, u64>,
    /// Running clients: (id, system label).
    clients: Vec<(usize, String)>,
    rec: SharedRecorder,
    obs: SharedObservations,
    problems: Vec<String>,
    events: Vec<(Duration, Event)>,
    next_event: usize,
    alarms: BTreeSet<Duration>,
    booted_at: Option<Duration>,
}

impl<'a> Runner<'a> {
    fn new(sc: &'a Scenario) -> anyhow::Result<Self> {
        let mut sim = Sim::new(sc.log);
        let net_sys = sim.build_system("sim-net")?;
        let hub = net_sys.create(|| {
            SimNet::new(
                sim.clock(),
                sc.delay.clone(),
                mix64(sc.seed ^ 0x6e65_7477_6f72_6b00),
                sc.trace,
            )
        });
        net_sys.start(&hub);
        sim.run_until_idle()
            .map_err(|l| anyhow::anyhow!("livelock at start ({} jobs)", l.jobs))?;
        let mut events = sc.events.clone();
        events.sort_by_key(|(t, _)| *t); // stable: same-time events keep their order
        Ok(Runner {
            rec: Recorder::shared(sim.clock(), sc.trace),
            sc,
            sim,
            hub,
            nodes: BTreeMap::new(),
            killed: Vec::new(),
            restarted: Vec::new(),
            generations: BTreeMap::new(),
            clients: Vec::new(),
            obs: Arc::new(Mutex::new(Observations::default())),
            problems: Vec::new(),
            events,
            next_event: 0,
            alarms: BTreeSet::new(),
            booted_at: None,
        })
    }

    fn trace(&self, what: std::fmt::Arguments<'_>) {
        if self.sc.trace {
            let now = self.sim.now().as_millis();
            println!("[{:>6}.{:03}s] {what}", now / 1000, now % 1000);
        }
    }

    fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes.contains_key(&i) || self.killed.contains(&i) {
            return Ok(());
        }
        self.trace(format_args!("START server {i} at {}", node_addr(i)));
        let cfg = self.sc.node_config(i);
        cfg.validate(&self.sc.name)
            .map_err(|e| anyhow::anyhow!("server {i}: {e}"))?;
        let generation = *self
            .generations
            .entry(i)
            .and_modify(|g| *g += 1)
            .or_insert(0);
        let label = if generation == 0 {
            format!("node-{i}")
        } else {
            format!("node-{i}.{generation}")
        };
        let sys = self.sim.build_system(&label)?;
        let addr = node_addr(i);
        let timer = sys.create(KompactTimer::new);
        let hub_ref = self.hub.actor_ref();
        let net = sys.create(|| SimNetwork::new(addr, hub_ref));
        let ep = net.actor_ref();
        self.hub.on_definition(|h| h.register(addr, ep));
        sys.start(&timer);
        sys.start(&net);
        let incarnation = mix64(
            self.sc.seed.wrapping_add(i as u64) ^ 0x696e_6361_726e ^ generation.rotate_left(40),
        );
        let node = Node::start(
            &sys,
            cfg,
            connector::<Timer, _>(&timer),
            connector::<Network, _>(&net),
            incarnation,
        );
        self.nodes.insert(
            i,
            RunningNode {
                label,
                node,
                watched: BTreeSet::new(),
                watchers: Vec::new(),
                system: sys,
            },
        );
        Ok(())
    }

    fn start_client(&mut self, spec: &ClientSpec) -> anyhow::Result<()> {
        let addr = client_addr(spec.id);
        let contact = if spec.contact == ANY_LIVE {
            self.nodes.keys().next().copied().unwrap_or(1)
        } else {
            spec.contact
        };
        self.trace(format_args!(
            "START client {} at {addr} ({} sessions) contacting server {}",
            spec.id,
            spec.sessions.len(),
            contact
        ));
        let label = format!("client-{}", spec.id);
        let sys = self.sim.build_system(&label)?;
        let hub_ref = self.hub.actor_ref();
        let net = sys.create(|| SimNetwork::new(addr, hub_ref));
        let ep = net.actor_ref();
        self.hub.on_definition(|h| h.register(addr, ep));
        sys.start(&net);
        let net_conn = connector::<Network, _>(&net);
        let t = self.sc.client_timing;
        let cluster = self.sc.node_config(1).cluster_name;
        for (k, plan) in spec.sessions.iter().enumerate() {
            let session = (spec.id as u64) * 100_000 + k as u64 + 1;
            let comp = sys.create(|| {
                ClientComp::new(ClientSettings {
                    endpoint: node_addr(contact),
                    cluster: cluster.clone(),
                    client_id: session,
                    request_timeout: t.request_timeout,
                    deadline: t.deadline,
                    tick_period: t.tick,
                })
            });
            // One timer per session: a timer provider shows every timeout to every
            // component connected to it, so sharing one would cost sessions².
            let timer = sys.create(KompactTimer::new);
            sys.start(&timer);
            connect_to(&net_conn, &comp);
            connect_to(&connector::<Timer, _>(&timer), &comp);
            let driver =
                sys.create(|| ClientDriver::new(spec.id, session, plan.clone(), self.rec.clone()));
            biconnect_components::<KeyValue, _, _>(&comp, &driver)
                .map_err(|e| anyhow::anyhow!("cannot connect a driver: {e:?}"))?;
            sys.start(&comp);
            sys.start(&driver);
        }
        self.clients.push((spec.id, label));
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        let Some(n) = self.nodes.remove(&i) else {
            return;
        };
        let addr = node_addr(i);
        self.hub.on_definition(|h| h.kill(addr));
        self.sim.stop_system(&n.label);
        drop(n);
        self.killed.push(i);
    }

    /// The leader of `p` as the live replicas see it: the highest ballot any of them
    /// follows, if its node is alive.
    fn leader_of(&self, p: PartitionId) -> Option<usize> {
        let o = obs_lock(&self.obs);
        let best = o
            .leaders
            .iter()
            .filter(|((n, q), _)| *q == p && self.nodes.contains_key(n))
            .filter_map(|(_, b)| *b)
            .max()?;
        self.nodes
            .keys()
            .copied()
            .find(|i| node_addr(*i) == best.pid)
    }

    fn apply(&mut self, e: Event) -> anyhow::Result<()> {
        match e {
            Event::StartNode(i) => self.start_node(i)?,
            Event::StartClient(spec) => self.start_client(&spec)?,
            Event::Kill(i) => self.kill(i),
            Event::Restart(i) => {
                self.kill(i);
                self.killed.retain(|k| *k != i);
                self.restarted.push(i);
                self.start_node(i)?;
            }
            Event::KillLeader(p) => match self.leader_of(p) {
                Some(i) => self.kill(i),
                None => self.problems.push(format!(
                    "kill-leader at {:?}: partition {p} has no known leader",
                    self.sim.now()
                )),
            },
            Event::Partition(sides) => {
                let sides: Vec<Vec<NodeId>> = sides
                    .iter()
                    .map(|s| s.iter().map(|i| node_addr(*i)).collect())
                    .collect();
                self.hub.on_definition(|h| h.partition(sides));
            }
            Event::Heal => self.hub.on_definition(|h| h.heal()),
            Event::DropConnection(a, b, after) => {
                let (a, b) = (node_addr(a), node_addr(b));
                self.hub.on_definition(|h| h.drop_connection(a, b, after));
            }
        }
        Ok(())
    }

    /// Attaches a watcher to every replica created since the last call.
    fn watch_new_replicas(&mut self) {
        let now = self.sim.now();
        for (i, n) in self.nodes.iter_mut() {
            let fresh: Vec<_> = {
                let hosted = n.node.hosted.lock().unwrap_or_else(|e| e.into_inner());
                if hosted.table.is_some() && self.booted_at.is_none() {
                    self.booted_at = Some(now);
                }
                hosted
                    .replicas
                    .iter()
                    .filter(|r| !n.watched.contains(&(r.partition, r.epoch)))
                    .map(|r| (r.partition, r.epoch, r.paxos.clone()))
                    .collect()
            };
            for (p, epoch, paxos) in fresh {
                let obs = self.obs.clone();
                let w = n.system.create(|| ReplicaWatcher {
                    ctx: ComponentContext::uninitialised(),
                    sc_port: RequiredPort::uninitialised(),
                    node: *i,
                    partition: p,
                    obs,
                });
                if biconnect_components::<SequenceConsensus, _, _>(&paxos, &w).is_ok() {
                    n.system.start(&w);
                    n.watchers.push(w);
                }
                n.watched.insert((p, epoch));
            }
        }
    }

    fn settle(&mut self) -> bool {
        if let Err(l) = self.sim.run_until_idle() {
            self.problems.push(format!(
                "livelock at {:?}: {} handler runs without time passing",
                self.sim.now(),
                l.jobs
            ));
            return false;
        }
        self.watch_new_replicas();
        self.stop_finished_clients();
        true
    }

    /// Stops the systems of clients whose every operation has finished, so idle
    /// sessions do not keep ticking.
    fn stop_finished_clients(&mut self) {
        let done: Vec<(usize, String)> = {
            let rec = self.rec.lock().unwrap_or_else(|e| e.into_inner());
            self.clients
                .iter()
                .filter(|(id, _)| rec.client_done(*id))
                .cloned()
                .collect()
        };
        for (id, label) in done {
            self.clients.retain(|(c, _)| *c != id);
            self.sim.stop_system(&label);
        }
    }

    fn alarm(&mut self, at: Duration) {
        if at > self.sim.now() && self.alarms.insert(at) {
            self.sim.wake_at(at);
        }
    }

    fn run(&mut self) {
        loop {
            if !self.settle() {
                return;
            }
            let now = self.sim.now();
            while self.next_event < self.events.len() && self.events[self.next_event].0 <= now {
                let e = self.events[self.next_event].1.clone();
                self.next_event += 1;
                if let Err(err) = self.apply(e) {
                    self.problems.push(format!("{err:#}"));
                    return;
                }
                if !self.settle() {
                    return;
                }
            }
            let events_left = self.next_event < self.events.len();
            match self.sc.end {
                End::At(t) => {
                    if now >= t {
                        return;
                    }
                    self.alarm(t);
                }
                End::WhenDone { cap } => {
                    let done = obs_done(&self.rec);
                    if (!events_left && done) || now >= cap {
                        return;
                    }
                    self.alarm(cap);
                }
            }
            if events_left {
                let t = self.events[self.next_event].0;
                self.alarm(t);
            }
            if !self.sim.advance_to_next() {
                return;
            }
        }
    }

    fn finish(mut self) -> Outcome {
        let mut hash = 0;
        let mut net = NetStats::default();
        self.hub.on_definition(|h| {
            hash = h.trace_hash();
            net = h.stats();
        });
        let mut problems = std::mem::take(&mut self.problems);
        problems.extend(obs_lock(&self.obs).problems.iter().cloned());
        let rec = self.rec.lock().unwrap_or_else(|e| e.into_inner());
        let ops = rec.ops();
        let all_done = rec.all_done();
        drop(rec);
        let end_time = self.sim.now();
        let jobs = self.sim.jobs();
        let mut alive: Vec<usize> = self.nodes.keys().copied().collect();
        alive.sort_unstable();
        let directories: BTreeMap<usize, Option<Arc<Directory>>> = self
            .nodes
            .iter()
            .map(|(i, n)| {
                let h = n.node.hosted.lock().unwrap_or_else(|e| e.into_inner());
                (*i, h.directory.clone())
            })
            .collect();
        let hosting: BTreeMap<usize, Vec<(PartitionId, u64)>> = self
            .nodes
            .iter()
            .map(|(i, n)| {
                let h = n.node.hosted.lock().unwrap_or_else(|e| e.into_inner());
                let mut v: Vec<(PartitionId, u64)> = h
                    .replicas
                    .iter()
                    .filter(|r| !r.replica.on_definition(|c| c.is_stopped()))
                    .map(|r| (r.partition, r.epoch))
                    .collect();
                v.sort_unstable();
                (*i, v)
            })
            .collect();
        let incarnations: BTreeMap<usize, u64> = self
            .nodes
            .iter()
            .map(|(i, n)| (*i, n.node.status_source.collect(0).incarnation))
            .collect();
        let partitions = self.sc.partitions;
        let counters: BTreeMap<usize, ReplicaCounters> = self
            .nodes
            .iter()
            .map(|(i, n)| {
                let mut c = ReplicaCounters::default();
                for p in 0..partitions {
                    let m = n.node.metrics.partition(p);
                    let get = |a: &std::sync::atomic::AtomicU64| {
                        a.load(std::sync::atomic::Ordering::Relaxed)
                    };
                    c.large_messages_fetched += get(&m.large_messages_fetched);
                    c.snapshots_installed += get(&m.snapshots_installed);
                    c.snapshots_taken += get(&m.snapshots_taken);
                }
                (*i, c)
            })
            .collect();
        self.nodes.clear();
        self.clients.clear();
        self.sim.shutdown();
        Outcome {
            name: self.sc.name.clone(),
            seed: self.sc.seed,
            hash,
            ops,
            all_done,
            end_time,
            net,
            jobs,
            killed: self.killed.clone(),
            restarted: self.restarted.clone(),
            alive,
            directories,
            hosting,
            incarnations,
            counters,
            booted_at: self.booted_at,
            problems,
        }
    }
}

/// A live server's replica counters at the end of a run, summed over partitions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaCounters {
    /// Replication messages too large for one piece, fetched in chunks.
    pub large_messages_fetched: u64,
    /// Snapshots installed in place of the state machine.
    pub snapshots_installed: u64,
    /// Snapshots taken.
    pub snapshots_taken: u64,
}

fn obs_done(rec: &SharedRecorder) -> bool {
    rec.lock().unwrap_or_else(|e| e.into_inner()).all_done()
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario's name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// Hash of the delivered-event sequence: equal for equal runs.
    pub hash: u64,
    /// Every operation, in call order.
    pub ops: Vec<OpRecord>,
    /// Whether every planned operation finished before the run stopped.
    pub all_done: bool,
    /// Virtual time at the end.
    pub end_time: Duration,
    /// Network counters.
    pub net: NetStats,
    /// Handler executions.
    pub jobs: u64,
    /// Servers crashed during the run (and not restarted).
    pub killed: Vec<usize>,
    /// Servers restarted as new processes, in order.
    pub restarted: Vec<usize>,
    /// Servers alive at the end.
    pub alive: Vec<usize>,
    /// Each live server's directory at the end (`None`: not a member).
    pub directories: BTreeMap<usize, Option<Arc<Directory>>>,
    /// Each live server's running replicas at the end: (partition, epoch).
    pub hosting: BTreeMap<usize, Vec<(PartitionId, u64)>>,
    /// Each live server's process incarnation at the end.
    pub incarnations: BTreeMap<usize, u64>,
    /// Each live server's replica counters at the end.
    pub counters: BTreeMap<usize, ReplicaCounters>,
    /// When the first server installed the lookup table.
    pub booted_at: Option<Duration>,
    /// Anything wrong the simulator itself noticed (livelock, replicas deciding
    /// different commands at one log index, a run that could not start).
    pub problems: Vec<String>,
}

impl Outcome {
    fn failed_to_start(sc: &Scenario, why: String) -> Outcome {
        Outcome {
            name: sc.name.clone(),
            seed: sc.seed,
            hash: 0,
            ops: Vec::new(),
            all_done: false,
            end_time: Duration::ZERO,
            net: NetStats::default(),
            jobs: 0,
            killed: Vec::new(),
            restarted: Vec::new(),
            alive: Vec::new(),
            directories: BTreeMap::new(),
            counters: BTreeMap::new(),
            hosting: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            booted_at: None,
            problems: vec![format!("the scenario could not run: {why}")],
        }
    }

    /// The history in the checker's format, and the operations whose result did not
    /// fit them (protocol errors).
    pub fn history(&self) -> (Vec<HistoryOp>, Vec<OpRecord>) {
        let mut h = Vec::with_capacity(self.ops.len());
        let mut bad = Vec::new();
        for op in &self.ops {
            match op.to_history() {
                Some(x) => h.push(x),
                None => bad.push(op.clone()),
            }
        }
        (h, bad)
    }

    /// Checks the history for linearizability.
    pub fn check(&self) -> Report {
        let (h, _) = self.history();
        kv_checker::check_history_with(&h, &kv_checker::CheckOptions::default())
    }

    /// Every reason to fail this run: simulator problems, protocol errors, and a
    /// history that is not linearizable. Empty when all is well.
    pub fn failures(&self) -> Vec<String> {
        let mut f = self.problems.clone();
        let (h, bad) = self.history();
        for op in bad {
            f.push(format!(
                "answer does not fit the operation: {:?} -> {:?}",
                op.op, op.result
            ));
        }
        let report = kv_checker::check_history_with(&h, &kv_checker::CheckOptions::default());
        match report.result {
            CheckResult::Linearizable => {}
            CheckResult::NotLinearizable { .. } => f.push(format!("{report}")),
            CheckResult::Unknown { .. } => f.push(format!("checker gave up: {report}")),
        }
        f
    }

    /// The operations of client `id`.
    pub fn client_ops(&self, id: usize) -> Vec<&OpRecord> {
        self.ops.iter().filter(|o| o.client == id).collect()
    }

    /// The history as JSON lines.
    pub fn history_jsonl(&self) -> String {
        let (h, _) = self.history();
        let mut s = String::new();
        for op in h {
            s.push_str(&op.to_json_line());
            s.push('\n');
        }
        s
    }

    /// One line: name, seed, hash, ops, time.
    pub fn summary(&self) -> String {
        let answered = self.ops.iter().filter(|o| o.succeeded()).count();
        format!(
            "{} seed {}: hash {:016x}, {} ops ({} answered), {:.3}s virtual, {} deliveries, {} handler runs",
            self.name,
            self.seed,
            self.hash,
            self.ops.len(),
            answered,
            self.end_time.as_secs_f64(),
            self.net.delivered,
            self.jobs
        )
    }
}

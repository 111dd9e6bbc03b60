//! `kvstore status`: the cluster as its nodes see it.
//!
//! Asks the endpoint for its view (`StatusRequest`, answered by every node, booted
//! or not), takes the node list from its lookup table, then asks every other node at
//! once, waiting at most `--timeout` for each round. A node that does not answer in
//! time is listed as such; everything else is reported from the nodes that did.
//!
//! Per partition: its hash range and replicas, the leader (the highest ballot any
//! answering replica follows, confirmed when that leader answered and says it
//! leads), and per replica its role, ballot, decided index, log length and the
//! other queue depths. Per node: whom its failure detector suspects.
//!
//! Exit codes: 0 when the endpoint answered (even if other nodes did not: the report
//! says which); 1 when the endpoint belongs to another cluster; 2 usage; 3 the
//! endpoint did not answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kompact::prelude::*;
use kv_components::connect::connect_to;
use kv_components::runtime::Runtime;
use kv_ports::{
    LookupTable, NetIndication, NetRequest, Network, NodeId, NodeStatus, ReplicaStatus,
    StatusMessage, StatusRequest,
};
use kv_protocols::partition::hash_range;
use serde_json::{Value, json};

/// Arguments of `kvstore status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A node of the cluster (IP:PORT).
    #[arg(long, default_value = "127.0.0.1:45678")]
    endpoint: String,
    /// The cluster's name; a node of another cluster is reported as an error.
    #[arg(long, default_value = "kompact-kv")]
    cluster: String,
    /// How long to wait for the endpoint, and then for all other nodes.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// A file holding the cluster's `cluster-secret` (one line); without it, the
    /// environment variable KVSTORE_CLUSTER_SECRET, if set.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    tls: crate::TlsArgs,
}

// ---------------------------------------------------------------------------------
// The asking component

/// Asks nodes for their status and hands each answer to the promise of its nonce.
#[derive(ComponentDefinition)]
struct StatusProbe {
    ctx: ComponentContext<Self>,
    net_port: RequiredPort<Network>,
    next_nonce: u64,
    waiting: BTreeMap<u64, (NodeId, KPromise<NodeStatus>)>,
    /// Nodes that refused us for naming another cluster, with their reason.
    wrong_cluster: Arc<std::sync::Mutex<BTreeMap<NodeId, String>>>,
}

#[derive(Debug)]
struct Ask(NodeId, KPromise<NodeStatus>);

impl StatusProbe {
    fn new(first_nonce: u64) -> Self {
        StatusProbe {
            ctx: ComponentContext::uninitialised(),
            net_port: RequiredPort::uninitialised(),
            next_nonce: first_nonce,
            waiting: BTreeMap::new(),
            wrong_cluster: Arc::default(),
        }
    }
}

ignore_lifecycle!(StatusProbe);

impl Require<Network> for StatusProbe {
    fn handle(&mut self, ind: NetIndication) -> HandlerResult {
        if let NetIndication::Deliver {
            src,
            msg:
                kv_ports::NetMessage::Client(kv_ports::ClientMessage::Refused {
                    reason: kv_ports::Refusal::WrongCluster(reason),
                    ..
                }),
        } = &ind
            && let Ok(mut w) = self.wrong_cluster.lock()
        {
            w.insert(*src, reason.clone());
        }
        if let NetIndication::Deliver {
            src,
            msg: kv_ports::NetMessage::Status(StatusMessage::Reply(status)),
        } = ind
        {
            // Only the node asked may answer its nonce.
            if self
                .waiting
                .get(&status.nonce)
                .is_some_and(|(node, _)| *node == src || *node == status.node)
                && let Some((_, p)) = self.waiting.remove(&status.nonce)
            {
                let _ = p.fulfil(*status);
            }
        }
        Handled::OK
    }
}

impl Actor for StatusProbe {
    type Message = Ask;

    fn receive_local(&mut self, Ask(node, promise): Ask) -> HandlerResult {
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.waiting.insert(nonce, (node, promise));
        self.net_port.trigger(NetRequest::Send {
            dst: node,
            msg: kv_ports::NetMessage::Status(StatusMessage::Request(StatusRequest { nonce })),
        });
        Handled::OK
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

/// Asks every node in `nodes` at once; returns the answers that came within
/// `timeout` (in all, not per node).
fn ask_all(
    probe: &Arc<Component<StatusProbe>>,
    nodes: &[NodeId],
    timeout: Duration,
) -> BTreeMap<NodeId, NodeStatus> {
    let deadline = Instant::now() + timeout;
    let futures: Vec<(NodeId, KFuture<NodeStatus>)> = nodes
        .iter()
        .map(|n| {
            let (p, f) = promise::<NodeStatus>();
            probe.actor_ref().tell(Ask(*n, p));
            (*n, f)
        })
        .collect();
    let mut answers = BTreeMap::new();
    for (n, f) in futures {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(s) = f.wait_timeout(left) {
            answers.insert(n, s);
        }
    }
    answers
}

// ---------------------------------------------------------------------------------
// The report

/// What the cluster said.
struct Report {
    endpoint: NodeId,
    cluster: String,
    table: Option<Arc<LookupTable>>,
    answers: BTreeMap<NodeId, NodeStatus>,
    /// Nodes of the table that did not answer in time.
    silent: Vec<NodeId>,
    /// The members (address → incarnation) in the endpoint's directory.
    members: BTreeMap<NodeId, u64>,
}

/// The leader of a partition as the answering replicas see it.
struct PartitionLeader {
    node: NodeId,
    ballot: u64,
    /// The leader itself answered and says it leads.
    confirmed: bool,
}

impl Report {
    fn replica(&self, node: NodeId, partition: u32) -> Option<&ReplicaStatus> {
        self.answers
            .get(&node)?
            .replicas
            .iter()
            .find(|r| r.partition == partition)
    }

    fn leader_of(&self, partition: u32, group: &[NodeId]) -> Option<PartitionLeader> {
        let best = group
            .iter()
            .filter_map(|n| self.replica(*n, partition)?.leader)
            .max()?;
        let confirmed = self
            .replica(best.pid, partition)
            .is_some_and(|r| r.is_leader && r.leader == Some(best));
        Some(PartitionLeader {
            node: best.pid,
            ballot: best.n,
            confirmed,
        })
    }
}

fn role(node: NodeId, r: &ReplicaStatus) -> &'static str {
    match r.leader {
        _ if r.is_leader => "leader",
        Some(b) if b.pid == node => "preparing",
        Some(_) => "follower",
        None => "no leader",
    }
}

fn hex(h: u64) -> String {
    format!("0x{h:016x}")
}

fn to_json(r: &Report) -> Value {
    let partitions: Vec<Value> = r
        .table
        .iter()
        .flat_map(|t| (0..t.partitions).map(move |p| (t, p)))
        .map(|(t, p)| {
            let group = t.group(p);
            let (first, last) = hash_range(p, t.partitions);
            let leader = r.leader_of(p, group);
            let replicas: Vec<Value> = group
                .iter()
                .map(|n| match r.replica(*n, p) {
                    Some(s) => json!({
                        "node": n.to_string(),
                        "answered": true,
                        "role": role(*n, s),
                        "leader": s.leader.map(|b| b.pid.to_string()),
                        "ballot": s.leader.map(|b| b.n),
                        "decided": s.decided_idx,
                        "log_len": s.log_len,
                        "first_retained": s.first_retained_idx,
                        "applied": s.applied_idx,
                        "keys": s.keys,
                        "inflight": s.inflight,
                        "pending": s.pending,
                        "epoch": s.epoch,
                    }),
                    None => json!({ "node": n.to_string(), "answered": false }),
                })
                .collect();
            json!({
                "partition": p,
                "hash_first": hex(first),
                "hash_last": hex(last),
                "replicas": group.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "leader": leader.as_ref().map(|l| l.node.to_string()),
                "ballot": leader.as_ref().map(|l| l.ballot),
                "leader_confirmed": leader.as_ref().is_some_and(|l| l.confirmed),
                "replica_status": replicas,
            })
        })
        .collect();
    let all_nodes: Vec<NodeId> = match &r.table {
        Some(t) => t.nodes.clone(),
        None => vec![r.endpoint],
    };
    let nodes: Vec<Value> = all_nodes
        .iter()
        .map(|n| match r.answers.get(n) {
            Some(s) => json!({
                "node": n.to_string(),
                "answered": true,
                "booted": s.table.is_some(),
                "incarnation": format!("{:016x}", s.incarnation),
                "member": r.members.get(n).is_some_and(|i| *i == s.incarnation),
                "directory_version": s.directory_version,
                "uptime_ms": s.uptime_ms,
                "suspects": s.suspected.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                "not_in_table": s.not_in_table,
            }),
            None => json!({ "node": n.to_string(), "answered": false }),
        })
        .collect();
    json!({
        "endpoint": r.endpoint.to_string(),
        "cluster": r.cluster,
        "booted": r.table.is_some(),
        "replication_degree": r.table.as_ref().map(|t| t.replication_degree),
        "partitions": partitions,
        "nodes": nodes,
        "not_answering": r.silent.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
    })
}

/// Left-aligned columns, two spaces apart.
fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = indent.to_string();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn to_text(r: &Report) -> String {
    let mut out = String::new();
    let Some(t) = &r.table else {
        let _ = writeln!(
            out,
            "cluster {:?}: not formed yet (asked {})",
            r.cluster, r.endpoint
        );
        if let Some(reason) = r
            .answers
            .get(&r.endpoint)
            .and_then(|s| s.not_in_table.as_ref())
        {
            let _ = writeln!(out, "{} is not part of the cluster: {reason}", r.endpoint);
        }
        return out;
    };
    let _ = writeln!(
        out,
        "cluster {:?}: {} node(s), {} partition(s), replication {} (asked {})\n",
        r.cluster,
        t.nodes.len(),
        t.partitions,
        t.replication_degree,
        r.endpoint
    );
    for p in 0..t.partitions {
        let group = t.group(p);
        let (first, last) = hash_range(p, t.partitions);
        let leader = match r.leader_of(p, group) {
            Some(l) if l.confirmed => format!("{} (ballot {})", l.node, l.ballot),
            Some(l) => format!("{} (ballot {}, unconfirmed)", l.node, l.ballot),
            None => "none known".to_string(),
        };
        let _ = writeln!(
            out,
            "partition {p}  hashes {}..={}  leader {leader}",
            hex(first),
            hex(last)
        );
        let mut rows = vec![
            [
                "REPLICA", "ROLE", "EPOCH", "BALLOT", "DECIDED", "LOG", "RETAINED", "APPLIED",
                "KEYS", "INFLIGHT", "PENDING",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for n in group {
            rows.push(match r.replica(*n, p) {
                Some(s) => vec![
                    n.to_string(),
                    role(*n, s).to_string(),
                    s.epoch.to_string(),
                    s.leader.map_or("-".into(), |b| b.n.to_string()),
                    s.decided_idx.to_string(),
                    s.log_len.to_string(),
                    s.log_len.saturating_sub(s.first_retained_idx).to_string(),
                    s.applied_idx.to_string(),
                    s.keys.to_string(),
                    s.inflight.to_string(),
                    s.pending.to_string(),
                ],
                None if r.answers.contains_key(n) => {
                    // The node answers but runs no replica here: a process restarted
                    // at that address (its former slot is lost) or one not started yet.
                    vec![n.to_string(), "not running".to_string()]
                }
                None => vec![n.to_string(), "no answer".to_string()],
            });
        }
        table(&mut out, "  ", &rows);
        out.push('\n');
    }
    let mut rows = vec![
        ["NODE", "STATE", "UPTIME", "SUSPECTS"]
            .map(String::from)
            .to_vec(),
    ];
    for n in &t.nodes {
        rows.push(match r.answers.get(n) {
            Some(s) => vec![
                n.to_string(),
                if s.table.is_some() { "up" } else { "booting" }.to_string(),
                kv_client::fmt_duration(Duration::from_millis(s.uptime_ms)),
                if s.suspected.is_empty() {
                    "-".to_string()
                } else {
                    s.suspected
                        .iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ],
            None => vec![n.to_string(), "no answer".to_string()],
        });
    }
    table(&mut out, "", &rows);
    if !r.silent.is_empty() {
        let _ = writeln!(
            out,
            "\nnot answering: {}",
            r.silent
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

// ---------------------------------------------------------------------------------
// The command

/// What to print from the nodes' answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `kvstore status`: partitions, replicas, nodes.
    Status,
    /// `kvstore members`: the directory's members.
    Members,
}

/// `kvstore members`: every member of the endpoint's directory with its incarnation,
/// whether its process answers as that incarnation, and the replicas it runs.
fn members_json(r: &Report) -> Value {
    let members: Vec<Value> = r
        .members
        .iter()
        .map(|(addr, inc)| {
            let answer = r.answers.get(addr);
            json!({
                "node": addr.to_string(),
                "incarnation": format!("{inc:016x}"),
                "state": member_state(*inc, answer),
                "replicas": answer
                    .map(|s| s.replicas.iter().map(|x| x.partition).collect::<Vec<_>>())
                    .unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "endpoint": r.endpoint.to_string(),
        "cluster": r.cluster,
        "members": members,
    })
}

/// `up`: its process answers as the member's incarnation; `restarted`: another
/// process answers at that address; `booting`; `no answer`.
fn member_state(inc: u64, answer: Option<&NodeStatus>) -> &'static str {
    match answer {
        None => "no answer",
        Some(s) if s.incarnation != inc => "restarted",
        Some(s) if s.table.is_none() => "booting",
        Some(_) => "up",
    }
}

fn members_text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {:?}: {} member(s) (asked {})
",
        r.cluster,
        r.members.len(),
        r.endpoint
    );
    let mut rows = vec![
        ["MEMBER", "INCARNATION", "STATE", "REPLICAS"]
            .map(String::from)
            .to_vec(),
    ];
    for (addr, inc) in &r.members {
        let answer = r.answers.get(addr);
        let replicas = answer
            .map(|s| {
                s.replicas
                    .iter()
                    .map(|x| x.partition.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| "-".to_string());
        rows.push(vec![
            addr.to_string(),
            format!("{inc:016x}"),
            member_state(*inc, answer).to_string(),
            replicas,
        ]);
    }
    table(&mut out, "", &rows);
    out
}

/// Runs `kvstore status` (or `kvstore members`, by `view`).
pub fn run(args: &Args, view: View) -> ExitCode {
    let endpoint = match kv_client::resolve(args.endpoint.as_str()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kvstore: --endpoint {}: {e}", args.endpoint);
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let secret = match crate::cluster_secret(args.cluster_secret_file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let mut transport =
        kv_client::transport_config(kv_client::local_ip_towards(endpoint), &args.cluster, secret);
    transport.tls = match args.tls.config() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let rt = match Runtime::start(transport, 2, Some(quiet_logger())) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let probe = rt
        .system
        .create(|| StatusProbe::new(kv_client::random_client_id()));
    let wrong_cluster = probe.on_definition(|p| p.wrong_cluster.clone());
    connect_to(&rt.net(), &probe);
    rt.system.start(&probe);

    let code = match ask_all(&probe, &[endpoint], args.timeout).remove(&endpoint) {
        None if let Some(reason) = wrong_cluster
            .lock()
            .ok()
            .and_then(|w| w.get(&endpoint).cloned()) =>
        {
            eprintln!("kvstore: {endpoint}: wrong cluster: {reason}");
            ExitCode::from(1)
        }
        None => {
            eprintln!(
                "kvstore: no answer from {endpoint} within {} (is the node up?)",
                kv_client::fmt_duration(args.timeout)
            );
            ExitCode::from(crate::EXIT_UNAVAILABLE)
        }
        Some(s) if s.cluster != args.cluster => {
            eprintln!(
                "kvstore: {endpoint} belongs to cluster {:?}, not {:?}",
                s.cluster, args.cluster
            );
            ExitCode::from(1)
        }
        Some(first) => {
            let table = first.table.clone();
            let members = first
                .members
                .iter()
                .map(|m| (m.addr, m.incarnation))
                .collect();
            let others: Vec<NodeId> = table
                .iter()
                .flat_map(|t| t.nodes.iter().copied())
                .filter(|n| *n != endpoint)
                .collect();
            let mut answers = ask_all(&probe, &others, args.timeout);
            answers.insert(endpoint, first);
            let silent = others
                .iter()
                .copied()
                .filter(|n| !answers.contains_key(n))
                .collect();
            let report = Report {
                endpoint,
                cluster: args.cluster.clone(),
                table,
                answers,
                silent,
                members,
            };
            match (view, args.json) {
                (View::Status, true) => println!("{}", to_json(&report)),
                (View::Status, false) => print!("{}", to_text(&report)),
                (View::Members, _) if report.members.is_empty() => {
                    eprintln!("kvstore: {endpoint} is not a member of a cluster yet");
                    return ExitCode::from(1);
                }
                (View::Members, true) => println!("{}", members_json(&report)),
                (View::Members, false) => print!("{}", members_text(&report)),
            }
            ExitCode::SUCCESS
        }
    };
    let _ = rt.system.shutdown().wait_timeout(Duration::from_secs(2));
    code
}

/// Connection errors towards nodes that are down are expected here, and the report
/// names those nodes; only critical records reach stderr.
fn quiet_logger() -> kompact::KompactLogger {
    kv_bootstrap::logging::kompact_logger(slog::Level::Critical, "status")
}

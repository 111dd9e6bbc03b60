//! Metrics of a node, in the Prometheus text format.
//!
//! Counters and histograms are atomics shared by the components ([`Metrics`], one
//! per node, and [`PartitionMetrics`], one per hosted partition): counting on the
//! hot path is one relaxed, uncontended add, with no lock and no allocation. Gauges
//! (log length, leadership, queue depths, suspicions) are not counted at all: they
//! are read from the components when a scrape arrives ([`Gauges`]), so keeping them
//! costs nothing between scrapes.
//!
//! [`MetricsServer`] serves the text on `GET /metrics` from one small thread with
//! plain `std::net` (HTTP/1.0 and 1.1, one request per connection). Requests are
//! bounded in size and time, and malformed ones get a 4xx answer; nothing a client
//! sends can stop the thread.
//!
//! Every metric is listed, with its type and meaning, in `docs/operations.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kv_ports::{KvOp, KvResult, NodeId, NodeStatus, PartitionId, Refusal};

// ---------------------------------------------------------------------------------
// Labels

/// The operation of a counted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// GET.
    Get,
    /// PUT.
    Put,
    /// CAS, with an expected value or against absent.
    Cas,
    /// DELETE.
    Delete,
}

impl OpKind {
    const ALL: [OpKind; 4] = [OpKind::Get, OpKind::Put, OpKind::Cas, OpKind::Delete];

    /// The kind of `op`.
    pub fn of(op: &KvOp) -> OpKind {
        match op {
            KvOp::Get { .. } => OpKind::Get,
            KvOp::Put { .. } => OpKind::Put,
            KvOp::Cas { .. } => OpKind::Cas,
            KvOp::Delete { .. } => OpKind::Delete,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Cas => "cas",
            OpKind::Delete => "del",
        }
    }
}

/// How a node answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A value (GET) or done (PUT, CAS, DELETE of a key that existed).
    Ok,
    /// GET, CAS or DELETE on a missing key.
    NotFound,
    /// CAS whose expected value was not the current one.
    CasMismatch,
    /// Refused: too many requests in flight.
    Busy,
    /// Refused: key or value over the limit.
    TooLarge,
    /// Refused: the cluster is not formed, or this node is not part of it.
    NotReady,
    /// Refused: the client named another cluster.
    WrongCluster,
    /// Refused: the partition moved to another configuration of its group.
    Moved,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::CasMismatch,
        Outcome::Busy,
        Outcome::TooLarge,
        Outcome::NotReady,
        Outcome::WrongCluster,
        Outcome::Moved,
    ];

    /// The outcome of a decided result.
    pub fn of_result(r: &KvResult) -> Outcome {
        match r {
            KvResult::Value(_) | KvResult::Done => Outcome::Ok,
            KvResult::NotFound => Outcome::NotFound,
            KvResult::CasMismatch { .. } => Outcome::CasMismatch,
        }
    }

    /// The outcome of a refusal.
    pub fn of_refusal(r: &Refusal) -> Outcome {
        match r {
            Refusal::Busy => Outcome::Busy,
            Refusal::TooLarge(_) => Outcome::TooLarge,
            Refusal::NotReady(_) => Outcome::NotReady,
            Refusal::WrongCluster(_) => Outcome::WrongCluster,
            Refusal::Moved { .. } => Outcome::Moved,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::CasMismatch => "cas_mismatch",
            Outcome::Busy => "busy",
            Outcome::TooLarge => "too_large",
            Outcome::NotReady => "not_ready",
            Outcome::WrongCluster => "wrong_cluster",
            Outcome::Moved => "moved",
        }
    }
}

// ---------------------------------------------------------------------------------
// Histogram

/// Upper bounds (seconds) of the latency buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram with the fixed [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------
// Counters

/// Counters of one partition's replica on this node.
#[derive(Debug, Default)]
pub struct PartitionMetrics {
    /// Commands this node's replica proposed to Sequence Paxos.
    pub proposals: AtomicU64,
    /// Proposals Sequence Paxos gave back undecided (leadership lost, buffer full).
    pub proposals_dropped: AtomicU64,
    /// `AcceptDecide` messages sent (one per follower per batch, while leading).
    pub accept_batches: AtomicU64,
    /// Log entries carried by those messages.
    pub accept_entries: AtomicU64,
    /// Times this replica started following a new leader (itself included).
    pub leader_changes: AtomicU64,
    /// Snapshots the state machine took (each lets the log be trimmed).
    pub snapshots_taken: AtomicU64,
    /// Snapshots sent to another replica that was too far behind.
    pub snapshots_sent: AtomicU64,
    /// Snapshots received and installed in place of the state machine.
    pub snapshots_installed: AtomicU64,
    /// Replication messages too large for one piece, offered to their receiver.
    pub large_messages_offered: AtomicU64,
    /// Such messages this replica fetched whole.
    pub large_messages_fetched: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The counters of one node, shared by its components.
#[derive(Debug, Default)]
pub struct Metrics {
    ops: [[AtomicU64; Outcome::ALL.len()]; OpKind::ALL.len()],
    latency: [Histogram; OpKind::ALL.len()],
    /// Nodes the failure detector started to suspect.
    pub suspicions: AtomicU64,
    /// Suspected nodes the failure detector found alive again.
    pub restores: AtomicU64,
    partitions: Mutex<BTreeMap<PartitionId, Arc<PartitionMetrics>>>,
}

impl Metrics {
    /// Fresh counters, all zero.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Counts a request answered with `outcome`.
    pub fn count_op(&self, op: OpKind, outcome: Outcome) {
        inc(&self.ops[op as usize][outcome as usize]);
    }

    /// Records the time from proposing a request to answering it.
    pub fn observe_latency(&self, op: OpKind, d: Duration) {
        self.latency[op as usize].observe(d);
    }

    /// Requests of kind `op` answered with `outcome` so far.
    pub fn ops(&self, op: OpKind, outcome: Outcome) -> u64 {
        self.ops[op as usize][outcome as usize].load(Ordering::Relaxed)
    }

    /// The latency histogram of `op`.
    pub fn latency(&self, op: OpKind) -> &Histogram {
        &self.latency[op as usize]
    }

    /// The counters of `partition` (created on first use; the same `Arc` after).
    pub fn partition(&self, partition: PartitionId) -> Arc<PartitionMetrics> {
        let mut m = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(partition).or_default().clone()
    }

    /// Renders every metric in the Prometheus text format (version 0.0.4).
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let node = escape(&gauges.status.node.to_string());
        let w = &mut out;

        family(
            w,
            "kvstore_operations_total",
            "counter",
            "Requests answered by this node, by operation and outcome.",
        );
        for op in OpKind::ALL {
            for oc in Outcome::ALL {
                let _ = writeln!(
                    w,
                    "kvstore_operations_total{{op=\"{}\",outcome=\"{}\"}} {}",
                    op.label(),
                    oc.label(),
                    self.ops(op, oc)
                );
            }
        }

        family(
            w,
            "kvstore_operation_duration_seconds",
            "histogram",
            "Time from a replica on this node proposing a request to answering it.",
        );
        for op in OpKind::ALL {
            let h = self.latency(op);
            let mut cumulative = 0;
            for (i, b) in h.buckets.iter().enumerate() {
                cumulative += b.load(Ordering::Relaxed);
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |l| l.to_string());
                let _ = writeln!(
                    w,
                    "kvstore_operation_duration_seconds_bucket{{op=\"{}\",le=\"{le}\"}} {cumulative}",
                    op.label()
                );
            }
            let _ = writeln!(
                w,
                "kvstore_operation_duration_seconds_sum{{op=\"{}\"}} {}",
                op.label(),
                h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
            );
            let _ = writeln!(
                w,
                "kvstore_operation_duration_seconds_count{{op=\"{}\"}} {}",
                op.label(),
                h.count()
            );
        }

        let parts: Vec<(PartitionId, Arc<PartitionMetrics>)> = {
            let m = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            m.iter().map(|(p, m)| (*p, m.clone())).collect()
        };
        type Counter = fn(&PartitionMetrics) -> &AtomicU64;
        let counters: [(&str, &str, Counter); 10] = [
            (
                "kvstore_proposals_total",
                "Commands this node's replica proposed to Sequence Paxos.",
                |m| &m.proposals,
            ),
            (
                "kvstore_proposals_dropped_total",
                "Proposals Sequence Paxos gave back undecided (the client retries).",
                |m| &m.proposals_dropped,
            ),
            (
                "kvstore_accept_batches_total",
                "AcceptDecide messages sent while leading (one per follower per batch).",
                |m| &m.accept_batches,
            ),
            (
                "kvstore_accept_batch_entries_total",
                "Log entries carried by the AcceptDecide messages sent.",
                |m| &m.accept_entries,
            ),
            (
                "kvstore_leader_changes_total",
                "Times this replica started following a new leader.",
                |m| &m.leader_changes,
            ),
            (
                "kvstore_snapshots_taken_total",
                "Snapshots of the state machine taken (they let the log be trimmed).",
                |m| &m.snapshots_taken,
            ),
            (
                "kvstore_snapshots_sent_total",
                "Snapshots sent to a replica that was too far behind.",
                |m| &m.snapshots_sent,
            ),
            (
                "kvstore_snapshots_installed_total",
                "Snapshots received and installed in place of the state machine.",
                |m| &m.snapshots_installed,
            ),
            (
                "kvstore_large_messages_offered_total",
                "Replication messages too large for one piece, offered to be fetched in chunks.",
                |m| &m.large_messages_offered,
            ),
            (
                "kvstore_large_messages_fetched_total",
                "Replication messages too large for one piece, fetched whole in chunks.",
                |m| &m.large_messages_fetched,
            ),
        ];
        for (name, help, get) in counters {
            family(w, name, "counter", help);
            for (p, m) in &parts {
                let _ = writeln!(
                    w,
                    "{name}{{partition=\"{p}\"}} {}",
                    get(m).load(Ordering::Relaxed)
                );
            }
        }

        family(
            w,
            "kvstore_suspicions_total",
            "counter",
            "Times the failure detector started to suspect a node.",
        );
        let _ = writeln!(
            w,
            "kvstore_suspicions_total {}",
            self.suspicions.load(Ordering::Relaxed)
        );
        family(
            w,
            "kvstore_restores_total",
            "counter",
            "Times the failure detector found a suspected node alive again.",
        );
        let _ = writeln!(
            w,
            "kvstore_restores_total {}",
            self.restores.load(Ordering::Relaxed)
        );

        gauges.render(w, &node);
        out
    }
}

// ---------------------------------------------------------------------------------
// Gauges

/// Values read from the components when a scrape arrives.
#[derive(Clone, Debug)]
pub struct Gauges {
    /// The node's own view (as `kvstore status` shows it).
    pub status: NodeStatus,
    /// PerfectLink payloads waiting for acknowledgement, per peer.
    pub link_unacked: Vec<(NodeId, u64)>,
    /// The TCP transport's counters (absent under a simulated network).
    pub transport: Option<crate::network::TransportStats>,
}

impl Gauges {
    fn render(&self, w: &mut String, node: &str) {
        let s = &self.status;
        family(
            w,
            "kvstore_node_info",
            "gauge",
            "Always 1; labels name the node and its cluster.",
        );
        let _ = writeln!(
            w,
            "kvstore_node_info{{node=\"{node}\",cluster=\"{}\"}} 1",
            escape(&s.cluster)
        );
        family(
            w,
            "kvstore_uptime_seconds",
            "gauge",
            "Seconds since the node started.",
        );
        let _ = writeln!(w, "kvstore_uptime_seconds {}", s.uptime_ms as f64 / 1000.0);
        family(
            w,
            "kvstore_booted",
            "gauge",
            "1 once the node has the lookup table, else 0.",
        );
        let _ = writeln!(w, "kvstore_booted {}", u8::from(s.table.is_some()));
        family(
            w,
            "kvstore_suspected_nodes",
            "gauge",
            "Nodes the failure detector suspects now.",
        );
        let _ = writeln!(w, "kvstore_suspected_nodes {}", s.suspected.len());

        type Get = fn(&kv_ports::ReplicaStatus) -> u64;
        let per_replica: [(&str, &str, Get); 9] = [
            (
                "kvstore_is_leader",
                "1 while this replica leads its partition (prepare phase done).",
                |r| u64::from(r.is_leader),
            ),
            (
                "kvstore_leader_ballot",
                "Ballot number of the leader this replica follows (0: none).",
                |r| r.leader.map_or(0, |b| b.n),
            ),
            (
                "kvstore_decided_index",
                "Decided log entries (entries 0..index are decided).",
                |r| r.decided_idx,
            ),
            (
                "kvstore_applied_index",
                "Log entries applied to the state machine.",
                |r| r.applied_idx,
            ),
            (
                "kvstore_log_length",
                "Length of the log, the trimmed prefix included.",
                |r| r.log_len,
            ),
            (
                "kvstore_log_retained_entries",
                "Log entries held in memory (not yet trimmed into a snapshot).",
                |r| r.log_len.saturating_sub(r.first_retained_idx),
            ),
            (
                "kvstore_keys",
                "Keys stored in the partition's state machine.",
                |r| r.keys,
            ),
            (
                "kvstore_inflight_proposals",
                "This replica's proposals waiting for a decision (queue depth).",
                |r| r.inflight,
            ),
            (
                "kvstore_pending_proposals",
                "Proposals buffered in Sequence Paxos, not yet in the log (queue depth).",
                |r| r.pending,
            ),
        ];
        for (name, help, get) in per_replica {
            family(w, name, "gauge", help);
            for r in &s.replicas {
                let _ = writeln!(w, "{name}{{partition=\"{}\"}} {}", r.partition, get(r));
            }
        }

        family(
            w,
            "kvstore_link_unacked",
            "gauge",
            "PerfectLink payloads waiting for acknowledgement, per peer (queue depth).",
        );
        for (peer, n) in &self.link_unacked {
            let _ = writeln!(
                w,
                "kvstore_link_unacked{{peer=\"{}\"}} {n}",
                escape(&peer.to_string())
            );
        }

        if let Some(t) = &self.transport {
            let counters: [(&str, &str, u64); 10] = [
                (
                    "kvstore_transport_bad_frames_total",
                    "Connections closed for a malformed or oversized frame after the handshake.",
                    t.bad_frames,
                ),
                (
                    "kvstore_transport_handshake_failures_total",
                    "Handshakes that failed (bad hello, other cluster, wrong secret, TLS, timeout).",
                    t.handshake_failures,
                ),
                (
                    "kvstore_transport_auth_failures_total",
                    "Connections refused for a wrong or missing cluster secret or certificate.",
                    t.auth_failures,
                ),
                (
                    "kvstore_transport_tls_failures_total",
                    "Connections closed by TLS (certificate refused by either side, peer without TLS).",
                    t.tls_failures,
                ),
                (
                    "kvstore_transport_connections_accepted_total",
                    "Incoming connections accepted.",
                    t.connections_accepted,
                ),
                (
                    "kvstore_transport_connections_refused_total",
                    "Incoming connections refused at once (over the connection limit).",
                    t.connections_refused,
                ),
                (
                    "kvstore_transport_dial_failures_total",
                    "Outgoing connections that failed before their handshake finished.",
                    t.dial_failures,
                ),
                (
                    "kvstore_transport_frames_dropped_total",
                    "Frames dropped: over a peer's queue limit, or for a peer given up.",
                    t.frames_dropped,
                ),
                (
                    "kvstore_transport_bytes_in_total",
                    "Bytes read from sockets.",
                    t.bytes_in,
                ),
                (
                    "kvstore_transport_bytes_out_total",
                    "Bytes written to sockets.",
                    t.bytes_out,
                ),
            ];
            for (name, help, v) in counters {
                family(w, name, "counter", help);
                let _ = writeln!(w, "{name} {v}");
            }
            family(
                w,
                "kvstore_transport_open_connections",
                "gauge",
                "Connections open now, handshaking ones included.",
            );
            let _ = writeln!(
                w,
                "kvstore_transport_open_connections {}",
                t.open_connections
            );
        }
    }
}

fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// HTTP

/// Longest request head (request line and headers) read; longer ones get a 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long one connection may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What the server answers to one request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (or `HEAD`): the metrics.
    Metrics {
        /// Whether the body is sent (`GET`) or only the headers (`HEAD`).
        body: bool,
    },
    /// An error status with a short reason.
    Error(u16, &'static str),
}

/// Decides the answer to a request head (everything up to the blank line, or the
/// first [`MAX_REQUEST_BYTES`]). Pure, so every malformed input can be tested.
pub fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::Error(400, "Bad Request");
    };
    let line = text.split("\r\n").next().unwrap_or("");
    let line = line.strip_suffix('\n').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Error(400, "Bad Request");
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Route::Error(400, "Bad Request");
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Route::Error(400, "Bad Request");
    }
    if !target.starts_with('/') {
        return Route::Error(400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Route::Error(404, "Not Found");
    }
    match method {
        "GET" => Route::Metrics { body: true },
        "HEAD" => Route::Metrics { body: false },
        _ => Route::Error(405, "Method Not Allowed"),
    }
}

/// Reads a request head: up to the blank line, at most [`MAX_REQUEST_BYTES`].
/// `Ok(None)` when the head is too large.
fn read_head(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(buf));
        }
        if buf.len() >= MAX_REQUEST_BYTES {
            return Ok(None);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            // The client closed its side: answer what we have.
            return Ok(Some(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

type Source = dyn Fn() -> Gauges + Send + Sync;

fn handle(mut s: TcpStream, metrics: &Metrics, gauges: &Source) -> std::io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let route = match read_head(&mut s)? {
        Some(head) => route(&head),
        None => Route::Error(431, "Request Header Fields Too Large"),
    };
    let (status, reason, content_type, body, send_body) = match route {
        Route::Metrics { body } => (
            200,
            "OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(&gauges()),
            body,
        ),
        Route::Error(code, reason) => (
            code,
            reason,
            "text/plain; charset=utf-8",
            format!("{code} {reason}\n"),
            true,
        ),
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if send_body {
        resp.push_str(&body);
    }
    s.write_all(resp.as_bytes())?;
    s.flush()
}

/// The metrics endpoint of a node: one thread answering `GET /metrics`. Stops when
/// dropped.
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` and serves `metrics`, with gauges from `gauges`, until dropped.
    /// `on_error` hears about connections that failed (for the node's log).
    pub fn start(
        address: SocketAddr,
        metrics: Arc<Metrics>,
        gauges: Box<Source>,
        on_error: Box<dyn Fn(&std::io::Error) + Send>,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kv-metrics".into())
            .spawn(move || {
                // One connection at a time: scrapes are rare, and the timeouts bound
                // how long one client can hold the thread.
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let r = conn.and_then(|s| handle(s, &metrics, &*gauges));
                    if let Err(e) = r {
                        on_error(&e);
                    }
                }
            })?;
        Ok(MetricsServer {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> NodeStatus {
        NodeStatus {
            nonce: 0,
            node: "127.0.0.1:4000".parse().unwrap(),
            cluster: "c\"x".into(),
            uptime_ms: 1500,
            table: None,
            not_in_table: None,
            replicas: vec![kv_ports::ReplicaStatus {
                partition: 3,
                is_leader: true,
                log_len: 10,
                first_retained_idx: 4,
                ..Default::default()
            }],
            suspected: vec!["127.0.0.1:4001".parse().unwrap()],
            incarnation: 7,
            members: Vec::new(),
            directory_version: None,
        }
    }

    fn gauges() -> Gauges {
        Gauges {
            status: status(),
            link_unacked: vec![("127.0.0.1:4001".parse().unwrap(), 7)],
            transport: Some(crate::network::TransportStats {
                bad_frames: 3,
                handshake_failures: 5,
                tls_failures: 4,
                open_connections: 2,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn routes_only_well_formed_metrics_requests() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { body: true }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { body: true }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { body: false }
        );
        assert_eq!(
            route(b"GET / HTTP/1.1\r\n\r\n"),
            Route::Error(404, "Not Found")
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::Error(405, "Method Not Allowed")
        );
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(route(bad), Route::Error(400, "Bad Request"), "{bad:?}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let m = Metrics::new();
        m.observe_latency(OpKind::Put, Duration::from_micros(300));
        m.observe_latency(OpKind::Put, Duration::from_millis(3));
        m.observe_latency(OpKind::Put, Duration::from_secs(60));
        let text = m.render(&gauges());
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        let b = "kvstore_operation_duration_seconds_bucket{op=\"put\",le=";
        assert_eq!(line(&format!("{b}\"0.0005\"}}")), "1");
        assert_eq!(line(&format!("{b}\"0.0025\"}}")), "1");
        assert_eq!(line(&format!("{b}\"0.005\"}}")), "2");
        assert_eq!(line(&format!("{b}\"5\"}}")), "2");
        assert_eq!(line(&format!("{b}\"+Inf\"}}")), "3");
        assert_eq!(
            line("kvstore_operation_duration_seconds_count{op=\"put\"}"),
            "3"
        );
        assert_eq!(
            line("kvstore_operation_duration_seconds_sum{op=\"put\"}"),
            "60.0033"
        );
    }

    #[test]
    fn renders_counters_and_gauges_with_escaped_labels() {
        let m = Metrics::new();
        m.count_op(OpKind::Get, Outcome::NotFound);
        inc(&m.partition(3).leader_changes);
        inc(&m.suspicions);
        let text = m.render(&gauges());
        for expected in [
            "kvstore_operations_total{op=\"get\",outcome=\"not_found\"} 1",
            "kvstore_operations_total{op=\"cas\",outcome=\"ok\"} 0",
            "kvstore_operations_total{op=\"del\",outcome=\"not_found\"} 0",
            "kvstore_leader_changes_total{partition=\"3\"} 1",
            "kvstore_suspicions_total 1",
            "kvstore_suspected_nodes 1",
            "kvstore_is_leader{partition=\"3\"} 1",
            "kvstore_log_retained_entries{partition=\"3\"} 6",
            "kvstore_link_unacked{peer=\"127.0.0.1:4001\"} 7",
            "kvstore_transport_bad_frames_total 3",
            "kvstore_transport_handshake_failures_total 5",
            "kvstore_transport_tls_failures_total 4",
            "kvstore_transport_open_connections 2",
            "kvstore_operations_total{op=\"put\",outcome=\"moved\"} 0",
            "kvstore_node_info{node=\"127.0.0.1:4000\",cluster=\"c\\\"x\"} 1",
            "kvstore_uptime_seconds 1.5",
            "kvstore_booted 0",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
        }
        // Every sample line belongs to a family announced with # TYPE.
        let typed: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(
                typed.iter().any(|t| name == *t
                    || name
                        .strip_prefix(t)
                        .is_some_and(|s| matches!(s, "_bucket" | "_sum" | "_count"))),
                "{l}"
            );
        }
    }

    #[test]
    fn serves_metrics_and_refuses_garbage_over_tcp() {
        let m = Metrics::new();
        m.count_op(OpKind::Put, Outcome::Ok);
        let server = MetricsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            m,
            Box::new(gauges),
            Box::new(|_| {}),
        )
        .unwrap();
        let ask = |req: &[u8]| {
            let mut s = TcpStream::connect(server.address()).unwrap();
            s.write_all(req).unwrap();
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = ask(b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("kvstore_operations_total{op=\"put\",outcome=\"ok\"} 1\n"));
        assert!(ask(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(ask(b"\x00\x01\x02garbage\n\n").starts_with("HTTP/1.1 400 "));
        // Exactly the limit, so the server reads all of it before answering (unread
        // input at close would reset the connection before the answer is read).
        let huge = vec![b'a'; MAX_REQUEST_BYTES];
        assert!(ask(&huge).starts_with("HTTP/1.1 431 "));
        // Still serving after all that.
        assert!(ask(b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK\r\n"));
        drop(server);
    }
}

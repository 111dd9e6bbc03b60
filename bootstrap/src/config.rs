//! Node configuration: a HOCON file read over the built-in `reference.conf` (with
//! [`crate::hocon`]).
//!
//! Every setting lives under `kvstore`. Keys set in the node file replace the
//! reference values; keys it leaves out keep them (Typesafe-config style fallback).
//! The merged document is then checked in this order, and the first problem found is
//! returned as a [`ConfigError`] naming the file and the full key path:
//!
//! 1. the file can be read and is valid HOCON;
//! 2. every key is known (with a did-you-mean suggestion otherwise);
//! 3. every value has the right type and form (integer, duration, `IP:PORT`, ...);
//! 4. the values make sense on their own and together ([`NodeConfig::validate`]).
//!
//! See `docs/configuration.md` for the key reference.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::hocon::{self, Object, Source, Value};

/// The built-in defaults, embedded in the binary.
pub const REFERENCE_CONF: &str = include_str!("reference.conf");

/// The top-level namespace every setting lives in.
pub const NAMESPACE: &str = "kvstore";

/// The address [`NodeConfig::reference`] uses (the reference file sets none).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:45678";

/// Every known setting, as a path relative to `kvstore`. A section is known when it is
/// a prefix of one of these.
const KNOWN_KEYS: &[&str] = &[
    "address",
    "bootstrap-address",
    "boot-threshold",
    "partitions",
    "replication-degree",
    "keep-alive-period",
    "cluster-name",
    "cluster-secret",
    "tick-period",
    "failure-detector.initial-delay",
    "failure-detector.delay-increment",
    "leader-election.heartbeat-period",
    "paxos.max-batch",
    "paxos.max-inflight-batches",
    "paxos.resend-period",
    "paxos.max-log-entries",
    "paxos.snapshot-interval",
    "paxos.max-pending",
    "paxos.max-message-bytes",
    "link.retransmit-period",
    "link.max-unacked",
    "link.unreachable-warning",
    "limits.max-key-bytes",
    "limits.max-value-bytes",
    "limits.max-inflight-per-node",
    "limits.max-clients",
    "limits.max-frame-bytes",
    "sessions.idle-timeout",
    "metrics-address",
    "resp-address",
    "resp.max-connections",
    "seeds",
    "membership.replace-after",
    "tls.certificate",
    "tls.private-key",
    "tls.ca",
];

/// The most seed addresses a node file may list.
pub const MAX_SEEDS: usize = 64;

/// The smallest `limits.max-frame-bytes`: the PerfectLink packs retransmissions
/// into frames of up to 64 KiB.
const MIN_FRAME_BYTES: usize = 64 * 1024;
/// The largest `limits.max-frame-bytes`: frame lengths are 32-bit.
const MAX_FRAME_BYTES: usize = u32::MAX as usize;
/// The longest cluster name the network handshake carries.
const MAX_CLUSTER_NAME_BYTES: usize = 64;

/// The shortest tick the protocol cores accept.
const MIN_TICK: Duration = Duration::from_millis(1);

/// Why a configuration was rejected. The `Display` form is the message a user sees:
/// it starts with the file name (the `origin`) and names the full key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, no permission, not UTF-8, ...).
    #[error("{origin}: cannot read the file: {source}")]
    Read {
        /// The file name as given.
        origin: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not valid HOCON.
    #[error("{origin}: syntax error: {detail}")]
    Syntax {
        /// The file name as given.
        origin: String,
        /// What is wrong and, when it can be found, on which line.
        detail: String,
    },
    /// An `include` could not be read or parsed.
    #[error("{origin}: cannot include {path:?} (missing, unreadable or not valid HOCON)")]
    Include {
        /// The file name as given.
        origin: String,
        /// The included path as written in the file.
        path: String,
    },
    /// A key that no setting has.
    #[error("{origin}: unknown key {key}{}", hint_suffix(.hint))]
    UnknownKey {
        /// The file name as given.
        origin: String,
        /// Full path of the unknown key.
        key: String,
        /// A suggestion such as `did you mean kvstore.partitions?`, if one is close.
        hint: Option<String>,
    },
    /// A required key is not set.
    #[error("{origin}: missing required key {key} ({hint})")]
    Missing {
        /// The file name as given.
        origin: String,
        /// Full path of the missing key.
        key: String,
        /// What the key means and an example.
        hint: String,
    },
    /// A value of the wrong kind (a string where an integer belongs, a section where a
    /// value belongs, ...).
    #[error("{origin}: {key}: expected {expected}, found {found}")]
    WrongType {
        /// The file name as given.
        origin: String,
        /// Full path of the key.
        key: String,
        /// What the key takes, e.g. `an integer`.
        expected: &'static str,
        /// The value found, as written (strings quoted).
        found: String,
    },
    /// A value of the right kind that is malformed or impossible: a bad duration or
    /// address, zero where at least one is needed, an even replication degree, an
    /// overflowing integer, a contradiction between two keys.
    #[error("{origin}: {key} = {value}: {reason}")]
    Invalid {
        /// The file name as given.
        origin: String,
        /// Full path of the key.
        key: String,
        /// The value, as written (strings quoted) or, for checks on the typed
        /// configuration, in its canonical form.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A `${...}` substitution that refers to nothing.
    #[error("{origin}: {key}: substitution ${{{name}}} is not defined")]
    Unresolved {
        /// The file name as given.
        origin: String,
        /// Full path of the key whose value is the substitution.
        key: String,
        /// The substituted path or environment variable.
        name: String,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!(" ({h})"),
        None => String::new(),
    }
}

/// Eventually perfect failure detector settings (`kvstore.failure-detector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureDetectorConfig {
    /// Delay before a silent peer is first suspected.
    pub initial_delay: Duration,
    /// Added to the delay after each false suspicion.
    pub delay_increment: Duration,
}

/// Membership settings (`kvstore.membership`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipSettings {
    /// A replica whose node has been suspected this long is replaced by another
    /// member; `None` (`0s` in the file) turns automatic replacement off.
    pub replace_after: Option<Duration>,
}

/// Ballot leader election settings (`kvstore.leader-election`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// Heartbeat round length.
    pub heartbeat_period: Duration,
}

/// An upper bound on the encoded layout's size without its members: per group
/// (the partitions and the directory) a header and, during a move, the old and the
/// new replicas (the wire codec's estimate).
fn layout_bytes(partitions: u32, replicas: usize) -> u64 {
    (u64::from(partitions) + 1) * (13 + 29 * 2 * replicas as u64) + 32
}

/// The range `paxos.max-message-bytes` must be in under `l`.
fn message_bounds(l: &Limits) -> (usize, usize) {
    (
        l.max_key_bytes + 2 * l.max_value_bytes + 512,
        l.max_frame_bytes.saturating_sub(1024),
    )
}

/// Sequence Paxos settings (`kvstore.paxos`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaxosSettings {
    /// Most commands in one proposed batch.
    pub max_batch: usize,
    /// Most batches proposed and not yet decided at the same time.
    pub max_inflight_batches: usize,
    /// Unanswered messages are sent again after this long.
    pub resend_period: Duration,
    /// Most log entries kept in memory.
    pub max_log_entries: u64,
    /// Applied entries between two snapshots.
    pub snapshot_interval: u64,
    /// Most client commands waiting to be proposed.
    pub max_pending: usize,
    /// Largest Paxos message sent in one piece (batches take at most half); a
    /// larger message (a snapshot, a long log suffix) is pulled by its receiver in
    /// chunks of this size. `None`: derived from the limits
    /// ([`NodeConfig::max_message_bytes`]).
    pub max_message_bytes: Option<usize>,
}

/// Perfect link settings (`kvstore.link`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// Unacknowledged messages are sent again after this long.
    pub retransmit_period: Duration,
    /// Most unacknowledged messages kept per peer.
    pub max_unacked: usize,
    /// A warning is logged when a peer has acknowledged nothing for this long.
    pub unreachable_warning: Duration,
}

/// Request limits (`kvstore.limits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Most client operations accepted and not yet answered by one node.
    pub max_inflight_per_node: usize,
    /// Most client sessions one node keeps.
    pub max_clients: usize,
    /// Largest network frame sent or accepted, in bytes; a peer that announces a
    /// longer one is disconnected.
    pub max_frame_bytes: usize,
}

/// The shared cluster secret (`kvstore.cluster-secret`). Its `Debug` form does not
/// show it, so configurations can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// TLS between nodes and with clients (`kvstore.tls`): the PEM files as resolved
/// (relative to the configuration file), and the settings read from them, checked
/// at load (readable, the key matches the certificate, the CA signed it).
#[derive(Clone)]
pub struct TlsSettings {
    /// This node's certificate (chain), PEM.
    pub certificate: PathBuf,
    /// Its private key, PEM.
    pub private_key: PathBuf,
    /// The cluster CA's certificate(s), PEM: every peer's certificate must chain to it.
    pub ca: PathBuf,
    /// What the transport uses.
    pub config: kv_components::network::TlsConfig,
}

impl PartialEq for TlsSettings {
    /// The same files: what was read from them at load is the same too.
    fn eq(&self, other: &Self) -> bool {
        (&self.certificate, &self.private_key, &self.ca)
            == (&other.certificate, &other.private_key, &other.ca)
    }
}

impl Eq for TlsSettings {}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("certificate", &self.certificate)
            .field("private_key", &self.private_key)
            .field("ca", &self.ca)
            .finish()
    }
}

/// Client session settings (`kvstore.sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session without any operation for this long is forgotten.
    pub idle_timeout: Duration,
}

/// The typed, validated configuration of one node.
///
/// Build one from a file with [`load_file`], from text with [`load_str`], or in code
/// from [`NodeConfig::reference`] plus the `with_*` methods or direct field updates
/// (then call [`NodeConfig::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's own address.
    pub address: SocketAddr,
    /// The bootstrap server's address.
    pub bootstrap_address: SocketAddr,
    /// Nodes the bootstrap server waits for before it builds the lookup table.
    pub boot_threshold: usize,
    /// Number of partitions of the key space.
    pub partitions: u32,
    /// Replicas per partition (odd).
    pub replication_degree: usize,
    /// Check-in period with the bootstrap server.
    pub keep_alive_period: Duration,
    /// Name of the cluster.
    pub cluster_name: String,
    /// The shared secret every node and client must prove it knows in the network
    /// handshake; `None` admits any peer that names the cluster.
    pub cluster_secret: Option<Secret>,
    /// Clock tick of the protocol cores.
    pub tick_period: Duration,
    /// Failure detector settings.
    pub failure_detector: FailureDetectorConfig,
    /// Leader election settings.
    pub leader_election: LeaderElectionConfig,
    /// Sequence Paxos settings.
    pub paxos: PaxosSettings,
    /// Perfect link settings.
    pub link: LinkConfig,
    /// Request limits.
    pub limits: Limits,
    /// Client session settings.
    pub sessions: SessionConfig,
    /// Where metrics are served; `None` turns them off.
    pub metrics_address: Option<SocketAddr>,
    /// Where the Redis gateway listens; `None` turns it off.
    pub resp_address: Option<SocketAddr>,
    /// Most Redis connections served at once.
    pub resp_max_connections: usize,
    /// Members to ask for admission besides the bootstrap server (a node that starts
    /// after the cluster formed, or restarts, joins through any live one of them).
    pub seeds: Vec<SocketAddr>,
    /// Membership settings.
    pub membership: MembershipSettings,
    /// TLS for every connection; plaintext when `None`.
    pub tls: Option<TlsSettings>,
}

impl NodeConfig {
    /// The values of the built-in `reference.conf`, with `address` set to
    /// [`DEFAULT_ADDRESS`] (127.0.0.1:45678, which is also the reference
    /// `bootstrap-address`, so this configuration is a bootstrap server).
    pub fn reference() -> NodeConfig {
        static REFERENCE: OnceLock<NodeConfig> = OnceLock::new();
        REFERENCE
            .get_or_init(|| {
                let text = format!("{NAMESPACE}.address = \"{DEFAULT_ADDRESS}\"\n");
                match load_str(&text, "reference.conf") {
                    Ok(config) => config,
                    // Only reachable if the embedded file itself is broken, which the
                    // test suite rules out.
                    Err(e) => panic!("the built-in reference.conf is invalid: {e}"),
                }
            })
            .clone()
    }

    /// The network transport's settings for this node: it listens on `address`,
    /// names `cluster-name` and proves `cluster-secret` in every handshake, and
    /// sends and accepts frames up to `limits.max-frame-bytes`.
    pub fn transport(&self) -> kv_components::network::TransportConfig {
        let mut t =
            kv_components::network::TransportConfig::new(self.address, self.cluster_name.clone());
        t.secret = self
            .cluster_secret
            .as_ref()
            .map(|Secret(s)| s.as_bytes().to_vec());
        t.max_frame_bytes = self.limits.max_frame_bytes;
        t.tls = self.tls.as_ref().map(|s| s.config.clone());
        // The transport queues at least one largest frame per peer and in its
        // channel; keep its defaults unless the frame limit is above them.
        t.max_queued_bytes_per_peer = t.max_queued_bytes_per_peer.max(2 * t.max_frame_bytes + 4);
        t.max_unprocessed_send_bytes = t.max_unprocessed_send_bytes.max(2 * t.max_frame_bytes);
        t
    }

    /// Whether this node is the bootstrap server (its address is the bootstrap address).
    pub fn is_bootstrap_server(&self) -> bool {
        self.address == self.bootstrap_address
    }

    /// Sets this node's address.
    pub fn with_address(mut self, address: SocketAddr) -> Self {
        self.address = address;
        self
    }

    /// Sets the bootstrap server's address.
    pub fn with_bootstrap_address(mut self, address: SocketAddr) -> Self {
        self.bootstrap_address = address;
        self
    }

    /// Sets the number of nodes the bootstrap server waits for.
    pub fn with_boot_threshold(mut self, nodes: usize) -> Self {
        self.boot_threshold = nodes;
        self
    }

    /// Sets the number of partitions.
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets the replication degree.
    pub fn with_replication_degree(mut self, replicas: usize) -> Self {
        self.replication_degree = replicas;
        self
    }

    /// Sets the protocol clock tick.
    pub fn with_tick_period(mut self, tick: Duration) -> Self {
        self.tick_period = tick;
        self
    }

    /// Sets the cluster name.
    pub fn with_cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// Sets (or clears) the metrics address.
    pub fn with_metrics_address(mut self, address: Option<SocketAddr>) -> Self {
        self.metrics_address = address;
        self
    }

    /// Sets `membership.replace-after` (`None`: never replace).
    pub fn with_replace_after(mut self, after: Option<Duration>) -> Self {
        self.membership.replace_after = after;
        self
    }

    /// Sets `paxos.max-message-bytes` (larger replication messages are pulled by
    /// their receiver in chunks).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.paxos.max_message_bytes = Some(bytes);
        self
    }

    /// The largest replication message sent in one piece: `paxos.max-message-bytes`
    /// if set, else 256 KiB, raised to hold a CAS of the largest key and values and
    /// lowered to fit in a frame.
    pub fn max_message_bytes(&self) -> usize {
        let (low, high) = message_bounds(&self.limits);
        self.paxos
            .max_message_bytes
            .unwrap_or_else(|| (256 * 1024).max(low).min(high))
    }

    /// Sets `paxos.snapshot-interval`.
    pub fn with_snapshot_interval(mut self, entries: u64) -> Self {
        self.paxos.snapshot_interval = entries;
        self
    }

    /// Sets the seeds (other members to ask for admission).
    pub fn with_seeds(mut self, seeds: Vec<SocketAddr>) -> Self {
        self.seeds = seeds;
        self
    }

    /// Checks every rule a configuration must satisfy, on the typed values: the same
    /// checks [`load_str`] and [`load_file`] run after parsing. `origin` names the
    /// source in the error (for configurations built in code, e.g. `"demo"`).
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: full_key(key),
            value,
            reason,
        };
        let at_least_one = |key: &str, n: u64| {
            if n < 1 {
                Err(invalid(key, n.to_string(), "must be at least 1".into()))
            } else {
                Ok(())
            }
        };
        let positive = |key: &str, d: Duration| {
            if d.is_zero() {
                Err(invalid(
                    key,
                    show_duration(d),
                    "must be greater than 0".into(),
                ))
            } else {
                Ok(())
            }
        };
        let not_below_tick = |key: &str, d: Duration| {
            if d < self.tick_period {
                Err(invalid(
                    key,
                    show_duration(d),
                    format!(
                        "must be at least {} = {} (a period shorter than one tick cannot be kept)",
                        full_key("tick-period"),
                        show_duration(self.tick_period)
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let addr = |key: &str, a: &SocketAddr, allow_port_zero: bool| {
            if a.ip().is_unspecified() {
                Err(invalid(
                    key,
                    format!("{:?}", a.to_string()),
                    "an unspecified IP cannot be reached by other nodes; use the IP they \
                     should connect to"
                        .into(),
                ))
            } else if a.port() == 0 && !allow_port_zero {
                Err(invalid(
                    key,
                    format!("{:?}", a.to_string()),
                    "port 0 picks a random port, which other nodes could not know".into(),
                ))
            } else {
                Ok(())
            }
        };

        // Addresses. Port 0 is fine for a node that is not the bootstrap server: it
        // checks in from whatever port it got.
        addr("address", &self.address, true)?;
        addr("bootstrap-address", &self.bootstrap_address, false)?;
        for seed in &self.seeds {
            addr("seeds", seed, false)?;
        }
        if let Some(m) = &self.metrics_address {
            addr("metrics-address", m, true)?;
            if m.port() != 0 && *m == self.address {
                return Err(invalid(
                    "metrics-address",
                    format!("{:?}", m.to_string()),
                    format!(
                        "must differ from {} (both would bind it)",
                        full_key("address")
                    ),
                ));
            }
        }
        if let Some(r) = &self.resp_address {
            addr("resp-address", r, true)?;
            for (other, a) in [
                ("address", Some(self.address)),
                ("metrics-address", self.metrics_address),
            ] {
                if r.port() != 0 && Some(*r) == a {
                    return Err(invalid(
                        "resp-address",
                        format!("{:?}", r.to_string()),
                        format!("must differ from {} (both would bind it)", full_key(other)),
                    ));
                }
            }
        }
        at_least_one("resp.max-connections", self.resp_max_connections as u64)?;

        // Cluster shape.
        at_least_one("boot-threshold", self.boot_threshold as u64)?;
        at_least_one("partitions", u64::from(self.partitions))?;
        at_least_one("replication-degree", self.replication_degree as u64)?;
        if self.replication_degree.is_multiple_of(2) {
            return Err(invalid(
                "replication-degree",
                self.replication_degree.to_string(),
                "must be odd (a group of 2f+1 replicas tolerates f failures)".into(),
            ));
        }
        if self.replication_degree > self.boot_threshold {
            return Err(invalid(
                "replication-degree",
                self.replication_degree.to_string(),
                format!(
                    "must be at most {} = {} (the replicas of a partition sit on distinct nodes)",
                    full_key("boot-threshold"),
                    self.boot_threshold
                ),
            ));
        }
        if self.cluster_name.trim().is_empty() {
            return Err(invalid(
                "cluster-name",
                format!("{:?}", self.cluster_name),
                "must not be empty".into(),
            ));
        }
        if self.cluster_name.len() > MAX_CLUSTER_NAME_BYTES {
            return Err(invalid(
                "cluster-name",
                format!("{:?}", self.cluster_name),
                format!(
                    "must be at most {MAX_CLUSTER_NAME_BYTES} bytes (it travels in every handshake)"
                ),
            ));
        }
        if matches!(&self.cluster_secret, Some(Secret(s)) if s.is_empty()) {
            return Err(invalid(
                "cluster-secret",
                "\"\"".into(),
                "must not be empty (leave it out to run without a secret)".into(),
            ));
        }
        if let Some(tls) = &self.tls
            && !self.address.ip().is_unspecified()
        {
            // Peers dial `address` and check that the certificate names it.
            tls.config.check_names(self.address.ip()).map_err(|e| {
                invalid(
                    "tls.certificate",
                    format!("\"{}\"", tls.certificate.display()),
                    e.reason,
                )
            })?;
        }

        // Time.
        positive("keep-alive-period", self.keep_alive_period)?;
        if self.tick_period < MIN_TICK {
            return Err(invalid(
                "tick-period",
                show_duration(self.tick_period),
                "must be at least 1ms".into(),
            ));
        }
        not_below_tick(
            "failure-detector.initial-delay",
            self.failure_detector.initial_delay,
        )?;
        positive(
            "failure-detector.delay-increment",
            self.failure_detector.delay_increment,
        )?;
        not_below_tick(
            "leader-election.heartbeat-period",
            self.leader_election.heartbeat_period,
        )?;
        not_below_tick("paxos.resend-period", self.paxos.resend_period)?;
        positive("link.retransmit-period", self.link.retransmit_period)?;
        positive("link.unreachable-warning", self.link.unreachable_warning)?;
        positive("sessions.idle-timeout", self.sessions.idle_timeout)?;

        // Sizes and counts.
        let p = &self.paxos;
        at_least_one("paxos.max-batch", p.max_batch as u64)?;
        at_least_one("paxos.max-inflight-batches", p.max_inflight_batches as u64)?;
        at_least_one("paxos.max-log-entries", p.max_log_entries)?;
        at_least_one("paxos.snapshot-interval", p.snapshot_interval)?;
        at_least_one("paxos.max-pending", p.max_pending as u64)?;
        if p.snapshot_interval > p.max_log_entries {
            return Err(invalid(
                "paxos.snapshot-interval",
                p.snapshot_interval.to_string(),
                format!(
                    "must be at most {} = {} (the log would fill up before a snapshot)",
                    full_key("paxos.max-log-entries"),
                    p.max_log_entries
                ),
            ));
        }
        at_least_one("link.max-unacked", self.link.max_unacked as u64)?;
        let l = &self.limits;
        at_least_one("limits.max-key-bytes", l.max_key_bytes as u64)?;
        at_least_one("limits.max-value-bytes", l.max_value_bytes as u64)?;
        at_least_one(
            "limits.max-inflight-per-node",
            l.max_inflight_per_node as u64,
        )?;
        at_least_one("limits.max-clients", l.max_clients as u64)?;
        // A CAS carries its key and two values; 4 KiB leaves room for the rest of
        // the message around them.
        if let Some(m) = p.max_message_bytes {
            // One command (a CAS of the largest key and values) must fit in a
            // message, and a message with its frame around it in a frame.
            let (low, high) = message_bounds(l);
            if m < low || m > high {
                return Err(invalid(
                    "paxos.max-message-bytes",
                    m.to_string(),
                    format!(
                        "must be in {low}..={high}: at least {} + 2 x {} + 512, so that a CAS of \
                         the largest key and values fits in one message, and at most {} - 1KiB",
                        full_key("limits.max-key-bytes"),
                        full_key("limits.max-value-bytes"),
                        full_key("limits.max-frame-bytes"),
                    ),
                ));
            }
        }
        let smallest_frame = (l.max_key_bytes + 2 * l.max_value_bytes + 4096).max(MIN_FRAME_BYTES);
        if l.max_frame_bytes < smallest_frame || l.max_frame_bytes > MAX_FRAME_BYTES {
            return Err(invalid(
                "limits.max-frame-bytes",
                l.max_frame_bytes.to_string(),
                format!(
                    "must be in {smallest_frame}..={MAX_FRAME_BYTES}: at least 64KiB and at \
                     least {} + 2 x {} + 4KiB, so that a CAS of the largest key and values \
                     fits in one frame",
                    full_key("limits.max-key-bytes"),
                    full_key("limits.max-value-bytes"),
                ),
            ));
        }
        // The layout (the directory) travels whole: it must fit in half a frame,
        // the other half left for the members (25 bytes each).
        let layout = layout_bytes(self.partitions, self.replication_degree);
        if layout > l.max_frame_bytes as u64 / 2 {
            return Err(invalid(
                "partitions",
                self.partitions.to_string(),
                format!(
                    "the layout of {} partitions of {} replicas takes up to {layout} bytes, more \
                     than half of one frame of {} = {} (the members need the rest); use fewer \
                     partitions or raise the frame limit",
                    self.partitions,
                    self.replication_degree,
                    full_key("limits.max-frame-bytes"),
                    l.max_frame_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Reads a node configuration file over the built-in reference.
///
/// The file name as given is used in error messages. `include "other.conf"` works,
/// relative to the including file.
pub fn load_file(path: &Path) -> Result<NodeConfig, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        origin: origin.clone(),
        source,
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    load(&origin, &text, Some(dir))
}

/// Reads a node configuration from HOCON text over the built-in reference. `origin`
/// names the text in error messages (normally a file name). `include` is not
/// supported here.
pub fn load_str(text: &str, origin: &str) -> Result<NodeConfig, ConfigError> {
    load(origin, text, None)
}

fn load(origin: &str, text: &str, dir: Option<&Path>) -> Result<NodeConfig, ConfigError> {
    // 1. Syntax, and the merge over the reference: the user's document is read over
    // the reference, so substitutions see both, and then resolved.
    let sources = [
        Source {
            text: REFERENCE_CONF,
            origin: "reference.conf",
            dir: None,
        },
        Source { text, origin, dir },
    ];
    let merged = hocon::load(&sources, &|name| std::env::var(name).ok())
        .map_err(|e| document_error(origin, e))?;

    // 2. Keys.
    check_keys(origin, &merged)?;

    // 3. Values.
    let empty = Value::Object(Object::default());
    let root = match merged.get(NAMESPACE) {
        Some(h @ Value::Object(_)) => h,
        // check_keys has rejected anything but a section; an absent namespace only
        // lacks the required address.
        _ => &empty,
    };
    let r = Reader { origin, root, dir };
    let config = r.read()?;

    // 4. Rules.
    config.validate(origin)?;
    Ok(config)
}

/// The configuration error for a document the HOCON reader rejected. A syntax error
/// names the file it is in, which for an included file is that file.
fn document_error(origin: &str, e: hocon::Error) -> ConfigError {
    match e {
        hocon::Error::Syntax {
            origin,
            line,
            message,
        } => ConfigError::Syntax {
            origin,
            detail: format!("line {line}: {message}"),
        },
        hocon::Error::Include { origin, path, .. } => ConfigError::Include { origin, path },
        hocon::Error::IncludeFromText { .. } => ConfigError::Syntax {
            origin: origin.to_string(),
            detail: "`include` is only supported when the configuration is loaded from a file"
                .into(),
        },
        hocon::Error::Unresolved {
            origin, key, name, ..
        } => ConfigError::Unresolved { origin, key, name },
    }
}

fn full_key(rel: &str) -> String {
    if rel.is_empty() {
        NAMESPACE.to_string()
    } else {
        format!("{NAMESPACE}.{rel}")
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn is_known_section(rel: &str) -> bool {
    KNOWN_KEYS
        .iter()
        .any(|k| k.len() > rel.len() && k.starts_with(rel) && k.as_bytes()[rel.len()] == b'.')
}

/// Walks the merged document: every key must be known and every section a section.
fn check_keys(origin: &str, doc: &Object) -> Result<(), ConfigError> {
    for (key, value) in doc.iter() {
        if key == NAMESPACE {
            match value {
                Value::Object(section) => walk(origin, section, "")?,
                other => {
                    return Err(ConfigError::WrongType {
                        origin: origin.into(),
                        key: NAMESPACE.into(),
                        expected: "a section { ... }",
                        found: show(other),
                    });
                }
            }
        } else {
            let hint = if edit_distance(&normalize(key), NAMESPACE) <= 2 {
                format!("did you mean {NAMESPACE}?")
            } else {
                format!("every setting lives under {NAMESPACE}")
            };
            return Err(ConfigError::UnknownKey {
                origin: origin.into(),
                key: key.clone(),
                hint: Some(hint),
            });
        }
    }
    Ok(())
}

fn walk(origin: &str, section: &Object, prefix: &str) -> Result<(), ConfigError> {
    for (key, value) in section.iter() {
        let rel = join(prefix, key);
        if KNOWN_KEYS.contains(&rel.as_str()) {
            continue;
        }
        if is_known_section(&rel) {
            match value {
                Value::Object(inner) => walk(origin, inner, &rel)?,
                other => {
                    return Err(ConfigError::WrongType {
                        origin: origin.into(),
                        key: full_key(&rel),
                        expected: "a section { ... }",
                        found: show(other),
                    });
                }
            }
            continue;
        }
        return Err(ConfigError::UnknownKey {
            origin: origin.into(),
            key: full_key(&rel),
            hint: suggest(prefix, key).map(|s| format!("did you mean {}?", full_key(&s))),
        });
    }
    Ok(())
}

/// Keys are compared case-insensitively with `_` read as `-`, so `replication_degree`
/// suggests `replication-degree`.
fn normalize(s: &str) -> String {
    s.to_ascii_lowercase().replace('_', "-")
}

/// The closest known key for an unknown `key` in section `prefix`: first a sibling
/// within a small edit distance, then the same name in another section.
fn suggest(prefix: &str, key: &str) -> Option<String> {
    let wanted = normalize(key);
    let limit = (wanted.chars().count() / 3).clamp(2, 4);
    let mut siblings: Vec<String> = KNOWN_KEYS
        .iter()
        .filter_map(|k| {
            let rest = if prefix.is_empty() {
                Some(*k)
            } else {
                k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'))
            }?;
            Some(rest.split('.').next().unwrap_or(rest).to_string())
        })
        .collect();
    siblings.sort();
    siblings.dedup();
    let best = siblings
        .iter()
        .map(|s| (edit_distance(&wanted, s), s))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d);
    if let Some((_, s)) = best {
        return Some(join(prefix, s));
    }
    // A setting put in the wrong section: `kvstore.max-batch` -> `kvstore.paxos.max-batch`.
    KNOWN_KEYS
        .iter()
        .map(|k| {
            (
                edit_distance(&wanted, k.rsplit('.').next().unwrap_or(k)),
                *k,
            )
        })
        .filter(|(d, _)| *d <= 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// A value as the user wrote it, for messages: strings quoted, sections and lists
/// described.
fn show(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::List(_) => "a list [ ... ]".into(),
        Value::Object(_) => "a section { ... }".into(),
    }
}

/// A duration in its shortest exact unit: `1m`, `1500ms`, `250us`.
fn show_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    const UNITS: &[(u128, &str)] = &[
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ];
    if ns == 0 {
        return "0ms".into();
    }
    for (size, unit) in UNITS {
        if ns.is_multiple_of(*size) {
            return format!("{}{unit}", ns / size);
        }
    }
    format!("{ns}ns")
}

const DURATION_EXAMPLES: &str = "not a duration (examples: 500ms, 2s, 1m)";

/// Nanoseconds per unit, with the HOCON spellings of each unit.
const DURATION_UNITS: &[(&[&str], u128)] = &[
    (&["ns", "nano", "nanos", "nanosecond", "nanoseconds"], 1),
    (
        &["us", "µs", "micro", "micros", "microsecond", "microseconds"],
        1_000,
    ),
    (
        &["", "ms", "milli", "millis", "millisecond", "milliseconds"],
        1_000_000,
    ),
    (&["s", "second", "seconds"], 1_000_000_000),
    (&["m", "minute", "minutes"], 60_000_000_000),
    (&["h", "hour", "hours"], 3_600_000_000_000),
    (&["d", "day", "days"], 86_400_000_000_000),
];

/// Bytes per unit, with the HOCON spellings of each unit.
const SIZE_UNITS: &[(&[&str], u128)] = &[
    (&["", "b", "B", "byte", "bytes"], 1),
    (&["kB", "kilobyte", "kilobytes"], 1_000),
    (&["K", "k", "Ki", "KiB", "kibibyte", "kibibytes"], 1 << 10),
    (&["MB", "megabyte", "megabytes"], 1_000_000),
    (&["M", "m", "Mi", "MiB", "mebibyte", "mebibytes"], 1 << 20),
    (&["GB", "gigabyte", "gigabytes"], 1_000_000_000),
    (&["G", "g", "Gi", "GiB", "gibibyte", "gibibytes"], 1 << 30),
];

enum Quantity {
    Ok(u128),
    Negative,
    TooLarge,
    Malformed,
}

/// Parses `<number><spaces><unit>`; the number may have a fraction when
/// `allow_fraction`. The result is rounded down to a whole count of the base unit.
fn parse_quantity(s: &str, units: &[(&[&str], u128)], allow_fraction: bool) -> Quantity {
    let s = s.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let number_len = s
        .find(|c: char| !(c.is_ascii_digit() || (allow_fraction && c == '.')))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(number_len);
    let unit = unit.trim();
    let Some(scale) = units
        .iter()
        .find(|(names, _)| names.contains(&unit))
        .map(|(_, scale)| *scale)
    else {
        return Quantity::Malformed;
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Quantity::Malformed;
    }
    let digits_value = |digits: &str| -> Option<u128> {
        digits.chars().try_fold(0u128, |acc, c| {
            acc.checked_mul(10)?
                .checked_add(u128::from(c.to_digit(10)?))
        })
    };
    let Some(whole_value) = digits_value(whole) else {
        return Quantity::TooLarge;
    };
    let Some(mut total) = whole_value.checked_mul(scale) else {
        return Quantity::TooLarge;
    };
    // Fraction: only the digits that can matter for the scale (at most 18 more).
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let Some(f) = digits_value(fraction) else {
            return Quantity::Malformed;
        };
        let denominator = 10u128.pow(fraction.len() as u32);
        total = match f
            .checked_mul(scale)
            .and_then(|x| total.checked_add(x / denominator))
        {
            Some(t) => t,
            None => return Quantity::TooLarge,
        };
    }
    if negative && total != 0 {
        return Quantity::Negative;
    }
    Quantity::Ok(total)
}

struct Reader<'a> {
    origin: &'a str,
    root: &'a Value,
    /// The directory relative paths are resolved against: the file's; the working
    /// directory for text without a file.
    dir: Option<&'a Path>,
}

impl Reader<'_> {
    fn get(&self, rel: &str) -> Option<&Value> {
        let mut node = self.root;
        for part in rel.split('.') {
            match node {
                Value::Object(map) => node = map.get(part)?,
                _ => return None,
            }
        }
        Some(node)
    }

    fn required(&self, rel: &str) -> Result<&Value, ConfigError> {
        match self.get(rel) {
            Some(v) => Ok(v),
            None => Err(ConfigError::Missing {
                origin: self.origin.into(),
                key: full_key(rel),
                hint: if rel == "address" {
                    format!("this node's own IP:PORT, e.g. address = \"{DEFAULT_ADDRESS}\"")
                } else {
                    "no default in reference.conf".into()
                },
            }),
        }
    }

    fn wrong_type(&self, rel: &str, expected: &'static str, v: &Value) -> ConfigError {
        ConfigError::WrongType {
            origin: self.origin.into(),
            key: full_key(rel),
            expected,
            found: show(v),
        }
    }

    fn invalid(&self, rel: &str, v: &Value, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.into(),
            key: full_key(rel),
            value: show(v),
            reason: reason.into(),
        }
    }

    /// An integer in `0..=max`. Quoted digits are accepted, as in Typesafe config.
    fn integer(&self, rel: &str, max: u64) -> Result<u64, ConfigError> {
        let v = self.required(rel)?;
        let n: i128 = match v {
            Value::Int(i) => i128::from(*i),
            // Integers beyond i64 arrive as reals; so does `1e3`.
            Value::Real(f) if f.is_finite() && f.fract() == 0.0 => {
                if f.abs() >= 1e30 {
                    return Err(self.invalid(rel, v, format!("out of range (at most {max})")));
                }
                *f as i128
            }
            Value::String(s) => {
                let t = s.trim();
                let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return Err(self.wrong_type(rel, "an integer", v));
                }
                match t.parse::<i128>() {
                    Ok(n) => n,
                    Err(_) => {
                        return Err(self.invalid(rel, v, format!("out of range (at most {max})")));
                    }
                }
            }
            _ => return Err(self.wrong_type(rel, "an integer", v)),
        };
        if n < 0 {
            return Err(self.invalid(rel, v, "must not be negative"));
        }
        if n > i128::from(max) {
            return Err(self.invalid(rel, v, format!("out of range (at most {max})")));
        }
        Ok(n as u64)
    }

    fn usize(&self, rel: &str) -> Result<usize, ConfigError> {
        let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
        self.integer(rel, max).map(|n| n as usize)
    }

    /// A byte count: an integer, or a number with a size unit (`64KiB`, `1 MiB`).
    fn size(&self, rel: &str) -> Result<usize, ConfigError> {
        let v = self.required(rel)?;
        let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
        match v {
            Value::String(s) if s.trim().parse::<i128>().is_err() => {
                match parse_quantity(s, SIZE_UNITS, false) {
                    Quantity::Ok(n) if n <= u128::from(max) => Ok(n as usize),
                    Quantity::Ok(_) | Quantity::TooLarge => {
                        Err(self.invalid(rel, v, format!("out of range (at most {max} bytes)")))
                    }
                    Quantity::Negative => Err(self.invalid(rel, v, "must not be negative")),
                    Quantity::Malformed => Err(self.invalid(
                        rel,
                        v,
                        "not a size in bytes (examples: 1024, 64KiB, 1 MiB)",
                    )),
                }
            }
            _ => self.integer(rel, max).map(|n| n as usize),
        }
    }

    /// A duration: a number with a unit, or a bare number of milliseconds.
    fn duration(&self, rel: &str) -> Result<Duration, ConfigError> {
        let v = self.required(rel)?;
        let text = match v {
            Value::Int(i) => i.to_string(),
            Value::Real(f) if f.is_finite() => format!("{f}"),
            Value::String(s) => s.clone(),
            _ => return Err(self.wrong_type(rel, "a duration", v)),
        };
        match parse_quantity(&text, DURATION_UNITS, true) {
            Quantity::Ok(ns) => {
                let secs = ns / 1_000_000_000;
                match u64::try_from(secs) {
                    Ok(secs) => Ok(Duration::new(secs, (ns % 1_000_000_000) as u32)),
                    Err(_) => Err(self.invalid(rel, v, "too large")),
                }
            }
            Quantity::TooLarge => Err(self.invalid(rel, v, "too large")),
            Quantity::Negative => Err(self.invalid(rel, v, "must not be negative")),
            Quantity::Malformed => Err(self.invalid(rel, v, DURATION_EXAMPLES)),
        }
    }

    fn address(&self, rel: &str) -> Result<SocketAddr, ConfigError> {
        let v = self.required(rel)?;
        self.parse_address(rel, v)
    }

    fn optional_address(&self, rel: &str) -> Result<Option<SocketAddr>, ConfigError> {
        match self.get(rel) {
            None => Ok(None),
            Some(Value::Null) => Ok(None),
            Some(v) => self.parse_address(rel, v).map(Some),
        }
    }

    fn parse_address(&self, rel: &str, v: &Value) -> Result<SocketAddr, ConfigError> {
        match v {
            Value::String(s) => s.trim().parse().map_err(|_| {
                self.invalid(
                    rel,
                    v,
                    format!(
                        "not an IP:PORT address (example: \"{DEFAULT_ADDRESS}\"; \
                         host names are not resolved)"
                    ),
                )
            }),
            _ => Err(self.wrong_type(rel, "an IP:PORT address in quotes", v)),
        }
    }

    /// A list of IP:PORT strings, at most `max` of them.
    fn address_list(&self, rel: &str, max: usize) -> Result<Vec<SocketAddr>, ConfigError> {
        let v = self.required(rel)?;
        let Value::List(items) = v else {
            return Err(self.wrong_type(rel, "a list of IP:PORT addresses in quotes", v));
        };
        if items.len() > max {
            return Err(self.invalid(rel, v, format!("at most {max} addresses")));
        }
        let mut out: Vec<SocketAddr> = Vec::with_capacity(items.len());
        for item in items {
            let a = self.parse_address(rel, item)?;
            if !out.contains(&a) {
                out.push(a);
            }
        }
        Ok(out)
    }

    fn string(&self, rel: &str) -> Result<String, ConfigError> {
        let v = self.required(rel)?;
        match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.wrong_type(rel, "a string", v)),
        }
    }

    fn optional_string(&self, rel: &str) -> Result<Option<String>, ConfigError> {
        match self.get(rel) {
            None => Ok(None),
            Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.wrong_type(rel, "a string", v)),
        }
    }

    fn read(&self) -> Result<NodeConfig, ConfigError> {
        Ok(NodeConfig {
            address: self.address("address")?,
            bootstrap_address: self.address("bootstrap-address")?,
            boot_threshold: self.usize("boot-threshold")?,
            partitions: self.integer("partitions", u64::from(u32::MAX))? as u32,
            replication_degree: self.usize("replication-degree")?,
            keep_alive_period: self.duration("keep-alive-period")?,
            cluster_name: self.string("cluster-name")?,
            cluster_secret: self.optional_string("cluster-secret")?.map(Secret),
            tick_period: self.duration("tick-period")?,
            failure_detector: FailureDetectorConfig {
                initial_delay: self.duration("failure-detector.initial-delay")?,
                delay_increment: self.duration("failure-detector.delay-increment")?,
            },
            leader_election: LeaderElectionConfig {
                heartbeat_period: self.duration("leader-election.heartbeat-period")?,
            },
            membership: MembershipSettings {
                replace_after: Some(self.duration("membership.replace-after")?)
                    .filter(|d| !d.is_zero()),
            },
            paxos: PaxosSettings {
                max_batch: self.usize("paxos.max-batch")?,
                max_inflight_batches: self.usize("paxos.max-inflight-batches")?,
                resend_period: self.duration("paxos.resend-period")?,
                max_log_entries: self.integer("paxos.max-log-entries", u64::MAX)?,
                snapshot_interval: self.integer("paxos.snapshot-interval", u64::MAX)?,
                max_pending: self.usize("paxos.max-pending")?,
                max_message_bytes: match self.get("paxos.max-message-bytes") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(self.size("paxos.max-message-bytes")?),
                },
            },
            link: LinkConfig {
                retransmit_period: self.duration("link.retransmit-period")?,
                max_unacked: self.usize("link.max-unacked")?,
                unreachable_warning: self.duration("link.unreachable-warning")?,
            },
            limits: Limits {
                max_key_bytes: self.size("limits.max-key-bytes")?,
                max_value_bytes: self.size("limits.max-value-bytes")?,
                max_inflight_per_node: self.usize("limits.max-inflight-per-node")?,
                max_clients: self.usize("limits.max-clients")?,
                max_frame_bytes: self.size("limits.max-frame-bytes")?,
            },
            sessions: SessionConfig {
                idle_timeout: self.duration("sessions.idle-timeout")?,
            },
            metrics_address: self.optional_address("metrics-address")?,
            resp_address: self.optional_address("resp-address")?,
            resp_max_connections: self.usize("resp.max-connections")?,
            seeds: self.address_list("seeds", MAX_SEEDS)?,
            tls: self.tls()?,
        })
    }

    /// `kvstore.tls`: all three files or none. The files are read and checked here,
    /// so that a node with a bad certificate fails at start, naming the key and the
    /// file, rather than at its first connection.
    fn tls(&self) -> Result<Option<TlsSettings>, ConfigError> {
        const KEYS: [&str; 3] = ["tls.certificate", "tls.private-key", "tls.ca"];
        let set: Vec<Option<String>> = KEYS
            .iter()
            .map(|k| self.optional_string(k))
            .collect::<Result<_, _>>()?;
        if set.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut paths = Vec::with_capacity(3);
        for (key, value) in KEYS.iter().zip(&set) {
            let Some(text) = value else {
                return Err(ConfigError::Missing {
                    origin: self.origin.into(),
                    key: full_key(key),
                    hint: "tls needs certificate, private-key and ca: PEM files, \
                           relative to this file"
                        .into(),
                });
            };
            if text.is_empty() {
                return Err(self.invalid(key, &Value::String(text.clone()), "empty path"));
            }
            let path = Path::new(text);
            paths.push(match self.dir {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            });
        }
        let config = kv_components::network::TlsConfig::node_files(&paths[0], &paths[1], &paths[2])
            .map_err(|e| {
                let key = format!("tls.{}", e.item.setting());
                let written = KEYS
                    .iter()
                    .position(|k| *k == key)
                    .and_then(|i| set[i].clone())
                    .unwrap_or_default();
                self.invalid(&key, &Value::String(written), e.reason)
            })?;
        let mut paths = paths.into_iter();
        let (Some(certificate), Some(private_key), Some(ca)) =
            (paths.next(), paths.next(), paths.next())
        else {
            unreachable!("three paths were pushed");
        };
        Ok(Some(TlsSettings {
            certificate,
            private_key,
            ca,
            config,
        }))
    }
}

impl fmt::Display for NodeConfig {
    /// A one-line summary for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (bootstrap {}, {} nodes, {} partitions x {} replicas, tick {})",
            self.cluster_name,
            self.address,
            self.bootstrap_address,
            self.boot_threshold,
            self.partitions,
            self.replication_degree,
            show_duration(self.tick_period)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_defines_every_known_key_but_the_addresses() {
        let doc = hocon::parse(REFERENCE_CONF, "reference.conf").expect("reference parses");
        let r = Reader {
            origin: "reference.conf",
            root: doc.get(NAMESPACE).expect("the reference has the namespace"),
            dir: None,
        };
        for key in KNOWN_KEYS {
            let present = r.get(key).is_some();
            let optional = matches!(
                *key,
                "address"
                    | "metrics-address"
                    | "resp-address"
                    | "cluster-secret"
                    | "paxos.max-message-bytes"
                    | "tls.certificate"
                    | "tls.private-key"
                    | "tls.ca"
            );
            assert_eq!(present, !optional, "{key}");
        }
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn quantities() {
        let ms = |s| match parse_quantity(s, DURATION_UNITS, true) {
            Quantity::Ok(ns) => Some(ns / 1_000_000),
            _ => None,
        };
        assert_eq!(ms("500ms"), Some(500));
        assert_eq!(ms("2 s"), Some(2000));
        assert_eq!(ms("1.5s"), Some(1500));
        assert_eq!(ms("1m"), Some(60_000));
        assert_eq!(ms("250"), Some(250));
        assert_eq!(ms("2 parsecs"), None);
        assert_eq!(ms("."), None);
        assert_eq!(ms("s"), None);
        assert!(matches!(
            parse_quantity("-1s", DURATION_UNITS, true),
            Quantity::Negative
        ));
        assert!(matches!(
            parse_quantity(
                "99999999999999999999999999999999999999999d",
                DURATION_UNITS,
                true
            ),
            Quantity::TooLarge
        ));
        assert!(matches!(
            parse_quantity("64KiB", SIZE_UNITS, false),
            Quantity::Ok(65536)
        ));
        assert!(matches!(
            parse_quantity("1.5KiB", SIZE_UNITS, false),
            Quantity::Malformed
        ));
    }

    #[test]
    fn durations_display_in_their_shortest_exact_unit() {
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show_duration(Duration::from_secs(120)), "2m");
        assert_eq!(show_duration(Duration::from_micros(500)), "500us");
        assert_eq!(show_duration(Duration::ZERO), "0ms");
    }
}

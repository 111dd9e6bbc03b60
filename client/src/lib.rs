//! The kompact-kv client.
//!
//! Two ways in:
//! - [`ClientComp`], a Kompact component providing the `KeyValue` port, for Kompact
//!   applications that embed the client next to their own components;
//! - [`Client`], a plain blocking Rust API for programs that are not Kompact apps:
//!
//! ```no_run
//! let client = kv_client::Client::connect("127.0.0.1:45678")?;
//! client.put("greeting", "hello")?;
//! assert_eq!(client.get("greeting")?, Some("hello".to_string()));
//! client.cas("greeting", "hello", "bonjour")?;
//! client.put_if_absent("counter", "0")?; // fails with CasMismatch if it exists
//! assert!(client.delete("greeting")?); // true: the key existed
//! # Ok::<(), kv_client::Error>(())
//! ```
#![deny(missing_docs)]

pub mod component;
pub mod core;

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use kompact::KompactLogger;
use kompact::prelude::*;
use kv_components::connect::connect_to;
use kv_components::runtime::Runtime;
use kv_ports::{KvError, KvOp, KvResult, NodeId};

pub use crate::core::{ClientCore, ClientOutput};
pub use component::{
    ClientCommand, ClientComp, ClientSettings, ClientStats, Completion, fmt_duration,
};

/// What can go wrong with an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// CAS on a key that does not exist.
    #[error("key {0:?} not found")]
    NotFound(String),
    /// CAS whose expected value is not the current one, or
    /// [`put_if_absent`](Client::put_if_absent) on a key that exists.
    #[error("cas failed: current value of {key:?} is {current:?}")]
    CasMismatch {
        /// The key.
        key: String,
        /// Its current value.
        current: String,
    },
    /// No node answered within the deadline; a PUT or CAS may or may not have
    /// taken effect.
    #[error("{0}")]
    Unavailable(String),
    /// The request was refused (too large, wrong cluster, ...).
    #[error("{0}")]
    Rejected(String),
    /// The endpoint or the local setup is unusable.
    #[error("{0}")]
    Setup(String),
}

impl From<KvError> for Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Unavailable(s) => Error::Unavailable(s),
            KvError::Rejected(s) => Error::Rejected(s),
        }
    }
}

/// Options of a blocking client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The node to contact first.
    pub endpoint: SocketAddr,
    /// The cluster name the nodes must have.
    pub cluster: String,
    /// Time one attempt waits before trying another node.
    pub request_timeout: Duration,
    /// Time an operation may take in all before it fails with `Unavailable`.
    pub deadline: Duration,
    /// Local address to listen on for answers; by default the address of the
    /// interface that routes to the endpoint, with a free port.
    pub bind: Option<SocketAddr>,
    /// The cluster's shared secret, when its nodes have `cluster-secret` set
    /// (see [`SECRET_ENV`]); without it they refuse the connection.
    pub secret: Option<Vec<u8>>,
    /// TLS, when the nodes have `tls` set: the nodes' certificates are verified
    /// against its CA ([`kv_components::network::TlsConfig::client`]).
    pub tls: Option<kv_components::network::TlsConfig>,
}

/// The environment variable command-line clients read the cluster secret from.
pub const SECRET_ENV: &str = "KVSTORE_CLUSTER_SECRET";

impl ClientOptions {
    /// Defaults for `endpoint`: cluster "kompact-kv", 500 ms per attempt, 2 s deadline.
    pub fn new(endpoint: SocketAddr) -> Self {
        ClientOptions {
            endpoint,
            cluster: "kompact-kv".to_string(),
            request_timeout: Duration::from_millis(500),
            deadline: Duration::from_secs(2),
            bind: None,
            secret: None,
            tls: None,
        }
    }
}

/// Resolve `endpoint` to one socket address.
pub fn resolve(endpoint: impl ToSocketAddrs) -> Result<SocketAddr, Error> {
    endpoint
        .to_socket_addrs()
        .map_err(|e| Error::Setup(format!("cannot resolve endpoint: {e}")))?
        .next()
        .ok_or_else(|| Error::Setup("endpoint resolves to no address".to_string()))
}

/// The local address that routes to `dst`, with port 0 (no packet is sent). The
/// cluster answers a client at its system's address, so that address must be
/// reachable from the nodes; the interface that routes to them is.
pub fn local_ip_towards(dst: SocketAddr) -> SocketAddr {
    let any: SocketAddr = if dst.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(dst)?;
            s.local_addr()
        })
        .map(|a| SocketAddr::new(a.ip(), 0))
        .unwrap_or_else(|_| SocketAddr::new(dst.ip(), 0))
}

/// The largest frame a client accepts: well above a node's default
/// `limits.max-frame-bytes` (1 MiB), so that a client can read the largest answer
/// of a node configured for larger values (up to this). A node only sends what
/// its own limit allows, and the transport allocates only for bytes that arrived.
pub const CLIENT_MAX_FRAME_BYTES: usize = 16 << 20;

/// The transport settings of a client's system: it listens on `bind` (nodes answer
/// it there when its own connection is gone) and names `cluster`, with `secret` if
/// the cluster has one, in every handshake; frames up to
/// [`CLIENT_MAX_FRAME_BYTES`].
pub fn transport_config(
    bind: SocketAddr,
    cluster: &str,
    secret: Option<Vec<u8>>,
) -> kv_components::network::TransportConfig {
    let mut t = kv_components::network::TransportConfig::new(bind, cluster);
    t.secret = secret;
    t.max_frame_bytes = CLIENT_MAX_FRAME_BYTES;
    t
}

/// A random 64-bit session id (never 0, which means "no session" on the wire).
pub fn random_client_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    kv_protocols::rng::mix64(h.finish()).max(1)
}

/// A Kompact system for client sessions: network and timer shared by all sessions.
pub struct ClientSystem {
    rt: Runtime,
    opts: ClientOptions,
}

impl ClientSystem {
    /// Start the client's Kompact system.
    pub fn start(opts: ClientOptions) -> Result<ClientSystem, Error> {
        let bind = opts.bind.unwrap_or_else(|| local_ip_towards(opts.endpoint));
        let logger = quiet_logger();
        let mut transport = transport_config(bind, &opts.cluster, opts.secret.clone());
        transport.tls = opts.tls.clone();
        let rt = Runtime::start(transport, 2, Some(logger)).map_err(Error::Setup)?;
        Ok(ClientSystem { rt, opts })
    }

    /// The address answers come back to.
    pub fn address(&self) -> NodeId {
        self.rt.address
    }

    /// A new session (its own client id and sequence numbers).
    pub fn session(&self) -> Session {
        let s = ClientSettings {
            endpoint: self.opts.endpoint,
            cluster: self.opts.cluster.clone(),
            client_id: random_client_id(),
            request_timeout: self.opts.request_timeout,
            deadline: self.opts.deadline,
            tick_period: Duration::from_millis(5),
        };
        let comp = self.rt.system.create(|| ClientComp::new(s));
        connect_to(&self.rt.net(), &comp);
        connect_to(&self.rt.timer(), &comp);
        self.rt.system.start(&comp);
        Session {
            comp,
            deadline: self.opts.deadline,
        }
    }

    /// Shut the system down.
    pub fn shutdown(self) {
        let _ = self.rt.system.shutdown().wait();
    }
}

fn quiet_logger() -> KompactLogger {
    use kompact::prelude::Drain;
    let drain = slog::Discard;
    let drain = slog_async::Async::new(drain.fuse()).build().fuse();
    slog::Logger::root_typed(Arc::new(drain), slog::o!())
}

/// One session: operations run one after another, each exactly once.
pub struct Session {
    comp: Arc<Component<ClientComp>>,
    deadline: Duration,
}

impl Session {
    /// The client component behind this session (to open more sessions on it and
    /// submit operations with [`ClientCommand::Submit`]).
    pub fn component(&self) -> &Arc<Component<ClientComp>> {
        &self.comp
    }

    fn wait_time(&self) -> Duration {
        // The component enforces the deadline; this only guards against a component
        // that is gone.
        self.deadline * 2 + Duration::from_secs(1)
    }

    /// Wait until a node answered `Connect`; returns the cluster's nodes.
    pub fn await_connected(&self) -> Result<Vec<NodeId>, Error> {
        let r = self
            .comp
            .actor_ref()
            .ask_with(ClientCommand::AwaitConnected);
        match r.wait_timeout(self.wait_time()) {
            Ok(res) => res.map_err(Error::from),
            Err(_) => Err(Error::Unavailable("client session stopped".to_string())),
        }
    }

    /// Run one operation.
    pub fn execute(&self, op: KvOp) -> Result<KvResult, Error> {
        let r = self
            .comp
            .actor_ref()
            .ask_with(move |p| ClientCommand::Execute(op, p));
        match r.wait_timeout(self.wait_time()) {
            Ok(res) => res.map_err(Error::from),
            Err(_) => Err(Error::Unavailable("client session stopped".to_string())),
        }
    }

    /// The value of `key`, or `None` if it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<String>, Error> {
        match self.execute(KvOp::Get {
            key: key.to_string(),
        })? {
            KvResult::Value(v) => Ok(Some(v)),
            KvResult::NotFound => Ok(None),
            other => Err(Error::Setup(format!("unexpected answer to GET: {other:?}"))),
        }
    }

    /// Store `value` under `key`.
    pub fn put(&self, key: &str, value: &str) -> Result<(), Error> {
        match self.execute(KvOp::Put {
            key: key.to_string(),
            value: value.to_string(),
        })? {
            KvResult::Done => Ok(()),
            other => Err(Error::Setup(format!("unexpected answer to PUT: {other:?}"))),
        }
    }

    /// Replace `expected` with `new` under `key`.
    pub fn cas(&self, key: &str, expected: &str, new: &str) -> Result<(), Error> {
        self.compare_and_swap(key, Some(expected), new)
    }

    /// Store `value` under `key` only if `key` does not exist: a CAS against
    /// absent, one linearizable operation (Redis `SET NX`). Fails with
    /// [`Error::CasMismatch`] naming the current value if the key exists.
    pub fn put_if_absent(&self, key: &str, value: &str) -> Result<(), Error> {
        self.compare_and_swap(key, None, value)
    }

    /// Remove `key`; `true` if it existed, `false` if there was nothing to remove.
    pub fn delete(&self, key: &str) -> Result<bool, Error> {
        match self.execute(KvOp::Delete {
            key: key.to_string(),
        })? {
            KvResult::Done => Ok(true),
            KvResult::NotFound => Ok(false),
            other => Err(Error::Setup(format!(
                "unexpected answer to DELETE: {other:?}"
            ))),
        }
    }

    /// CAS with `expected` `None` meaning "the key does not exist".
    fn compare_and_swap(&self, key: &str, expected: Option<&str>, new: &str) -> Result<(), Error> {
        match self.execute(KvOp::Cas {
            key: key.to_string(),
            expected: expected.map(str::to_string),
            new: new.to_string(),
        })? {
            KvResult::Done => Ok(()),
            KvResult::NotFound => Err(Error::NotFound(key.to_string())),
            KvResult::CasMismatch { current } => Err(Error::CasMismatch {
                key: key.to_string(),
                current,
            }),
            other => Err(Error::Setup(format!("unexpected answer to CAS: {other:?}"))),
        }
    }
}

/// A blocking client: a [`ClientSystem`] with one [`Session`].
pub struct Client {
    system: ClientSystem,
    session: Session,
    nodes: Vec<NodeId>,
}

impl Client {
    /// Connect to the cluster through `endpoint` with default options.
    pub fn connect(endpoint: impl ToSocketAddrs) -> Result<Client, Error> {
        Self::with_options(ClientOptions::new(resolve(endpoint)?))
    }

    /// Connect with explicit options; fails with `Unavailable` when no node answers
    /// within the deadline.
    pub fn with_options(opts: ClientOptions) -> Result<Client, Error> {
        let system = ClientSystem::start(opts)?;
        let session = system.session();
        let nodes = session.await_connected()?;
        Ok(Client {
            system,
            session,
            nodes,
        })
    }

    /// The cluster's nodes, as the entry node reported them.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Run one operation.
    pub fn execute(&self, op: KvOp) -> Result<KvResult, Error> {
        self.session.execute(op)
    }

    /// The value of `key`, or `None`.
    pub fn get(&self, key: &str) -> Result<Option<String>, Error> {
        self.session.get(key)
    }

    /// Store `value` under `key`.
    pub fn put(&self, key: &str, value: &str) -> Result<(), Error> {
        self.session.put(key, value)
    }

    /// Replace `expected` with `new` under `key`.
    pub fn cas(&self, key: &str, expected: &str, new: &str) -> Result<(), Error> {
        self.session.cas(key, expected, new)
    }

    /// Store `value` under `key` only if `key` does not exist; see
    /// [`Session::put_if_absent`].
    pub fn put_if_absent(&self, key: &str, value: &str) -> Result<(), Error> {
        self.session.put_if_absent(key, value)
    }

    /// Remove `key`; `true` if it existed.
    pub fn delete(&self, key: &str) -> Result<bool, Error> {
        self.session.delete(key)
    }

    /// Stop the client's system.
    pub fn shutdown(self) {
        self.system.shutdown();
    }
}

//! A Kompact application that embeds the kompact-kv client component
//! ([`kv_client::ClientComp`]) next to a component of its own.
//!
//! ```text
//! Kompact system (this application)
//!  ├─ TcpNetwork, KompactTimer ... kv_components::runtime::Runtime
//!  ├─ ClientComp ................. provides KeyValue; requires Network, Timer
//!  └─ PutThenGet ................. requires KeyValue: PUT key=value, then GET key
//! ```
//!
//! [`put_then_get`] builds that graph, waits for the answer and shuts the system
//! down; the `embedded-client` binary calls it with the endpoint from its arguments,
//! and the `kvstore` process tests call it against a real cluster.

use std::net::SocketAddr;
use std::time::Duration;

use kompact::prelude::*;
use kv_client::{ClientComp, ClientSettings};
use kv_components::connect::connect_to;
use kv_components::runtime::Runtime;
use kv_ports::{KeyValue, KvError, KvOp, KvRequest, KvResponse, KvResult};

/// Why the round trip did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The local Kompact system could not be set up.
    Setup(String),
    /// The cluster did not answer in time (or refused the request).
    Store(KvError),
    /// The cluster answered something other than the value just written.
    Unexpected(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Setup(s) | Failure::Unexpected(s) => f.write_str(s),
            Failure::Store(e) => write!(f, "{e}"),
        }
    }
}

const PUT: u64 = 1;
const GET: u64 = 2;

/// The application's own component: it requires the `KeyValue` port, writes one key,
/// reads it back, and fulfils a promise with the value read.
#[derive(ComponentDefinition)]
pub struct PutThenGet {
    ctx: ComponentContext<Self>,
    kv: RequiredPort<KeyValue>,
    key: String,
    value: String,
    done: Option<KPromise<Result<String, Failure>>>,
}

impl PutThenGet {
    /// A component that writes `key = value`, reads `key` and reports via `done`.
    pub fn new(key: String, value: String, done: KPromise<Result<String, Failure>>) -> Self {
        PutThenGet {
            ctx: ComponentContext::uninitialised(),
            kv: RequiredPort::uninitialised(),
            key,
            value,
            done: Some(done),
        }
    }

    fn finish(&mut self, outcome: Result<String, Failure>) {
        if let Some(p) = self.done.take() {
            let _ = p.fulfil(outcome);
        }
    }
}

impl ComponentLifecycle for PutThenGet {
    fn on_start(&mut self) -> HandlerResult {
        info!(self.log(), "writing"; "key" => &self.key, "value" => &self.value);
        self.kv.trigger(KvRequest {
            tag: PUT,
            op: KvOp::Put {
                key: self.key.clone(),
                value: self.value.clone(),
            },
        });
        Handled::OK
    }
}

impl Require<KeyValue> for PutThenGet {
    fn handle(&mut self, r: KvResponse) -> HandlerResult {
        match (r.tag, r.result) {
            (_, Err(e)) => self.finish(Err(Failure::Store(e))),
            (PUT, Ok(KvResult::Done)) => self.kv.trigger(KvRequest {
                tag: GET,
                op: KvOp::Get {
                    key: self.key.clone(),
                },
            }),
            (GET, Ok(KvResult::Value(v))) => self.finish(Ok(v)),
            (tag, Ok(other)) => self.finish(Err(Failure::Unexpected(format!(
                "unexpected answer to {}: {other:?}",
                if tag == PUT { "PUT" } else { "GET" }
            )))),
        }
        Handled::OK
    }
}

impl Actor for PutThenGet {
    type Message = Never;

    fn receive_local(&mut self, msg: Self::Message) -> HandlerResult {
        match msg {}
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

/// Starts a Kompact system with a [`ClientComp`] (connected to the network and timer
/// providers) and a [`PutThenGet`] connected to it through `KeyValue`; writes
/// `key = value` through `endpoint`'s cluster and returns the value read back.
/// `timeout` is the client's deadline per operation.
pub fn put_then_get(
    endpoint: SocketAddr,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Result<String, Failure> {
    let level = kv_bootstrap::logging::parse_level(
        &std::env::var("EMBEDDED_CLIENT_LOG").unwrap_or_else(|_| "error".into()),
    )
    .map_err(Failure::Setup)?;
    let logger = kv_bootstrap::logging::kompact_logger(level, "embedded-client");
    let secret = std::env::var(kv_client::SECRET_ENV)
        .ok()
        .map(String::into_bytes);
    let transport =
        kv_client::transport_config(kv_client::local_ip_towards(endpoint), "kompact-kv", secret);
    let rt = Runtime::start(transport, 2, Some(logger)).map_err(Failure::Setup)?;
    let system = rt.system.clone();

    let client = system.create(|| {
        ClientComp::new(ClientSettings {
            endpoint,
            cluster: "kompact-kv".to_string(),
            client_id: kv_client::random_client_id(),
            request_timeout: (timeout / 4).max(Duration::from_millis(50)),
            deadline: timeout,
            tick_period: Duration::from_millis(5),
        })
    });
    connect_to(&rt.net(), &client);
    connect_to(&rt.timer(), &client);

    let (done, answer) = promise::<Result<String, Failure>>();
    let (key, value) = (key.to_string(), value.to_string());
    let app = system.create(move || PutThenGet::new(key, value, done));
    biconnect_components::<KeyValue, _, _>(&client, &app)
        .map_err(|e| Failure::Setup(format!("cannot connect the components: {e:?}")))?;

    system.start(&client);
    system.start(&app);
    // Two operations, each bounded by the client's deadline; the margin only guards
    // against a component that stopped.
    let outcome = answer
        .wait_timeout(timeout * 2 + Duration::from_secs(2))
        .unwrap_or_else(|_| {
            Err(Failure::Setup(
                "the application component never answered".into(),
            ))
        });
    // `shutdown` returns a lazy future: it only shuts the system down when driven.
    if !matches!(
        system.shutdown().wait_timeout(Duration::from_secs(10)),
        Ok(Ok(()))
    ) {
        warn!(
            rt.system.logger(),
            "the client's Kompact system did not shut down cleanly"
        );
    }
    outcome
}

//! The client component: one client session, embeddable in any Kompact application.
//!
//! It provides the [`KeyValue`] port (and accepts [`ClientCommand`] actor messages for
//! the blocking API) over the [`Network`] and [`Timer`] ports. Operations run one at
//! a time per session, each with its own sequence number; an unanswered attempt is
//! retried with the *same* sequence number on the next node of the cluster (the
//! replicated state machine remembers the last result per session, so a retried PUT
//! or CAS takes effect once), until the deadline, when it reports `Unavailable`.

use std::collections::VecDeque;
use std::time::Duration;

use kompact::prelude::*;
use kv_components::ticker::Ticker;
use kv_ports::{
    ClientId, ClientMessage, ClientRequest, KeyValue, KvError, KvOp, KvRequest, KvResponse,
    KvResult, NetIndication, NetMessage, NetRequest, Network, NodeId, Refusal, Timeout, Timer,
};
use kv_protocols::rng::SplitMix64;

/// Settings of one client session.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The node the client knows first.
    pub endpoint: NodeId,
    /// The cluster the client expects.
    pub cluster: String,
    /// This session's id (random in production, chosen in simulations).
    pub client_id: ClientId,
    /// Time one attempt waits for an answer before trying the next node.
    pub request_timeout: Duration,
    /// Time an operation may take in all before it is reported unavailable.
    pub deadline: Duration,
    /// Resolution of the session's clock.
    pub tick_period: Duration,
}

/// Requests to the client component from outside Kompact (the blocking API).
#[derive(Debug)]
pub enum ClientCommand {
    /// Run an operation and fulfil the promise with its outcome.
    Execute(KvOp, KPromise<Result<KvResult, KvError>>),
    /// Fulfil the promise once the cluster answered `Connect` (or with the error
    /// when the deadline passed without an answer).
    AwaitConnected(KPromise<Result<Vec<NodeId>, KvError>>),
}

enum Reply {
    Port(u64),
    Promise(KPromise<Result<KvResult, KvError>>),
}

struct Current {
    seq: u64,
    op: KvOp,
    reply: Reply,
    started: u64,
    attempt_started: u64,
    target: NodeId,
    /// Not before this time (back-off after `Busy`).
    resend_at: Option<u64>,
    busy_count: u32,
}

/// One client session.
#[derive(ComponentDefinition)]
pub struct ClientComp {
    ctx: ComponentContext<Self>,
    kv_port: ProvidedPort<KeyValue>,
    net_port: RequiredPort<Network>,
    timer_port: RequiredPort<Timer>,
    s: ClientSettings,
    ticker: Ticker,
    /// Milliseconds since start (ticks × period).
    now: u64,
    nodes: Vec<NodeId>,
    entry: Option<NodeId>,
    connected: bool,
    connect_sent: u64,
    connect_error: Option<KvError>,
    waiting_connect: Vec<KPromise<Result<Vec<NodeId>, KvError>>>,
    next_target: usize,
    seq: u64,
    queue: VecDeque<(KvOp, Reply)>,
    current: Option<Current>,
    rng: SplitMix64,
}

/// `2s`, `1.5s` or `300ms`, as a person would write it.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

impl ClientComp {
    /// A session that contacts `s.endpoint` first.
    pub fn new(s: ClientSettings) -> Self {
        ClientComp {
            ctx: ComponentContext::uninitialised(),
            kv_port: ProvidedPort::uninitialised(),
            net_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            ticker: Ticker::new(s.tick_period),
            now: 0,
            nodes: vec![s.endpoint],
            entry: None,
            connected: false,
            connect_sent: 0,
            connect_error: None,
            waiting_connect: Vec::new(),
            next_target: 0,
            seq: 0,
            queue: VecDeque::new(),
            current: None,
            rng: SplitMix64::new(s.client_id),
            s,
        }
    }

    fn send(&mut self, dst: NodeId, msg: ClientMessage) {
        self.net_port.trigger(NetRequest::Send {
            dst,
            msg: NetMessage::Client(msg),
        });
    }

    fn send_connect(&mut self) {
        self.connect_sent = self.now;
        let dst = self.nodes[self.next_target % self.nodes.len()];
        let cluster = self.s.cluster.clone();
        self.send(dst, ClientMessage::Connect { cluster });
    }

    fn complete(&mut self, result: Result<KvResult, KvError>) {
        if let Some(cur) = self.current.take() {
            match cur.reply {
                Reply::Port(tag) => self.kv_port.trigger(KvResponse { tag, result }),
                Reply::Promise(p) => {
                    let _ = p.fulfil(result);
                }
            }
        }
        self.start_next();
    }

    fn start_next(&mut self) {
        if self.current.is_some() {
            return;
        }
        let Some((op, reply)) = self.queue.pop_front() else {
            return;
        };
        if let Some(err) = self.connect_error.clone() {
            self.current = Some(Current {
                seq: 0,
                op,
                reply,
                started: self.now,
                attempt_started: self.now,
                target: self.s.endpoint,
                resend_at: None,
                busy_count: 0,
            });
            self.complete(Err(err));
            return;
        }
        self.seq += 1;
        let target = self.entry.unwrap_or(self.s.endpoint);
        self.current = Some(Current {
            seq: self.seq,
            op,
            reply,
            started: self.now,
            attempt_started: self.now,
            target,
            resend_at: None,
            busy_count: 0,
        });
        self.send_current();
    }

    fn send_current(&mut self) {
        let Some(cur) = &mut self.current else { return };
        cur.attempt_started = self.now;
        cur.resend_at = None;
        let req = ClientRequest {
            client: self.s.client_id,
            seq: cur.seq,
            op: cur.op.clone(),
        };
        let dst = cur.target;
        self.send(dst, ClientMessage::Request(req));
    }

    fn fail_over(&mut self) {
        // Try the next node of the cluster in turn (skipping the one that failed).
        let n = self.nodes.len();
        if let Some(cur) = &mut self.current {
            if n > 1 {
                let pos = self
                    .nodes
                    .iter()
                    .position(|x| *x == cur.target)
                    .unwrap_or(0);
                cur.target = self.nodes[(pos + 1) % n];
            }
        }
        self.send_current();
    }

    fn ms(&self, d: Duration) -> u64 {
        d.as_millis() as u64
    }

    fn on_tick(&mut self) {
        self.now += self.ms(self.s.tick_period).max(1);
        let timeout = self.ms(self.s.request_timeout);
        let deadline = self.ms(self.s.deadline);
        if !self.connected && self.connect_error.is_none() {
            if self.now >= deadline && !self.waiting_connect.is_empty() {
                let err = KvError::Unavailable(format!(
                    "no answer from {} within {} (is the cluster up?)",
                    self.s.endpoint,
                    fmt_duration(self.s.deadline)
                ));
                for p in self.waiting_connect.drain(..) {
                    let _ = p.fulfil(Err(err.clone()));
                }
            }
            if self.now - self.connect_sent >= timeout {
                self.send_connect();
            }
        }
        let Some(cur) = &self.current else { return };
        if self.now - cur.started >= deadline {
            let msg = format!(
                "no answer from {} within {} (is the cluster up?)",
                cur.target,
                fmt_duration(self.s.deadline)
            );
            self.complete(Err(KvError::Unavailable(msg)));
            return;
        }
        if let Some(at) = cur.resend_at {
            if self.now >= at {
                self.send_current();
            }
        } else if self.now - cur.attempt_started >= timeout {
            self.fail_over();
        }
    }

    fn on_message(&mut self, src: NodeId, msg: ClientMessage) {
        match msg {
            ClientMessage::ConnectAck { entry, nodes } => {
                if nodes.is_empty() {
                    return;
                }
                self.entry = Some(entry);
                self.nodes = nodes;
                self.connected = true;
                let nodes = self.nodes.clone();
                for p in self.waiting_connect.drain(..) {
                    let _ = p.fulfil(Ok(nodes.clone()));
                }
            }
            ClientMessage::Response {
                client,
                seq,
                result,
            } => {
                if client == self.s.client_id && self.current.as_ref().is_some_and(|c| c.seq == seq)
                {
                    self.complete(Ok(result));
                }
            }
            ClientMessage::Refused { seq: 0, reason, .. } => match reason {
                Refusal::WrongCluster(s) => {
                    let err = KvError::Rejected(format!("wrong cluster: {s}"));
                    self.connect_error = Some(err.clone());
                    for p in self.waiting_connect.drain(..) {
                        let _ = p.fulfil(Err(err.clone()));
                    }
                    if self.current.is_some() {
                        self.complete(Err(err));
                    }
                }
                _ => {} // not ready yet: the connect is retried on the next timeout
            },
            ClientMessage::Refused {
                client,
                seq,
                reason,
            } => {
                if client != self.s.client_id
                    || !self.current.as_ref().is_some_and(|c| c.seq == seq)
                {
                    return;
                }
                match reason {
                    Refusal::Busy | Refusal::NotReady(_) => {
                        // Back off with jitter: 10 ms doubling up to 640 ms.
                        let jitter = self.rng.range_inclusive(0, 10);
                        let cur = self.current.as_mut().expect("checked above");
                        cur.busy_count = (cur.busy_count + 1).min(6);
                        let backoff = (10u64 << cur.busy_count) + jitter;
                        cur.resend_at = Some(self.now + backoff);
                        let _ = src;
                    }
                    Refusal::TooLarge(s) => self.complete(Err(KvError::Rejected(s))),
                    Refusal::WrongCluster(s) => {
                        self.complete(Err(KvError::Rejected(format!("wrong cluster: {s}"))))
                    }
                }
            }
            ClientMessage::Connect { .. } | ClientMessage::Request(_) => {}
        }
    }

    fn submit(&mut self, op: KvOp, reply: Reply) {
        self.queue.push_back((op, reply));
        self.start_next();
    }
}

impl ComponentLifecycle for ClientComp {
    fn on_start(&mut self) -> HandlerResult {
        self.timer_port.trigger(self.ticker.start());
        self.send_connect();
        Handled::OK
    }

    fn on_stop(&mut self) -> HandlerResult {
        self.timer_port.trigger(self.ticker.stop());
        Handled::OK
    }
}

impl Provide<KeyValue> for ClientComp {
    fn handle(&mut self, req: KvRequest) -> HandlerResult {
        self.submit(req.op, Reply::Port(req.tag));
        Handled::OK
    }
}

impl Require<Network> for ClientComp {
    fn handle(&mut self, ind: NetIndication) -> HandlerResult {
        if let NetIndication::Deliver {
            src,
            msg: NetMessage::Client(m),
        } = ind
        {
            self.on_message(src, m);
        }
        Handled::OK
    }
}

impl Require<Timer> for ClientComp {
    fn handle(&mut self, t: Timeout) -> HandlerResult {
        if self.ticker.is_mine(&t) {
            self.on_tick();
        }
        Handled::OK
    }
}

impl Actor for ClientComp {
    type Message = ClientCommand;

    fn receive_local(&mut self, msg: Self::Message) -> HandlerResult {
        match msg {
            ClientCommand::Execute(op, p) => self.submit(op, Reply::Promise(p)),
            ClientCommand::AwaitConnected(p) => {
                if self.connected {
                    let _ = p.fulfil(Ok(self.nodes.clone()));
                } else if let Some(e) = &self.connect_error {
                    let _ = p.fulfil(Err(e.clone()));
                } else {
                    self.waiting_connect.push(p);
                }
            }
        }
        Handled::OK
    }

    fn receive_network(&mut self, _msg: kompact::prelude::NetMessage) -> HandlerResult {
        Handled::OK
    }
}

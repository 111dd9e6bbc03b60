//! The client component, embeddable in any Kompact application.
//!
//! It provides the [`KeyValue`] port (one session) and accepts [`ClientCommand`]
//! actor messages (for the blocking API and for drivers such as `kvstore bench`,
//! which run many sessions in one component). Each session runs its operations one at
//! a time, each with its own sequence number; an unanswered attempt is retried with
//! the *same* sequence number on the next node of the cluster (the replicated state
//! machine remembers the last result per session, so a retried PUT or CAS takes
//! effect once), until the deadline, when it reports `Unavailable`.
//!
//! Answers carry their session id, so one component (one address) serves many
//! sessions and routes each answer in O(log n).

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Sender;
use std::time::Duration;

use kompact::prelude::*;
use kv_components::ticker::Ticker;
use kv_ports::{
    ClientId, ClientMessage, ClientRequest, KeyValue, KvError, KvOp, KvRequest, KvResponse,
    KvResult, NetIndication, NetMessage, NetRequest, Network, NodeId, Refusal, Timeout, Timer,
};
use kv_protocols::rng::SplitMix64;

/// Settings of a client component.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The node the client knows first.
    pub endpoint: NodeId,
    /// The cluster the client expects.
    pub cluster: String,
    /// The id of the component's default session (the one behind the `KeyValue`
    /// port and `Execute`); random in production, chosen in simulations.
    pub client_id: ClientId,
    /// Time one attempt waits for an answer before trying the next node.
    pub request_timeout: Duration,
    /// Time an operation may take in all before it is reported unavailable.
    pub deadline: Duration,
    /// Resolution of the client's clock.
    pub tick_period: Duration,
}

/// A finished operation, as reported to a [`ClientCommand::Submit`] channel:
/// `(session, tag, outcome)`.
pub type Completion = (ClientId, u64, Result<KvResult, KvError>);

/// Counters of a client component, read with [`ClientCommand::Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// `Busy` refusals received for current operations, over all sessions. Each one
    /// made its session back off (with jitter) and send the operation again, so a
    /// caller never sees them as errors.
    pub busy: u64,
}

/// Requests to the client component from outside its ports.
#[derive(Debug)]
pub enum ClientCommand {
    /// Run an operation in the default session and fulfil the promise with its
    /// outcome.
    Execute(KvOp, KPromise<Result<KvResult, KvError>>),
    /// Fulfil the promise once the cluster answered `Connect` (or with the error
    /// when the deadline passed without an answer).
    AwaitConnected(KPromise<Result<Vec<NodeId>, KvError>>),
    /// Open another session with this id (ids must be unique and non-zero).
    OpenSession(ClientId),
    /// Run `op` in `session` (opened before) and send the outcome to `done`.
    Submit {
        /// The session.
        session: ClientId,
        /// The caller's tag, echoed in the completion.
        tag: u64,
        /// The operation.
        op: KvOp,
        /// Where the completion goes.
        done: Sender<Completion>,
    },
    /// Run several operations, each `(session, tag, op)` as a [`Submit`] would; their
    /// requests leave together. For drivers that have many operations ready at once.
    ///
    /// [`Submit`]: ClientCommand::Submit
    SubmitBatch {
        /// `(session, tag, op)` per operation.
        ops: Vec<(ClientId, u64, KvOp)>,
        /// Where the completions go.
        done: Sender<Completion>,
    },
    /// Fulfil the promise with the component's counters.
    Stats(KPromise<ClientStats>),
    /// Send the requests gathered since the last flush, one message per node. The
    /// component sends this to itself when it queues the first request of a burst,
    /// so every operation submitted before the flush is handled travels in the same
    /// message; sending it from outside is harmless.
    Flush,
}

#[derive(Debug)]
enum Reply {
    Port(u64),
    Promise(KPromise<Result<KvResult, KvError>>),
    Channel(u64, Sender<Completion>),
}

#[derive(Debug)]
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

#[derive(Debug, Default)]
struct Session {
    seq: u64,
    queue: VecDeque<(KvOp, Reply)>,
    current: Option<Current>,
}

/// `2s`, `1.5s` or `300ms`, as a person would write it.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// A client: the connection state towards one cluster and any number of sessions.
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
    connect_target: usize,
    connect_error: Option<KvError>,
    waiting_connect: Vec<KPromise<Result<Vec<NodeId>, KvError>>>,
    sessions: BTreeMap<ClientId, Session>,
    /// Partitions of the key space (0 until the cluster told us).
    partitions: u32,
    /// The node that last answered for each partition: its leader, since the leader
    /// proposes and answers. Requests go there first.
    hints: BTreeMap<u32, NodeId>,
    rng: SplitMix64,
    stats: ClientStats,
    /// Requests waiting for the next [`ClientCommand::Flush`], by destination.
    outbox: BTreeMap<NodeId, Vec<ClientRequest>>,
    flush_pending: bool,
    /// Sessions with an operation in progress.
    in_progress: usize,
}

impl ClientComp {
    /// A client that contacts `s.endpoint` first, with its default session open.
    pub fn new(s: ClientSettings) -> Self {
        let mut sessions = BTreeMap::new();
        sessions.insert(s.client_id, Session::default());
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
            connect_target: 0,
            connect_error: None,
            waiting_connect: Vec::new(),
            sessions,
            partitions: 0,
            hints: BTreeMap::new(),
            rng: SplitMix64::new(s.client_id),
            stats: ClientStats::default(),
            outbox: BTreeMap::new(),
            flush_pending: false,
            in_progress: 0,
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
        let dst = self.nodes[self.connect_target % self.nodes.len()];
        self.connect_target += 1;
        let cluster = self.s.cluster.clone();
        self.send(dst, ClientMessage::Connect { cluster });
    }

    fn deliver(&mut self, session: ClientId, reply: Reply, result: Result<KvResult, KvError>) {
        match reply {
            Reply::Port(tag) => self.kv_port.trigger(KvResponse { tag, result }),
            Reply::Promise(p) => {
                let _ = p.fulfil(result);
            }
            Reply::Channel(tag, tx) => {
                let _ = tx.send((session, tag, result));
            }
        }
    }

    fn complete(&mut self, session: ClientId, result: Result<KvResult, KvError>) {
        let Some(cur) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.current.take())
        else {
            return;
        };
        self.in_progress -= 1;
        self.deliver(session, cur.reply, result);
        self.start_next(session);
    }

    fn partition_of(&self, op: &KvOp) -> Option<u32> {
        (self.partitions > 0).then(|| {
            kv_protocols::partition::partition_of(
                kv_protocols::partition::key_hash(op.key().as_bytes()),
                self.partitions,
            )
        })
    }

    fn target_for(&self, op: &KvOp) -> NodeId {
        self.partition_of(op)
            .and_then(|p| self.hints.get(&p).copied())
            .or(self.entry)
            .unwrap_or(self.s.endpoint)
    }

    fn start_next(&mut self, session: ClientId) {
        let now = self.now;
        let target = match self.sessions.get(&session).and_then(|s| s.queue.front()) {
            Some((op, _)) => self.target_for(op),
            None => return,
        };
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.current.is_some() {
            return;
        }
        let Some((op, reply)) = s.queue.pop_front() else {
            return;
        };
        if let Some(err) = self.connect_error.clone() {
            self.deliver(session, reply, Err(err));
            return self.start_next(session);
        }
        s.seq += 1;
        self.in_progress += 1;
        s.current = Some(Current {
            seq: s.seq,
            op,
            reply,
            started: now,
            attempt_started: now,
            target,
            resend_at: None,
            busy_count: 0,
        });
        self.send_current(session);
    }

    fn send_current(&mut self, session: ClientId) {
        let now = self.now;
        let Some(cur) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.current.as_mut())
        else {
            return;
        };
        cur.attempt_started = now;
        cur.resend_at = None;
        let req = ClientRequest {
            client: session,
            seq: cur.seq,
            op: cur.op.clone(),
        };
        let dst = cur.target;
        if self.in_progress == 1 && !self.flush_pending {
            // The only operation in progress: nothing to gather it with.
            self.send(dst, ClientMessage::Request(req));
            return;
        }
        self.outbox.entry(dst).or_default().push(req);
        if !self.flush_pending {
            self.flush_pending = true;
            self.actor_ref().tell(ClientCommand::Flush);
        }
    }

    fn flush(&mut self) {
        self.flush_pending = false;
        for (dst, mut reqs) in std::mem::take(&mut self.outbox) {
            let msg = if reqs.len() == 1 {
                ClientMessage::Request(reqs.pop().expect("one request"))
            } else {
                ClientMessage::Requests(reqs)
            };
            self.send(dst, msg);
        }
    }

    fn on_response(&mut self, src: NodeId, client: ClientId, seq: u64, result: KvResult) {
        if self.is_current(client, seq) {
            if let Some(p) = self
                .sessions
                .get(&client)
                .and_then(|s| s.current.as_ref())
                .and_then(|c| self.partition_of(&c.op))
            {
                self.hints.insert(p, src);
            }
            self.complete(client, Ok(result));
        }
    }

    fn fail_over(&mut self, session: ClientId) {
        // Try the next node of the cluster in turn (skipping the one that failed).
        let n = self.nodes.len();
        if let Some(p) = self
            .sessions
            .get(&session)
            .and_then(|s| s.current.as_ref())
            .and_then(|c| self.partition_of(&c.op))
        {
            self.hints.remove(&p);
        }
        if let Some(cur) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.current.as_mut())
            && n > 1
        {
            let pos = self
                .nodes
                .iter()
                .position(|x| *x == cur.target)
                .unwrap_or(0);
            cur.target = self.nodes[(pos + 1) % n];
        }
        self.send_current(session);
    }

    fn on_tick(&mut self) {
        self.now += (self.s.tick_period.as_millis() as u64).max(1);
        let timeout = self.s.request_timeout.as_millis() as u64;
        let deadline = self.s.deadline.as_millis() as u64;
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
        enum Action {
            Expire(NodeId),
            Resend,
            FailOver,
        }
        let mut actions = Vec::new();
        for (id, s) in &self.sessions {
            let Some(cur) = &s.current else { continue };
            if self.now - cur.started >= deadline {
                actions.push((*id, Action::Expire(cur.target)));
            } else if let Some(at) = cur.resend_at {
                if self.now >= at {
                    actions.push((*id, Action::Resend));
                }
            } else if self.now - cur.attempt_started >= timeout {
                actions.push((*id, Action::FailOver));
            }
        }
        for (id, a) in actions {
            match a {
                Action::Expire(target) => {
                    let msg = format!(
                        "no answer from {} within {} (is the cluster up?)",
                        target,
                        fmt_duration(self.s.deadline)
                    );
                    self.complete(id, Err(KvError::Unavailable(msg)));
                }
                Action::Resend => self.send_current(id),
                Action::FailOver => self.fail_over(id),
            }
        }
    }

    fn is_current(&self, session: ClientId, seq: u64) -> bool {
        self.sessions
            .get(&session)
            .and_then(|s| s.current.as_ref())
            .is_some_and(|c| c.seq == seq)
    }

    fn on_message(&mut self, src: NodeId, msg: ClientMessage) {
        match msg {
            ClientMessage::ConnectAck {
                entry,
                nodes,
                partitions,
            } => {
                if nodes.is_empty() || self.connected {
                    return;
                }
                self.partitions = partitions;
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
            } => self.on_response(src, client, seq, result),
            ClientMessage::Responses(rs) => {
                for r in rs {
                    self.on_response(src, r.client, r.seq, r.result);
                }
            }
            ClientMessage::Refused { seq: 0, reason, .. } => {
                if let Refusal::WrongCluster(s) = reason {
                    let err = KvError::Rejected(format!("wrong cluster: {s}"));
                    self.connect_error = Some(err.clone());
                    for p in self.waiting_connect.drain(..) {
                        let _ = p.fulfil(Err(err.clone()));
                    }
                    let busy: Vec<ClientId> = self
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.current.is_some())
                        .map(|(id, _)| *id)
                        .collect();
                    for id in busy {
                        self.complete(id, Err(err.clone()));
                    }
                }
                // Not ready yet: the connect is retried on the next timeout.
            }
            ClientMessage::Refused {
                client,
                seq,
                reason,
            } => {
                if !self.is_current(client, seq) {
                    return;
                }
                match reason {
                    Refusal::Busy | Refusal::NotReady(_) => {
                        if matches!(reason, Refusal::Busy) {
                            self.stats.busy += 1;
                        }
                        // Back off with jitter: 10 ms doubling up to 640 ms.
                        let jitter = self.rng.range_inclusive(0, 10);
                        let now = self.now;
                        if let Some(cur) = self
                            .sessions
                            .get_mut(&client)
                            .and_then(|s| s.current.as_mut())
                        {
                            cur.busy_count = (cur.busy_count + 1).min(6);
                            cur.resend_at = Some(now + (10u64 << cur.busy_count) + jitter);
                        }
                    }
                    Refusal::TooLarge(s) => self.complete(client, Err(KvError::Rejected(s))),
                    Refusal::WrongCluster(s) => self.complete(
                        client,
                        Err(KvError::Rejected(format!("wrong cluster: {s}"))),
                    ),
                }
            }
            ClientMessage::Connect { .. }
            | ClientMessage::Request(_)
            | ClientMessage::Requests(_) => {}
        }
    }

    fn submit(&mut self, session: ClientId, op: KvOp, reply: Reply) {
        match self.sessions.get_mut(&session) {
            Some(s) => s.queue.push_back((op, reply)),
            None => {
                let err = KvError::Rejected(format!("no session {session} on this client"));
                self.deliver(session, reply, Err(err));
                return;
            }
        }
        self.start_next(session);
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
        self.submit(self.s.client_id, req.op, Reply::Port(req.tag));
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
            ClientCommand::Execute(op, p) => self.submit(self.s.client_id, op, Reply::Promise(p)),
            ClientCommand::AwaitConnected(p) => {
                if self.connected {
                    let _ = p.fulfil(Ok(self.nodes.clone()));
                } else if let Some(e) = &self.connect_error {
                    let _ = p.fulfil(Err(e.clone()));
                } else {
                    self.waiting_connect.push(p);
                }
            }
            ClientCommand::OpenSession(id) => {
                self.sessions.entry(id).or_default();
            }
            ClientCommand::Submit {
                session,
                tag,
                op,
                done,
            } => self.submit(session, op, Reply::Channel(tag, done)),
            ClientCommand::SubmitBatch { ops, done } => {
                if ops.len() > 1 && !self.flush_pending {
                    // Gather all of them, the first included.
                    self.flush_pending = true;
                    self.actor_ref().tell(ClientCommand::Flush);
                }
                for (session, tag, op) in ops {
                    self.submit(session, op, Reply::Channel(tag, done.clone()));
                }
            }
            ClientCommand::Stats(p) => {
                let _ = p.fulfil(self.stats);
            }
            ClientCommand::Flush => self.flush(),
        }
        Handled::OK
    }

    fn receive_network(&mut self, _msg: kompact::prelude::NetMessage) -> HandlerResult {
        Handled::OK
    }
}

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
//!
//! All of that is decided by the sans-IO [`ClientCore`]; this component only turns
//! port events, timeouts and actor messages into core calls, and the core's outputs
//! into network sends, port indications, promises and channel messages.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;

use kompact::prelude::*;
use kv_components::ticker::Ticker;
use kv_ports::{
    ClientId, KeyValue, KvError, KvOp, KvRequest, KvResponse, KvResult, NetIndication, NetMessage,
    NetRequest, Network, NodeId, Timeout, Timer,
};

use crate::core::{ClientCore, ClientOutput};
pub use crate::core::{ClientSettings, ClientStats, Completion, fmt_duration};

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
    /// Close a session opened with [`ClientCommand::OpenSession`]: what it queued is
    /// dropped, and it is forgotten once its current operation ends.
    CloseSession(ClientId),
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

/// Where the outcome of an operation goes.
#[derive(Debug)]
enum Reply {
    /// A `KvResponse` on the `KeyValue` port, with the caller's tag.
    Port(u64),
    /// An `Execute` promise.
    Promise(KPromise<Result<KvResult, KvError>>),
    /// A `Submit` channel, with the caller's tag.
    Channel(u64, Sender<Completion>),
}

/// A client: the connection state towards one cluster and any number of sessions.
#[derive(ComponentDefinition)]
pub struct ClientComp {
    ctx: ComponentContext<Self>,
    kv_port: ProvidedPort<KeyValue>,
    net_port: RequiredPort<Network>,
    timer_port: RequiredPort<Timer>,
    ticker: Ticker,
    /// The session behind the `KeyValue` port and `Execute`.
    default_session: ClientId,
    core: ClientCore,
    /// Where each operation in the core goes when it completes, by the tag the
    /// component gave it (callers' tags may collide, so they stay in the `Reply`).
    replies: BTreeMap<u64, Reply>,
    next_tag: u64,
    /// `AwaitConnected` promises, by the token given to the core.
    waiting_connect: BTreeMap<u64, KPromise<Result<Vec<NodeId>, KvError>>>,
    next_token: u64,
}

impl ClientComp {
    /// A client that contacts `s.endpoint` first, with its default session open.
    pub fn new(s: ClientSettings) -> Self {
        ClientComp {
            ctx: ComponentContext::uninitialised(),
            kv_port: ProvidedPort::uninitialised(),
            net_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            ticker: Ticker::new(s.tick_period),
            default_session: s.client_id,
            core: ClientCore::new(s),
            replies: BTreeMap::new(),
            next_tag: 0,
            waiting_connect: BTreeMap::new(),
            next_token: 0,
        }
    }

    fn submit(&mut self, session: ClientId, op: KvOp, reply: Reply) {
        let tag = self.remember(reply);
        self.core.submit(session, tag, op);
    }

    fn remember(&mut self, reply: Reply) -> u64 {
        self.next_tag += 1;
        self.replies.insert(self.next_tag, reply);
        self.next_tag
    }

    /// Carries out what the core asked for, in its order.
    fn drain(&mut self) {
        if self.core.take_flush_request() {
            self.actor_ref().tell(ClientCommand::Flush);
        }
        for out in self.core.take_outputs() {
            match out {
                ClientOutput::Send { to, msg } => self.net_port.trigger(NetRequest::Send {
                    dst: to,
                    msg: NetMessage::Client(msg),
                }),
                ClientOutput::Completed((session, tag, result)) => {
                    match self.replies.remove(&tag) {
                        Some(Reply::Port(tag)) => self.kv_port.trigger(KvResponse { tag, result }),
                        Some(Reply::Promise(p)) => {
                            let _ = p.fulfil(result);
                        }
                        Some(Reply::Channel(tag, tx)) => {
                            let _ = tx.send((session, tag, result));
                        }
                        None => {}
                    }
                }
                ClientOutput::Connected { token, result } => {
                    if let Some(p) = self.waiting_connect.remove(&token) {
                        let _ = p.fulfil(result);
                    }
                }
            }
        }
    }
}

impl ComponentLifecycle for ClientComp {
    fn on_start(&mut self) -> HandlerResult {
        self.timer_port.trigger(self.ticker.start());
        // The core's first output is its Connect.
        self.drain();
        Handled::OK
    }

    fn on_stop(&mut self) -> HandlerResult {
        self.timer_port.trigger(self.ticker.stop());
        Handled::OK
    }
}

impl Provide<KeyValue> for ClientComp {
    fn handle(&mut self, req: KvRequest) -> HandlerResult {
        self.submit(self.default_session, req.op, Reply::Port(req.tag));
        self.drain();
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
            self.core.handle(src, m);
            self.drain();
        }
        Handled::OK
    }
}

impl Require<Timer> for ClientComp {
    fn handle(&mut self, t: Timeout) -> HandlerResult {
        if self.ticker.is_mine(&t) {
            self.core.tick();
            self.drain();
        }
        Handled::OK
    }
}

impl Actor for ClientComp {
    type Message = ClientCommand;

    fn receive_local(&mut self, msg: Self::Message) -> HandlerResult {
        match msg {
            ClientCommand::Execute(op, p) => {
                self.submit(self.default_session, op, Reply::Promise(p))
            }
            ClientCommand::AwaitConnected(p) => {
                self.next_token += 1;
                self.waiting_connect.insert(self.next_token, p);
                self.core.await_connected(self.next_token);
            }
            ClientCommand::OpenSession(id) => self.core.open_session(id),
            ClientCommand::CloseSession(id) => self.core.close_session(id),
            ClientCommand::Submit {
                session,
                tag,
                op,
                done,
            } => self.submit(session, op, Reply::Channel(tag, done)),
            ClientCommand::SubmitBatch { ops, done } => {
                let ops = ops
                    .into_iter()
                    .map(|(session, tag, op)| {
                        let mine = self.remember(Reply::Channel(tag, done.clone()));
                        (session, mine, op)
                    })
                    .collect();
                self.core.submit_batch(ops);
            }
            ClientCommand::Stats(p) => {
                let _ = p.fulfil(self.core.stats());
            }
            ClientCommand::Flush => self.core.flush(),
        }
        self.drain();
        Handled::OK
    }

    fn receive_network(&mut self, _msg: kompact::prelude::NetMessage) -> HandlerResult {
        Handled::OK
    }
}

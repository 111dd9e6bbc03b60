//! The client's retry, fail-over and routing logic as a sans-IO core.
//!
//! [`ClientCore`] knows nothing of Kompact, sockets or clocks. Its host feeds it
//! - [`ClientCore::submit`] for every operation a caller wants run,
//! - [`ClientCore::handle`] for every [`ClientMessage`] a node sent,
//! - [`ClientCore::tick`] once per tick period (time is counted in ticks),
//! - [`ClientCore::flush`] when the core asked for one ([`ClientCore::take_flush_request`]),
//!
//! and after each call drains [`ClientCore::take_outputs`]: messages to send,
//! completed operations and answers to [`ClientCore::await_connected`], in the order
//! the core produced them. The Kompact [`ClientComp`](crate::ClientComp) is such a
//! host; the tests here are another.
//!
//! # Behaviour
//! - **Connect.** The first output is a `Connect` to the endpoint, repeated every
//!   request timeout until a node answers `ConnectAck { entry, nodes, partitions }`:
//!   the entry node takes operations whose partition has no known leader, and the node
//!   list is the fail-over order. A `WrongCluster` refusal of the connect fails every
//!   operation, current, queued and future.
//! - **Sessions.** A session runs one operation at a time. Each operation gets the
//!   session's next sequence number when it starts; every attempt of it carries the
//!   same `(client, seq)`, so the replicated state machine applies a retried PUT or CAS
//!   once.
//! - **Retries.** An attempt unanswered for a request timeout goes to the next node of
//!   the candidates (the partition's group if a redirect named one, else the cluster's
//!   node list). A `Busy` or `NotReady` refusal makes the session back off (10 ms
//!   doubling up to 640 ms, plus 0–10 ms of seeded jitter) and send to the same node
//!   again. Other refusals fail the operation with `Rejected`. An operation unanswered
//!   by its deadline fails with `Unavailable`.
//! - **Leaders.** The node that answers an operation is its partition's leader (the
//!   leader proposes and answers), so the next operation on that partition goes there
//!   first; a fail-over forgets it.
//! - **Stale answers** (another sequence number, a finished operation, an unknown
//!   session, a second copy) are ignored.
//! - **Batching.** A request that is the only one in progress leaves at once. When
//!   several are in progress, requests gather per destination until the host calls
//!   [`ClientCore::flush`], and several for one node leave as one `Requests`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use kv_ports::{
    ClientId, ClientMessage, ClientRequest, KvError, KvOp, KvResult, NodeId, PartitionId, Refusal,
};
use kv_protocols::rng::SplitMix64;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

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
///
/// [`ClientCommand::Submit`]: crate::ClientCommand::Submit
pub type Completion = (ClientId, u64, Result<KvResult, KvError>);

/// Counters of a client component, read with [`ClientCommand::Stats`].
///
/// [`ClientCommand::Stats`]: crate::ClientCommand::Stats
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// `Busy` refusals received for current operations, over all sessions. Each one
    /// made its session back off (with jitter) and send the operation again, so a
    /// caller never sees them as errors.
    pub busy: u64,
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

/// What the core asks its host to do, in the order it should be done.
#[derive(Clone, Debug)]
pub enum ClientOutput {
    /// Send `msg` to node `to`.
    Send {
        /// The destination.
        to: NodeId,
        /// The message.
        msg: ClientMessage,
    },
    /// An operation finished (exactly once per submitted operation).
    Completed(Completion),
    /// The answer to [`ClientCore::await_connected`] with this token: the cluster's
    /// nodes, or why there is no connection.
    Connected {
        /// The caller's token.
        token: u64,
        /// The nodes, or the error.
        result: Result<Vec<NodeId>, KvError>,
    },
}

/// Back-off after a `Busy` or `NotReady` refusal: `BACKOFF_BASE_MS << n` for the
/// n-th refusal in a row of one operation (n capped at `BACKOFF_MAX_DOUBLINGS`), plus
/// up to `BACKOFF_JITTER_MS` of jitter so sessions refused together do not come back
/// together.
const BACKOFF_BASE_MS: u64 = 10;
const BACKOFF_MAX_DOUBLINGS: u32 = 6;
const BACKOFF_JITTER_MS: u64 = 10;

/// The settings turned into ticks.
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// Milliseconds per tick (at least 1). The back-off schedule is defined in
    /// milliseconds, so it is converted with this.
    tick_ms: u64,
    /// Ticks an attempt (or a connect) waits before the next one.
    timeout: u64,
    /// Ticks an operation (or the first connect) may take in all.
    deadline: u64,
}

impl Timing {
    fn new(s: &ClientSettings) -> Self {
        let tick_ms = (s.tick_period.as_millis() as u64).max(1);
        Timing {
            tick_ms,
            timeout: ms_to_ticks(s.request_timeout.as_millis() as u64, tick_ms),
            deadline: ms_to_ticks(s.deadline.as_millis() as u64, tick_ms),
        }
    }
}

/// The first whole number of ticks that lasts at least `ms`: an event due `ms` after
/// a tick happens on the first tick at or after that time.
fn ms_to_ticks(ms: u64, tick_ms: u64) -> u64 {
    ms.div_ceil(tick_ms)
}

/// The operation a session is running.
///
/// Invariant: `started <= attempt_started <= now`; `resend_at`, when set, is after
/// the refusal that set it.
#[derive(Clone, Debug)]
struct Current {
    /// Its sequence number; every attempt carries it.
    seq: u64,
    /// The caller's tag.
    tag: u64,
    op: KvOp,
    /// Tick it started (its deadline counts from here).
    started: u64,
    /// Tick the last attempt was sent.
    attempt_started: u64,
    /// The node the last attempt went to.
    target: NodeId,
    /// Send again at this tick, to the same node (back-off after `Busy`); while it is
    /// set the attempt does not time out.
    resend_at: Option<u64>,
    /// Refusals in a row that asked to back off (capped).
    busy_count: u32,
}

/// One session: a sequence of operations run one at a time.
///
/// Invariant: `seq` is the sequence number of the last operation started (0 before
/// the first); `current` is `None` only if `queue` is empty or the core is about to
/// start its head.
#[derive(Clone, Debug, Default)]
struct Session {
    seq: u64,
    queue: VecDeque<(u64, KvOp)>,
    current: Option<Current>,
    /// Closed while its current operation was in progress: forgotten once that one
    /// completes.
    closing: bool,
}

/// A replica group named by a redirect.
#[derive(Clone, Debug)]
struct Group {
    epoch: u64,
    /// Never empty.
    nodes: Vec<NodeId>,
}

/// The connection state towards one cluster and any number of sessions.
#[derive(Debug)]
pub struct ClientCore {
    s: ClientSettings,
    t: Timing,
    /// Ticks since the core was created.
    now: u64,
    /// The fail-over order: the endpoint alone until a `ConnectAck`, then the
    /// cluster's nodes. Invariant: never empty.
    nodes: Vec<NodeId>,
    /// The entry node from the `ConnectAck`.
    entry: Option<NodeId>,
    connected: bool,
    /// Set by a `WrongCluster` refusal of the connect; every operation then fails.
    connect_error: Option<KvError>,
    /// Tick the last `Connect` was sent.
    connect_sent: u64,
    /// How many `Connect`s were sent (picks the next destination).
    connect_target: usize,
    /// Tokens of [`ClientCore::await_connected`] calls not answered yet.
    waiting_connect: Vec<u64>,
    sessions: BTreeMap<ClientId, Session>,
    /// Partitions of the key space (0 until the cluster told us).
    partitions: u32,
    /// The node that last answered for each partition: its leader, since the leader
    /// proposes and answers. Requests go there first.
    hints: BTreeMap<PartitionId, NodeId>,
    /// Replica groups learnt from redirects, with their epoch; they replace the node
    /// list as the fail-over candidates of their partition.
    groups: BTreeMap<PartitionId, Group>,
    rng: SplitMix64,
    stats: ClientStats,
    /// Requests waiting for the next [`ClientCore::flush`], by destination.
    batch: BTreeMap<NodeId, Vec<ClientRequest>>,
    /// A flush is due (the host was asked for one, or will be).
    flush_pending: bool,
    /// The host has not been told yet that a flush is due.
    flush_requested: bool,
    /// Sessions with an operation in progress. Invariant: equals the number of
    /// sessions whose `current` is `Some`.
    in_progress: usize,
    outputs: Vec<ClientOutput>,
}

impl ClientCore {
    /// A client that contacts `s.endpoint` first, with its default session
    /// (`s.client_id`) open. Its first output is the `Connect`. The back-off jitter
    /// is drawn from a generator seeded with `s.client_id`.
    pub fn new(s: ClientSettings) -> Self {
        let mut sessions = BTreeMap::new();
        sessions.insert(s.client_id, Session::default());
        let mut core = ClientCore {
            t: Timing::new(&s),
            now: 0,
            nodes: vec![s.endpoint],
            entry: None,
            connected: false,
            connect_error: None,
            connect_sent: 0,
            connect_target: 0,
            waiting_connect: Vec::new(),
            sessions,
            partitions: 0,
            hints: BTreeMap::new(),
            groups: BTreeMap::new(),
            rng: SplitMix64::new(s.client_id),
            stats: ClientStats::default(),
            batch: BTreeMap::new(),
            flush_pending: false,
            flush_requested: false,
            in_progress: 0,
            outputs: Vec::new(),
            s,
        };
        core.send_connect();
        core
    }

    // ----- inputs -----

    /// Opens a session with this id (ids must be unique and non-zero); opening an
    /// open session does nothing.
    pub fn open_session(&mut self, session: ClientId) {
        self.sessions.entry(session).or_default();
    }

    /// Closes `session` (not the default one): its queued operations are dropped
    /// without a completion, and the session is forgotten at once, or when its
    /// current operation completes (that one still runs to its end, since it may
    /// already have taken effect). Closing an unknown session does nothing.
    pub fn close_session(&mut self, session: ClientId) {
        if session == self.s.client_id {
            return;
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.queue.clear();
        if s.current.is_some() {
            s.closing = true;
        } else {
            self.sessions.remove(&session);
        }
    }

    /// The number of open sessions, the default one included.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Queues `op` in `session`; its completion will carry `tag`. An unknown session
    /// completes it at once with `Rejected`.
    pub fn submit(&mut self, session: ClientId, tag: u64, op: KvOp) {
        match self.sessions.get_mut(&session) {
            Some(s) => s.queue.push_back((tag, op)),
            None => {
                let err = KvError::Rejected(format!("no session {session} on this client"));
                self.outputs
                    .push(ClientOutput::Completed((session, tag, Err(err))));
                return;
            }
        }
        self.start_next(session);
    }

    /// Submits several operations whose requests should leave together: when there
    /// is more than one, even the first waits for the next [`flush`](Self::flush).
    pub fn submit_batch(&mut self, ops: Vec<(ClientId, u64, KvOp)>) {
        if ops.len() > 1 {
            self.request_flush();
        }
        for (session, tag, op) in ops {
            self.submit(session, tag, op);
        }
    }

    /// Asks for the nodes of the cluster: answered with [`ClientOutput::Connected`]
    /// carrying `token` as soon as a node accepted the `Connect` (at once if one
    /// already has), or with an error when the cluster refused the connect or the
    /// deadline passed first.
    pub fn await_connected(&mut self, token: u64) {
        if self.connected {
            let result = Ok(self.nodes.clone());
            self.outputs.push(ClientOutput::Connected { token, result });
        } else if let Some(e) = &self.connect_error {
            let result = Err(e.clone());
            self.outputs.push(ClientOutput::Connected { token, result });
        } else {
            self.waiting_connect.push(token);
        }
    }

    /// Handles a message from node `from`. Anything unexpected (a message only a
    /// client sends, an answer to an operation that is not current) is ignored.
    pub fn handle(&mut self, from: NodeId, msg: ClientMessage) {
        match msg {
            ClientMessage::ConnectAck {
                entry,
                nodes,
                partitions,
            } => self.handle_connect_ack(entry, nodes, partitions),
            ClientMessage::Response {
                client,
                seq,
                result,
            } => self.handle_response(from, client, seq, result),
            ClientMessage::Responses(rs) => {
                for r in rs {
                    self.handle_response(from, r.client, r.seq, r.result);
                }
            }
            ClientMessage::Refused { seq: 0, reason, .. } => self.handle_connect_refused(reason),
            ClientMessage::Refused {
                client,
                seq,
                reason,
            } => self.handle_refused(client, seq, reason),
            ClientMessage::Connect { .. }
            | ClientMessage::Request(_)
            | ClientMessage::Requests(_) => {}
        }
    }

    /// Tells the core that the replica group of `partition` is, as of configuration
    /// `epoch`, `nodes` (a node of an older epoch will say so when a group moves).
    ///
    /// The group becomes the fail-over candidates of the partition, the leader hint is
    /// kept only if it is a member, and every current operation on the partition whose
    /// last attempt went to a node outside the group is sent again at once to the
    /// group (its leader hint, else its first node), with the same `(client, seq)`, so
    /// a write the old group applied is not applied twice. Redirects of an epoch not
    /// newer than the one known, or naming no node, are ignored (they arrive late or
    /// out of order). Before the `ConnectAck` the client cannot tell a key's partition,
    /// so only later operations use the group.
    pub fn redirect(&mut self, partition: PartitionId, epoch: u64, nodes: Vec<NodeId>) {
        self.redirect_sessions(partition, epoch, nodes);
    }

    /// [`ClientCore::redirect`]; returns the sessions it sent again.
    fn redirect_sessions(
        &mut self,
        partition: PartitionId,
        epoch: u64,
        nodes: Vec<NodeId>,
    ) -> Vec<ClientId> {
        if nodes.is_empty()
            || self
                .groups
                .get(&partition)
                .is_some_and(|g| g.epoch >= epoch)
        {
            return Vec::new();
        }
        if self
            .hints
            .get(&partition)
            .is_some_and(|h| !nodes.contains(h))
        {
            self.hints.remove(&partition);
        }
        let moved: Vec<ClientId> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| {
                let cur = s.current.as_ref()?;
                let here = self.partition_of(&cur.op) == Some(partition);
                (here && !nodes.contains(&cur.target)).then_some(*id)
            })
            .collect();
        self.groups.insert(partition, Group { epoch, nodes });
        for &id in &moved {
            let target = self.target_for_partition(Some(partition));
            if let Some(cur) = self.current_mut(id) {
                cur.target = target;
                cur.busy_count = 0;
            }
            self.send_current(id);
        }
        moved
    }

    /// Advances time by one tick: resends an unanswered `Connect`, fails connect
    /// waiters after the deadline, and for each session in turn either fails its
    /// operation (deadline), resends it after a back-off, or fails over to the next
    /// node (request timeout).
    pub fn tick(&mut self) {
        self.now += 1;
        if !self.connected && self.connect_error.is_none() {
            if self.now >= self.t.deadline && !self.waiting_connect.is_empty() {
                let err = KvError::Unavailable(self.no_answer(self.s.endpoint));
                for token in std::mem::take(&mut self.waiting_connect) {
                    let result = Err(err.clone());
                    self.outputs.push(ClientOutput::Connected { token, result });
                }
            }
            if self.now - self.connect_sent >= self.t.timeout {
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
            if self.now - cur.started >= self.t.deadline {
                actions.push((*id, Action::Expire(cur.target)));
            } else if let Some(at) = cur.resend_at {
                if self.now >= at {
                    actions.push((*id, Action::Resend));
                }
            } else if self.now - cur.attempt_started >= self.t.timeout {
                actions.push((*id, Action::FailOver));
            }
        }
        for (id, a) in actions {
            match a {
                Action::Expire(target) => {
                    let msg = self.no_answer(target);
                    self.complete(id, Err(KvError::Unavailable(msg)));
                }
                Action::Resend => self.send_current(id),
                Action::FailOver => self.fail_over(id),
            }
        }
    }

    /// Moves the gathered requests to the outputs: one message per destination, a
    /// `Requests` where several go to one node. A request whose operation completed
    /// while it waited is dropped: its answer would be ignored, and sending it would
    /// put two operations of one session on the wire at once.
    pub fn flush(&mut self) {
        self.flush_pending = false;
        self.flush_requested = false;
        for (to, mut reqs) in std::mem::take(&mut self.batch) {
            reqs.retain(|r| self.is_current(r.client, r.seq));
            let msg = match reqs.pop() {
                Some(only) if reqs.is_empty() => ClientMessage::Request(only),
                Some(last) => {
                    reqs.push(last);
                    ClientMessage::Requests(reqs)
                }
                None => continue,
            };
            self.outputs.push(ClientOutput::Send { to, msg });
        }
    }

    // ----- outputs and queries -----

    /// Everything to do, in order, since the last call.
    pub fn take_outputs(&mut self) -> Vec<ClientOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// `true` once each time the core started gathering requests: the host should
    /// call [`flush`](Self::flush) after it has handled the inputs already waiting
    /// (Kompact: a message to itself), so that they travel together.
    pub fn take_flush_request(&mut self) -> bool {
        std::mem::take(&mut self.flush_requested)
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Ticks since the core was created.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Ticks an operation may take in all (the deadline, rounded up to ticks).
    pub fn deadline_ticks(&self) -> u64 {
        self.t.deadline
    }

    /// Ticks an attempt waits before the next node is tried.
    pub fn request_timeout_ticks(&self) -> u64 {
        self.t.timeout
    }

    /// The fail-over order: the endpoint until connected, then the cluster's nodes.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Whether a node accepted the `Connect`.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The node operations on `partition` go to first, if one answered for it.
    pub fn leader_hint(&self, partition: PartitionId) -> Option<NodeId> {
        self.hints.get(&partition).copied()
    }

    /// The partition of `key`, once the cluster told how many there are.
    pub fn partition_of_key(&self, key: &str) -> Option<PartitionId> {
        (self.partitions > 0).then(|| {
            kv_protocols::partition::partition_of(
                kv_protocols::partition::key_hash(key.as_bytes()),
                self.partitions,
            )
        })
    }

    /// Sessions with an operation in progress.
    pub fn in_progress(&self) -> usize {
        self.in_progress
    }

    // ----- message handlers -----

    fn handle_connect_ack(&mut self, entry: NodeId, nodes: Vec<NodeId>, partitions: u32) {
        if nodes.is_empty() || self.connected {
            return;
        }
        self.partitions = partitions;
        self.entry = Some(entry);
        self.nodes = nodes;
        self.connected = true;
        for token in std::mem::take(&mut self.waiting_connect) {
            let result = Ok(self.nodes.clone());
            self.outputs.push(ClientOutput::Connected { token, result });
        }
    }

    /// A refusal with sequence number 0 answers a `Connect`. Only `WrongCluster` is
    /// final; anything else (not ready yet) is retried on the next timeout.
    fn handle_connect_refused(&mut self, reason: Refusal) {
        let Refusal::WrongCluster(s) = reason else {
            return;
        };
        let err = KvError::Rejected(format!("wrong cluster: {s}"));
        self.connect_error = Some(err.clone());
        for token in std::mem::take(&mut self.waiting_connect) {
            let result = Err(err.clone());
            self.outputs.push(ClientOutput::Connected { token, result });
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

    fn handle_response(&mut self, from: NodeId, client: ClientId, seq: u64, result: KvResult) {
        if !self.is_current(client, seq) {
            return;
        }
        if let Some(p) = self.current_partition(client) {
            self.hints.insert(p, from);
        }
        self.complete(client, Ok(result));
    }

    fn handle_refused(&mut self, client: ClientId, seq: u64, reason: Refusal) {
        if !self.is_current(client, seq) {
            return;
        }
        match reason {
            Refusal::Busy | Refusal::NotReady(_) => {
                if matches!(reason, Refusal::Busy) {
                    self.stats.busy += 1;
                }
                self.back_off(client);
            }
            Refusal::Moved {
                partition,
                epoch,
                replicas,
            } => {
                // Sent again at once to the new group; when that changes nothing for
                // this operation (the group is known, or the node did not know it),
                // after a back-off like `NotReady`: the new replicas may still be
                // starting.
                let resent = self.redirect_sessions(partition, epoch, replicas);
                if !resent.contains(&client) {
                    self.back_off(client);
                }
            }
            Refusal::TooLarge(s) => self.complete(client, Err(KvError::Rejected(s))),
            Refusal::WrongCluster(s) => self.complete(
                client,
                Err(KvError::Rejected(format!("wrong cluster: {s}"))),
            ),
        }
    }

    /// Sends the session's operation again after a back-off that doubles with each
    /// refusal in a row.
    fn back_off(&mut self, client: ClientId) {
        let jitter = self.rng.range_inclusive(0, BACKOFF_JITTER_MS);
        let (now, tick_ms) = (self.now, self.t.tick_ms);
        if let Some(cur) = self.current_mut(client) {
            cur.busy_count = (cur.busy_count + 1).min(BACKOFF_MAX_DOUBLINGS);
            let backoff_ms = (BACKOFF_BASE_MS << cur.busy_count) + jitter;
            cur.resend_at = Some(now + ms_to_ticks(backoff_ms, tick_ms));
        }
    }

    // ----- sessions -----

    fn send_connect(&mut self) {
        self.connect_sent = self.now;
        let to = self.nodes[self.connect_target % self.nodes.len()];
        self.connect_target += 1;
        let cluster = self.s.cluster.clone();
        self.outputs.push(ClientOutput::Send {
            to,
            msg: ClientMessage::Connect { cluster },
        });
    }

    /// Finishes the current operation of `session` and starts its next one.
    fn complete(&mut self, session: ClientId, result: Result<KvResult, KvError>) {
        let Some(cur) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.current.take())
        else {
            return;
        };
        self.in_progress -= 1;
        self.outputs
            .push(ClientOutput::Completed((session, cur.tag, result)));
        if self.sessions.get(&session).is_some_and(|s| s.closing) {
            self.sessions.remove(&session);
            return;
        }
        self.start_next(session);
    }

    /// Starts the head of the session's queue if nothing runs; after a refused
    /// connect, fails the whole queue instead.
    fn start_next(&mut self, session: ClientId) {
        loop {
            let target = match self.sessions.get(&session) {
                Some(s) if s.current.is_none() => match s.queue.front() {
                    Some((_, op)) => self.target_for(op),
                    None => return,
                },
                _ => return,
            };
            let error = self.connect_error.clone();
            let now = self.now;
            let Some(s) = self.sessions.get_mut(&session) else {
                return;
            };
            let Some((tag, op)) = s.queue.pop_front() else {
                return;
            };
            if let Some(err) = error {
                self.outputs
                    .push(ClientOutput::Completed((session, tag, Err(err))));
                continue;
            }
            s.seq += 1;
            s.current = Some(Current {
                seq: s.seq,
                tag,
                op,
                started: now,
                attempt_started: now,
                target,
                resend_at: None,
                busy_count: 0,
            });
            self.in_progress += 1;
            self.send_current(session);
            return;
        }
    }

    /// Sends an attempt of the session's current operation to its target.
    fn send_current(&mut self, session: ClientId) {
        let now = self.now;
        let Some(cur) = self.current_mut(session) else {
            return;
        };
        cur.attempt_started = now;
        cur.resend_at = None;
        let req = ClientRequest {
            client: session,
            seq: cur.seq,
            op: cur.op.clone(),
        };
        let to = cur.target;
        if self.in_progress == 1 && !self.flush_pending {
            // The only operation in progress: nothing to gather it with.
            self.outputs.push(ClientOutput::Send {
                to,
                msg: ClientMessage::Request(req),
            });
            return;
        }
        self.batch.entry(to).or_default().push(req);
        self.request_flush();
    }

    fn request_flush(&mut self) {
        if !self.flush_pending {
            self.flush_pending = true;
            self.flush_requested = true;
        }
    }

    /// Sends the current operation to the next candidate after the one that did not
    /// answer, forgetting the partition's leader hint.
    fn fail_over(&mut self, session: ClientId) {
        let partition = self.current_partition(session);
        if let Some(p) = partition {
            self.hints.remove(&p);
        }
        let group = partition.and_then(|p| self.groups.get(&p).map(|g| g.nodes.clone()));
        let nodes = self.nodes.clone();
        if let Some(cur) = self.current_mut(session) {
            match group {
                Some(g) => {
                    // A member after the one that failed; the first if it was not one.
                    let next = g.iter().position(|x| *x == cur.target).map_or(0, |i| i + 1);
                    cur.target = g[next % g.len()];
                }
                None if nodes.len() > 1 => {
                    let pos = nodes.iter().position(|x| *x == cur.target).unwrap_or(0);
                    cur.target = nodes[(pos + 1) % nodes.len()];
                }
                None => {}
            }
        }
        self.send_current(session);
    }

    // ----- helpers -----

    fn no_answer(&self, target: NodeId) -> String {
        format!(
            "no answer from {} within {} (is the cluster up?)",
            target,
            fmt_duration(self.s.deadline)
        )
    }

    fn is_current(&self, session: ClientId, seq: u64) -> bool {
        self.sessions
            .get(&session)
            .and_then(|s| s.current.as_ref())
            .is_some_and(|c| c.seq == seq)
    }

    fn current_mut(&mut self, session: ClientId) -> Option<&mut Current> {
        self.sessions
            .get_mut(&session)
            .and_then(|s| s.current.as_mut())
    }

    fn current_partition(&self, session: ClientId) -> Option<PartitionId> {
        self.sessions
            .get(&session)
            .and_then(|s| s.current.as_ref())
            .and_then(|c| self.partition_of(&c.op))
    }

    fn partition_of(&self, op: &KvOp) -> Option<PartitionId> {
        self.partition_of_key(op.key())
    }

    /// Where an operation goes first: its partition's leader if one answered, else a
    /// member of the partition's group if a redirect named one, else the entry node.
    fn target_for(&self, op: &KvOp) -> NodeId {
        self.target_for_partition(self.partition_of(op))
    }

    fn target_for_partition(&self, p: Option<PartitionId>) -> NodeId {
        p.and_then(|p| {
            self.hints
                .get(&p)
                .or_else(|| self.groups.get(&p).and_then(|g| g.nodes.first()))
                .copied()
        })
        .or(self.entry)
        .unwrap_or(self.s.endpoint)
    }
}

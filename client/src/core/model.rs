//! Property tests: the core against a seeded model of a cluster whose nodes drop,
//! duplicate, delay and reorder answers, refuse with `Busy`, and crash, while the
//! client is told of moved groups (redirects) now and then.
//!
//! Every operation is a PUT whose value names its `(session, tag)`, so each request
//! on the wire says which operation it carries. A node answers `(client, seq)` with a
//! value naming that pair, so a completion shows which answer it carries. The run
//! checks, at every step:
//! - every submitted operation completes exactly once, in its session's order;
//! - every attempt of an operation carries the same `(client, seq)`, and an
//!   operation's `seq` is its session's previous one plus one;
//! - a session never sends an operation before the previous one completed;
//! - every operation completes by its deadline tick (counted from the tick it could
//!   start: its submission, or the completion of the one before it);
//! - a successful completion carries the answer to its own `(client, seq)`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use kv_ports::ClientResponse;
use proptest::prelude::*;

use super::*;

fn node(i: usize) -> NodeId {
    SocketAddr::from(([10, 0, 0, 2], 8000 + i as u16))
}

/// How the model cluster misbehaves.
#[derive(Clone, Debug)]
struct Faults {
    nodes: usize,
    partitions: u32,
    /// Probability that a node ignores a message.
    drop: f64,
    /// Probability that an answer is sent twice.
    dup: f64,
    /// Probability that a request is refused with `Busy` (or `NotReady`).
    busy: f64,
    /// Answers arrive 0..=max_delay ticks after the request (so later answers can
    /// overtake earlier ones).
    max_delay: u64,
    /// Nodes that crash, and when.
    crashes: Vec<(u64, usize)>,
    /// Redirects the client is given: (tick, partition, epoch, nodes); epochs may go
    /// backwards and node lists may be empty, as late or bogus redirects would.
    redirects: Vec<(u64, PartitionId, u64, Vec<usize>)>,
}

/// Sessions, and the operations each submits (by tick).
#[derive(Clone, Debug)]
struct Workload {
    /// Per session: submission ticks of its operations (sorted).
    sessions: Vec<Vec<u64>>,
    /// Submit the operations due at one tick as one batch.
    batch: bool,
}

/// What the checker knows about one session.
#[derive(Debug, Default)]
struct SessionLog {
    /// Tags submitted and not completed, in submission order.
    pending: VecDeque<u64>,
    /// Submission tick per tag.
    submitted: BTreeMap<u64, u64>,
    /// Completion tick per tag.
    completed: BTreeMap<u64, u64>,
    /// The seq each tag was sent with.
    seq_of: BTreeMap<u64, u64>,
    /// The last seq sent.
    last_seq: u64,
}

struct Run {
    seed: u64,
    core: ClientCore,
    rng: SplitMix64,
    f: Faults,
    crashed: BTreeSet<NodeId>,
    /// Answers in flight to the client: (arrival tick, order, from, message).
    wire: BTreeMap<(u64, u64), (NodeId, ClientMessage)>,
    order: u64,
    log: BTreeMap<ClientId, SessionLog>,
    flush_due: bool,
    errors: Vec<String>,
    /// Operations that completed with an error.
    failures: u64,
}

fn session_id(i: usize) -> ClientId {
    100 + i as u64
}

fn value_of(session: ClientId, tag: u64) -> String {
    format!("{session}/{tag}")
}

fn answer_of(client: ClientId, seq: u64) -> String {
    format!("{client}#{seq}")
}

impl Run {
    fn new(seed: u64, f: Faults, sessions: usize) -> Self {
        let settings = ClientSettings {
            endpoint: node(0),
            cluster: "model".to_string(),
            client_id: session_id(0),
            // 10 ticks per attempt, 100 per operation; back-off 4..=130 ticks.
            request_timeout: Duration::from_millis(50),
            deadline: Duration::from_millis(500),
            tick_period: Duration::from_millis(5),
        };
        let mut core = ClientCore::new(settings);
        let mut log = BTreeMap::new();
        for i in 0..sessions {
            core.open_session(session_id(i));
            log.insert(session_id(i), SessionLog::default());
        }
        let mut run = Run {
            seed,
            core,
            rng: SplitMix64::new(seed),
            f,
            crashed: BTreeSet::new(),
            wire: BTreeMap::new(),
            order: 0,
            log,
            flush_due: false,
            errors: Vec::new(),
            failures: 0,
        };
        run.drain();
        run
    }

    fn err(&mut self, e: String) {
        let now = self.core.now();
        self.errors
            .push(format!("seed {}, tick {now}: {e}", self.seed));
    }

    fn post(&mut self, from: NodeId, msg: ClientMessage) {
        let copies = if self.rng.chance(self.f.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.core.now() + self.rng.range_inclusive(0, self.f.max_delay);
            self.order += 1;
            self.wire.insert((at, self.order), (from, msg.clone()));
        }
    }

    /// A model node receives `msg` from the client.
    fn node_receives(&mut self, to: NodeId, msg: ClientMessage) {
        if self.crashed.contains(&to) || self.rng.chance(self.f.drop) {
            return;
        }
        let reqs = match msg {
            ClientMessage::Connect { .. } => {
                let live: Vec<NodeId> = (0..self.f.nodes)
                    .map(node)
                    .filter(|n| !self.crashed.contains(n))
                    .collect();
                let entry = live[self.rng.below(live.len() as u64) as usize];
                let ack = ClientMessage::ConnectAck {
                    entry,
                    nodes: (0..self.f.nodes).map(node).collect(),
                    partitions: self.f.partitions,
                };
                return self.post(to, ack);
            }
            ClientMessage::Request(r) => vec![r],
            ClientMessage::Requests(rs) => rs,
            m => return self.err(format!("the client sent {m:?}")),
        };
        let mut answers = Vec::new();
        for r in reqs {
            if self.rng.chance(self.f.drop) {
                continue;
            }
            if self.rng.chance(self.f.busy) {
                let reason = if self.rng.chance(0.5) {
                    Refusal::Busy
                } else {
                    Refusal::NotReady("model".into())
                };
                self.post(
                    to,
                    ClientMessage::Refused {
                        client: r.client,
                        seq: r.seq,
                        reason,
                    },
                );
                continue;
            }
            answers.push(ClientResponse {
                client: r.client,
                seq: r.seq,
                result: KvResult::Value(answer_of(r.client, r.seq)),
            });
        }
        match answers.len() {
            0 => {}
            1 => {
                let r = answers.remove(0);
                self.post(
                    to,
                    ClientMessage::Response {
                        client: r.client,
                        seq: r.seq,
                        result: r.result,
                    },
                );
            }
            _ => self.post(to, ClientMessage::Responses(answers)),
        }
    }

    fn check_request(&mut self, r: &ClientRequest) {
        let now = self.core.now();
        let KvOp::Put { value, .. } = &r.op else {
            return self.err(format!("unexpected op {:?}", r.op));
        };
        let Some(tag) = value
            .split_once('/')
            .filter(|(s, _)| *s == r.client.to_string())
            .and_then(|(_, t)| t.parse::<u64>().ok())
        else {
            return self.err(format!("request {r:?} carries another session's op"));
        };
        let Some(log) = self.log.get_mut(&r.client) else {
            return self.err(format!("request for unknown session {}", r.client));
        };
        let mut problems = Vec::new();
        if log.pending.front() != Some(&tag) {
            problems.push(format!(
                "session {} sent tag {tag} while {:?} is its oldest unfinished",
                r.client,
                log.pending.front()
            ));
        }
        if log.submitted.get(&tag).is_none_or(|at| *at > now) {
            problems.push(format!("tag {tag} sent before it was submitted"));
        }
        match log.seq_of.get(&tag) {
            Some(seq) if *seq != r.seq => {
                problems.push(format!("retry of tag {tag} changed seq {seq} -> {}", r.seq))
            }
            Some(_) => {}
            None => {
                if r.seq != log.last_seq + 1 {
                    problems.push(format!(
                        "tag {tag} got seq {} after {}",
                        r.seq, log.last_seq
                    ));
                }
                log.seq_of.insert(tag, r.seq);
                log.last_seq = r.seq;
            }
        }
        for p in problems {
            self.err(p);
        }
    }

    fn check_completion(&mut self, (session, tag, result): Completion) {
        let now = self.core.now();
        let deadline = self.core.deadline_ticks();
        let Some(log) = self.log.get_mut(&session) else {
            return self.err(format!("completion for unknown session {session}"));
        };
        let mut problems = Vec::new();
        if log.completed.contains_key(&tag) {
            problems.push(format!("tag {tag} of session {session} completed twice"));
        }
        if log.pending.front() != Some(&tag) {
            problems.push(format!(
                "session {session} completed tag {tag} while {:?} was first",
                log.pending.front()
            ));
        } else {
            log.pending.pop_front();
        }
        // It could start when it was submitted and the one before had completed.
        let start = log
            .submitted
            .get(&tag)
            .copied()
            .unwrap_or(0)
            .max(log.completed.values().copied().max().unwrap_or(0));
        if now > start + deadline {
            problems.push(format!(
                "tag {tag} of session {session} completed at {now}, startable at {start}, \
                 deadline {deadline} ticks"
            ));
        }
        log.completed.insert(tag, now);
        if result.is_err() {
            self.failures += 1;
        }
        match result {
            Ok(KvResult::Value(v)) => {
                let want = log.seq_of.get(&tag).map(|seq| answer_of(session, *seq));
                if want.as_deref() != Some(v.as_str()) {
                    problems.push(format!("tag {tag} got {v:?}, expected {want:?}"));
                }
            }
            Ok(r) => problems.push(format!("tag {tag} got {r:?}")),
            Err(KvError::Unavailable(_)) => {}
            Err(e) => problems.push(format!("tag {tag} failed with {e:?}")),
        }
        for p in problems {
            self.err(p);
        }
    }

    /// Carries out the core's outputs.
    fn drain(&mut self) {
        if self.core.take_flush_request() {
            self.flush_due = true;
        }
        for o in self.core.take_outputs() {
            match o {
                ClientOutput::Send { to, msg } => {
                    let reqs = match &msg {
                        ClientMessage::Request(r) => vec![r.clone()],
                        ClientMessage::Requests(rs) => rs.clone(),
                        _ => vec![],
                    };
                    for r in &reqs {
                        self.check_request(r);
                    }
                    self.node_receives(to, msg);
                }
                ClientOutput::Completed(c) => self.check_completion(c),
                ClientOutput::Connected { .. } => {}
            }
        }
        if self.core.in_progress() > self.log.len() {
            self.err("more operations in progress than sessions".into());
        }
    }

    fn submit(&mut self, session: ClientId, tag: u64) -> (ClientId, u64, KvOp) {
        let now = self.core.now();
        if let Some(log) = self.log.get_mut(&session) {
            log.pending.push_back(tag);
            log.submitted.insert(tag, now);
        }
        let op = KvOp::Put {
            key: format!("key-{}", tag % 5),
            value: value_of(session, tag),
        };
        (session, tag, op)
    }

    /// Runs the workload to the end; returns the problems found and the number of
    /// operations that failed.
    fn run(mut self, w: &Workload) -> (Vec<String>, u64) {
        // (tick, session, tag), in order.
        let mut plan: Vec<(u64, ClientId, u64)> = Vec::new();
        for (i, ticks) in w.sessions.iter().enumerate() {
            for (tag, at) in ticks.iter().enumerate() {
                plan.push((*at, session_id(i), tag as u64));
            }
        }
        plan.sort();
        let ops = plan.len() as u64;
        let last = plan.last().map_or(0, |p| p.0);
        let end = last + (ops + 2) * (self.core.deadline_ticks() + 1);
        let mut plan: VecDeque<_> = plan.into();
        let mut crashes: VecDeque<_> = {
            let mut c = self.f.crashes.clone();
            c.sort();
            c.into()
        };
        let mut redirects: VecDeque<_> = {
            let mut r = self.f.redirects.clone();
            r.sort_by_key(|r| r.0);
            r.into()
        };
        while self.core.now() < end {
            let now = self.core.now();
            while crashes.front().is_some_and(|c| c.0 <= now) {
                if let Some((_, n)) = crashes.pop_front() {
                    self.crashed.insert(node(n));
                }
            }
            while redirects.front().is_some_and(|r| r.0 <= now) {
                if let Some((_, p, epoch, nodes)) = redirects.pop_front() {
                    self.core
                        .redirect(p, epoch, nodes.into_iter().map(node).collect());
                    self.drain();
                }
            }
            let mut due = Vec::new();
            while plan.front().is_some_and(|p| p.0 <= now) {
                if let Some((_, s, t)) = plan.pop_front() {
                    due.push(self.submit(s, t));
                }
            }
            if w.batch {
                self.core.submit_batch(due);
                self.drain();
            } else {
                for (s, t, op) in due {
                    self.core.submit(s, t, op);
                    self.drain();
                }
            }
            while let Some(((at, o), _)) = self.wire.first_key_value() {
                if *at > now {
                    break;
                }
                let key = (*at, *o);
                if let Some((from, msg)) = self.wire.remove(&key) {
                    self.core.handle(from, msg);
                    self.drain();
                }
            }
            if self.flush_due {
                self.flush_due = false;
                self.core.flush();
                self.drain();
            }
            self.core.tick();
            self.drain();
            if !self.errors.is_empty() {
                return (self.errors, self.failures);
            }
        }
        for (id, log) in &self.log {
            if !log.pending.is_empty() {
                self.errors.push(format!(
                    "seed {}: session {id} never completed {:?}",
                    self.seed, log.pending
                ));
            }
        }
        if self.core.in_progress() != 0 {
            self.errors
                .push(format!("seed {}: work left in the core", self.seed));
        }
        (self.errors, self.failures)
    }
}

fn faults() -> impl Strategy<Value = Faults> {
    (
        1usize..=5,
        1u32..=4,
        0.0..0.6,
        0.0..0.5,
        0.0..0.5,
        0u64..=30,
    )
        .prop_flat_map(|(nodes, partitions, drop, dup, busy, max_delay)| {
            let crashes = proptest::collection::vec((0u64..600, 0..nodes), 0..=nodes);
            let redirect = (
                0u64..600,
                0..partitions,
                0u64..4,
                proptest::collection::vec(0..nodes, 0..=3),
            );
            let redirects = proptest::collection::vec(redirect, 0..=3);
            (crashes, redirects).prop_map(move |(crashes, redirects)| Faults {
                nodes,
                partitions,
                drop,
                dup,
                busy,
                max_delay,
                crashes,
                redirects,
            })
        })
}

fn workload() -> impl Strategy<Value = Workload> {
    (
        proptest::collection::vec(proptest::collection::vec(0u64..300, 0..8), 1..=4),
        any::<bool>(),
    )
        .prop_map(|(mut sessions, batch)| {
            for s in &mut sessions {
                s.sort();
            }
            Workload { sessions, batch }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Under loss, duplication, delay, reordering, busy nodes and crashes, every
    /// operation completes exactly once, in order, by its deadline, with one
    /// `(client, seq)` for all its attempts and never two at once in a session.
    #[test]
    fn every_operation_completes_once_in_order_by_its_deadline(
        seed in any::<u64>(),
        f in faults(),
        w in workload(),
    ) {
        let (errors, _) = Run::new(seed, f, w.sessions.len()).run(&w);
        prop_assert!(errors.is_empty(), "{}", errors.join("\n"));
    }

    /// With a cluster that answers in time (no loss, no crash, rare refusals), every
    /// operation succeeds.
    #[test]
    fn a_healthy_cluster_answers_every_operation(
        seed in any::<u64>(),
        nodes in 1usize..=5,
        partitions in 1u32..=4,
        max_delay in 0u64..=8,
        w in workload(),
    ) {
        let f = Faults {
            nodes,
            partitions,
            drop: 0.0,
            dup: 0.2,
            busy: 0.02,
            max_delay,
            crashes: vec![],
            redirects: vec![],
        };
        let (errors, failures) = Run::new(seed, f, w.sessions.len()).run(&w);
        prop_assert!(errors.is_empty(), "{}", errors.join("\n"));
        prop_assert_eq!(failures, 0, "seed {}", seed);
    }
}

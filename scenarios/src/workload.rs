//! Simulated clients: a [`ClientDriver`] per client session issues operations on the
//! session's `KeyValue` port and records each one in a shared [`Recorder`], in the
//! history format of `kv-checker`.
//!
//! History times are virtual nanoseconds. Many events share one virtual millisecond
//! (with the course's zero-latency network a whole operation does), so the recorder
//! adds a sub-millisecond sequence: an event recorded after another always gets a
//! larger time, and real-time order between operations is kept exactly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kompact::prelude::*;
use kompact::timer::ManualTimer;
use kv_checker::{HistoryOp, Op};
use kv_ports::{KeyValue, KvError, KvOp, KvRequest, KvResponse, KvResult};
use kv_protocols::rng::SplitMix64;

/// One operation as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// The client number of the scenario (the `i` of address `192.193.1.i`).
    pub client: usize,
    /// The session's client id (unique in the run).
    pub session: u64,
    /// The operation.
    pub op: KvOp,
    /// Invocation, in virtual nanoseconds.
    pub call: u64,
    /// Answer, in virtual nanoseconds; `None` while (or if forever) unanswered.
    pub ret: Option<u64>,
    /// The outcome, once answered; an error means the outcome is unknown.
    pub result: Option<Result<KvResult, KvError>>,
}

impl OpRecord {
    /// Whether the operation got a definite answer from the store.
    pub fn succeeded(&self) -> bool {
        matches!(self.result, Some(Ok(_)))
    }

    /// The operation in the checker's format. Timeouts, refusals and operations
    /// that never returned have unknown outcome. `None` if the result does not fit
    /// the operation (reported separately as a protocol error).
    pub fn to_history(&self) -> Option<HistoryOp> {
        let known = match &self.result {
            Some(Ok(r)) => Some(r),
            _ => None,
        };
        let ret = known.and(self.ret);
        let op = match (&self.op, known) {
            (KvOp::Get { key }, None) => Op::Get {
                key: key.clone(),
                out: None,
            },
            (KvOp::Get { key }, Some(KvResult::Value(v))) => Op::Get {
                key: key.clone(),
                out: Some(v.clone()),
            },
            (KvOp::Get { key }, Some(KvResult::NotFound)) => Op::Get {
                key: key.clone(),
                out: None,
            },
            (KvOp::Put { key, value }, None | Some(KvResult::Done)) => Op::Put {
                key: key.clone(),
                value: value.clone(),
            },
            (KvOp::Cas { key, expected, new }, r) => {
                let ok = match r {
                    None | Some(KvResult::Done) => true,
                    Some(KvResult::NotFound | KvResult::CasMismatch { .. }) => false,
                    Some(KvResult::Value(_)) => return None,
                };
                Op::Cas {
                    key: key.clone(),
                    from: expected.clone(),
                    to: new.clone(),
                    ok,
                }
            }
            (KvOp::Delete { key }, None | Some(KvResult::Done | KvResult::NotFound)) => Op::Del {
                key: key.clone(),
                existed: matches!(known, Some(KvResult::Done)),
            },
            _ => return None,
        };
        Some(HistoryOp {
            client: self.session,
            call: self.call,
            ret,
            op,
        })
    }
}

/// Collects the operations of every client of one run.
pub struct Recorder {
    clock: ManualTimer,
    last_ns: u64,
    ops: Vec<OpRecord>,
    /// Operations planned by the drivers created so far.
    planned: usize,
    /// Operations answered (or given up on by the client).
    finished: usize,
    /// Per scenario client: (planned, finished).
    per_client: BTreeMap<usize, (usize, usize)>,
    trace: bool,
}

/// A recorder shared by the drivers of one run (they all run on the driver thread).
pub type SharedRecorder = Arc<Mutex<Recorder>>;

impl Recorder {
    /// An empty recorder on the simulation's clock.
    pub fn shared(clock: ManualTimer, trace: bool) -> SharedRecorder {
        Arc::new(Mutex::new(Recorder {
            clock,
            last_ns: 0,
            ops: Vec::new(),
            planned: 0,
            finished: 0,
            per_client: BTreeMap::new(),
            trace,
        }))
    }

    /// The next history time: virtual now, or just after the previous event.
    fn stamp(&mut self) -> u64 {
        let now = u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ns = now.max(self.last_ns + 1);
        self.last_ns
    }

    fn call(&mut self, client: usize, session: u64, op: KvOp) -> usize {
        let call = self.stamp();
        if self.trace {
            println!("{} client {client}/{session} CALL {op:?}", fmt_ns(call));
        }
        self.ops.push(OpRecord {
            client,
            session,
            op,
            call,
            ret: None,
            result: None,
        });
        self.ops.len() - 1
    }

    fn ret(&mut self, idx: usize, result: Result<KvResult, KvError>) {
        let ret = self.stamp();
        if let Some(rec) = self.ops.get_mut(idx)
            && rec.ret.is_none()
        {
            if self.trace {
                println!(
                    "{} client {}/{} RET {:?} -> {:?}",
                    fmt_ns(ret),
                    rec.client,
                    rec.session,
                    rec.op,
                    result
                );
            }
            rec.ret = Some(ret);
            rec.result = Some(result);
            self.finished += 1;
            self.per_client.entry(rec.client).or_default().1 += 1;
        }
    }

    /// Whether every planned operation has finished.
    pub fn all_done(&self) -> bool {
        self.finished >= self.planned
    }

    /// Whether client `client` has finished every operation it planned.
    pub fn client_done(&self, client: usize) -> bool {
        self.per_client
            .get(&client)
            .is_none_or(|(planned, finished)| finished >= planned)
    }

    fn plan(&mut self, client: usize, n: usize) {
        self.planned += n;
        self.per_client.entry(client).or_default().0 += n;
    }

    /// Operations planned and finished so far.
    pub fn progress(&self) -> (usize, usize) {
        (self.finished, self.planned)
    }

    /// The operations recorded, in call order.
    pub fn ops(&self) -> Vec<OpRecord> {
        self.ops.clone()
    }
}

fn fmt_ns(ns: u64) -> String {
    let ms = ns / 1_000_000;
    format!("[{:>6}.{:03}s]", ms / 1000, ms % 1000)
}

fn lock(r: &SharedRecorder) -> MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Relative weights of GET, PUT, CAS and DELETE in a random workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Weight of GET.
    pub get: u32,
    /// Weight of PUT.
    pub put: u32,
    /// Weight of CAS (against a value, or against absent: see [`ClosedLoop`]).
    pub cas: u32,
    /// Weight of DELETE.
    pub del: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            get: 1,
            put: 1,
            cas: 1,
            del: 1,
        }
    }
}

/// A closed-loop random workload: one operation at a time, the next issued when the
/// previous one is answered (after `think`).
///
/// Like `kvstore bench`: keys are drawn uniformly; a PUT writes a value unique to
/// the session and operation; a CAS expects what the session last saw of the key:
/// the value it read or wrote, or absence (a create-if-absent) once it learnt that
/// the key does not exist (a GET, CAS or DELETE that found nothing, or its own
/// DELETE), and a never-written value for a key it has not touched; so its outcome
/// means something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedLoop {
    /// Operations to issue.
    pub ops: usize,
    /// The key space.
    pub keys: Vec<String>,
    /// Operation mix.
    pub mix: Mix,
    /// Seed of the session's choices.
    pub seed: u64,
    /// Pause between an answer and the next operation.
    pub think: Duration,
}

/// What one session does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Submit all these operations at once when the session starts (open loop; the
    /// session runs them one after the other, each recorded from its submission).
    Burst(Vec<KvOp>),
    /// These operations one after the other: each is submitted when the previous
    /// one has been answered, so each is invoked after the previous returned.
    Sequence(Vec<KvOp>),
    /// A closed-loop random workload.
    ClosedLoop(ClosedLoop),
}

impl Plan {
    /// Number of operations the plan issues.
    pub fn len(&self) -> usize {
        match self {
            Plan::Burst(ops) | Plan::Sequence(ops) => ops.len(),
            Plan::ClosedLoop(c) => c.ops,
        }
    }

    /// Whether the plan issues nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drives one client session (a `ClientComp`) through its [`Plan`].
#[derive(ComponentDefinition)]
pub struct ClientDriver {
    ctx: ComponentContext<Self>,
    kv_port: RequiredPort<KeyValue>,
    client: usize,
    session: u64,
    plan: Plan,
    rec: SharedRecorder,
    /// Tag of an outstanding request → index in the recorder.
    outstanding: BTreeMap<u64, usize>,
    issued: usize,
    rng: SplitMix64,
    /// What this session last saw of each key it touched (closed loop): the value
    /// it read or wrote, or `None` once it learnt the key does not exist.
    known: BTreeMap<String, Option<String>>,
}

impl ClientDriver {
    /// A driver for session `session` of scenario client `client`.
    pub fn new(client: usize, session: u64, plan: Plan, rec: SharedRecorder) -> Self {
        let seed = match &plan {
            Plan::ClosedLoop(c) => c.seed,
            Plan::Burst(_) | Plan::Sequence(_) => session,
        };
        lock(&rec).plan(client, plan.len());
        ClientDriver {
            ctx: ComponentContext::uninitialised(),
            kv_port: RequiredPort::uninitialised(),
            client,
            session,
            plan,
            rec,
            outstanding: BTreeMap::new(),
            issued: 0,
            rng: SplitMix64::new(seed),
            known: BTreeMap::new(),
        }
    }

    fn submit(&mut self, op: KvOp) {
        let idx = lock(&self.rec).call(self.client, self.session, op.clone());
        let tag = idx as u64;
        self.outstanding.insert(tag, idx);
        self.issued += 1;
        self.kv_port.trigger(KvRequest { tag, op });
    }

    fn next_op(&mut self) -> Option<KvOp> {
        let c = match &self.plan {
            Plan::Burst(_) => return None,
            Plan::Sequence(ops) => return ops.get(self.issued).cloned(),
            Plan::ClosedLoop(c) => c,
        };
        if self.issued >= c.ops || c.keys.is_empty() {
            return None;
        }
        let key = c.keys[self.rng.below(c.keys.len() as u64) as usize].clone();
        let total = u64::from(c.mix.get + c.mix.put + c.mix.cas + c.mix.del).max(1);
        let pick = self.rng.below(total);
        let unique = format!("s{}-{}", self.session, self.issued + 1);
        let op = if pick < u64::from(c.mix.get) {
            KvOp::Get { key }
        } else if pick < u64::from(c.mix.get + c.mix.put) {
            KvOp::Put { key, value: unique }
        } else if pick < u64::from(c.mix.get + c.mix.put + c.mix.cas) {
            let expected = match self.known.get(&key) {
                Some(seen) => seen.clone(),
                None => Some(format!("never-{}", self.session)),
            };
            KvOp::Cas {
                key,
                expected,
                new: unique,
            }
        } else {
            KvOp::Delete { key }
        };
        Some(op)
    }

    fn learn(&mut self, op: &KvOp, result: &Result<KvResult, KvError>) {
        match (op, result) {
            (KvOp::Get { key }, Ok(KvResult::Value(v))) => {
                self.known.insert(key.clone(), Some(v.clone()));
            }
            (KvOp::Get { key } | KvOp::Cas { key, .. }, Ok(KvResult::NotFound))
            | (KvOp::Delete { key }, Ok(KvResult::Done | KvResult::NotFound)) => {
                self.known.insert(key.clone(), None);
            }
            (KvOp::Put { key, value }, Ok(KvResult::Done)) => {
                self.known.insert(key.clone(), Some(value.clone()));
            }
            (KvOp::Cas { key, new, .. }, Ok(KvResult::Done)) => {
                self.known.insert(key.clone(), Some(new.clone()));
            }
            (KvOp::Cas { key, .. }, Ok(KvResult::CasMismatch { current })) => {
                self.known.insert(key.clone(), Some(current.clone()));
            }
            _ => {}
        }
    }

    fn issue_next(&mut self) -> HandlerResult {
        if let Some(op) = self.next_op() {
            self.submit(op);
        }
        Handled::OK
    }
}

impl ComponentLifecycle for ClientDriver {
    fn on_start(&mut self) -> HandlerResult {
        match self.plan.clone() {
            Plan::Burst(ops) => {
                for op in ops {
                    self.submit(op);
                }
            }
            Plan::Sequence(_) | Plan::ClosedLoop(_) => {
                if let Some(op) = self.next_op() {
                    self.submit(op);
                }
            }
        }
        Handled::OK
    }
}

impl Require<KeyValue> for ClientDriver {
    fn handle(&mut self, resp: KvResponse) -> HandlerResult {
        let Some(idx) = self.outstanding.remove(&resp.tag) else {
            return Handled::OK;
        };
        let op = {
            let mut rec = lock(&self.rec);
            rec.ret(idx, resp.result.clone());
            rec.ops[idx].op.clone()
        };
        self.learn(&op, &resp.result);
        match &self.plan {
            Plan::Burst(_) => Handled::OK,
            Plan::Sequence(_) => self.issue_next(),
            Plan::ClosedLoop(c) if c.think.is_zero() => self.issue_next(),
            Plan::ClosedLoop(c) => {
                let think = c.think;
                self.schedule_once(think, |d, _| d.issue_next());
                Handled::OK
            }
        }
    }
}

impl Actor for ClientDriver {
    type Message = Never;

    fn receive_local(&mut self, msg: Never) -> HandlerResult {
        match msg {}
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

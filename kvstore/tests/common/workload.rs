//! A workload of client sessions for the process tests: each session runs GET, PUT
//! and CAS on a few shared keys and PUTs on keys of its own, records every
//! operation for `kvstore check-history`, and, when stopped, reads back every
//! write of its own keys that was acknowledged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kv_checker::{HistoryOp, Op};
use kv_client::{ClientOptions, ClientSystem, Error, Session};
use kv_ports::{KvOp, KvResult};
use kv_protocols::rng::SplitMix64;

use super::{WAIT, run, wait_until};

/// Keys the sessions share (GET, PUT and CAS on them race with each other).
const SHARED_KEYS: u64 = 4;

/// What one session did.
#[derive(Default)]
pub struct SessionLog {
    pub history: Vec<HistoryOp>,
    /// (key, value) of every acknowledged PUT on a key only this session writes.
    pub acked: Vec<(String, String)>,
    /// Operations that got no answer (they may or may not have taken effect).
    pub unknown: u64,
    /// Operations refused before they could take effect.
    pub rejected: Vec<String>,
}

pub struct Workload {
    system: Option<ClientSystem>,
    stop: Arc<AtomicBool>,
    /// Set when the test fails: the sessions stop without reading back.
    abandon: Arc<AtomicBool>,
    /// Operations answered so far, over all sessions.
    answered: Arc<AtomicU64>,
    threads: Vec<JoinHandle<SessionLog>>,
}

/// Runs `op` on `session`, records it in `log` with times from `origin`, and
/// returns its outcome.
fn record(
    session: &Session,
    client: u64,
    origin: Instant,
    op: KvOp,
    log: &mut SessionLog,
) -> Result<KvResult, Error> {
    let call = origin.elapsed().as_nanos() as u64;
    let r = session.execute(op.clone());
    let ret = origin.elapsed().as_nanos() as u64;
    let known = match &r {
        Ok(_) => true,
        Err(Error::Unavailable(_)) => {
            log.unknown += 1;
            false
        }
        Err(e) => {
            // Refused before it could take effect: not part of the history.
            log.rejected.push(format!("{op:?}: {e}"));
            return r;
        }
    };
    let body = match (&op, &r) {
        (KvOp::Get { key }, _) => Op::Get {
            key: key.clone(),
            out: match &r {
                Ok(KvResult::Value(v)) => Some(v.clone()),
                _ => None,
            },
        },
        (KvOp::Put { key, value }, _) => Op::Put {
            key: key.clone(),
            value: value.clone(),
        },
        (KvOp::Cas { key, expected, new }, _) => Op::Cas {
            key: key.clone(),
            from: expected.clone(),
            to: new.clone(),
            ok: matches!(r, Ok(KvResult::Done)),
        },
        (KvOp::Delete { key }, _) => Op::Del {
            key: key.clone(),
            existed: matches!(r, Ok(KvResult::Done)),
        },
    };
    log.history.push(HistoryOp {
        client,
        call,
        ret: known.then_some(ret),
        op: body,
    });
    r
}

/// One session: until `stop`, PUTs on keys of its own and GET / PUT / CAS on the
/// shared keys; then reads back every key of its own it saw acknowledged.
fn session_loop(
    idx: usize,
    session: Session,
    origin: Instant,
    pace: Option<Duration>,
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> SessionLog {
    let client = idx as u64 + 1;
    let mut log = SessionLog::default();
    let mut rng = SplitMix64::new(0x5EED + idx as u64);
    let mut known: HashMap<String, String> = HashMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let shared = format!("s{}", rng.below(SHARED_KEYS));
        let value = format!("c{client}-{n}");
        let op = match rng.below(8) {
            0..=2 => KvOp::Put {
                key: format!("own-{client}-{n}"),
                value: value.clone(),
            },
            3 | 4 => KvOp::Get { key: shared },
            5 | 6 => KvOp::Put {
                key: shared,
                value: value.clone(),
            },
            _ => KvOp::Cas {
                expected: Some(
                    known
                        .get(&shared)
                        .cloned()
                        .unwrap_or_else(|| format!("never-{client}")),
                ),
                key: shared,
                new: value.clone(),
            },
        };
        let r = record(&session, client, origin, op.clone(), &mut log);
        if r.is_ok() {
            answered.fetch_add(1, Ordering::SeqCst);
        }
        match (&op, r) {
            (KvOp::Put { key, value }, Ok(KvResult::Done)) => {
                if key.starts_with("own-") {
                    log.acked.push((key.clone(), value.clone()));
                } else {
                    known.insert(key.clone(), value.clone());
                }
            }
            (KvOp::Get { key }, Ok(KvResult::Value(v))) => {
                known.insert(key.clone(), v);
            }
            (KvOp::Cas { key, new, .. }, Ok(KvResult::Done)) => {
                known.insert(key.clone(), new.clone());
            }
            (KvOp::Cas { key, .. }, Ok(KvResult::CasMismatch { current })) => {
                known.insert(key.clone(), current);
            }
            _ => {}
        }
        if let Some(pace) = pace {
            std::thread::sleep(pace); // pacing, not a synchronisation
        }
    }
    // Every acknowledged write of this session's own keys is read back (in the
    // history too). An unanswered read is asked again; a wrong or missing value
    // fails the test.
    for (key, value) in log.acked.clone() {
        if abandon.load(Ordering::SeqCst) {
            break; // the test failed already
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let r = record(
                &session,
                client,
                origin,
                KvOp::Get { key: key.clone() },
                &mut log,
            );
            match r {
                Ok(KvResult::Value(v)) => {
                    assert_eq!(v, value, "acknowledged write of {key:?} read back wrong");
                    break;
                }
                Ok(other) => {
                    panic!("acknowledged write {key:?} = {value:?} read back as {other:?}")
                }
                Err(e) if tries < 3 => eprintln!("read-back of {key:?} unanswered ({e}), again"),
                Err(e) => panic!("acknowledged write of {key:?} could not be read back: {e}"),
            }
        }
    }
    log
}

impl Workload {
    /// Starts `sessions` sessions through `endpoint`, each pausing `pace` between
    /// two operations (`None`: a closed loop, as fast as answers come).
    pub fn start(endpoint: SocketAddr, sessions: usize, pace: Option<Duration>) -> Workload {
        Self::start_with(ClientOptions::new(endpoint), sessions, pace)
    }

    /// Like [`Workload::start`], with the client's options (a cluster secret, say);
    /// the deadline of each operation is set to 5 s.
    pub fn start_with(
        mut opts: ClientOptions,
        sessions: usize,
        pace: Option<Duration>,
    ) -> Workload {
        opts.deadline = Duration::from_secs(5);
        let system = ClientSystem::start(opts).expect("client system");
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let abandon = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let threads = (0..sessions)
            .map(|i| {
                let session = system.session();
                session.await_connected().expect("the workload connects");
                let (stop, abandon, answered) = (stop.clone(), abandon.clone(), answered.clone());
                std::thread::spawn(move || {
                    session_loop(i, session, origin, pace, stop, abandon, answered)
                })
            })
            .collect();
        Workload {
            system: Some(system),
            stop,
            abandon,
            answered,
            threads,
        }
    }

    /// Operations answered so far, over all sessions.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits until `more` operations beyond those answered now were answered.
    pub fn progress(&self, more: u64, what: &str) {
        let from = self.answered.load(Ordering::SeqCst);
        wait_until(
            &format!("the workload gets {more} answers {what}"),
            WAIT,
            || self.answered.load(Ordering::SeqCst) >= from + more,
        );
    }

    /// Stops the sessions, lets them read their keys back, and returns their logs.
    pub fn finish(mut self) -> Vec<SessionLog> {
        self.stop.store(true, Ordering::SeqCst);
        let logs = self
            .threads
            .drain(..)
            .map(|t| t.join().expect("a workload session failed"))
            .collect();
        if let Some(s) = self.system.take() {
            s.shutdown();
        }
        logs
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // A failing test must not leave sessions running.
        self.abandon.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Writes the sessions' histories to `path` and checks them with
/// `kvstore check-history`; panics unless they are linearizable. Returns the
/// number of operations.
pub fn assert_linearizable(logs: &[SessionLog], path: &Path) -> usize {
    let history: Vec<&HistoryOp> = logs.iter().flat_map(|l| &l.history).collect();
    let text: String = history
        .iter()
        .map(|h| format!("{}\n", h.to_json_line()))
        .collect();
    std::fs::write(path, text).expect("write the history");
    let r = run(&["check-history", &path.to_string_lossy()]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert!(r.stdout.starts_with("linearizable"), "{}", r.show());
    history.len()
}

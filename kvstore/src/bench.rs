//! `kvstore bench`: closed-loop clients against a running cluster.
//!
//! Every client is its own session (one operation at a time). Keys are picked
//! uniformly from `--keys`; a PUT writes a value unique to the client and its
//! sequence; a CAS expects the last value that client read or wrote for the key (a
//! never-written value if it has not touched it), so its outcome is meaningful to
//! check. One thread drives all sessions: it submits an operation, and on each
//! completion records the latency and submits the session's next one.

use std::collections::HashMap;
use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kompact::prelude::ActorRefFactory;
use kv_checker::{HistoryOp, Op};
use kv_client::{ClientCommand, ClientOptions, ClientSystem};
use kv_ports::{KvError, KvOp, KvResult};
use kv_protocols::rng::SplitMix64;
use kvstore::report::{self, Outcome, PerSecond};

/// The operation mix, as weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Weight of GET.
    pub get: u32,
    /// Weight of PUT.
    pub put: u32,
    /// Weight of CAS.
    pub cas: u32,
    /// Weight of DELETE.
    pub del: u32,
}

impl Mix {
    /// The sum of the weights.
    fn total(&self) -> u64 {
        [self.get, self.put, self.cas, self.del]
            .into_iter()
            .map(u64::from)
            .sum()
    }
}

/// Parse `get=1,put=1,cas=1,del=1` (missing kinds weigh 0).
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut m = Mix {
        get: 0,
        put: 0,
        cas: 0,
        del: 0,
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected KIND=WEIGHT (e.g. get=1)"))?;
        let w: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
        match k.trim() {
            "get" => m.get = w,
            "put" => m.put = w,
            "cas" => m.cas = w,
            "del" => m.del = w,
            other => {
                return Err(format!(
                    "{other:?}: unknown operation (get, put, cas or del)"
                ));
            }
        }
    }
    if m.total() == 0 {
        return Err("the mix must give some operation a positive weight".to_string());
    }
    Ok(m)
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Client options (endpoint, cluster, timeouts).
    pub client: ClientOptions,
    /// Concurrent sessions.
    pub clients: usize,
    /// Measured time; `None` measures until `ops` operations are done.
    pub duration: Option<Duration>,
    /// Stop after this many measured operations (or at the end of `duration`, if
    /// that comes first).
    pub ops: Option<u64>,
    /// Unmeasured time before; zero for none.
    pub warmup: Duration,
    /// Key space size.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Operation mix.
    pub mix: Mix,
    /// Seed of key and operation choice.
    pub seed: u64,
    /// Write a history (JSON lines) here.
    pub history: Option<std::path::PathBuf>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// The measured time when none is given: 10 s, or no limit when `--ops` is given
/// (the run then lasts until that many operations are done).
pub fn measured_time(duration: Option<Duration>, ops: Option<u64>) -> Option<Duration> {
    match (duration, ops) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_DURATION),
    }
}

/// The measured time when neither `--duration` nor `--ops` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Whether a run that has measured `ops` operations over `measured` time is done.
fn done(cfg: &BenchConfig, measured: Duration, ops: u64) -> bool {
    cfg.duration.is_some_and(|d| measured >= d) || cfg.ops.is_some_and(|n| ops >= n)
}

/// The result line.
#[derive(Debug)]
pub struct BenchReport {
    /// Sessions.
    pub clients: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Operations completed in the measured window.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Latency percentiles (µs).
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Refused operations.
    pub errors: u64,
    /// Operations without answer by the deadline.
    pub timeouts: u64,
    /// `Busy` refusals the client backed off on and retried (whole run, warm-up
    /// included); they are not errors, the operation went on.
    pub busy: u64,
    /// Per-second buckets of the whole run (warm-up included) on the history's
    /// clock, for `--report`.
    pub seconds: Vec<report::Second>,
    /// Latency by percentile over the measured window.
    pub percentiles: Vec<report::Percentile>,
    /// The slowest answered operation of the measured window, µs.
    pub max_us: u64,
    /// The warm-up's length, s.
    pub warmup_s: f64,
    /// When the run stopped, s on the history's clock.
    pub end_s: f64,
}

impl BenchReport {
    /// The JSON line `bench` prints.
    pub fn json(&self) -> String {
        self.json_value().to_string()
    }

    /// The result line as a JSON value.
    pub fn json_value(&self) -> serde_json::Value {
        serde_json::json!({
            "clients": self.clients,
            "duration_s": (self.duration_s * 1000.0).round() / 1000.0,
            "ops": self.ops,
            "ops_per_s": self.ops_per_s.round(),
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "busy": self.busy,
        })
    }

    /// The data of `--report DIR`.
    pub fn run_data(&self) -> report::RunData {
        report::RunData {
            format: report::FORMAT,
            title: "kvstore bench".to_string(),
            summary: self.json_value(),
            warmup_s: self.warmup_s,
            end_s: self.end_s,
            seconds: self.seconds.clone(),
            percentiles: self.percentiles.clone(),
            max_us: self.max_us,
            shades: Vec::new(),
        }
    }
}

struct SessionState {
    id: u64,
    /// What the session last saw of each key it touched: its value, or `None`
    /// when it learnt that the key does not exist.
    known: HashMap<String, Option<String>>,
    n: u64,
    started: Instant,
    op: Option<KvOp>,
}

fn make_value(client: usize, n: u64, size: usize) -> String {
    let mut v = format!("c{client}-{n}");
    while v.len() < size {
        v.push('.');
    }
    v
}

fn next_op(s: &mut SessionState, idx: usize, cfg: &BenchConfig, rng: &mut SplitMix64) -> KvOp {
    let key = format!("k{}", rng.below(cfg.keys.max(1)));
    let r = rng.below(cfg.mix.total());
    s.n += 1;
    let (get, put, cas) = (
        u64::from(cfg.mix.get),
        u64::from(cfg.mix.put),
        u64::from(cfg.mix.cas),
    );
    if r < get {
        KvOp::Get { key }
    } else if r < get + put {
        KvOp::Put {
            key,
            value: make_value(idx, s.n, cfg.value_size),
        }
    } else if r < get + put + cas {
        // The last value seen, absent included (then it is a create-if-absent);
        // a never-written value for a key the session has not touched.
        let expected = match s.known.get(&key) {
            Some(seen) => seen.clone(),
            None => Some(format!("never-written-{idx}")),
        };
        KvOp::Cas {
            key,
            expected,
            new: make_value(idx, s.n, cfg.value_size),
        }
    } else {
        KvOp::Delete { key }
    }
}

fn learn(s: &mut SessionState, op: &KvOp, r: &Result<KvResult, KvError>) {
    match (op, r) {
        (KvOp::Get { key }, Ok(KvResult::Value(v))) => {
            s.known.insert(key.clone(), Some(v.clone()));
        }
        (KvOp::Put { key, value }, Ok(KvResult::Done)) => {
            s.known.insert(key.clone(), Some(value.clone()));
        }
        (KvOp::Cas { key, new, .. }, Ok(KvResult::Done)) => {
            s.known.insert(key.clone(), Some(new.clone()));
        }
        (KvOp::Cas { key, .. }, Ok(KvResult::CasMismatch { current })) => {
            s.known.insert(key.clone(), Some(current.clone()));
        }
        // A DELETE that removed the key, or any operation that found nothing: the
        // key is absent now.
        (KvOp::Delete { .. }, Ok(KvResult::Done)) | (_, Ok(KvResult::NotFound)) => {
            s.known.insert(op.key().to_string(), None);
        }
        _ => {}
    }
}

fn history_op(
    client: u64,
    call: u64,
    ret: u64,
    op: &KvOp,
    r: &Result<KvResult, KvError>,
) -> Option<HistoryOp> {
    let unknown = matches!(r, Err(KvError::Unavailable(_)));
    if matches!(r, Err(KvError::Rejected(_))) {
        return None; // refused before it could take effect
    }
    let hop = match op {
        KvOp::Get { key } => Op::Get {
            key: key.clone(),
            out: match r {
                Ok(KvResult::Value(v)) => Some(v.clone()),
                _ => None,
            },
        },
        KvOp::Put { key, value } => Op::Put {
            key: key.clone(),
            value: value.clone(),
        },
        KvOp::Cas { key, expected, new } => Op::Cas {
            key: key.clone(),
            from: expected.clone(),
            to: new.clone(),
            ok: matches!(r, Ok(KvResult::Done)),
        },
        KvOp::Delete { key } => Op::Del {
            key: key.clone(),
            existed: matches!(r, Ok(KvResult::Done)),
        },
    };
    Some(HistoryOp {
        client,
        call,
        ret: if unknown { None } else { Some(ret) },
        op: hop,
    })
}

/// Run the benchmark.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, String> {
    let system = ClientSystem::start(cfg.client.clone()).map_err(|e| e.to_string())?;
    let session = system.session();
    session.await_connected().map_err(|e| e.to_string())?;
    let comp = session.component().clone();
    let (tx, rx) = mpsc::channel();
    let mut rng = SplitMix64::new(cfg.seed);
    let mut sessions: Vec<SessionState> = (0..cfg.clients)
        .map(|i| SessionState {
            id: kv_client::random_client_id() ^ (i as u64) << 1 | 1,
            known: HashMap::new(),
            n: 0,
            started: Instant::now(),
            op: None,
        })
        .collect();
    let mut by_id = HashMap::new();
    for (i, s) in sessions.iter().enumerate() {
        by_id.insert(s.id, i);
        comp.actor_ref().tell(ClientCommand::OpenSession(s.id));
    }
    let mut history = match &cfg.history {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => None,
    };
    let origin = Instant::now();
    let measure_from = origin + cfg.warmup;
    let measure_until = cfg.duration.map(|d| measure_from + d);
    let mut hist: Histogram<u64> = report::latency_histogram()?;
    // Per second of the history's clock, by completion time, warm-up included: what
    // `--report` draws.
    let mut per_second = PerSecond::new()?;
    let (mut ops, mut errors, mut timeouts) = (0u64, 0u64, 0u64);
    let bar = if cfg.progress {
        // Seconds of the run, or operations when only --ops bounds it.
        let length = match (cfg.duration, cfg.ops) {
            (Some(d), _) => (cfg.warmup + d).as_secs(),
            (None, Some(n)) => n,
            (None, None) => 0,
        };
        let b = indicatif::ProgressBar::new(length.max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    // Operations are handed to the client component in batches: everything that
    // can be submitted after the completions that are already there.
    let actor = comp.actor_ref();
    let mut batch: Vec<(u64, u64, KvOp)> = Vec::with_capacity(cfg.clients);
    let submit = |s: &mut SessionState,
                  idx: usize,
                  rng: &mut SplitMix64,
                  batch: &mut Vec<(u64, u64, KvOp)>| {
        let op = next_op(s, idx, cfg, rng);
        s.started = Instant::now();
        s.op = Some(op.clone());
        batch.push((s.id, idx as u64, op));
    };
    let flush = |batch: &mut Vec<(u64, u64, KvOp)>| {
        if !batch.is_empty() {
            actor.tell(ClientCommand::SubmitBatch {
                ops: std::mem::take(batch),
                done: tx.clone(),
            });
        }
    };
    for (i, s) in sessions.iter_mut().enumerate() {
        submit(s, i, &mut rng, &mut batch);
    }
    flush(&mut batch);
    let mut outstanding = cfg.clients;
    let mut stopped_at: Option<Instant> = None;
    let mut last_tick = Instant::now();
    // Every operation completes within the client deadline, as an answer or as
    // unavailable; a run that hears nothing for much longer stops waiting.
    let grace = cfg.client.deadline * 3 + Duration::from_secs(1);
    let mut last_completion = origin;
    while outstanding > 0 {
        let completion = match rx.try_recv() {
            Ok(c) => Ok(c),
            Err(mpsc::TryRecvError::Empty) => {
                // Nothing more is ready: send what was gathered, then wait.
                flush(&mut batch);
                rx.recv_timeout(Duration::from_millis(100))
            }
            Err(mpsc::TryRecvError::Disconnected) => Err(mpsc::RecvTimeoutError::Disconnected),
        };
        let (sid, _tag, result) = match completion {
            Ok(c) => c,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if now > last_completion + grace || measure_until.is_some_and(|u| now > u + grace) {
                    break;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let now = Instant::now();
        last_completion = now;
        let Some(&idx) = by_id.get(&sid) else {
            continue;
        };
        let s = &mut sessions[idx];
        let Some(op) = s.op.take() else { continue };
        learn(s, &op, &result);
        if let Some(h) = history.as_mut()
            && let Some(hop) = history_op(
                idx as u64 + 1,
                (s.started - origin).as_nanos() as u64,
                (now - origin).as_nanos() as u64,
                &op,
                &result,
            )
        {
            let _ = writeln!(h, "{}", hop.to_json_line());
        }
        // The measured window ends when the run stops: operations still in flight
        // then complete (and go to the history) without being counted.
        let in_window = s.started >= measure_from
            && stopped_at.is_none()
            && measure_until.is_none_or(|until| now <= until);
        if stopped_at.is_none() {
            per_second.record(
                now - origin,
                match &result {
                    Ok(_) => Outcome::Answered((now - s.started).as_micros().max(1) as u64),
                    Err(KvError::Unavailable(_)) => Outcome::Timeout,
                    Err(KvError::Rejected(_)) => Outcome::Error,
                },
            );
        }
        if in_window {
            match &result {
                Ok(_) => {
                    ops += 1;
                    let _ = hist.record((now - s.started).as_micros().max(1) as u64);
                }
                Err(KvError::Unavailable(_)) => timeouts += 1,
                Err(KvError::Rejected(_)) => errors += 1,
            }
        }
        if stopped_at.is_none() && done(cfg, now.saturating_duration_since(measure_from), ops) {
            stopped_at = Some(now);
        }
        if stopped_at.is_some() {
            outstanding -= 1;
        } else {
            submit(s, idx, &mut rng, &mut batch);
        }
        if let Some(b) = &bar
            && now - last_tick > Duration::from_millis(200)
        {
            last_tick = now;
            b.set_position(match cfg.duration {
                Some(_) => (now - origin).as_secs(),
                None => ops,
            });
            let el = now.saturating_duration_since(measure_from).as_secs_f64();
            if el > 0.0 {
                b.set_message(format!("{:.0} ops/s", ops as f64 / el));
            } else {
                b.set_message("warming up".to_string());
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(mut h) = history {
        h.flush().map_err(|e| e.to_string())?;
    }
    let measured = match (cfg.duration, cfg.ops) {
        (Some(d), None) => d,
        _ => {
            let end = stopped_at.unwrap_or_else(Instant::now);
            measure_until
                .map_or(end, |until| end.min(until))
                .saturating_duration_since(measure_from)
        }
    };
    let secs = measured.as_secs_f64().max(1e-9);
    let run_end = stopped_at.unwrap_or_else(Instant::now) - origin;
    let busy = comp
        .actor_ref()
        .ask_with(ClientCommand::Stats)
        .wait_timeout(Duration::from_secs(5))
        .map(|s| s.busy)
        .unwrap_or(0);
    system.shutdown();
    Ok(BenchReport {
        clients: cfg.clients,
        duration_s: secs,
        ops,
        ops_per_s: ops as f64 / secs,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        errors,
        timeouts,
        busy,
        seconds: per_second.finish(run_end),
        percentiles: report::percentile_curve(&hist),
        max_us: hist.max(),
        warmup_s: cfg.warmup.as_secs_f64(),
        end_s: run_end.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(duration: Option<Duration>, ops: Option<u64>) -> BenchConfig {
        BenchConfig {
            client: ClientOptions::new("127.0.0.1:45678".parse().unwrap()),
            clients: 1,
            duration,
            ops,
            warmup: Duration::ZERO,
            keys: 1,
            value_size: 1,
            mix: parse_mix("get=1").unwrap(),
            seed: 1,
            history: None,
            progress: false,
        }
    }

    #[test]
    fn a_run_with_only_ops_lasts_until_they_are_done() {
        let c = cfg(measured_time(None, Some(1_500_000)), Some(1_500_000));
        let hour = Duration::from_secs(3600);
        assert!(!done(&c, hour, 493_000));
        assert!(!done(&c, hour, 1_499_999));
        assert!(done(&c, Duration::from_secs(1), 1_500_000));
    }

    #[test]
    fn with_both_limits_the_first_one_reached_stops_the_run() {
        let c = cfg(Some(Duration::from_secs(5)), Some(100));
        assert!(!done(&c, Duration::from_secs(4), 99));
        assert!(done(&c, Duration::from_secs(5), 10));
        assert!(done(&c, Duration::from_secs(1), 100));
        let c = cfg(measured_time(None, None), None);
        assert!(!done(&c, Duration::from_secs(9), u64::MAX));
        assert!(done(&c, DEFAULT_DURATION, 0));
    }

    #[test]
    fn mixes_parse_and_bad_ones_are_explained() {
        assert_eq!(
            parse_mix("get=1,put=1,cas=1"),
            Ok(Mix {
                get: 1,
                put: 1,
                cas: 1,
                del: 0
            })
        );
        assert_eq!(
            parse_mix("get=90,put=5,cas=5"),
            Ok(Mix {
                get: 90,
                put: 5,
                cas: 5,
                del: 0
            })
        );
        assert_eq!(
            parse_mix("put=1"),
            Ok(Mix {
                get: 0,
                put: 1,
                cas: 0,
                del: 0
            })
        );
        assert_eq!(
            parse_mix("get=2,del=1"),
            Ok(Mix {
                get: 2,
                put: 0,
                cas: 0,
                del: 1
            })
        );
        assert!(parse_mix("get=0").is_err());
        assert!(
            parse_mix("incr=1")
                .unwrap_err()
                .contains("unknown operation")
        );
        assert!(parse_mix("get").unwrap_err().contains("KIND=WEIGHT"));
    }

    #[test]
    fn values_are_unique_per_client_and_sequence_and_padded() {
        assert_eq!(make_value(3, 7, 16), "c3-7............");
        assert_ne!(make_value(3, 7, 4), make_value(3, 8, 4));
    }
}

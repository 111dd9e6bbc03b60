//! Helpers shared by the simulation tests.
#![allow(dead_code)]

use kv_ports::{KvOp, KvResult};
use scenarios::scenario::Outcome;
use scenarios::sim::DelayModel;

/// The networks every course scenario runs on: the course's (zero latency, seed
/// 123) and uniform 3–7 ms delays with three seeds.
pub fn networks() -> Vec<(DelayModel, u64)> {
    vec![
        (DelayModel::zero(), 123),
        (DelayModel::uniform_ms(3, 7), 1),
        (DelayModel::uniform_ms(3, 7), 2),
        (DelayModel::uniform_ms(3, 7), 3),
    ]
}

/// Fails with everything known about the run if the simulator or the checker
/// found a problem.
pub fn assert_clean(o: &Outcome) {
    let f = o.failures();
    assert!(
        f.is_empty(),
        "{} ({} on seed {}):\n{}\nhistory:\n{}",
        o.summary(),
        o.name,
        o.seed,
        f.join("\n"),
        o.history_jsonl()
    );
}

/// The results of client `id`, in call order, as (operation, result).
pub fn results(o: &Outcome, id: usize) -> Vec<(KvOp, Option<KvResult>)> {
    o.client_ops(id)
        .into_iter()
        .map(|r| (r.op.clone(), r.result.clone().and_then(Result::ok)))
        .collect()
}

//! **OpsTest** (course scenario 1): GETs on a prefilled store all answer with the
//! stored values.
//!
//! Three servers start at 0, 1 and 2 s. The course prefilled the store inside the
//! servers; here a client fills it through the public API: at 30 s it PUTs `one` ..
//! `ten` = `value1` .. `value10` and `test0` .. `test100` = `value0` .. `value100`.
//! At 62 s a second client, contacting server 1, sends GET `test0` .. `test100` at
//! once. The run ends at 122 s, or as soon as every operation has been answered.

use kv_ports::KvOp;

use crate::scenario::{Scenario, secs};
use crate::sim::DelayModel;

/// The prefilled entries: `one`..`ten` and `test0`..`test100`.
pub fn prefill_entries() -> Vec<(String, String)> {
    let words = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    let mut v: Vec<(String, String)> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), format!("value{}", i + 1)))
        .collect();
    v.extend((0..=100).map(|i| (format!("test{i}"), format!("value{i}"))));
    v
}

/// PUTs that prefill the store.
pub fn prefill_ops() -> Vec<KvOp> {
    prefill_entries()
        .into_iter()
        .map(|(key, value)| KvOp::Put { key, value })
        .collect()
}

/// GET `test0` ..= `test{n}`.
pub fn gets(n: usize) -> Vec<KvOp> {
    (0..=n)
        .map(|i| KvOp::Get {
            key: format!("test{i}"),
        })
        .collect()
}

/// The scenario, on the given network and seed. Client 1 prefills, client 2 reads.
pub fn scenario(delay: DelayModel, seed: u64) -> Scenario {
    Scenario::new("ops")
        .seed(seed)
        .network(delay)
        .cluster(3, 1, 3)
        .start_nodes(secs(0), secs(1))
        .burst(secs(30), 1, 1, prefill_ops())
        .burst(secs(62), 2, 1, gets(100))
        .end_when_done(secs(122))
}

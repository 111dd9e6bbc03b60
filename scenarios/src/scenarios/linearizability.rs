//! **LinearizabilityTest** (course scenario 4): later operations observe earlier
//! ones, in the three orders write<write, read<write and write<read.
//!
//! Servers start 2 s apart. At 64 s client 1 runs, one after the other (each
//! operation invoked after the previous one returned):
//! - write<write: PUT `ww` = `w0`, CAS `ww` `w0`→`w1`, CAS `ww` `w1`→`w2` (both swap);
//! - read<write: GET `rw` (not found), PUT `rw` = `r0`, CAS `rw` `r0`→`r1`, CAS
//!   `rw` `r1`→`r2` (both swap);
//! - write<read: PUT `wr` = `x0`, GET `wr`, GET `wr` (both read `x0`).
//!
//! At 124 s and 125 s two more clients run the same three patterns concurrently on
//! shared keys (`c-ww`, `c-rw`, `c-wr`), several sessions each. Their individual
//! answers depend on the interleaving, so the test does not compare them one by one
//! (the course's version did, and was wrong): the whole history goes through the
//! linearizability checker instead. Everything contacts server 2.

use kv_ports::KvOp;

use crate::scenario::{Scenario, secs};
use crate::sim::DelayModel;
use crate::workload::Plan;

fn put(k: &str, v: &str) -> KvOp {
    KvOp::Put {
        key: k.into(),
        value: v.into(),
    }
}

fn get(k: &str) -> KvOp {
    KvOp::Get { key: k.into() }
}

fn cas(k: &str, from: &str, to: &str) -> KvOp {
    KvOp::Cas {
        key: k.into(),
        expected: Some(from.into()),
        new: to.into(),
    }
}

/// Client 1's sequence (see the module docs).
pub fn sequential_ops() -> Vec<KvOp> {
    vec![
        put("ww", "w0"),
        cas("ww", "w0", "w1"),
        cas("ww", "w1", "w2"),
        get("rw"),
        put("rw", "r0"),
        cas("rw", "r0", "r1"),
        cas("rw", "r1", "r2"),
        put("wr", "x0"),
        get("wr"),
        get("wr"),
    ]
}

/// One concurrent session's sequence; `tag` makes its values unique.
fn concurrent_ops(tag: &str) -> Vec<KvOp> {
    let v = |n: u32| format!("{tag}-{n}");
    vec![
        put("c-ww", &v(0)),
        cas("c-ww", &v(0), &v(1)),
        cas("c-ww", &v(1), &v(2)),
        get("c-rw"),
        put("c-rw", &v(3)),
        cas("c-rw", &v(3), &v(4)),
        get("c-rw"),
        put("c-wr", &v(5)),
        get("c-wr"),
        get("c-wr"),
    ]
}

/// The scenario.
pub fn scenario(delay: DelayModel, seed: u64) -> Scenario {
    let sessions = |client: usize| -> Vec<Plan> {
        (0..4)
            .map(|s| Plan::Sequence(concurrent_ops(&format!("c{client}s{s}"))))
            .collect()
    };
    Scenario::new("linearizability")
        .seed(seed)
        .network(delay)
        .cluster(3, 1, 3)
        .start_nodes(secs(0), secs(2))
        .client(secs(64), 1, 2, vec![Plan::Sequence(sequential_ops())])
        .client(secs(124), 2, 2, sessions(2))
        .client(secs(125), 3, 2, sessions(3))
        .end_when_done(secs(185))
}

//! **PutCasTest** (course scenario 2): CAS and PUT outcomes, in four phases.
//!
//! Three servers start at 0, 1 and 2 s; client 1 prefills the store (see
//! [`super::ops`]) at 30 s. Every later client contacts server 2 and sends its
//! operations at once (one session each, like the course's open-loop clients):
//!
//! - a. CAS `nonexisting{i}` from `notImportant{i}` to `new{i}` → all `NotFound`;
//! - b. CAS `test{i}` from `incorrectOldValue{i}` → all `CasMismatch` (current
//!   value `value{i}`);
//! - c. PUT `put{i}` = `value{i}`, then one phase later CAS `put{i}` from
//!   `value{i}` to `new{i}` → the CASes all succeed;
//! - d. PUT `put{i}` = `value{i}` → all succeed.
//!
//! The course left 60 s between phases; the replay keeps the order with `gap`
//! between phases (operations take milliseconds, so the gap only has to separate
//! them).

use std::time::Duration;

use kv_ports::KvOp;

use crate::scenario::{Scenario, secs};
use crate::sim::DelayModel;

/// Operations per phase: `i = 0..=N`.
pub const N: usize = 100;

/// Client ids of the phases.
pub mod clients {
    /// The prefill.
    pub const PREFILL: usize = 1;
    /// Phase a: CAS on missing keys.
    pub const A_CAS_MISSING: usize = 2;
    /// Phase b: CAS with a wrong expected value.
    pub const B_CAS_WRONG: usize = 3;
    /// Phase c, first half: PUT.
    pub const C_PUT: usize = 4;
    /// Phase c, second half: CAS from the PUT values.
    pub const C_CAS: usize = 5;
    /// Phase d: PUT.
    pub const D_PUT: usize = 6;
}

fn phase_a() -> Vec<KvOp> {
    (0..=N)
        .map(|i| KvOp::Cas {
            key: format!("nonexisting{i}"),
            expected: Some(format!("notImportant{i}")),
            new: format!("new{i}"),
        })
        .collect()
}

fn phase_b() -> Vec<KvOp> {
    (0..=N)
        .map(|i| KvOp::Cas {
            key: format!("test{i}"),
            expected: Some(format!("incorrectOldValue{i}")),
            new: format!("new{i}"),
        })
        .collect()
}

fn puts() -> Vec<KvOp> {
    (0..=N)
        .map(|i| KvOp::Put {
            key: format!("put{i}"),
            value: format!("value{i}"),
        })
        .collect()
}

fn phase_c_cas() -> Vec<KvOp> {
    (0..=N)
        .map(|i| KvOp::Cas {
            key: format!("put{i}"),
            expected: Some(format!("value{i}")),
            new: format!("new{i}"),
        })
        .collect()
}

/// The scenario with `gap` between phases.
pub fn scenario(delay: DelayModel, seed: u64, gap: Duration) -> Scenario {
    let t0 = secs(30);
    Scenario::new("put-cas")
        .seed(seed)
        .network(delay)
        .cluster(3, 1, 3)
        .start_nodes(secs(0), secs(1))
        .burst(t0, clients::PREFILL, 2, super::ops::prefill_ops())
        .burst(t0 + gap, clients::A_CAS_MISSING, 2, phase_a())
        .burst(t0 + gap * 2, clients::B_CAS_WRONG, 2, phase_b())
        .burst(t0 + gap * 3, clients::C_PUT, 2, puts())
        .burst(t0 + gap * 4, clients::C_CAS, 2, phase_c_cas())
        .burst(t0 + gap * 5, clients::D_PUT, 2, puts())
        .end_when_done(t0 + gap * 6)
}

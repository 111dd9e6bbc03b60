//! The scenarios: one file per course scenario, and the random fault schedules.

pub mod healing;
pub mod linearizability;
pub mod ops;
pub mod put_cas;
pub mod random;
pub mod resilience;
pub mod template_ops;

//! Deterministic simulation of kompact-kv.
//!
//! The real component graph of every node (`kv_bootstrap::node::Node`) and the real
//! client component run here on simulated providers of the only two ports that touch
//! the outside world: `Timer` (virtual time) and `Network` (a seeded network with
//! delays, crashes, partitions and connection drops). Everything runs on one thread
//! from one seed, so a failing run replays exactly.
//!
//! - [`sim`]: the runtime (shared virtual clock, FIFO run queue, simulated network);
//! - [`scenario`]: a `SimulationScenario`-style API to start nodes and clients, run
//!   operations and inject faults at virtual times, and check the resulting history;
//! - [`scenarios`]: the course's scenarios and the random fault schedules.
//!
//! See `docs/testing.md` for how to run, replay and extend them.
#![deny(missing_docs)]

pub mod scenario;
pub mod scenarios;
pub mod sim;
pub mod workload;

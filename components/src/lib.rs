//! The Kompact components of a kompact-kv node.
//!
//! Each protocol component is a thin adapter between typed ports (`kv-ports`) and a
//! sans-IO core (`kv-protocols`). Only the [`timer`] and [`network`] providers touch
//! Kompact's timers and the TCP transport (`kv-transport`); the simulator replaces
//! exactly these two.
#![deny(missing_docs)]

pub mod ble;
pub mod connect;
pub mod epfd;
pub mod kv_replica;
pub mod large_paxos;
pub mod metrics;
pub mod network;
pub mod overlay;
pub mod perfect_link;
pub mod runtime;
pub mod sequence_paxos;
pub mod ticker;
pub mod timer;

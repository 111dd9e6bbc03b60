//! Sans-IO protocol cores of kompact-kv.
//!
//! Every algorithm here is a plain struct with no Kompact (and no I/O) inside:
//! messages go in through `handle`, time goes in through `tick`, and whatever the
//! algorithm wants to send or report is collected in an outbox that the host drains.
//! The Kompact components in `kv-components` are thin adapters around these cores,
//! and the property tests in `tests/` run several replicas of a core in one thread
//! under a seeded, adversarial schedule.
#![deny(missing_docs)]

pub mod ballot;
pub mod ble;
pub mod directory;
pub mod epfd;
pub mod kv;
pub mod link;
pub mod membership;
pub mod partition;
pub mod rng;
pub mod sequence_paxos;
pub mod transfer;

/// Identity of a node: the address its Kompact system listens on.
///
/// Using the address itself (rather than a number assigned at boot) means a node
/// knows its own id before the lookup table exists, and a simulation can use made-up
/// addresses. Ordering is the ordering of `SocketAddr`, which sorts the lookup table.
pub type NodeId = std::net::SocketAddr;

/// Identifier of a partition (a replication group), `0..partitions`.
pub type PartitionId = u32;

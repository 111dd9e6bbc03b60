//! Ballot leader election (BLE) core, one instance per replication group.
//!
//! Messages and public API are fixed here; see `docs/protocols.md`.

use crate::ballot::Ballot;

/// A message exchanged between the BLE instances of one replication group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BleMsg {
    /// Start of a heartbeat round: "tell me your ballot".
    HeartbeatRequest {
        /// The sender's round number.
        round: u64,
    },
    /// Answer to a `HeartbeatRequest`.
    HeartbeatReply {
        /// The round number copied from the request.
        round: u64,
        /// The replier's current ballot.
        ballot: Ballot,
        /// Whether the replier currently sees a majority of its group (only such
        /// nodes may be elected; this keeps a node that is cut off from becoming
        /// leader and causing churn when it comes back).
        quorum_connected: bool,
    },
}

/// What BLE tells its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BleEvent {
    /// `ballot.pid` is the leader with `ballot`. Emitted each time the elected
    /// leader (or its ballot) changes. At most one leader per ballot.
    Leader(Ballot),
}

//! The messages of Sequence Paxos, named as in the course and the OmniPaxos paper.

use std::sync::Arc;

use crate::ballot::Ballot;

/// A snapshot of the replicated state machine, covering log entries `0..idx`.
///
/// The state itself is opaque to Sequence Paxos: the host encodes it
/// (see [`crate::kv::KvState::encode_snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Number of log entries the snapshot covers (the entries `0..idx`).
    pub idx: u64,
    /// The encoded state machine after applying entries `0..idx`. Shared: the
    /// replica, its log and every message that carries it hold the same bytes, so
    /// handing a snapshot on never copies a large state.
    pub data: Arc<Vec<u8>>,
}

/// A message between the Sequence Paxos replicas of one partition.
///
/// Invariant: every message carries the ballot `n` of the leader it belongs to;
/// receivers ignore messages from ballots lower than the one they promised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaxosMsg<T> {
    /// Leader → all: phase 1, "promise not to accept lower ballots".
    Prepare(Prepare),
    /// Follower → leader: the promise, with the follower's accepted suffix.
    Promise(Promise<T>),
    /// Leader → follower: the log the follower must adopt from `sync_idx` on.
    AcceptSync(AcceptSync<T>),
    /// Leader → followers: new entries appended at `start_idx`, plus the leader's
    /// decided index (a batched Accept that also carries decisions).
    AcceptDecide(AcceptDecide<T>),
    /// Follower → leader: "I have accepted everything below `accepted_idx` in `n`".
    Accepted(Accepted),
    /// Leader → followers: everything below `decided_idx` is decided.
    Decide(Decide),
    /// Any replica → the leader it knows: please propose these entries.
    ProposalForward(Vec<T>),
    /// Follower → leader: "I lost track (gap or restart), please prepare me again".
    PrepareReq,
    /// Any replica → all: the sender has applied (and can trim) up to `applied_idx`.
    Compaction {
        /// The sender's ballot when sending (informational, for stale checks).
        n: Ballot,
        /// Entries `0..applied_idx` have been applied by the sender.
        applied_idx: u64,
    },
}

/// Phase 1a.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepare {
    /// The leader's ballot.
    pub n: Ballot,
    /// The leader's decided index.
    pub decided_idx: u64,
    /// The highest ballot in which the leader accepted entries.
    pub n_accepted: Ballot,
    /// Length of the leader's log.
    pub accepted_idx: u64,
}

/// Phase 1b.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promise<T> {
    /// The ballot promised.
    pub n: Ballot,
    /// The highest ballot in which the follower accepted entries.
    pub n_accepted: Ballot,
    /// The follower's decided index.
    pub decided_idx: u64,
    /// Length of the follower's log.
    pub accepted_idx: u64,
    /// The follower's entries the leader may lack: from the leader's decided index on
    /// if the follower accepted in a higher ballot than the leader, else from the
    /// leader's log length on.
    pub suffix: Vec<T>,
    /// A snapshot that precedes `suffix`, when the follower has trimmed its log past
    /// the leader's decided index.
    pub snapshot: Option<Snapshot>,
}

/// Phase 2a for a follower that just promised: adopt this log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptSync<T> {
    /// The leader's ballot.
    pub n: Ballot,
    /// The follower must truncate its log at `sync_idx` and append `suffix`.
    pub sync_idx: u64,
    /// Entries from `sync_idx` on.
    pub suffix: Vec<T>,
    /// The leader's decided index.
    pub decided_idx: u64,
    /// Installed first when the follower is behind the leader's trimmed prefix;
    /// then `sync_idx == snapshot.idx`.
    pub snapshot: Option<Snapshot>,
}

/// Phase 2a in steady state: a batch of new entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptDecide<T> {
    /// The leader's ballot.
    pub n: Ballot,
    /// Log index of the first entry in `entries`. A follower whose log length is
    /// not `start_idx` has missed a message and asks to be synced again.
    pub start_idx: u64,
    /// The batch.
    pub entries: Vec<T>,
    /// The leader's decided index.
    pub decided_idx: u64,
}

/// Phase 2b.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The ballot the entries were accepted in.
    pub n: Ballot,
    /// Length of the follower's log after accepting.
    pub accepted_idx: u64,
}

/// A decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decide {
    /// The leader's ballot.
    pub n: Ballot,
    /// Entries `0..decided_idx` are decided.
    pub decided_idx: u64,
}

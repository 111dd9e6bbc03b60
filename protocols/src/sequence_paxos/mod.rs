//! Sequence Paxos core: a replicated log for one partition.

pub mod messages;

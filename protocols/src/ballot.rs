//! Ballots: the totally ordered rounds of leader election and Sequence Paxos.

use crate::NodeId;

/// A ballot number. Ballots are totally ordered by `(n, pid)`, so two nodes never
/// produce equal ballots, and a node can always produce a ballot higher than any it
/// has seen by incrementing `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ballot {
    /// The round number; increases when a node tries to take over leadership.
    pub n: u64,
    /// The node that created this ballot (tie breaker).
    pub pid: NodeId,
}

impl Ballot {
    /// Below every ballot: the round in which a replica has accepted nothing yet, or
    /// only the state its configuration started from (which every replica of the
    /// configuration has alike). The same on every node, so two such logs compare by
    /// length alone.
    pub const NONE: Ballot = Ballot {
        n: 0,
        pid: std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            0,
        )),
    };

    /// The ballot of a node that has not yet taken part in any round. It is lower than
    /// every ballot with `n > 0`.
    pub fn initial(pid: NodeId) -> Ballot {
        Ballot { n: 0, pid }
    }
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.n, self.pid)
    }
}

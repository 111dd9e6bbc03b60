//! Key → partition mapping and the lookup table (partitions × replicas).
//!
//! # Keys to partitions
//!
//! A key's bytes are hashed with 64-bit FNV-1a and the result is passed through the
//! SplitMix64 finaliser ([`crate::rng::mix64`]). FNV-1a alone is stable and trivial to
//! reimplement in any language (the etcd comparison scripts need it), but its high
//! bits are poorly mixed for short keys; since partitions are *contiguous ranges* of
//! the hash space, it is precisely the high bits that choose the partition. The
//! finaliser is a bijection, so it adds mixing without adding collisions.
//!
//! The hash space `0..=u64::MAX` is cut into `partitions` equal contiguous ranges;
//! partition `p` owns the hashes `h` with `⌊h · partitions / 2⁶⁴⌋ = p`. Ranges (rather
//! than `h mod partitions`) keep the door open to splitting a range later without
//! moving keys between the other partitions.
//!
//! The algorithm is part of the on-disk and wire contract: test vectors live in
//! `protocols/tests/partition_vectors.rs`, and changing a single output is a breaking
//! change.
//!
//! # The lookup table
//!
//! [`LookupTable`] says which nodes replicate which partition. Over the nodes sorted
//! by id, replica `i` of partition `p` is `nodes[(p·R + i) mod N]` for `i < R`. With
//! `partitions · R` not a multiple of `N` some nodes host one more replica than
//! others, and a node may host replicas of several partitions.

use std::collections::BTreeSet;
use std::fmt;

use crate::{NodeId, PartitionId};

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// The largest number of partitions a table may have.
///
/// A sanity bound, far above anything the course cluster needs, so that a typo in a
/// config file or a corrupt table from the network fails cleanly instead of
/// allocating gigabytes.
pub const MAX_PARTITIONS: u32 = 1 << 16;

/// The stable 64-bit hash of a key: FNV-1a 64 over `key`, then [`crate::rng::mix64`].
///
/// # Examples
/// ```
/// use kv_protocols::partition::key_hash;
/// assert_eq!(key_hash(b"foo"), key_hash("foo".as_bytes()));
/// assert_ne!(key_hash(b"foo"), key_hash(b"bar"));
/// ```
pub fn key_hash(key: &[u8]) -> u64 {
    crate::rng::mix64(fnv1a(key))
}

/// FNV-1a 64 over `bytes`: the key hash before its finaliser, and the checksum of
/// every encoding of ours (snapshots, directory states, transferred states).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The partition that owns `hash` when the hash space is split into `partitions`
/// equal contiguous ranges: `⌊hash · partitions / 2⁶⁴⌋`.
///
/// Always `< partitions` when `partitions > 0`; with `partitions == 0` (no valid
/// table has that) it returns 0.
pub fn partition_of(hash: u64, partitions: u32) -> PartitionId {
    ((u128::from(hash) * u128::from(partitions)) >> 64) as PartitionId
}

/// The hashes owned by partition `p`, as `(first, last)` with `last` inclusive.
///
/// The ranges of `0..partitions` are disjoint, contiguous, cover `0..=u64::MAX`, and
/// agree with [`partition_of`]; their sizes differ by at most one.
///
/// # Panics
/// If `p >= partitions` (a caller bug: partition ids come from a validated table).
pub fn hash_range(p: PartitionId, partitions: u32) -> (u64, u64) {
    assert!(p < partitions, "partition {p} out of range 0..{partitions}");
    let first = range_start(p, partitions);
    let last = if p + 1 == partitions {
        u64::MAX
    } else {
        range_start(p + 1, partitions) - 1
    };
    (first, last)
}

/// The smallest hash `h` with `partition_of(h, partitions) >= p`, i.e.
/// `⌈p · 2⁶⁴ / partitions⌉`, for `p < partitions` (so the result fits in 64 bits).
fn range_start(p: PartitionId, partitions: u32) -> u64 {
    ((u128::from(p) << 64).div_ceil(u128::from(partitions))) as u64
}

/// Why a lookup table cannot be built or is not valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// No nodes at all.
    NoNodes,
    /// `partitions` is 0.
    NoPartitions,
    /// `partitions` is above [`MAX_PARTITIONS`].
    TooManyPartitions(u32),
    /// The replication degree is even (including 0); groups need `R = 2f + 1`.
    EvenReplication(usize),
    /// The replication degree is larger than the number of nodes.
    ReplicationExceedsNodes {
        /// The replication degree asked for.
        replication_degree: usize,
        /// The number of distinct nodes available.
        nodes: usize,
    },
    /// `nodes` is not sorted in strictly increasing order (unsorted or duplicates).
    NodesNotSorted,
    /// The number of groups differs from `partitions`.
    GroupCount {
        /// `partitions`.
        expected: usize,
        /// `groups.len()`.
        found: usize,
    },
    /// A group does not have `replication_degree` members.
    GroupSize {
        /// The partition of the group.
        partition: PartitionId,
        /// The replication degree.
        expected: usize,
        /// The group's size.
        found: usize,
    },
    /// A group member is not in `nodes`.
    UnknownMember {
        /// The partition of the group.
        partition: PartitionId,
        /// The member.
        node: NodeId,
    },
    /// A node appears twice in one group.
    DuplicateMember {
        /// The partition of the group.
        partition: PartitionId,
        /// The member.
        node: NodeId,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::NoNodes => write!(f, "the lookup table has no nodes"),
            TableError::NoPartitions => write!(f, "the number of partitions must be at least 1"),
            TableError::TooManyPartitions(p) => {
                write!(
                    f,
                    "{p} partitions is more than the maximum of {MAX_PARTITIONS}"
                )
            }
            TableError::EvenReplication(r) => write!(
                f,
                "the replication degree must be odd (2f+1) and at least 1, got {r}"
            ),
            TableError::ReplicationExceedsNodes {
                replication_degree,
                nodes,
            } => write!(
                f,
                "the replication degree {replication_degree} is larger than the number of nodes ({nodes})"
            ),
            TableError::NodesNotSorted => {
                write!(f, "the node list is not sorted or contains duplicates")
            }
            TableError::GroupCount { expected, found } => write!(
                f,
                "the table has {found} replication groups but {expected} partitions"
            ),
            TableError::GroupSize {
                partition,
                expected,
                found,
            } => write!(
                f,
                "the group of partition {partition} has {found} members, expected {expected}"
            ),
            TableError::UnknownMember { partition, node } => write!(
                f,
                "the group of partition {partition} names {node}, which is not in the node list"
            ),
            TableError::DuplicateMember { partition, node } => {
                write!(f, "the group of partition {partition} names {node} twice")
            }
        }
    }
}

impl std::error::Error for TableError {}

/// Which nodes replicate which partition.
///
/// Invariant (checked by [`LookupTable::validate`], established by
/// [`LookupTable::build`]): `nodes` is sorted and duplicate-free; `1 <= partitions <=
/// MAX_PARTITIONS`; `replication_degree` is odd and `<= nodes.len()`;
/// `groups.len() == partitions`, and `groups[p][i] == nodes[(p·R + i) mod N]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupTable {
    /// Number of partitions.
    pub partitions: u32,
    /// Replicas per partition (`R = 2f + 1`).
    pub replication_degree: usize,
    /// All nodes of the cluster, sorted by id, without duplicates.
    pub nodes: Vec<NodeId>,
    /// `groups[p]`: the replicas of partition `p`, in placement order.
    pub groups: Vec<Vec<NodeId>>,
}

impl LookupTable {
    /// Builds the table for `nodes` (sorted and deduplicated here), `partitions`
    /// partitions and `replication_degree` replicas per partition.
    ///
    /// # Examples
    /// ```
    /// use kv_protocols::partition::LookupTable;
    /// let nodes: Vec<_> = (1..=3).map(|i| format!("10.0.0.{i}:4000").parse().unwrap()).collect();
    /// let table = LookupTable::build(nodes.clone(), 1, 3).unwrap();
    /// assert_eq!(table.group(0), &nodes[..]);
    /// ```
    pub fn build(
        mut nodes: Vec<NodeId>,
        partitions: u32,
        replication_degree: usize,
    ) -> Result<LookupTable, TableError> {
        nodes.sort();
        nodes.dedup();
        check_shape(&nodes, partitions, replication_degree)?;
        let groups = (0..partitions)
            .map(|p| placement(&nodes, p, replication_degree))
            .collect();
        Ok(LookupTable {
            partitions,
            replication_degree,
            nodes,
            groups,
        })
    }

    /// Checks the invariant of a table that came from elsewhere (the network, a
    /// file): consistent sizes and groups of `R` distinct known nodes. Groups need not
    /// follow the boot placement rule: after reconfigurations they are whatever the
    /// directory decided. Errors name the first problem found.
    pub fn validate(&self) -> Result<(), TableError> {
        if !self.nodes.windows(2).all(|w| w[0] < w[1]) {
            return Err(TableError::NodesNotSorted);
        }
        check_shape(&self.nodes, self.partitions, self.replication_degree)?;
        if self.groups.len() != self.partitions as usize {
            return Err(TableError::GroupCount {
                expected: self.partitions as usize,
                found: self.groups.len(),
            });
        }
        for (p, group) in (0..self.partitions).zip(&self.groups) {
            if group.len() != self.replication_degree {
                return Err(TableError::GroupSize {
                    partition: p,
                    expected: self.replication_degree,
                    found: group.len(),
                });
            }
            let mut seen = BTreeSet::new();
            for &node in group {
                if self.nodes.binary_search(&node).is_err() {
                    return Err(TableError::UnknownMember { partition: p, node });
                }
                if !seen.insert(node) {
                    return Err(TableError::DuplicateMember { partition: p, node });
                }
            }
        }
        Ok(())
    }

    /// The replicas of partition `p`; empty if `p` is out of range.
    pub fn group(&self, p: PartitionId) -> &[NodeId] {
        self.groups.get(p as usize).map_or(&[], Vec::as_slice)
    }

    /// The partitions `node` hosts a replica of, in increasing order.
    pub fn partitions_of(&self, node: NodeId) -> Vec<PartitionId> {
        (0..self.partitions)
            .zip(&self.groups)
            .filter(|(_, g)| g.contains(&node))
            .map(|(p, _)| p)
            .collect()
    }

    /// The partition that owns `key`.
    pub fn partition_for_key(&self, key: &str) -> PartitionId {
        partition_of(key_hash(key.as_bytes()), self.partitions)
    }

    /// Whether `node` is one of the table's nodes.
    pub fn contains(&self, node: NodeId) -> bool {
        self.nodes.binary_search(&node).is_ok()
    }
}

/// The size checks shared by `build` and `validate`; `nodes` is sorted and unique.
fn check_shape(
    nodes: &[NodeId],
    partitions: u32,
    replication_degree: usize,
) -> Result<(), TableError> {
    if nodes.is_empty() {
        return Err(TableError::NoNodes);
    }
    if partitions == 0 {
        return Err(TableError::NoPartitions);
    }
    if partitions > MAX_PARTITIONS {
        return Err(TableError::TooManyPartitions(partitions));
    }
    if replication_degree.is_multiple_of(2) {
        return Err(TableError::EvenReplication(replication_degree));
    }
    if replication_degree > nodes.len() {
        return Err(TableError::ReplicationExceedsNodes {
            replication_degree,
            nodes: nodes.len(),
        });
    }
    Ok(())
}

/// The group of partition `p` under the placement rule; `nodes` is non-empty.
fn placement(nodes: &[NodeId], p: PartitionId, replication_degree: usize) -> Vec<NodeId> {
    let n = nodes.len();
    let base = p as usize * replication_degree;
    (0..replication_degree)
        .map(|i| nodes[(base + i) % n])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_start_matches_partition_of_at_the_boundaries() {
        for parts in [1u32, 2, 3, 5, 7, 64, 1000] {
            for p in 1..parts {
                let s = range_start(p, parts);
                assert_eq!(partition_of(s, parts), p);
                assert_eq!(partition_of(s - 1, parts), p - 1);
            }
        }
    }
}

//! The hash-range split and the lookup table.

use std::collections::BTreeSet;

use kv_protocols::NodeId;
use kv_protocols::partition::{
    LookupTable, MAX_PARTITIONS, TableError, hash_range, key_hash, partition_of,
};
use proptest::prelude::*;

fn node(i: u8) -> NodeId {
    NodeId::from(([10, 0, 0, i], 4000))
}

fn nodes(n: u8) -> Vec<NodeId> {
    (1..=n).map(node).collect()
}

#[test]
fn six_nodes_two_partitions_r3_gives_disjoint_groups() {
    let t = LookupTable::build(nodes(6), 2, 3).expect("valid table");
    assert_eq!(t.group(0), &[node(1), node(2), node(3)]);
    assert_eq!(t.group(1), &[node(4), node(5), node(6)]);
    for i in 1..=6 {
        assert_eq!(t.partitions_of(node(i)).len(), 1);
    }
    assert_eq!(t.validate(), Ok(()));
}

#[test]
fn five_nodes_two_partitions_r3_wraps_around_so_one_node_hosts_two_groups() {
    let t = LookupTable::build(nodes(5), 2, 3).expect("valid table");
    assert_eq!(t.group(0), &[node(1), node(2), node(3)]);
    assert_eq!(t.group(1), &[node(4), node(5), node(1)]);
    assert_eq!(t.partitions_of(node(1)), vec![0, 1]);
    assert_eq!(t.partitions_of(node(2)), vec![0]);
    assert_eq!(t.partitions_of(node(5)), vec![1]);
    assert_eq!(t.validate(), Ok(()));
}

#[test]
fn build_sorts_and_deduplicates_nodes() {
    let mut input = nodes(3);
    input.reverse();
    input.push(node(2));
    let t = LookupTable::build(input, 1, 3).expect("valid table");
    assert_eq!(t.nodes, nodes(3));
    assert!(t.contains(node(3)));
    assert!(!t.contains(node(4)));
    assert!(t.partitions_of(node(4)).is_empty());
    assert!(t.group(1).is_empty());
}

#[test]
fn build_rejects_impossible_shapes() {
    assert_eq!(LookupTable::build(vec![], 1, 1), Err(TableError::NoNodes));
    assert_eq!(
        LookupTable::build(nodes(3), 0, 3),
        Err(TableError::NoPartitions)
    );
    assert_eq!(
        LookupTable::build(nodes(3), MAX_PARTITIONS + 1, 3),
        Err(TableError::TooManyPartitions(MAX_PARTITIONS + 1))
    );
    assert_eq!(
        LookupTable::build(nodes(4), 1, 2),
        Err(TableError::EvenReplication(2))
    );
    assert_eq!(
        LookupTable::build(nodes(4), 1, 0),
        Err(TableError::EvenReplication(0))
    );
    assert_eq!(
        LookupTable::build(nodes(2), 1, 3),
        Err(TableError::ReplicationExceedsNodes {
            replication_degree: 3,
            nodes: 2
        })
    );
    // Duplicates do not count towards N.
    assert_eq!(
        LookupTable::build(vec![node(1), node(1), node(2)], 1, 3),
        Err(TableError::ReplicationExceedsNodes {
            replication_degree: 3,
            nodes: 2
        })
    );
}

#[test]
fn validate_names_the_first_problem_of_a_tampered_table() {
    let good = LookupTable::build(nodes(5), 2, 3).expect("valid table");

    let mut t = good.clone();
    t.nodes.swap(0, 1);
    assert_eq!(t.validate(), Err(TableError::NodesNotSorted));

    let mut t = good.clone();
    t.groups.pop();
    assert_eq!(
        t.validate(),
        Err(TableError::GroupCount {
            expected: 2,
            found: 1
        })
    );

    let mut t = good.clone();
    t.groups[1].pop();
    assert_eq!(
        t.validate(),
        Err(TableError::GroupSize {
            partition: 1,
            expected: 3,
            found: 2
        })
    );

    let mut t = good.clone();
    t.groups[0][2] = node(9);
    assert_eq!(
        t.validate(),
        Err(TableError::UnknownMember {
            partition: 0,
            node: node(9)
        })
    );

    let mut t = good.clone();
    t.groups[0][2] = node(1);
    assert_eq!(
        t.validate(),
        Err(TableError::DuplicateMember {
            partition: 0,
            node: node(1)
        })
    );

    // After reconfigurations a group is whatever the directory decided: any
    // well-formed group of members is valid, not only the boot placement.
    let mut t = good.clone();
    t.groups[0].swap(0, 1);
    assert_eq!(t.validate(), Ok(()));

    let mut t = good;
    t.replication_degree = 1;
    assert_eq!(
        t.validate(),
        Err(TableError::GroupSize {
            partition: 0,
            expected: 1,
            found: 3
        })
    );
}

#[test]
fn errors_have_readable_messages() {
    let e = LookupTable::build(nodes(2), 1, 3).expect_err("too few nodes");
    assert_eq!(
        e.to_string(),
        "the replication degree 3 is larger than the number of nodes (2)"
    );
}

#[test]
fn ten_thousand_keys_spread_evenly_over_four_partitions() {
    let t = LookupTable::build(nodes(4), 4, 1).expect("valid table");
    let mut counts = [0u32; 4];
    for i in 0..10_000 {
        counts[t.partition_for_key(&format!("key{i}")) as usize] += 1;
    }
    for (p, &c) in counts.iter().enumerate() {
        assert!((2_000..=3_000).contains(&c), "partition {p} got {c} keys");
    }
}

#[test]
fn short_sequential_keys_spread_over_two_partitions() {
    // Keys like the bench's "k0".."k999" differ only in their last bytes. Plain
    // FNV-1a puts 600 of these in the upper half and all of "k0".."k99" in the lowest
    // quarter of the hash space; the finaliser spreads them.
    let high = (0..1000)
        .filter(|i| partition_of(key_hash(format!("k{i}").as_bytes()), 2) == 1)
        .count();
    assert!(
        (450..=550).contains(&high),
        "{high} of 1000 keys in partition 1"
    );
    let quarters: BTreeSet<_> = (0..100)
        .map(|i| partition_of(key_hash(format!("k{i}").as_bytes()), 4))
        .collect();
    assert_eq!(quarters.len(), 4);
}

#[test]
fn hash_ranges_tile_the_hash_space() {
    for parts in [1u32, 2, 3, 4, 7, 10, 1000] {
        let mut next = 0u64;
        for p in 0..parts {
            let (first, last) = hash_range(p, parts);
            assert_eq!(first, next, "partition {p} of {parts}");
            assert!(first <= last);
            assert_eq!(partition_of(first, parts), p);
            assert_eq!(partition_of(last, parts), p);
            if p + 1 == parts {
                assert_eq!(last, u64::MAX);
            } else {
                next = last + 1;
            }
        }
    }
    assert_eq!(hash_range(0, 2), (0, u64::MAX / 2));
    assert_eq!(hash_range(1, 2), (1 << 63, u64::MAX));
}

proptest! {
    #[test]
    fn partition_of_agrees_with_hash_range(h in any::<u64>(), parts in 1u32..5000) {
        let p = partition_of(h, parts);
        prop_assert!(p < parts);
        let (first, last) = hash_range(p, parts);
        prop_assert!(first <= h && h <= last);
    }

    #[test]
    fn every_built_table_is_valid_and_balanced(
        n in 1u8..12, parts in 1u32..20, r_half in 0usize..3,
    ) {
        let r = 2 * r_half + 1;
        match LookupTable::build(nodes(n), parts, r) {
            Ok(t) => {
                prop_assert_eq!(t.validate(), Ok(()));
                let mut hosted = Vec::new();
                for i in 1..=n {
                    hosted.push(t.partitions_of(node(i)).len());
                }
                let total: usize = hosted.iter().sum();
                prop_assert_eq!(total, parts as usize * r);
                let (lo, hi) = (hosted.iter().min(), hosted.iter().max());
                prop_assert!(hi.zip(lo).is_some_and(|(hi, lo)| hi - lo <= 1));
                for p in 0..parts {
                    let distinct: BTreeSet<_> = t.group(p).iter().collect();
                    prop_assert_eq!(distinct.len(), r);
                }
            }
            Err(e) => prop_assert!(r > n as usize, "unexpected {e}"),
        }
    }
}

//! Same seed, same run: the trace hash of the delivered events is reproducible.

use std::collections::BTreeSet;

use scenarios::scenarios::{ops, random};
use scenarios::sim::DelayModel;

#[test]
fn same_seed_gives_the_same_trace_hash() {
    for seed in [0, 7] {
        let a = random::run(seed, false);
        let b = random::run(seed, false);
        assert_eq!(a.hash, b.hash, "random schedule, seed {seed}");
        assert_eq!(
            a.ops, b.ops,
            "same operations with the same results and times"
        );
    }
    let a = ops::scenario(DelayModel::uniform_ms(3, 7), 5).run();
    let b = ops::scenario(DelayModel::uniform_ms(3, 7), 5).run();
    assert_eq!(a.hash, b.hash);
}

#[test]
fn different_seeds_usually_give_different_hashes() {
    let hashes: BTreeSet<u64> = (0..4)
        .map(|s| ops::scenario(DelayModel::uniform_ms(3, 7), s).run().hash)
        .collect();
    assert!(hashes.len() >= 3, "{hashes:x?}");
}

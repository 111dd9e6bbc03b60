//! The checks catch real bugs: with a bug planted in every replica, the random
//! schedules report a violation within a bounded number of seeds.

use kv_components::kv_replica::{PlantedBug, set_planted_bug};
use kv_protocols::sequence_paxos::planted::set_leader_ignores_promised_suffix;
use scenarios::scenarios::random;

/// Most seeds a planted bug may survive.
const BOUND: u64 = 50;

#[test]
fn a_replica_answering_get_from_local_state_is_caught() {
    // The hook is per thread, and the simulator runs every replica on this thread.
    set_planted_bug(Some(PlantedBug::LocalRead));
    let caught = (0..BOUND).find(|seed| {
        let o = random::run(*seed, false);
        !o.check().is_linearizable()
    });
    set_planted_bug(None);
    let seed = caught.unwrap_or_else(|| panic!("no violation in {BOUND} seeds"));
    println!("local-read bug caught at seed {seed}");
}

#[test]
fn a_replica_answering_delete_from_local_state_is_caught() {
    // The key is never removed, so a later read or create-if-absent contradicts the
    // DELETE's answer.
    set_planted_bug(Some(PlantedBug::LocalDelete));
    let caught = (0..BOUND).find(|seed| {
        let o = random::run(*seed, false);
        !o.check().is_linearizable()
    });
    set_planted_bug(None);
    let seed = caught.unwrap_or_else(|| panic!("no violation in {BOUND} seeds"));
    println!("local-delete bug caught at seed {seed}");
}

#[test]
fn a_leader_that_does_not_adopt_the_longest_accepted_suffix_is_caught() {
    set_leader_ignores_promised_suffix(true);
    let caught = (0..BOUND).find(|seed| {
        let o = random::run(*seed, false);
        !random::check(&o).is_empty()
    });
    set_leader_ignores_promised_suffix(false);
    let seed = caught.unwrap_or_else(|| panic!("no violation in {BOUND} seeds"));
    println!("suffix-adoption bug caught at seed {seed}");
}

#[test]
fn without_the_planted_bug_the_same_seeds_pass() {
    set_planted_bug(None);
    for seed in 0..10 {
        let o = random::run(seed, false);
        assert!(
            random::check(&o).is_empty(),
            "seed {seed}: {:?}",
            random::check(&o)
        );
    }
}

//! Property tests of BLE + Sequence Paxos under random, seeded fault schedules.
//!
//! Every property runs at least 1,000 schedules for 3 and for 5 replicas. A schedule
//! is fully determined by its seed; a failure prints the seed, and
//! `KV_SEED=<seed> KV_REPLICAS=<3|5> cargo test -p kv-protocols --test paxos_props replay_seed -- --nocapture`
//! replays it (add `KV_TRACE=1` for a message trace). See `docs/protocols.md`.

mod harness;

use harness::{Params, Sim, Violations, run_seed, seed_from_env};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// 1,000 schedules per property and group size; `KV_CASES` raises it for a soak.
fn config() -> Config {
    let cases = std::env::var("KV_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn check(
    seed: u64,
    replicas: usize,
    pick: fn(&Violations) -> &Vec<String>,
) -> Result<(), TestCaseError> {
    let sim = run_seed(seed, Params::adversarial(replicas));
    let found = pick(&sim.violations);
    prop_assert!(
        found.is_empty(),
        "seed {seed} ({replicas} replicas) failed; replay with KV_SEED={seed} KV_REPLICAS={replicas}: {:?}",
        &found[..found.len().min(3)]
    );
    Ok(())
}

macro_rules! property {
    ($name:ident, $field:ident) => {
        mod $name {
            use super::*;
            proptest! {
                #![proptest_config(config())]
                #[test]
                fn three_replicas(seed in any::<u64>()) {
                    check(seed, 3, |v| &v.$field)?;
                }
                #[test]
                fn five_replicas(seed in any::<u64>()) {
                    check(seed, 5, |v| &v.$field)?;
                }
            }
        }
    };
}

property!(decided_logs_are_prefixes_of_each_other, prefixes);
property!(decided_entries_were_proposed, proposed);
property!(decided_prefix_never_changes, prefix_changed);
property!(at_most_one_leader_per_ballot, leaders);
property!(
    every_proposal_is_decided_or_dropped_after_faults_heal,
    liveness
);

/// Replays the schedule of `KV_SEED` (with `KV_REPLICAS`, default 3) and checks every
/// property. Without `KV_SEED` it replays a fixed seed, so it always runs.
#[test]
fn replay_seed() {
    let seed = seed_from_env().unwrap_or(0x5eed);
    let replicas = std::env::var("KV_REPLICAS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let sim = run_seed(seed, Params::adversarial(replicas));
    if let Some(t) = sim.trace() {
        println!("{t}");
    }
    report(&sim);
    assert!(
        sim.violations.is_empty(),
        "seed {seed} ({replicas} replicas): {:#?}",
        sim.violations
    );
}

fn report(sim: &Sim) {
    for (i, n) in sim.nodes.iter().enumerate() {
        println!(
            "node {i}: crashed={} decided={} retained_from={} log_len={} leader={:?} applied={}",
            n.crashed,
            n.px.decided_idx(),
            n.px.first_retained_idx(),
            n.px.log_len(),
            n.px.leader(),
            n.applied.len()
        );
    }
    println!(
        "delivered {} messages, {} ids proposed",
        sim.delivered,
        sim.proposed.len()
    );
}

//! Liveness of Sequence Paxos without faults: every proposal is decided everywhere,
//! exactly once, within a bounded number of ticks.

mod harness;

use harness::{Params, Sim};
use kv_protocols::rng::SplitMix64;

fn calm(replicas: usize) -> Params {
    Params {
        faults: false,
        propose_chance: 0.0,
        max_pending: 10_000,
        max_log_entries: 64,
        ..Params::adversarial(replicas)
    }
}

fn all_proposals_decided(replicas: usize, seed: u64) {
    const N: usize = 300;
    let mut sim = Sim::new(seed, calm(replicas));
    let mut rng = SplitMix64::new(seed ^ 0xabcdef);
    let mut ticks = 0;
    while !sim.has_stable_leader() {
        sim.step();
        ticks += 1;
        assert!(ticks < 100, "seed {seed}: no leader after {ticks} ticks");
    }
    let mut ids = Vec::new();
    for k in 0..N {
        let i = rng.below(replicas as u64) as usize;
        ids.push(sim.propose_new(i));
        if k % 10 == 9 {
            sim.step();
        }
    }
    let mut waited = 0;
    while sim.nodes.iter().any(|n| n.applied.len() < N) {
        sim.step();
        waited += 1;
        if waited > 100
            && let Some(t) = sim.trace()
        {
            println!("{t}");
        }
        assert!(
            waited <= 100,
            "seed {seed}: not all decided {waited} ticks after the last proposal: {:?}",
            sim.nodes
                .iter()
                .map(|n| (n.applied.len(), n.px.decided_idx(), n.px.log_len(), n.px.pending_len()))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        sim.dropped().is_empty(),
        "seed {seed}: proposals dropped without faults"
    );
    let first = &sim.nodes[0].applied;
    let mut sorted = first.clone();
    sorted.sort_unstable();
    ids.sort_unstable();
    assert_eq!(
        sorted, ids,
        "seed {seed}: every proposal decided exactly once"
    );
    for n in &sim.nodes {
        assert_eq!(
            &n.applied, first,
            "seed {seed}: replicas decided different logs"
        );
    }
    assert!(
        sim.violations.is_empty(),
        "seed {seed}: {:?}",
        sim.violations
    );
}

#[test]
fn three_replicas_decide_every_proposal_without_faults() {
    for seed in 0..20 {
        all_proposals_decided(3, seed);
    }
}

#[test]
fn five_replicas_decide_every_proposal_without_faults() {
    for seed in 0..20 {
        all_proposals_decided(5, seed);
    }
}

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
        max_batch: 32,
        max_inflight_batches: 4,
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
                .map(|n| (
                    n.applied.len(),
                    n.px.decided_idx(),
                    n.px.log_len(),
                    n.px.pending_len()
                ))
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

/// A leader that is cut off is replaced; when it comes back it neither takes the
/// leadership back nor makes the new leader change its ballot.
#[test]
fn isolated_leader_rejoins_without_disrupting_the_new_one() {
    for seed in 0..30 {
        for replicas in [3, 5] {
            let mut sim = Sim::new(seed, calm(replicas));
            while !sim.has_stable_leader() {
                assert!(sim.now < 100, "seed {seed}: no leader");
                sim.step();
            }
            let old = (0..replicas)
                .find(|&i| sim.nodes[i].px.is_leader())
                .expect("a leader");
            sim.isolate(old);
            for _ in 0..150 {
                sim.step();
            }
            let new = (0..replicas)
                .find(|&i| i != old && sim.nodes[i].px.is_leader())
                .expect("a new leader in the majority");
            let ballot = sim.nodes[new].px.leader();
            sim.reconnect_all();
            for _ in 0..30 {
                sim.step();
            }
            // Once it has caught up, the returning node follows the new leader, and
            // what is proposed there gets decided. (What it put in its own log while
            // cut off is undecided and is left to the host's retry.)
            let new_id = sim.nodes[new].id;
            assert_eq!(sim.nodes[old].px.leader().map(|b| b.pid), Some(new_id));
            let id = sim.propose_new(old);
            for _ in 0..120 {
                sim.step();
            }
            assert!(
                sim.nodes[new].px.is_leader(),
                "seed {seed}: new leader deposed"
            );
            assert_eq!(
                sim.nodes[new].px.leader(),
                ballot,
                "seed {seed}: ballot changed"
            );
            assert!(
                !sim.nodes[old].px.is_leader(),
                "seed {seed}: old leader still leads"
            );
            for n in &sim.nodes {
                assert!(
                    n.applied.contains(&id),
                    "seed {seed}: proposal at the returning node"
                );
            }
            assert!(
                sim.violations.is_empty(),
                "seed {seed}: {:?}",
                sim.violations
            );
        }
    }
}

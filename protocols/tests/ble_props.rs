//! Ballot leader election on the seeded network: a connected group elects one leader
//! and keeps it.

mod harness;

use harness::{Params, Sim};

fn quiet(replicas: usize) -> Params {
    Params {
        faults: false,
        fault_ticks: 0,
        calm_ticks: 0,
        ..Params::adversarial(replicas)
    }
}

/// With every link up for many rounds, each node sees exactly one leader election
/// (the first) and all agree on it.
fn stable_leader(replicas: usize, seed: u64) {
    let mut sim = Sim::new(seed, quiet(replicas));
    for _ in 0..600 {
        sim.step();
    }
    let leader = sim.nodes[0].ble.leader();
    assert!(leader.is_some(), "seed {seed}: no leader");
    for (i, n) in sim.nodes.iter().enumerate() {
        assert_eq!(
            n.ble_leader_events, 1,
            "seed {seed}: node {i} saw the leader change"
        );
        assert_eq!(n.ble.leader(), leader, "seed {seed}: node {i} disagrees");
    }
    assert!(
        sim.violations.is_empty(),
        "seed {seed}: {:?}",
        sim.violations
    );
}

#[test]
fn ble_stable_leader_three_replicas() {
    for seed in 0..50 {
        stable_leader(3, seed);
    }
}

#[test]
fn ble_stable_leader_five_replicas() {
    for seed in 0..50 {
        stable_leader(5, seed);
    }
}

/// After the leader crashes, the survivors elect one new leader and keep it.
#[test]
fn ble_reelects_once_after_leader_crash() {
    for seed in 0..50 {
        let mut sim = Sim::new(seed, quiet(3));
        for _ in 0..100 {
            sim.step();
        }
        let old = sim.nodes[0].ble.leader().expect("a leader");
        let dead = sim
            .nodes
            .iter()
            .position(|n| n.id == old.pid)
            .expect("leader is a node");
        sim.nodes[dead].crashed = true;
        for _ in 0..300 {
            sim.step();
        }
        let live = sim.live();
        let new = sim.nodes[live[0]].ble.leader().expect("a new leader");
        assert_ne!(new.pid, old.pid, "seed {seed}: crashed node still leads");
        for &i in &live {
            assert_eq!(
                sim.nodes[i].ble.leader(),
                Some(new),
                "seed {seed}: node {i}"
            );
            assert_eq!(
                sim.nodes[i].ble_leader_events, 2,
                "seed {seed}: node {i} churned"
            );
        }
    }
}

//! The directory state machine and its placement policies.
//!
//! Hand-built cases for each command and policy, then property tests: random runs
//! of joins, crashes, restarts (new incarnations) and removals, with the repair
//! policy applied after each event, asserting what users rely on:
//!
//! * **restored redundancy**: once repair reaches a fixed point, every group whose
//!   majority survived has `R` live replicas whenever `R` live members exist;
//! * **one replica at a time**: consecutive configurations of a group share all but
//!   one replica, so the old majority that decides the stop-sign overlaps the new one;
//! * **well-formed**: replica sets sorted, distinct, made of members;
//! * **encoding**: a state decodes to itself, and no input makes decoding panic.
//!
//! Each run comes from its seed; a failure prints it.

use std::collections::{BTreeMap, BTreeSet};

use kv_protocols::NodeId;
use kv_protocols::directory::{
    DIRECTORY_GROUP, DirCommand, DirDecodeError, DirError, DirOutcome, Directory, Member,
};
use kv_protocols::partition::LookupTable;
use kv_protocols::rng::SplitMix64;
use kv_protocols::sequence_paxos::LogEntry;
use proptest::prelude::*;

fn addr(i: u16) -> NodeId {
    NodeId::from(([10, 1, 0, 1], 5000 + i))
}

fn member(i: u16, inc: u64) -> Member {
    Member {
        addr: addr(i),
        incarnation: inc,
    }
}

fn seeded(n: u16, partitions: u32, r: usize) -> Directory {
    Directory::seed(
        (0..n).map(|i| member(i, 100 + u64::from(i))).collect(),
        partitions,
        r,
    )
    .expect("valid seed")
}

fn none() -> BTreeSet<NodeId> {
    BTreeSet::new()
}

/// Applies `cmds`, each of which must take effect; a partition moved to a new epoch
/// is then settled, as when its old replicas decide their stop-sign.
fn apply_all(d: &mut Directory, cmds: &[DirCommand]) {
    for c in cmds {
        let outcome = d.apply(c);
        assert!(
            matches!(
                outcome,
                DirOutcome::Reconfigured { .. } | DirOutcome::Removed
            ),
            "{c:?} was refused: {outcome:?}"
        );
        settle(d, c, &outcome);
    }
}

/// After a partition's reconfiguration: its old epoch's stop-sign is decided.
fn settle(d: &mut Directory, c: &DirCommand, outcome: &DirOutcome) {
    if let (DirCommand::Reconfigure { group, .. }, DirOutcome::Reconfigured { epoch }) =
        (c, outcome)
        && *group != DIRECTORY_GROUP
    {
        assert_eq!(
            d.apply(&DirCommand::Stopped {
                group: *group,
                epoch: epoch - 1
            }),
            DirOutcome::Settled
        );
    }
}

#[test]
fn seed_follows_the_lookup_table_and_puts_the_directory_on_the_first_members() {
    let d = seeded(5, 4, 3);
    let t = LookupTable::build((0..5).map(addr).collect(), 4, 3).unwrap();
    for p in 0..4 {
        let g = d.group(p).unwrap();
        assert_eq!(g.epoch, 0);
        assert_eq!(
            g.addrs().into_iter().collect::<BTreeSet<_>>(),
            t.group(p).iter().copied().collect::<BTreeSet<_>>()
        );
    }
    assert_eq!(
        d.group(DIRECTORY_GROUP).unwrap().addrs(),
        vec![addr(0), addr(1), addr(2)]
    );
    assert_eq!(d.version(), 0);
    // With four members and R = 3 the directory has three; with two and R = 1, one.
    assert_eq!(
        seeded(2, 1, 1)
            .group(DIRECTORY_GROUP)
            .unwrap()
            .replicas
            .len(),
        1
    );
    assert!(Directory::seed(vec![member(0, 1)], 1, 3).is_err());
}

#[test]
fn joins_rejoins_and_removals() {
    let mut d = seeded(3, 1, 3);
    assert_eq!(d.apply(&DirCommand::Join(member(9, 1))), DirOutcome::Joined);
    assert_eq!(
        d.apply(&DirCommand::Join(member(9, 1))),
        DirOutcome::AlreadyMember
    );
    assert_eq!(d.version(), 1);
    // A restart: same address, new incarnation. Its replica slot is now lost.
    assert_eq!(
        d.apply(&DirCommand::Join(member(0, 7))),
        DirOutcome::Rejoined { previous: 100 }
    );
    assert_eq!(d.incarnation(addr(0)), Some(7));
    assert!(d.groups_of(addr(0)).is_empty());
    // A member that still holds slots cannot leave; a member without can.
    assert_eq!(
        d.apply(&DirCommand::Remove(addr(1))),
        DirOutcome::Refused(DirError::StillReplicates(vec![0, DIRECTORY_GROUP]))
    );
    assert_eq!(d.apply(&DirCommand::Remove(addr(9))), DirOutcome::Removed);
    assert_eq!(
        d.apply(&DirCommand::Remove(addr(9))),
        DirOutcome::Refused(DirError::NotAMember(addr(9)))
    );
}

#[test]
fn reconfigure_checks_the_epoch_and_the_replicas() {
    let mut d = seeded(4, 1, 3);
    let next = vec![member(1, 101), member(2, 102), member(3, 103)];
    let cmd = |from_epoch, replicas: Vec<Member>| DirCommand::Reconfigure {
        group: 0,
        from_epoch,
        replicas,
    };
    assert_eq!(
        d.apply(&cmd(0, next.clone())),
        DirOutcome::Reconfigured { epoch: 1 }
    );
    assert_eq!(
        d.apply(&cmd(0, next.clone())),
        DirOutcome::Refused(DirError::StaleEpoch {
            group: 0,
            current: 1
        })
    );
    // Epoch 0 has not decided its stop-sign yet: the group cannot move again.
    assert_eq!(
        d.apply(&cmd(1, vec![member(1, 101), member(2, 102)])),
        DirOutcome::Refused(DirError::Unsettled(0))
    );
    assert!(
        d.plan_repair(&BTreeSet::from([addr(1)]))
            .iter()
            .all(|c| !matches!(c, DirCommand::Reconfigure { group: 0, .. }))
    );
    let g = d.group(0).unwrap();
    assert_eq!((g.epoch, g.settled), (1, false));
    assert_eq!(
        g.previous,
        vec![member(0, 100), member(1, 101), member(2, 102)]
    );
    // A report for an epoch that is not the previous one changes nothing; the
    // right one settles the group once.
    let stopped = |epoch| DirCommand::Stopped { group: 0, epoch };
    assert_eq!(d.apply(&stopped(1)), DirOutcome::AlreadySettled);
    let v = d.version();
    assert_eq!(d.apply(&stopped(0)), DirOutcome::Settled);
    assert_eq!(d.version(), v + 1);
    assert_eq!(d.apply(&stopped(0)), DirOutcome::AlreadySettled);
    assert_eq!(d.version(), v + 1);
    assert!(d.group(0).unwrap().settled);
    // Wrong incarnation, unsorted, empty: refused, nothing changes.
    let before = d.clone();
    assert_eq!(
        d.apply(&cmd(1, vec![member(0, 1), member(1, 101), member(2, 102)])),
        DirOutcome::Refused(DirError::NotAMember(addr(0)))
    );
    assert_eq!(
        d.apply(&cmd(1, vec![member(2, 102), member(1, 101)])),
        DirOutcome::Refused(DirError::BadReplicaSet)
    );
    assert_eq!(
        d.apply(&cmd(1, vec![])),
        DirOutcome::Refused(DirError::BadReplicaSet)
    );
    assert_eq!(
        d.apply(&DirCommand::Reconfigure {
            group: 5,
            from_epoch: 0,
            replicas: next
        }),
        DirOutcome::Refused(DirError::UnknownGroup(5))
    );
    assert_eq!(d, before);
}

#[test]
fn a_directory_reconfiguration_is_the_directory_logs_stop_sign_and_always_ends_the_epoch() {
    let mut d = seeded(4, 1, 3);
    let bad = DirCommand::Reconfigure {
        group: DIRECTORY_GROUP,
        from_epoch: 0,
        replicas: vec![member(9, 9)],
    };
    assert!(bad.is_stop_sign());
    assert!(!DirCommand::Join(member(9, 9)).is_stop_sign());
    assert!(
        !DirCommand::Reconfigure {
            group: 0,
            from_epoch: 0,
            replicas: vec![]
        }
        .is_stop_sign()
    );
    let replicas = d.group(DIRECTORY_GROUP).unwrap().replicas.clone();
    assert_eq!(
        d.apply(&bad),
        DirOutcome::Refused(DirError::NotAMember(addr(9)))
    );
    let g = d.group(DIRECTORY_GROUP).unwrap();
    assert_eq!((g.epoch, &g.replicas), (1, &replicas));
    // A valid move planned for epoch 0, decided in epoch 1 (a request sent again
    // after an earlier move): refused, and epoch 1 is over all the same.
    let stale = DirCommand::Reconfigure {
        group: DIRECTORY_GROUP,
        from_epoch: 0,
        replicas: replicas.clone(),
    };
    assert_eq!(
        d.apply(&stale),
        DirOutcome::Refused(DirError::StaleEpoch {
            group: DIRECTORY_GROUP,
            current: 1
        })
    );
    let g = d.group(DIRECTORY_GROUP).unwrap();
    assert_eq!(
        (g.epoch, &g.replicas, &g.previous),
        (2, &replicas, &replicas)
    );
}

#[test]
fn a_crashed_replica_is_replaced_by_the_least_loaded_live_member() {
    // Five members, two partitions of three: members 3 and 4 hold fewer replicas.
    let mut d = seeded(5, 2, 3);
    let down = BTreeSet::from([addr(1)]);
    let plans = d.plan_repair(&down);
    // Member 1 is in the directory and in partition 0 (members 0, 1, 2).
    let groups: Vec<u32> = plans
        .iter()
        .map(|c| match c {
            DirCommand::Reconfigure { group, .. } => *group,
            _ => panic!("{c:?}"),
        })
        .collect();
    assert_eq!(groups, vec![DIRECTORY_GROUP, 0]);
    apply_all(&mut d, &plans);
    for g in [DIRECTORY_GROUP, 0] {
        let cfg = d.group(g).unwrap();
        assert_eq!(cfg.epoch, 1);
        assert!(!cfg.contains(addr(1)));
        assert_eq!(cfg.replicas.len(), 3);
    }
    // The two moves went to different spares.
    let new_dir: BTreeSet<_> = d
        .group(DIRECTORY_GROUP)
        .unwrap()
        .addrs()
        .into_iter()
        .collect();
    let new_p0: BTreeSet<_> = d.group(0).unwrap().addrs().into_iter().collect();
    assert_ne!(
        new_dir
            .difference(&BTreeSet::from([addr(0), addr(2)]))
            .next(),
        new_p0
            .difference(&BTreeSet::from([addr(0), addr(2)]))
            .next()
    );
    assert!(d.plan_repair(&down).is_empty());
}

#[test]
fn a_restarted_node_is_repaired_with_its_new_process() {
    let mut d = seeded(3, 1, 3);
    d.apply(&DirCommand::Join(member(2, 555)));
    let plans = d.plan_repair(&none());
    assert_eq!(plans.len(), 2); // the directory and partition 0
    apply_all(&mut d, &plans);
    assert!(d.group(0).unwrap().replicas.contains(&member(2, 555)));
    assert_eq!(d.groups_of(addr(2)), vec![0, DIRECTORY_GROUP]);
}

#[test]
fn no_repair_without_a_majority_or_without_a_candidate() {
    let d = seeded(3, 1, 3);
    // Two of three down: the group cannot decide a stop-sign.
    assert!(
        d.plan_repair(&BTreeSet::from([addr(0), addr(1)]))
            .is_empty()
    );
    // One down but nobody outside the group: it stays degraded.
    assert!(d.plan_repair(&BTreeSet::from([addr(0)])).is_empty());
}

#[test]
fn removal_moves_every_replica_first_then_removes() {
    let mut d = seeded(4, 2, 3);
    let mut steps = 0;
    loop {
        let plans = d.plan_removal(addr(0), &none()).expect("a plan");
        if plans == vec![DirCommand::Remove(addr(0))] {
            assert_eq!(d.apply(&plans[0]), DirOutcome::Removed);
            break;
        }
        apply_all(&mut d, &plans);
        steps += 1;
        assert!(steps < 10);
    }
    assert_eq!(d.incarnation(addr(0)), None);
    for g in d.group_ids() {
        assert_eq!(d.group(g).unwrap().replicas.len(), 3);
        assert!(!d.group(g).unwrap().contains(addr(0)));
    }
    // Three members left, R = 3: nobody can take member 1's replicas.
    assert!(matches!(
        d.plan_removal(addr(1), &none()),
        Err(DirError::StillReplicates(_))
    ));
    assert_eq!(
        d.plan_removal(addr(0), &none()),
        Err(DirError::NotAMember(addr(0)))
    );
}

#[test]
fn one_removal_spreads_the_moved_replicas_over_the_other_members() {
    // Member 0 holds partitions 0 and 1 and a directory slot; two spares join.
    let mut d = seeded(3, 2, 3);
    d.apply(&DirCommand::Join(member(3, 1)));
    d.apply(&DirCommand::Join(member(4, 1)));
    let plans = d.plan_removal(addr(0), &none()).expect("a plan");
    assert_eq!(plans.len(), 3);
    let mut gained: BTreeMap<NodeId, usize> = BTreeMap::new();
    for c in &plans {
        let DirCommand::Reconfigure {
            group, replicas, ..
        } = c
        else {
            panic!("{c:?}");
        };
        let old = d.group(*group).unwrap();
        for m in replicas.iter().filter(|m| !old.contains(m.addr)) {
            *gained.entry(m.addr).or_default() += 1;
        }
    }
    // Three moves, two spares: neither takes all of them.
    assert!(gained.values().all(|n| *n <= 2), "{gained:?}");
    assert_eq!(gained.values().sum::<usize>(), 3);
}

#[test]
fn rebalance_spreads_replicas_after_joins() {
    let mut d = seeded(3, 4, 3);
    for i in 3..6 {
        d.apply(&DirCommand::Join(member(i, 1)));
    }
    let mut moves = 0;
    while let Some(cmd) = d.plan_rebalance(&none()) {
        apply_all(&mut d, &[cmd]);
        moves += 1;
        assert!(moves < 50, "rebalancing does not converge");
    }
    let loads: Vec<usize> = d.members().iter().map(|m| d.load(m.addr)).collect();
    let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
    assert!(max - min <= 1, "{loads:?}");
    assert_eq!(loads.iter().sum::<usize>(), 4 * 3 + 3);
}

#[test]
fn decoding_reports_specific_errors() {
    let d = seeded(3, 2, 3);
    let bytes = d.encode();
    assert_eq!(Directory::decode(&bytes).unwrap(), d);
    assert_eq!(
        Directory::decode(b"KV"),
        Err(DirDecodeError::Truncated("header"))
    );
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(Directory::decode(&bad), Err(DirDecodeError::BadMagic));
    let mut bad = bytes.clone();
    bad[20] ^= 1;
    assert_eq!(
        Directory::decode(&bad),
        Err(DirDecodeError::ChecksumMismatch)
    );
}

/// One random run: `n0` members at boot, then events, repair after each.
fn run(seed: u64) -> Result<(), String> {
    let mut rng = SplitMix64::new(seed);
    let n0 = 3 + rng.below(4) as u16;
    let partitions = 1 + rng.below(4) as u32;
    let r = if n0 >= 5 && rng.chance(0.3) { 5 } else { 3 };
    let mut d = seeded(n0, partitions, r);
    let mut next_addr = n0;
    let mut down: BTreeSet<NodeId> = BTreeSet::new();
    for step in 0..40 {
        match rng.below(10) {
            0..=2 => {
                // A crash, as long as every group keeps a live majority.
                let members = d.members();
                let m = members[rng.below(members.len() as u64) as usize];
                let mut after = down.clone();
                after.insert(m.addr);
                let safe = d.group_ids().all(|g| {
                    let c = d.group(g).unwrap();
                    let live = c
                        .replicas
                        .iter()
                        .filter(|x| d.is_current(x) && !after.contains(&x.addr))
                        .count();
                    live * 2 > c.replicas.len()
                });
                if safe {
                    down.insert(m.addr);
                }
            }
            3..=4 => {
                // A restart of a crashed node: a new process at the same address.
                if let Some(&a) = down.iter().next() {
                    down.remove(&a);
                    d.apply(&DirCommand::Join(Member {
                        addr: a,
                        incarnation: 1000 + step,
                    }));
                }
            }
            5..=6 => {
                next_addr += 1;
                d.apply(&DirCommand::Join(member(next_addr, 1)));
            }
            7 => {
                // A crashed node leaves for good: take it out once it holds nothing.
                if let Some(&a) = down.iter().next()
                    && let Ok(plans) = d.plan_removal(a, &down)
                    && plans == vec![DirCommand::Remove(a)]
                {
                    d.apply(&plans[0]);
                    down.remove(&a);
                }
            }
            _ => {}
        }
        // Repair to a fixed point, checking every step.
        for round in 0.. {
            if round > 20 {
                return Err(format!("step {step}: repair does not converge"));
            }
            let plans = d.plan_repair(&down);
            if plans.is_empty() {
                break;
            }
            for cmd in plans {
                let DirCommand::Reconfigure {
                    group, replicas, ..
                } = &cmd
                else {
                    return Err(format!("repair planned {cmd:?}"));
                };
                let old = d.group(*group).unwrap().clone();
                let kept = old.replicas.iter().filter(|m| replicas.contains(m)).count();
                if kept + 1 != old.replicas.len() || replicas.len() != old.replicas.len() {
                    return Err(format!(
                        "step {step}: {cmd:?} changes more than one replica of {old:?}"
                    ));
                }
                match d.apply(&cmd) {
                    outcome @ DirOutcome::Reconfigured { .. } => settle(&mut d, &cmd, &outcome),
                    other => return Err(format!("step {step}: {cmd:?} gave {other:?}")),
                }
            }
        }
        // Well-formed, and redundancy restored where possible.
        let live_members = d
            .members()
            .iter()
            .filter(|m| !down.contains(&m.addr))
            .count();
        for g in d.group_ids() {
            let c = d.group(g).unwrap();
            if !c.replicas.windows(2).all(|w| w[0].addr < w[1].addr) {
                return Err(format!("step {step}: group {g} is not sorted: {c:?}"));
            }
            if c.replicas.iter().any(|m| d.incarnation(m.addr).is_none()) {
                return Err(format!("step {step}: group {g} names a non-member"));
            }
            let live = c
                .replicas
                .iter()
                .filter(|m| d.is_current(m) && !down.contains(&m.addr))
                .count();
            if live * 2 > c.replicas.len()
                && live_members >= c.replicas.len()
                && live < c.replicas.len()
            {
                return Err(format!(
                    "step {step}: group {g} has {live} live replicas of {} with {live_members} live members",
                    c.replicas.len()
                ));
            }
        }
        let back = Directory::decode(&d.encode()).map_err(|e| e.to_string())?;
        if back != d {
            return Err(format!("step {step}: the state does not decode to itself"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn repair_restores_redundancy_one_replica_at_a_time(seed in any::<u64>()) {
        if let Err(e) = run(seed) {
            prop_assert!(false, "seed {seed}: {e}");
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Directory::decode(&bytes);
    }

    #[test]
    fn decoding_a_corrupted_state_never_panics(seed in any::<u64>(), flips in 1usize..8) {
        let mut rng = SplitMix64::new(seed);
        let d = seeded(3 + rng.below(5) as u16, 1 + rng.below(8) as u32, 3);
        let mut bytes = d.encode();
        for _ in 0..flips {
            let i = rng.below(bytes.len() as u64) as usize;
            bytes[i] = rng.next_u64() as u8;
        }
        let cut = rng.below(bytes.len() as u64 + 1) as usize;
        let _ = Directory::decode(&bytes[..cut]);
        let _ = Directory::decode(&bytes);
    }
}

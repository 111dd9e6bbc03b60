//! The course's simulation scenarios, replayed on the real component graph with the
//! course's zero-latency network and with uniform 3–7 ms delays, on several seeds.
//! Every run's whole history also goes through the linearizability checker.

mod common;

use common::{assert_clean, networks, results};
use kv_ports::{KvOp, KvResult};
use scenarios::scenario::secs;
use scenarios::scenarios::{
    healing, linearizability, ops, put_cas, random, resilience, template_ops,
};

fn value(i: usize) -> KvResult {
    KvResult::Value(format!("value{i}"))
}

#[test]
fn ops_test_gets_on_a_prefilled_store_all_answer_with_the_stored_values() {
    for (net, seed) in networks() {
        let o = ops::scenario(net, seed).run();
        assert_clean(&o);
        let prefill = results(&o, 1);
        assert_eq!(prefill.len(), 111);
        assert!(
            prefill.iter().all(|(_, r)| *r == Some(KvResult::Done)),
            "{prefill:?}"
        );
        let gets = results(&o, 2);
        assert_eq!(gets.len(), 101);
        for (i, (op, r)) in gets.iter().enumerate() {
            assert_eq!(
                *op,
                KvOp::Get {
                    key: format!("test{i}")
                }
            );
            assert_eq!(*r, Some(value(i)), "{} seed {seed}: GET test{i}", o.name);
        }
    }
}

#[test]
fn put_cas_test_phases_give_the_course_outcomes() {
    use put_cas::clients::*;
    for (net, seed) in networks() {
        let o = put_cas::scenario(net, seed, secs(10)).run();
        assert_clean(&o);
        let all = |id: usize, want: &dyn Fn(usize) -> KvResult| {
            let rs = results(&o, id);
            assert_eq!(rs.len(), put_cas::N + 1, "client {id}");
            for (i, (op, r)) in rs.iter().enumerate() {
                assert_eq!(
                    r.as_ref(),
                    Some(&want(i)),
                    "seed {seed} client {id}: {op:?}"
                );
            }
        };
        all(A_CAS_MISSING, &|_| KvResult::NotFound);
        all(B_CAS_WRONG, &|i| KvResult::CasMismatch {
            current: format!("value{i}"),
        });
        all(C_PUT, &|_| KvResult::Done);
        all(C_CAS, &|_| KvResult::Done);
        all(D_PUT, &|_| KvResult::Done);
    }
}

/// Client `client` read `test0` ..= `test100` and got every prefilled value.
fn assert_reads_prefilled(o: &scenarios::scenario::Outcome, client: usize, seed: u64) {
    let gets = results(o, client);
    assert_eq!(gets.len(), 101);
    for (i, (_, r)) in gets.iter().enumerate() {
        assert_eq!(*r, Some(value(i)), "seed {seed}: GET test{i}");
    }
}

#[test]
fn resilience_one_crash_every_read_is_answered() {
    for (net, seed) in networks() {
        let o = resilience::one_crash(net, seed).run();
        assert_clean(&o);
        assert_eq!(o.killed, vec![1]);
        assert_reads_prefilled(&o, 2, seed);
    }
}

#[test]
fn resilience_a_replica_behind_the_trimmed_log_catches_up_from_a_chunked_snapshot() {
    for (net, seed) in networks() {
        let o = resilience::lagging_replica(net, seed).run();
        assert_clean(&o);
        assert_eq!(o.killed, vec![1]);
        assert_reads_prefilled(&o, 2, seed);
        // Server 3 got the state as a snapshot, in a message pulled in chunks.
        let c = o.counters[&3];
        assert!(c.snapshots_installed >= 1, "seed {seed}: {c:?}");
        assert!(c.large_messages_fetched >= 1, "seed {seed}: {c:?}");
    }
}

#[test]
fn resilience_restarted_bootstrap_server_rejoins_and_every_read_is_answered() {
    for (net, seed) in networks() {
        let o = resilience::restarted_bootstrap_server(net, seed).run();
        assert_clean(&o);
        assert_eq!(o.restarted, vec![1]);
        assert_eq!(o.alive, vec![1, 2, 3]);
        // Every live server ends with the same directory, in which each is a
        // member as the process it is now: the restarted one with its new
        // incarnation, holding none of its former slots.
        let dirs: Vec<_> = o.directories.values().collect();
        let first = dirs[0].as_ref().expect("a member");
        for d in &dirs {
            assert_eq!(d.as_deref(), Some(&**first), "seed {seed}");
        }
        for (i, inc) in &o.incarnations {
            let me = kv_ports::Member {
                addr: scenarios::scenario::node_addr(*i),
                incarnation: *inc,
            };
            assert!(
                first.is_current(&me),
                "seed {seed}: server {i} is not a member"
            );
        }
        // Its former slot was lost and has been given to a live process: with three
        // servers and three replicas, to the restarted server itself, which fetched
        // the partition's state and runs the new epoch.
        let g = first.group(0).expect("partition 0");
        assert!(g.epoch >= 1, "seed {seed}: partition 0 was not repaired");
        for m in &g.replicas {
            assert!(first.is_current(m), "seed {seed}: {m:?} is a lost slot");
        }
        assert!(
            o.hosting[&1].contains(&(0, g.epoch)),
            "seed {seed}: the restarted server does not run partition 0 (epoch {})",
            g.epoch
        );
        assert!(
            scenarios::scenarios::random::redundancy_problems(&o).is_empty(),
            "seed {seed}: {:?}",
            scenarios::scenarios::random::redundancy_problems(&o)
        );
        let gets = results(&o, 2);
        assert_eq!(gets.len(), 101);
        for (i, (_, r)) in gets.iter().enumerate() {
            assert_eq!(*r, Some(value(i)), "seed {seed}: GET test{i}");
        }
    }
}

#[test]
fn resilience_leader_crash_under_load_every_operation_completes() {
    for (net, seed) in networks() {
        let o = resilience::leader_crash_under_load(net, seed).run();
        assert_clean(&o);
        assert_eq!(o.killed.len(), 1, "the leader was found and killed");
        assert!(o.all_done);
        for id in [2, 3] {
            for r in o.client_ops(id) {
                assert!(r.succeeded(), "seed {seed}: {:?} -> {:?}", r.op, r.result);
            }
        }
        assert_eq!(o.client_ops(2).len(), 400);
    }
}

#[test]
fn resilience_two_crashes_nothing_is_answered_and_nothing_is_wrong() {
    for contact in [2, 3] {
        for (net, seed) in networks() {
            let o = resilience::two_crashes(net, seed, contact).run();
            assert_clean(&o);
            assert_eq!(o.killed, vec![1, 2]);
            let gets = o.client_ops(2);
            assert_eq!(gets.len(), 101);
            for r in gets {
                assert!(
                    !r.succeeded(),
                    "seed {seed}, contact {contact}: answered without a quorum: {:?} -> {:?}",
                    r.op,
                    r.result
                );
            }
            assert!(o.all_done, "every operation timed out (unknown outcome)");
        }
    }
}

#[test]
fn linearizability_test_later_operations_observe_earlier_ones() {
    use KvResult::*;
    let x0 = Value("x0".into());
    let expected = vec![
        Done,
        Done,
        Done,
        NotFound,
        Done,
        Done,
        Done,
        Done,
        x0.clone(),
        x0,
    ];
    for (net, seed) in networks() {
        let o = linearizability::scenario(net, seed).run();
        assert_clean(&o);
        assert!(o.all_done);
        let got: Vec<_> = results(&o, 1).into_iter().map(|(_, r)| r).collect();
        let want: Vec<_> = expected.iter().cloned().map(Some).collect();
        assert_eq!(got, want, "seed {seed}");
        for id in [2, 3] {
            assert_eq!(o.client_ops(id).len(), 40);
            assert!(o.client_ops(id).iter().all(|r| r.succeeded()));
        }
    }
}

#[test]
fn template_ops_test_all_answered_at_12s() {
    for (net, seed) in networks() {
        let o = template_ops::scenario(net, seed).run();
        assert_clean(&o);
        let rs = results(&o, 1);
        assert_eq!(rs.len(), 11);
        assert!(
            rs.iter().all(|(_, r)| *r == Some(KvResult::NotFound)),
            "{rs:?}"
        );
    }
}

#[test]
fn template_ops_test_client_arrives_the_instant_the_table_is_installed() {
    for (net, seed) in networks() {
        let probe = template_ops::scenario(net.clone(), seed).run();
        let booted = probe.booted_at.expect("the cluster booted");
        let o = template_ops::scenario_at(net, seed, booted).run();
        assert_eq!(o.booted_at, Some(booted), "same seed, same boot instant");
        assert_clean(&o);
        let rs = results(&o, 1);
        assert_eq!(rs.len(), 11);
        assert!(
            rs.iter().all(|(_, r)| *r == Some(KvResult::NotFound)),
            "{rs:?}"
        );
    }
}

#[test]
fn healing_three_servers_and_two_spares_outlive_four_crashes_one_at_a_time() {
    for (net, seed) in networks() {
        let o = healing::spares_outlive_four_crashes(net, seed).run();
        assert_clean(&o);
        assert!(o.all_done, "seed {seed}: operations left unfinished");
        let prefill = results(&o, 1);
        assert!(
            prefill.iter().all(|(_, r)| *r == Some(KvResult::Done)),
            "seed {seed}: {prefill:?}"
        );
        let gets = results(&o, 2);
        assert_eq!(gets.len(), 101);
        for (i, (_, r)) in gets.iter().enumerate() {
            assert_eq!(
                *r,
                Some(value(i)),
                "seed {seed}: GET test{i} after four crashes"
            );
        }
        // The group has three live replicas again, running its latest epoch; four
        // crashes means at least four moves.
        let problems = random::redundancy_problems(&o);
        assert!(problems.is_empty(), "seed {seed}: {problems:?}");
        let d = o
            .directories
            .values()
            .next()
            .cloned()
            .flatten()
            .expect("a directory");
        assert!(d.group(0).expect("partition 0").epoch >= 4, "seed {seed}");
        assert!(random::directory_problems(&o).is_empty(), "seed {seed}");
    }
}

//! Process tests on loopback: `kvstore start` nodes from HOCON files, the one-shot
//! commands (`get`, `put`, `cas`) and `kvstore demo`, with nodes killed by SIGKILL
//! (issue 3 "two nodes find each other"; issue 5 "Done when").
//!
//! Every node runs at `--log-level info` with its log in a file under `target/tmp/`
//! (kept, and its path printed, when a test fails). Waits poll a condition (a log
//! line, a command's result) every 20 ms up to a 30 s cap. Every child process is
//! killed by a drop guard. Tests that run a cluster take turns (`cluster_slot`), so a
//! 2-core machine never hosts two clusters at once.
//!
//! Availability checks right after a kill run with `--timeout 10s`: the first
//! operation after the leader dies waits for the failure detector and a new election
//! (about a second on an idle machine), and the suite must not depend on the machine's
//! load. The "two of three killed" checks use `--timeout 2s` and bound the elapsed time
//! loosely (< 15 s), only as a hang guard.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Cluster, Run, WAIT, cluster_slot, free_port, run, run_with_input, wait_until};
use kv_protocols::partition::{LookupTable, key_hash, partition_of};

/// Client deadline for operations that must succeed.
const OK_TIMEOUT: &str = "10s";
/// Client deadline for operations that must report the cluster unavailable.
const DOWN_TIMEOUT: &str = "2s";
/// Hang guard for an operation with a 2 s deadline.
const DOWN_BOUND: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------
// Operations through the command line, checked against what the store may hold

#[derive(Clone, Debug)]
enum Op {
    Get(String),
    Put(String, String),
    Cas(String, String, String),
}

fn get(k: &str) -> Op {
    Op::Get(k.into())
}
fn put(k: &str, v: &str) -> Op {
    Op::Put(k.into(), v.into())
}
fn cas(k: &str, e: &str, n: &str) -> Op {
    Op::Cas(k.into(), e.into(), n.into())
}

/// Runs `op` through `kvstore get|put|cas ... --endpoint EP --timeout T`.
fn exec(op: &Op, endpoint: SocketAddr, timeout: &str) -> Run {
    let ep = endpoint.to_string();
    let mut args: Vec<&str> = match op {
        Op::Get(k) => vec!["get", k],
        Op::Put(k, v) => vec!["put", k, v],
        Op::Cas(k, e, n) => vec!["cas", k, e, n],
    };
    args.extend(["--endpoint", &ep, "--timeout", timeout]);
    run(&args)
}

/// The values each key may hold, given every outcome seen so far (`None`: absent).
/// An operation that timed out may or may not have taken effect, so it widens the
/// set; any definite answer must be in the set, and narrows it to itself. A command
/// that prints a value the store cannot hold fails the test.
#[derive(Default)]
struct Model {
    keys: HashMap<String, BTreeSet<Option<String>>>,
}

impl Model {
    fn possible(&mut self, k: &str) -> &mut BTreeSet<Option<String>> {
        self.keys
            .entry(k.to_string())
            .or_insert_with(|| BTreeSet::from([None]))
    }

    /// Checks `r`, the outcome of `op`, against the model and records it; returns
    /// the exit code.
    fn check(&mut self, op: &Op, r: &Run) -> i32 {
        let code = r
            .code
            .unwrap_or_else(|| panic!("killed by a signal: {}", r.show()));
        let err = r.stderr.trim_end();
        match code {
            0 => {
                assert_eq!(err, "", "{}", r.show());
                match op {
                    Op::Get(k) => {
                        let v = r
                            .stdout
                            .strip_suffix('\n')
                            .unwrap_or_else(|| panic!("no value line: {}", r.show()));
                        let s = self.possible(k);
                        assert!(
                            s.contains(&Some(v.to_string())),
                            "WRONG VALUE: {} — {k:?} can only be one of {s:?}",
                            r.show()
                        );
                        *s = BTreeSet::from([Some(v.to_string())]);
                    }
                    Op::Put(k, v) => {
                        assert_eq!(r.stdout, "", "{}", r.show());
                        *self.possible(k) = BTreeSet::from([Some(v.clone())]);
                    }
                    Op::Cas(k, e, n) => {
                        assert_eq!(r.stdout, "", "{}", r.show());
                        let s = self.possible(k);
                        assert!(
                            s.contains(&Some(e.clone())),
                            "CAS succeeded but {k:?} could not hold {e:?} (only {s:?}): {}",
                            r.show()
                        );
                        *s = BTreeSet::from([Some(n.clone())]);
                    }
                }
            }
            1 => {
                assert_eq!(r.stdout, "", "{}", r.show());
                let (k, expected) = match op {
                    Op::Get(k) => (k, None),
                    Op::Cas(k, e, _) => (k, Some(e)),
                    Op::Put(..) => panic!("a PUT cannot have a negative outcome: {}", r.show()),
                };
                let not_found = format!("key {k:?} not found");
                let s = self.possible(k);
                if err == not_found {
                    assert!(
                        s.contains(&None),
                        "WRONG: {} — {k:?} is one of {s:?}",
                        r.show()
                    );
                    *s = BTreeSet::from([None]);
                } else {
                    let prefix = format!("cas failed: current value of {k:?} is ");
                    let current = err
                        .strip_prefix(&prefix)
                        .and_then(|q| q.strip_prefix('"')?.strip_suffix('"'))
                        .filter(|_| expected.is_some())
                        .unwrap_or_else(|| panic!("unexpected negative outcome: {}", r.show()));
                    assert_ne!(Some(&current.to_string()), expected, "{}", r.show());
                    assert!(
                        s.contains(&Some(current.to_string())),
                        "WRONG VALUE: {} — {k:?} can only be one of {s:?}",
                        r.show()
                    );
                    *s = BTreeSet::from([Some(current.to_string())]);
                }
            }
            3 => {
                assert_eq!(r.stdout, "", "an unavailable command printed: {}", r.show());
                assert!(
                    err.contains("no answer from") && err.contains("(is the cluster up?)"),
                    "{}",
                    r.show()
                );
                match op {
                    Op::Get(_) => {}
                    Op::Put(k, v) => {
                        self.possible(k).insert(Some(v.clone()));
                    }
                    Op::Cas(k, e, n) => {
                        let s = self.possible(k);
                        if s.contains(&Some(e.clone())) {
                            s.insert(Some(n.clone()));
                        }
                    }
                }
            }
            other => panic!("unexpected exit code {other}: {}", r.show()),
        }
        code
    }

    /// Runs `op` and requires it to succeed or to have a negative outcome (0 or 1).
    fn ok(&mut self, op: Op, endpoint: SocketAddr, timeout: &str) -> Run {
        let r = exec(&op, endpoint, timeout);
        let code = self.check(&op, &r);
        assert!(code == 0 || code == 1, "expected an answer: {}", r.show());
        r
    }

    /// Runs `op` and requires it to report the cluster unavailable (exit code 3)
    /// within the loose bound.
    fn down(&mut self, op: Op, endpoint: SocketAddr) -> Run {
        let r = exec(&op, endpoint, DOWN_TIMEOUT);
        let code = self.check(&op, &r);
        assert_eq!(code, 3, "expected unavailable: {}", r.show());
        assert!(r.elapsed < DOWN_BOUND, "took too long: {}", r.show());
        r
    }
}

/// Two keys, one in each of two partitions.
fn keys_per_partition(partitions: u32) -> Vec<String> {
    (0..partitions)
        .map(|p| {
            (0..)
                .map(|i| format!("key-{i}"))
                .find(|k| partition_of(key_hash(k.as_bytes()), partitions) == p)
                .unwrap()
        })
        .collect()
}

/// Waits until `key` can be read through `endpoint` (the partition has a leader and
/// the overlay routes to it).
fn wait_served(endpoint: SocketAddr, key: &str) {
    wait_until(
        &format!("{key:?} is served through {endpoint}"),
        WAIT,
        || {
            let r = exec(&get(key), endpoint, "2s");
            matches!(r.code, Some(0) | Some(1))
        },
    );
}

// ---------------------------------------------------------------------------------
// Tests

/// Issue 3: two `kvstore start` nodes on loopback from two HOCON files find each
/// other, visible in their logs at info level.
#[test]
fn two_nodes_from_hocon_files_find_each_other() {
    let c = Cluster::start("two-nodes", 2, 1, 1);
    let server = &c.nodes[0];
    let other = &c.nodes[1];
    let lines = |n: &common::Node, needles: &[&str]| -> Vec<String> {
        n.log_text()
            .lines()
            .filter(|l| needles.iter().any(|x| l.contains(x)))
            .map(|l| l.trim().to_string())
            .collect()
    };
    let s = lines(
        server,
        &[
            "waiting for nodes",
            "node checked in",
            "cluster formed",
            "member of the cluster",
        ],
    );
    let o = lines(other, &["checking in", "member of the cluster"]);
    println!("bootstrap server {}:\n  {}", server.address, s.join("\n  "));
    println!("node {}:\n  {}", other.address, o.join("\n  "));
    let has = |v: &[String], x: &str| v.iter().any(|l| l.contains(x));
    assert!(
        has(&s, &format!("from: {}", other.address)),
        "the server did not see the other node check in"
    );
    assert!(has(&s, "cluster formed") && has(&s, "nodes: 2"), "{s:?}");
    assert!(has(&s, "member of the cluster"), "{s:?}");
    assert!(
        has(&o, &format!("server: {}", server.address)),
        "the node did not check in with the server: {o:?}"
    );
    assert!(
        has(&o, "member of the cluster") && has(&o, "nodes: 2"),
        "{o:?}"
    );
}

/// Issue 5: PUT, GET and CAS through the command line on three nodes, with the
/// outputs and exit codes of DESIGN.md; issue 16: DEL and CAS against absent.
#[test]
fn three_nodes_put_get_cas_through_the_cli() {
    let c = Cluster::start("cli", 3, 1, 3);
    let eps = c.alive();
    let ep = |i: usize| eps[i].to_string();
    wait_served(eps[0], "k");

    // put prints nothing; get prints the value alone.
    let r = run(&["put", "k", "v", "--endpoint", &ep(0)]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (Some(0), "", ""),
        "{}",
        r.show()
    );
    for i in 0..3 {
        let r = run(&["get", "k", "--endpoint", &ep(i)]);
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (Some(0), "v\n", ""),
            "{}",
            r.show()
        );
    }
    // --verbose prints OK.
    let r = run(&["put", "k", "v2", "--verbose", "--endpoint", &ep(1)]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "OK\n"),
        "{}",
        r.show()
    );
    // A value with spaces comes back whole.
    let r = run(&["put", "greeting", "hello world", "--endpoint", &ep(2)]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let r = run(&["get", "greeting", "--endpoint", &ep(0)]);
    assert_eq!(r.stdout, "hello world\n", "{}", r.show());

    // Not found: exit 1, the reason on stderr.
    let r = run(&["get", "missing", "--endpoint", &ep(2)]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.trim_end()),
        (Some(1), "", "key \"missing\" not found"),
        "{}",
        r.show()
    );
    // CAS on a missing key is NotFound.
    let r = run(&["cas", "missing", "a", "b", "--endpoint", &ep(0)]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.trim_end()),
        (Some(1), "", "key \"missing\" not found"),
        "{}",
        r.show()
    );
    // CAS mismatch: exit 1 with the current value.
    let r = run(&["cas", "k", "v", "x", "--endpoint", &ep(1)]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.trim_end()),
        (Some(1), "", "cas failed: current value of \"k\" is \"v2\""),
        "{}",
        r.show()
    );
    // CAS match: silent, or OK with --verbose.
    let r = run(&["cas", "k", "v2", "x", "--endpoint", &ep(2)]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (Some(0), "", ""),
        "{}",
        r.show()
    );
    let r = run(&["cas", "k", "x", "y", "--verbose", "--endpoint", &ep(0)]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "OK\n"),
        "{}",
        r.show()
    );
    let r = run(&["get", "k", "--endpoint", &ep(1)]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "y\n"),
        "{}",
        r.show()
    );

    // cas --absent creates a missing key, and names the value of an existing one.
    let r = run(&["cas", "fresh", "--absent", "a", "--endpoint", &ep(0)]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (Some(0), "", ""),
        "{}",
        r.show()
    );
    let r = run(&["cas", "fresh", "--absent", "b", "--endpoint", &ep(1)]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.trim_end()),
        (
            Some(1),
            "",
            "cas failed: current value of \"fresh\" is \"a\""
        ),
        "{}",
        r.show()
    );
    // del: silent (OK with --verbose) when the key existed, exit 1 when it did not.
    let r = run(&["del", "fresh", "--verbose", "--endpoint", &ep(2)]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (Some(0), "OK\n", ""),
        "{}",
        r.show()
    );
    for args in [["get", "fresh"], ["del", "fresh"]] {
        let r = run(&[args[0], args[1], "--endpoint", &ep(0)]);
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.trim_end()),
            (Some(1), "", "key \"fresh\" not found"),
            "{}",
            r.show()
        );
    }
    let r = run(&[
        "cas",
        "fresh",
        "--absent",
        "c",
        "--verbose",
        "--endpoint",
        &ep(1),
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "OK\n"),
        "{}",
        r.show()
    );

    // Usage errors: exit 2.
    let e0 = ep(0);
    for args in [
        vec!["get", "--endpoint", &e0],
        vec!["put", "k", "--endpoint", &e0],
        vec!["del", "--endpoint", &e0],
        vec!["cas", "k", "a", "--endpoint", &e0],
        vec!["cas", "k", "--absent", "a", "b", "--endpoint", &e0],
        vec!["cas", "k", "--absent", "--endpoint", &e0],
        vec!["get", "k", "--endpoint", "not an address"],
        vec!["get", "k", "--endpoint", &e0, "--timeout", "soon"],
    ] {
        let r = run(&args);
        println!("{}", r.show());
        assert_eq!(r.code, Some(2), "{}", r.show());
        assert_eq!(r.stdout, "", "{}", r.show());
        assert!(!r.stderr.is_empty(), "{}", r.show());
    }
}

/// Issue 5: no node at the endpoint → exit 3 with the documented message, within the
/// deadline.
#[test]
fn no_cluster_at_the_endpoint_exits_3() {
    let ep = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut m = Model::default();
    for op in [get("k"), put("k", "v"), cas("k", "v", "w")] {
        let r = m.down(op, ep);
        assert_eq!(
            r.stderr.trim_end(),
            format!("kvstore: no answer from {ep} within 2s (is the cluster up?)"),
            "{}",
            r.show()
        );
    }
}

/// Issue 5: SIGKILL of the leader in the middle of a stream of writes; every write
/// succeeds and the last one is read back. Then SIGKILL of a second node: operations
/// exit with code 3 within the deadline and print no value.
#[test]
fn leader_killed_mid_workload_then_majority_lost() {
    let mut c = Cluster::start("leader", 3, 1, 3);
    let leader = c.agreed_leader(0);
    let survivors: Vec<SocketAddr> = c.alive().into_iter().filter(|a| *a != leader).collect();
    let ep = survivors[0];
    println!(
        "nodes {:?}, bootstrap {}, leader {leader}; writing through {ep}",
        c.alive(),
        c.bootstrap
    );
    let mut m = Model::default();
    m.ok(put("w", "0"), ep, OK_TIMEOUT);

    // A writer in the background: PUT w = 1..=WRITES, one after the other.
    const WRITES: usize = 12;
    let done = Arc::new(AtomicUsize::new(0));
    let writer = {
        let done = done.clone();
        std::thread::spawn(move || {
            (1..=WRITES)
                .map(|i| {
                    let op = put("w", &i.to_string());
                    let r = exec(&op, ep, OK_TIMEOUT);
                    done.fetch_add(1, Ordering::SeqCst);
                    (op, r)
                })
                .collect::<Vec<_>>()
        })
    };
    wait_until("three writes are acknowledged", WAIT, || {
        done.load(Ordering::SeqCst) >= 3
    });
    c.node(leader).kill();
    println!(
        "killed the leader {leader} after {} writes",
        done.load(Ordering::SeqCst)
    );
    let results = writer.join().expect("writer thread");
    for (op, r) in &results {
        assert_eq!(
            m.check(op, r),
            0,
            "a write failed after the leader was killed: {}",
            r.show()
        );
    }
    let slowest = results.iter().map(|(_, r)| r.elapsed).max().unwrap();
    println!("all {WRITES} writes acknowledged; the slowest took {slowest:.2?}");
    for &e in &survivors {
        let r = m.ok(get("w"), e, OK_TIMEOUT);
        assert_eq!(r.stdout, format!("{WRITES}\n"), "{}", r.show());
    }
    m.ok(
        cas("w", &WRITES.to_string(), "after"),
        survivors[1],
        OK_TIMEOUT,
    );
    let new_leader = c.agreed_leader(0);
    println!("new leader {new_leader}");

    // Kill a second node: the group has no majority any more.
    let victim = survivors[1];
    c.node(victim).kill();
    println!("killed {victim}; only {ep} is left");
    for op in [
        get("w"),
        put("w", "lost?"),
        cas("w", "after", "never"),
        get("missing"),
    ] {
        let r = m.down(op, ep);
        println!("{}", r.show());
    }
    // Through a dead endpoint: no connection at all.
    let r = m.down(get("w"), leader);
    println!("{}", r.show());
}

/// Kills the node `pick` chooses (given the cluster and the current leader), then
/// checks that operations keep succeeding through every surviving endpoint.
fn survives_one_kill(name: &str, pick: impl Fn(&Cluster, SocketAddr) -> SocketAddr) {
    let mut c = Cluster::start(name, 3, 1, 3);
    let leader = c.agreed_leader(0);
    let mut m = Model::default();
    let first = c.alive()[0];
    m.ok(put("a", "1"), first, OK_TIMEOUT);
    m.ok(put("b", "1"), first, OK_TIMEOUT);

    let victim = pick(&c, leader);
    c.node(victim).kill();
    println!(
        "killed {victim} (leader: {}, bootstrap server: {})",
        victim == leader,
        victim == c.bootstrap
    );
    let alive = c.alive();
    for (i, &e) in alive.iter().enumerate() {
        let r = m.ok(get("a"), e, OK_TIMEOUT);
        assert_eq!(r.stdout, if i == 0 { "1\n" } else { "2\n" }, "{}", r.show());
        m.ok(cas("a", if i == 0 { "1" } else { "2" }, "2"), e, OK_TIMEOUT);
        m.ok(put("b", &format!("{e}")), e, OK_TIMEOUT);
        let r = m.ok(get("b"), e, OK_TIMEOUT);
        assert_eq!(r.stdout, format!("{e}\n"), "{}", r.show());
        let r = m.ok(cas("a", "1", "3"), e, OK_TIMEOUT);
        assert_eq!(r.code, Some(1), "{}", r.show());
    }
    // The survivors elect (or keep) a live leader.
    let now = c.agreed_leader(0);
    println!("leader after the kill: {now}");
}

/// Issue 5: SIGKILL of the current leader (found from the `leader elected` log lines).
#[test]
fn survives_sigkill_of_the_leader() {
    survives_one_kill("kill-leader", |_, leader| leader);
}

/// Issue 5: SIGKILL of the bootstrap server (which may also be the leader).
#[test]
fn survives_sigkill_of_the_bootstrap_server() {
    survives_one_kill("kill-bootstrap", |c, _| c.bootstrap);
}

/// Issue 5: SIGKILL of a node that is neither the leader nor the bootstrap server.
#[test]
fn survives_sigkill_of_a_follower() {
    survives_one_kill("kill-follower", |c, leader| {
        *c.alive()
            .iter()
            .find(|a| **a != leader && **a != c.bootstrap)
            .expect("three nodes have a node that is neither")
    });
}

/// Issue 5: six nodes, two partitions, replication 3. Keys of both partitions are
/// served; killing nodes of partition 0's group does not stop partition 1, and
/// partition 0 reports unavailable (never a wrong value) once it lost its majority.
#[test]
fn six_nodes_two_partitions_are_independent() {
    let mut c = Cluster::start("six", 6, 2, 3);
    let (g0, g1) = (c.group(0), c.group(1));
    let table = LookupTable::build(c.sorted(), 2, 3).expect("lookup table");
    assert_eq!(table.groups, vec![g0.clone(), g1.clone()]);
    assert!(
        g0.iter().all(|a| !g1.contains(a)),
        "groups overlap: {g0:?} {g1:?}"
    );
    let keys = keys_per_partition(2);
    let (k0, k1) = (keys[0].as_str(), keys[1].as_str());
    println!("partition 0: {g0:?} key {k0:?}; partition 1: {g1:?} key {k1:?}");
    let l0 = c.agreed_leader(0);
    c.agreed_leader(1);
    wait_served(g1[0], k0);
    wait_served(g1[0], k1);

    let mut m = Model::default();
    // Each key through a node of its own group and through a node of the other.
    m.ok(put(k0, "zero"), g0[0], OK_TIMEOUT);
    m.ok(put(k1, "one"), g0[1], OK_TIMEOUT);
    for e in [g0[2], g1[0], g1[2]] {
        assert_eq!(m.ok(get(k0), e, OK_TIMEOUT).stdout, "zero\n");
        assert_eq!(m.ok(get(k1), e, OK_TIMEOUT).stdout, "one\n");
    }

    // One replica of partition 0 down (its leader): both partitions still served.
    c.node(l0).kill();
    println!("killed {l0}, the leader of partition 0");
    let g0_alive: Vec<SocketAddr> = g0.iter().copied().filter(|a| *a != l0).collect();
    m.ok(cas(k0, "zero", "zero-2"), g1[1], OK_TIMEOUT);
    m.ok(cas(k1, "one", "one-2"), g0_alive[0], OK_TIMEOUT);
    assert_eq!(m.ok(get(k0), g0_alive[1], OK_TIMEOUT).stdout, "zero-2\n");
    assert_eq!(m.ok(get(k1), g1[2], OK_TIMEOUT).stdout, "one-2\n");

    // A second replica of partition 0 down: partition 0 has no majority, partition 1
    // is untouched (also through the last node of partition 0's group).
    c.node(g0_alive[0]).kill();
    let last0 = g0_alive[1];
    println!("killed {}; partition 0 keeps only {last0}", g0_alive[0]);
    for e in [g1[0], last0] {
        m.ok(put(k1, &format!("via {e}")), e, OK_TIMEOUT);
        assert_eq!(m.ok(get(k1), e, OK_TIMEOUT).stdout, format!("via {e}\n"));
    }
    let r = m.down(get(k0), g1[0]);
    println!("{}", r.show());
    m.down(put(k0, "lost?"), g1[1]);
    m.down(cas(k0, "zero-2", "never"), last0);
    // Partition 1 still answers after partition 0's timeouts.
    assert_eq!(
        m.ok(get(k1), g1[1], OK_TIMEOUT).stdout,
        format!("via {last0}\n")
    );
}

/// Issue 5: the piped demo session of the issue prints exactly the expected lines.
#[test]
fn demo_piped_session_prints_the_expected_lines() {
    let _slot = cluster_slot();
    let r = run_with_input(
        &["demo"],
        "put a 1\nget a\ncas a 1 2\ncas a 1 3\nget missing\n",
        Duration::from_secs(60),
    );
    println!("{}", r.show());
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert_eq!(
        r.stdout,
        "OK\n1\nOK\ncas failed: current value of \"a\" is \"2\"\nkey \"missing\" not found\n",
        "{}",
        r.show()
    );
}

/// Issue 5: `kvstore demo --nodes 6 --partitions 2` serves keys of both partitions.
#[test]
fn demo_with_six_nodes_and_two_partitions() {
    let _slot = cluster_slot();
    let keys = keys_per_partition(2);
    let (k0, k1) = (&keys[0], &keys[1]);
    let input = format!(
        "put {k0} x\nput {k1} y\nget {k0}\nget {k1}\ncas {k0} x z\ncas {k1} x z\nget {k0}\nhelp\nquit\nget {k1}\n"
    );
    let r = run_with_input(
        &["demo", "--nodes", "6", "--partitions", "2"],
        &input,
        Duration::from_secs(60),
    );
    println!("{}", r.show());
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert!(
        r.stderr.contains("6 nodes, 2 partition(s), replication 3"),
        "{}",
        r.show()
    );
    let expected_start =
        format!("OK\nOK\nx\ny\nOK\ncas failed: current value of {k1:?} is \"y\"\nz\ncommands:\n");
    assert!(r.stdout.starts_with(&expected_start), "{}", r.show());
    // Nothing after `quit` runs.
    assert!(!r.stdout.ends_with("y\n"), "{}", r.show());
}

/// Issue 5: the example Kompact application (`examples/embedded-client`), which
/// embeds `ClientComp` next to its own component, writes and reads back a key on a
/// three-node cluster; the CLI sees the same value.
#[test]
fn embedded_client_example_against_three_nodes() {
    let c = Cluster::start("embedded", 3, 1, 3);
    let eps = c.alive();
    wait_served(eps[0], "embedded");
    let read =
        embedded_client::put_then_get(eps[0], "embedded", "from kompact", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("embedded client failed: {e}"));
    assert_eq!(read, "from kompact");
    let r = run(&["get", "embedded", "--endpoint", &eps[2].to_string()]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "from kompact\n"),
        "{}",
        r.show()
    );

    // Against nothing: the client's deadline, reported as unavailable.
    let nobody = SocketAddr::from(([127, 0, 0, 1], free_port()));
    match embedded_client::put_then_get(nobody, "k", "v", Duration::from_secs(1)) {
        Err(embedded_client::Failure::Store(kv_ports::KvError::Unavailable(msg))) => {
            println!("embedded client without a cluster: {msg}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

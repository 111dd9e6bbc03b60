//! Issue 13, operator commands: `kvstore remove ADDR` and `kvstore rebalance`
//! against `kvstore start` processes on loopback. Five nodes, boot-threshold 3,
//! R = 3, two partitions: the three boot nodes hold both partitions and the
//! directory, the two started later join as spares.
//!
//! - `remove`: keys written first; `kvstore remove` of a boot node (through a spare)
//!   exits 0 after printing its moves and "removed ADDR"; the node is no longer a
//!   member, every partition is on R live, answering replicas of a later epoch
//!   without it, and every key reads back. The wall time of the remove and the
//!   longest gap a client writing throughout saw are printed (`--nocapture`), not
//!   asserted, next to the longest gap of the same client loop over 20 writes
//!   before the remove.
//! - `rebalance`: exits 0 after printing its moves and "balanced: ..." with loads
//!   N or N+1; both spares then hold replicas and every partition is on R live
//!   replicas.
//!
//! Usage errors (the endpoint as ADDR, an address that is not one) exit 2, and a
//! non-member exits 1. Every wait polls a condition with a bound.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Node, Scratch, WAIT, cluster_slot, free_addrs, run};
use serde_json::Value;

const NODES: usize = 5;
const BOOT_THRESHOLD: usize = 3;
const R: usize = 3;
const PARTITIONS: u32 = 2;

struct Admin {
    nodes: Vec<Node>,
    /// The boot nodes (replicas of every partition and of the directory).
    boot: Vec<SocketAddr>,
    spares: Vec<SocketAddr>,
    _scratch: Scratch,
}

impl Admin {
    fn start(name: &str) -> Admin {
        let scratch = Scratch::new(name);
        let addrs = free_addrs(NODES);
        let nodes =
            common::start_growing_cluster(&scratch, &addrs, BOOT_THRESHOLD, PARTITIONS, R, "");
        let c = Admin {
            nodes,
            boot: addrs[..BOOT_THRESHOLD].to_vec(),
            spares: addrs[BOOT_THRESHOLD..].to_vec(),
            _scratch: scratch,
        };
        common::wait_until(
            "every node is a member and partitions are served",
            WAIT,
            || {
                c.members(c.spares[0]).is_some_and(|m| m.len() == NODES)
                    && c.status().is_some_and(|s| healthy(&s, &[]).is_some())
            },
        );
        c
    }

    fn status(&self) -> Option<Value> {
        let ep = self.spares[0].to_string();
        let r = run(&["status", "--endpoint", &ep, "--json", "--timeout", "1s"]);
        (r.code == Some(0))
            .then(|| serde_json::from_str(r.stdout.trim()).ok())
            .flatten()
    }

    /// `kvstore members --json` through `ep`: each member and its partitions.
    fn members(&self, ep: SocketAddr) -> Option<Vec<(SocketAddr, Vec<u64>)>> {
        let ep = ep.to_string();
        let r = run(&["members", "--endpoint", &ep, "--json", "--timeout", "1s"]);
        let v: Value = serde_json::from_str(r.stdout.trim()).ok()?;
        v["members"]
            .as_array()?
            .iter()
            .map(|m| {
                Some((
                    m["node"].as_str()?.parse().ok()?,
                    m["replicas"]
                        .as_array()?
                        .iter()
                        .filter_map(Value::as_u64)
                        .collect(),
                ))
            })
            .collect()
    }

    fn assert_no_crash(&mut self) {
        for n in &mut self.nodes {
            assert!(
                !n.log_text().contains("panicked") && n.exited().is_none(),
                "node {} panicked or exited; log:\n{}",
                n.address,
                n.log_text()
            );
        }
    }
}

/// Every partition on R replicas, none in `without`, all answering in one epoch
/// with a confirmed leader: the replicas per partition.
fn healthy(status: &Value, without: &[SocketAddr]) -> Option<Vec<Vec<SocketAddr>>> {
    let parts = status["partitions"].as_array()?;
    if parts.len() != PARTITIONS as usize {
        return None;
    }
    let mut groups = Vec::new();
    for p in parts {
        let replicas: Vec<SocketAddr> = p["replicas"]
            .as_array()?
            .iter()
            .filter_map(|r| r.as_str()?.parse().ok())
            .collect();
        if replicas.len() != R || replicas.iter().any(|r| without.contains(r)) {
            return None;
        }
        let epochs: Vec<u64> = p["replica_status"]
            .as_array()?
            .iter()
            .filter(|r| r["answered"] == true && (r["role"] == "leader" || r["role"] == "follower"))
            .filter_map(|r| r["epoch"].as_u64())
            .collect();
        if epochs.len() != R || epochs.iter().any(|e| *e != epochs[0]) {
            return None;
        }
        if p["leader_confirmed"] != true {
            return None;
        }
        groups.push(replicas);
    }
    Some(groups)
}

fn kv(args: &[&str], ep: SocketAddr) -> common::Run {
    let ep = ep.to_string();
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--endpoint", &ep]);
    run(&a)
}

#[test]
fn remove_moves_the_replicas_of_a_member_then_takes_it_out() {
    let _slot = cluster_slot();
    let mut c = Admin::start("admin-remove");
    let spare = c.spares[0];
    for i in 0..20 {
        let r = kv(&["put", &format!("k{i}"), &format!("v{i}")], spare);
        assert_eq!(r.code, Some(0), "{}", r.show());
    }

    // Usage and refusals first.
    let ep = spare.to_string();
    let r = run(&["remove", &ep, "--endpoint", &ep]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    let r = run(&["remove", "not-an-address", "--endpoint", &ep]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    let r = run(&[
        "remove",
        "127.0.0.1:1",
        "--endpoint",
        &ep,
        "--timeout",
        "5s",
    ]);
    assert_eq!(r.code, Some(1), "{}", r.show());
    assert!(r.stderr.contains("not a member"), "{}", r.show());

    // The reference, in the same run: the longest gap between acknowledged writes
    // of the same client loop over 20 writes with no move going on.
    let mut baseline = Duration::ZERO;
    let mut last_ok = Instant::now();
    for i in 0..20 {
        let r = kv(&["put", "before", &i.to_string()], spare);
        assert_eq!(r.code, Some(0), "{}", r.show());
        baseline = baseline.max(last_ok.elapsed());
        last_ok = Instant::now();
    }

    // A client writing throughout, to see how long it goes without an answer.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            let mut last_ok = Instant::now();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = kv(&["put", "during", &i.to_string()], spare);
                if r.code == Some(0) {
                    longest = longest.max(last_ok.elapsed());
                    last_ok = Instant::now();
                }
                i += 1;
            }
            longest
        })
    };

    let victim = c.boot[1];
    let v = victim.to_string();
    let r = run(&["remove", &v, "--endpoint", &ep, "--timeout", "60s"]);
    let took = r.elapsed;
    stop.store(true, Ordering::Relaxed);
    let gap = writer.join().expect("writer");
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert!(
        r.stdout.contains(&format!("removed {victim}")),
        "{}",
        r.show()
    );
    assert!(
        r.stdout.contains(&format!("partition 0: {victim} -> ")),
        "{}",
        r.show()
    );
    assert!(
        r.stdout.contains(&format!("partition 1: {victim} -> ")),
        "{}",
        r.show()
    );
    println!(
        "kvstore remove {victim}: {took:?} wall time; output:\n{}",
        r.stdout
    );
    println!(
        "longest time a writing client (one `kvstore put` process at a time) saw no acknowledged write during the remove: {gap:?}; over 20 writes before it, with no move: {baseline:?}"
    );

    // The node is no longer a member, and every partition is on R others.
    common::wait_until(
        "the removed node is gone and partitions are healthy",
        WAIT,
        || {
            c.members(spare)
                .is_some_and(|m| m.len() == NODES - 1 && m.iter().all(|(a, _)| *a != victim))
                && c.status().is_some_and(|s| healthy(&s, &[victim]).is_some())
        },
    );
    for i in 0..20 {
        let r = kv(&["get", &format!("k{i}")], spare);
        assert_eq!(r.code, Some(0), "{}", r.show());
        assert!(r.stdout.contains(&format!("v{i}")), "{}", r.show());
    }
    c.assert_no_crash();
}

#[test]
fn rebalance_spreads_replicas_over_joined_spares() {
    let _slot = cluster_slot();
    let mut c = Admin::start("admin-rebalance");
    let ep = c.spares[0].to_string();
    let r = run(&["rebalance", "--endpoint", &ep, "--timeout", "60s"]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    println!("kvstore rebalance: {:?}; output:\n{}", r.elapsed, r.stdout);
    assert!(r.stdout.contains(" -> "), "no move printed: {}", r.show());
    let last = r.stdout.lines().last().unwrap_or_default();
    let nums: Vec<u64> = last.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert!(
        last.starts_with("balanced: every live member holds"),
        "{}",
        r.show()
    );
    assert!(
        nums.len() == 1 || (nums.len() == 2 && nums[1] == nums[0] + 1),
        "{}",
        r.show()
    );
    // Asked again: nothing to move.
    let again = run(&["rebalance", "--endpoint", &ep, "--timeout", "30s"]);
    assert_eq!(again.code, Some(0), "{}", again.show());
    assert!(!again.stdout.contains(" -> "), "{}", again.show());
    common::wait_until("partitions are healthy after the rebalance", WAIT, || {
        c.status().is_some_and(|s| healthy(&s, &[]).is_some())
    });
    let members = c.members(c.spares[1]).expect("members");
    let loads: Vec<usize> = members.iter().map(|(_, p)| p.len()).collect();
    println!("partition replicas per member after rebalance: {members:?}");
    assert_eq!(loads.iter().sum::<usize>(), PARTITIONS as usize * R);
    c.assert_no_crash();
}

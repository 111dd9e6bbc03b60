//! Membership with `kvstore start` processes on loopback: a node started after the
//! cluster formed joins as a member, and a node killed and started again at its
//! address comes back as a new incarnation (a member without the replica its former
//! process held), while the cluster keeps serving. Waits poll the nodes' logs and
//! `kvstore status`; nothing sleeps to synchronise.

mod common;

use std::net::SocketAddr;

use common::{Cluster, Node, WAIT, free_addrs, run, wait_until};
use serde_json::Value;

fn status_json(endpoint: SocketAddr) -> Option<Value> {
    let ep = endpoint.to_string();
    let r = run(&["status", "--endpoint", &ep, "--json", "--timeout", "2s"]);
    (r.code == Some(0))
        .then(|| serde_json::from_str(r.stdout.trim()).ok())
        .flatten()
}

/// The `nodes` entry of `node` in a status report.
fn node_entry(status: &Value, node: SocketAddr) -> Option<Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == node.to_string())
        .cloned()
}

fn put(key: &str, value: &str, endpoint: SocketAddr) -> common::Run {
    run(&["put", key, value, "--endpoint", &endpoint.to_string()])
}

fn get(key: &str, endpoint: SocketAddr) -> common::Run {
    run(&["get", key, "--endpoint", &endpoint.to_string()])
}

/// Starts a node outside the boot set, configured the way `Cluster` configures its
/// nodes.
fn extra_node(c: &Cluster, name: &str, address: SocketAddr) -> Node {
    let conf = config_with_seeds(c, name, address, &[]);
    Node::start(
        address,
        conf,
        c.scratch.path.join(format!("{name}.log")),
        "info",
    )
}

#[test]
fn a_node_started_after_boot_joins_as_a_member_without_replicas() {
    let c = Cluster::start("join", 3, 1, 3);
    let addr = free_addrs(1)[0];
    let mut late = extra_node(&c, "late", addr);
    late.wait_for_log("member of the cluster", WAIT);
    assert!(late.log_text().contains("nodes: 4"), "{}", late.log_text());
    // Every node's status lists four members, the new one among them, up and
    // booted; the partition's group is still the three boot nodes.
    wait_until("every node lists the new member", WAIT, || {
        c.nodes.iter().all(|n| {
            status_json(n.address).is_some_and(|s| {
                s["nodes"].as_array().is_some_and(|a| a.len() == 4)
                    && node_entry(&s, addr).is_some_and(|e| e["booted"] == true)
            })
        })
    });
    let s = status_json(addr).expect("the new node answers status");
    let group = s["partitions"][0]["replicas"].as_array().expect("replicas");
    assert_eq!(group.len(), 3);
    assert!(!group.iter().any(|r| *r == addr.to_string()));
    let me = node_entry(&s, addr).expect("listed");
    assert_eq!(me["member"], true, "{s}");
    // `kvstore members` lists all four, each up as the incarnation the directory
    // has, the new one without replicas.
    let r = run(&["members", "--endpoint", &c.nodes[0].address.to_string()]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let rows: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("127.")).collect();
    assert_eq!(rows.len(), 4, "{}", r.stdout);
    assert!(rows.iter().all(|l| l.contains(" up ")), "{}", r.stdout);
    let row = rows
        .iter()
        .find(|l| l.starts_with(&addr.to_string()))
        .expect("the new member is listed");
    assert!(row.trim_end().ends_with('-'), "{row}");
    // The new member is an entry point like any other.
    let r = put("joined", "yes", addr);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let r = get("joined", c.nodes[1].address);
    assert_eq!(r.stdout.trim(), "yes", "{}", r.show());
}

#[test]
fn a_restarted_node_rejoins_as_a_new_incarnation_and_the_cluster_keeps_serving() {
    let mut c = Cluster::start("rejoin", 3, 1, 3);
    let eps = c.alive();
    let r = put("kept", "1", eps[0]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    // A follower (not the bootstrap server) is killed and started again from its
    // own config file, as a user would.
    let victim = c.nodes[2].address;
    let before = status_json(victim).expect("status before the crash");
    let old_inc = node_entry(&before, victim).expect("listed")["incarnation"].clone();
    c.node(victim).kill();
    let config = c.node(victim).config.clone();
    let log = c.scratch.path.join("restarted.log");
    let mut again = Node::start(victim, config, log, "info");
    again.wait_for_log("member of the cluster", WAIT);
    wait_until("the restarted process is a member", WAIT, || {
        status_json(c.nodes[0].address).is_some_and(|s| {
            node_entry(&s, victim).is_some_and(|e| {
                e["member"] == true && e["booted"] == true && e["incarnation"] != old_inc
            })
        })
    });
    // It boots hosting nothing: its former slot is not its own, so it never votes
    // as the acceptor it replaced.
    let started = again
        .log_text()
        .lines()
        .find(|l| l.contains("replicas started"))
        .map(str::to_string)
        .expect("the node host logged which replicas it started");
    assert!(started.contains("partitions: []"), "{started}");
    // The lost slot is repaired at once: the only live member outside the group is
    // the new process itself, which fetches the partition's state and runs the
    // group's next epoch.
    again.wait_for_log("partition state fetched", WAIT);
    wait_until("the repaired slot serves", WAIT, || {
        status_json(victim).is_some_and(|s| {
            s["partitions"][0]["replica_status"]
                .as_array()
                .is_some_and(|a| {
                    a.iter()
                        .any(|r| r["node"] == victim.to_string() && r["answered"] == true)
                })
        })
    });
    // The two others still form a majority: everything written is there, and new
    // writes go through, through the restarted node too.
    let r = get("kept", victim);
    assert_eq!(r.stdout.trim(), "1", "{}", r.show());
    let r = put("after", "2", victim);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let r = get("after", eps[0]);
    assert_eq!(r.stdout.trim(), "2", "{}", r.show());
}

/// A node's config as `Cluster` writes it, with `seeds` (none: the default).
fn config_with_seeds(
    c: &Cluster,
    name: &str,
    address: SocketAddr,
    seeds: &[SocketAddr],
) -> std::path::PathBuf {
    let list: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    c.scratch.write(
        &format!("{name}.conf"),
        &format!(
            "kvstore {{\n\
             \x20 address = \"{address}\"\n\
             \x20 bootstrap-address = \"{}\"\n\
             \x20 boot-threshold = {}\n\
             \x20 partitions = {}\n\
             \x20 replication-degree = {}\n\
             \x20 seeds = [{}]\n\
             }}\n",
            c.bootstrap,
            c.nodes.len(),
            c.partitions,
            c.replication,
            list.join(", ")
        ),
    )
}

#[test]
fn with_the_bootstrap_server_down_nodes_join_through_their_seeds() {
    let mut c = Cluster::start("seeds", 3, 1, 3);
    let (server, b, d) = (c.nodes[0].address, c.nodes[1].address, c.nodes[2].address);
    let r = put("before", "x", b);
    assert_eq!(r.code, Some(0), "{}", r.show());
    c.node(server).kill();
    // A new node whose bootstrap server is down gets in through a seed.
    let late = free_addrs(1)[0];
    let conf = config_with_seeds(&c, "late", late, &[b, d]);
    let mut n = Node::start(late, conf, c.scratch.path.join("late.log"), "info");
    n.wait_for_log("member of the cluster", WAIT);
    // The bootstrap server, restarted with seeds, rejoins the running cluster as a
    // new incarnation instead of waiting to form another one.
    let conf = config_with_seeds(&c, "server-again", server, &[b, d]);
    let mut again = Node::start(
        server,
        conf,
        c.scratch.path.join("server-again.log"),
        "info",
    );
    again.wait_for_log("member of the cluster", WAIT);
    assert!(
        !again.log_text().contains("cluster formed"),
        "{}",
        again.log_text()
    );
    wait_until(
        "the directory lists the late node and the restarted server",
        WAIT,
        || {
            status_json(b).is_some_and(|s| {
                s["nodes"].as_array().is_some_and(|a| a.len() == 4)
                    && node_entry(&s, server).is_some_and(|e| e["member"] == true)
                    && node_entry(&s, late).is_some_and(|e| e["member"] == true)
            })
        },
    );
    // The two original replicas still serve what was written.
    let r = get("before", late);
    assert_eq!(r.stdout.trim(), "x", "{}", r.show());
}

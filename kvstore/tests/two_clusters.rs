//! Issue 9 "Done when", cluster identity: two clusters on one machine, "alpha" and
//! "beta", three `kvstore start` nodes each on loopback. A node of beta that points
//! its `bootstrap-address` at alpha's bootstrap server, and clients that name the
//! wrong cluster, are refused; neither cluster's data changes.
//!
//! The stray beta node checks in with alpha's bootstrap server *before* alpha has
//! formed, when one more check-in would complete alpha's lookup table: if its frames
//! were not dropped, alpha would form with the stray in place of its own third node.
//!
//! What the test asserts, as an operator would see it:
//! - alpha's bootstrap server refuses the stray's connections in the network
//!   handshake (which carries the cluster name) and logs "refused a connection from a
//!   peer of another cluster" for the stray exactly once, although the stray keeps
//!   checking in (every 100 ms) and its link keeps retransmitting;
//! - alpha forms from its own three nodes; the stray never receives a lookup table
//!   and warns that the bootstrap server does not answer;
//! - a client naming the wrong cluster (`--cluster beta` against an alpha node, and
//!   the other way round) exits 1 with a "wrong cluster" message and changes nothing;
//! - the values written to each cluster are still there, and only there.
//!
//! Waits poll a condition with a bounded deadline; nothing sleeps for a fixed time.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::{Node, Run, Scratch, WAIT, free_addrs, run, wait_until};

const FOREIGN: &str = "refused a connection from a peer of another cluster";

fn node_conf(cluster: &str, address: SocketAddr, bootstrap: SocketAddr, extra: &str) -> String {
    format!(
        "kvstore {{\n\
         \x20 cluster-name = \"{cluster}\"\n\
         \x20 address = \"{address}\"\n\
         \x20 bootstrap-address = \"{bootstrap}\"\n\
         \x20 boot-threshold = 3\n\
         \x20 partitions = 1\n\
         \x20 replication-degree = 3\n\
         {extra}\
         }}\n"
    )
}

fn start_node(scratch: &Scratch, name: &str, conf: String) -> Node {
    let path: PathBuf = scratch.write(&format!("{name}.conf"), &conf);
    let address = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("address = \""))
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|a| a.parse().ok())
        .expect("an address line");
    Node::start(
        address,
        path,
        scratch.path.join(format!("{name}.log")),
        "info",
    )
}

/// `kvstore ARGS --endpoint EP --cluster CLUSTER --timeout 10s`.
fn cli(args: &[&str], ep: SocketAddr, cluster: &str) -> Run {
    let ep = ep.to_string();
    let mut v: Vec<&str> = args.to_vec();
    v.extend(["--endpoint", &ep, "--cluster", cluster, "--timeout", "10s"]);
    run(&v)
}

fn assert_value(ep: SocketAddr, cluster: &str, key: &str, value: Option<&str>) {
    let r = cli(&["get", key], ep, cluster);
    match value {
        Some(v) => assert_eq!(
            (r.code, r.stdout.as_str()),
            (Some(0), format!("{v}\n").as_str()),
            "{}",
            r.show()
        ),
        None => assert_eq!(
            (r.code, r.stderr.trim_end()),
            (Some(1), format!("key {key:?} not found").as_str()),
            "{}",
            r.show()
        ),
    }
}

fn assert_wrong_cluster(r: &Run, theirs: &str, named: &str) {
    assert_eq!(r.code, Some(1), "{}", r.show());
    assert_eq!(r.stdout, "", "{}", r.show());
    let expected =
        format!("kvstore: wrong cluster: this node belongs to cluster {theirs:?}, not {named:?}");
    assert_eq!(r.stderr.trim_end(), expected, "{}", r.show());
}

#[test]
fn two_clusters_on_one_machine_stay_apart() {
    let scratch = Scratch::new("two-clusters");
    let a = free_addrs(3);
    let b = free_addrs(3);
    let stray_addr = free_addrs(1)[0];

    // Alpha's bootstrap server, waiting for two more nodes.
    let mut alpha = vec![start_node(
        &scratch,
        "alpha1",
        node_conf("alpha", a[0], a[0], ""),
    )];
    alpha[0].wait_for_log("bootstrap server waiting for nodes", WAIT);

    // A beta node whose bootstrap address is alpha's server, checking in every 100 ms.
    let mut stray = start_node(
        &scratch,
        "stray-beta",
        node_conf("beta", stray_addr, a[0], "  keep-alive-period = 100ms\n"),
    );
    alpha[0].wait_for_log(FOREIGN, WAIT);
    // The stray keeps trying, unanswered, until it warns about the silent server.
    stray.wait_for_log("not a member yet", WAIT);

    // Alpha's own nodes; alpha forms from exactly them.
    for (i, addr) in a.iter().enumerate().skip(1) {
        alpha.push(start_node(
            &scratch,
            &format!("alpha{}", i + 1),
            node_conf("alpha", *addr, a[0], ""),
        ));
    }
    for n in &mut alpha {
        n.wait_for_log("replicas started", WAIT);
    }
    let formed = alpha[0]
        .log_text()
        .lines()
        .find(|l| l.contains("cluster formed"))
        .map(str::to_string)
        .expect("alpha's server logged the formation");
    assert!(formed.contains("nodes: 3"), "{formed}");
    for n in &alpha {
        assert!(
            n.log_text().contains("member of the cluster"),
            "{}",
            n.log_text()
        );
    }

    // Beta, on its own bootstrap server.
    let mut beta = Vec::new();
    for (i, addr) in b.iter().enumerate() {
        let mut n = start_node(
            &scratch,
            &format!("beta{}", i + 1),
            node_conf("beta", *addr, b[0], ""),
        );
        if i == 0 {
            n.wait_for_log("bootstrap server waiting for nodes", WAIT);
        }
        beta.push(n);
    }
    for n in &mut beta {
        n.wait_for_log("replicas started", WAIT);
    }

    // Data in each cluster, written through its own nodes.
    wait_until("alpha serves", WAIT, || {
        cli(&["put", "color", "alpha-red"], a[1], "alpha").code == Some(0)
    });
    wait_until("beta serves", WAIT, || {
        cli(&["put", "color", "beta-blue"], b[1], "beta").code == Some(0)
    });
    assert_eq!(
        cli(&["put", "only-alpha", "1"], a[2], "alpha").code,
        Some(0)
    );
    assert_eq!(cli(&["put", "only-beta", "1"], b[2], "beta").code, Some(0));

    // Clients naming the wrong cluster get a clear error and change nothing.
    for ep in &a {
        assert_wrong_cluster(&cli(&["get", "color"], *ep, "beta"), "alpha", "beta");
        assert_wrong_cluster(
            &cli(&["put", "color", "intruder"], *ep, "beta"),
            "alpha",
            "beta",
        );
    }
    for ep in &b {
        assert_wrong_cluster(
            &cli(&["cas", "color", "beta-blue", "intruder"], *ep, "alpha"),
            "beta",
            "alpha",
        );
    }
    // The default cluster name is a wrong one too.
    let r = run(&["get", "color", "--endpoint", &a[0].to_string()]);
    assert_wrong_cluster(&r, "alpha", "kompact-kv");

    // The stray is still running, part of no cluster, and was logged once.
    assert!(stray.exited().is_none(), "{}", stray.log_text());
    assert!(
        !stray.log_text().contains("member of the cluster"),
        "{}",
        stray.log_text()
    );
    // (The clients of the wrong cluster above were refused the same way, each
    // under its own address.)
    let foreign: Vec<String> = alpha[0]
        .log_text()
        .lines()
        .filter(|l| l.contains(FOREIGN) && l.contains(&format!("peer: {stray_addr}")))
        .map(str::to_string)
        .collect();
    println!("alpha's server on the stray: {foreign:?}");
    assert_eq!(foreign.len(), 1, "{foreign:?}");
    for n in alpha.iter().chain(&beta) {
        let log = n.log_text();
        assert!(
            !log.contains(&format!("from: {stray_addr}")),
            "node {} handled a message of the stray: {log}",
            n.address
        );
        assert!(!log.contains("panicked"), "{log}");
    }

    // Neither cluster's data changed.
    for ep in &a {
        assert_value(*ep, "alpha", "color", Some("alpha-red"));
        assert_value(*ep, "alpha", "only-alpha", Some("1"));
        assert_value(*ep, "alpha", "only-beta", None);
    }
    for ep in &b {
        assert_value(*ep, "beta", "color", Some("beta-blue"));
        assert_value(*ep, "beta", "only-beta", Some("1"));
        assert_value(*ep, "beta", "only-alpha", None);
    }
}

//! A `kvstore start` node with a `cluster-secret`, on loopback: clients that give
//! the secret (`--cluster-secret-file`) are served; clients without it or with a
//! wrong one are refused in the handshake, fail at once (exit 1) with a message
//! that names the secret, and change nothing; the node logs the refusal and keeps
//! serving. `kvstore status` presents the secret the same way.
//!
//! Waits poll a condition with a bounded deadline; nothing sleeps for a fixed time.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::{Node, Run, Scratch, WAIT, cluster_slot, free_addrs, run, wait_until};

const SECRET: &str = "a secret only the cluster knows";

/// `kvstore ARGS --endpoint EP --timeout 10s [--cluster-secret-file FILE]`.
fn cli(args: &[&str], ep: SocketAddr, secret_file: Option<&Path>) -> Run {
    let ep = ep.to_string();
    let file = secret_file.map(|p| p.display().to_string());
    let mut v: Vec<&str> = args.to_vec();
    v.extend(["--endpoint", &ep, "--timeout", "10s"]);
    if let Some(f) = &file {
        v.extend(["--cluster-secret-file", f]);
    }
    run(&v)
}

fn assert_refused(r: &Run) {
    println!("refused: {}", r.stderr.trim_end());
    assert_eq!(r.code, Some(1), "{}", r.show());
    assert!(
        r.stderr.contains("wrong cluster") && r.stderr.contains("cluster secret"),
        "{}",
        r.show()
    );
}

#[test]
fn a_node_with_a_secret_serves_only_clients_that_know_it() {
    let _slot = cluster_slot();
    let scratch = Scratch::new("cluster-secret");
    let addr = free_addrs(1)[0];
    let conf = scratch.write(
        "node.conf",
        &format!(
            "kvstore {{\n\
             \x20 address = \"{addr}\"\n\
             \x20 bootstrap-address = \"{addr}\"\n\
             \x20 boot-threshold = 1\n\
             \x20 replication-degree = 1\n\
             \x20 cluster-secret = \"{SECRET}\"\n\
             }}\n"
        ),
    );
    let mut node = Node::start(addr, conf, scratch.path.join("node.log"), "info");
    node.wait_for_log("replicas started", WAIT);

    let good = scratch.write("good.secret", &format!("{SECRET}\n"));
    let wrong = scratch.write("wrong.secret", "a guess\n");
    wait_until("the node serves a client with the secret", WAIT, || {
        cli(&["put", "k", "v"], addr, Some(&good)).code == Some(0)
    });

    assert_refused(&cli(&["put", "k", "without"], addr, None));
    assert_refused(&cli(&["put", "k", "wrong"], addr, Some(&wrong)));

    let r = cli(&["get", "k"], addr, Some(&good));
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "v\n"),
        "{}",
        r.show()
    );
    // `kvstore status` presents the secret the same way.
    let ep = addr.to_string();
    let good_file = good.display().to_string();
    let r = run(&[
        "status",
        "--endpoint",
        &ep,
        "--cluster-secret-file",
        &good_file,
    ]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let r = run(&["status", "--endpoint", &ep]);
    assert_eq!(r.code, Some(1), "{}", r.show());
    assert!(r.stderr.contains("cluster secret"), "{}", r.show());

    let log = node.log_text();
    assert!(
        log.contains("refused a connection that failed the cluster-secret check"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

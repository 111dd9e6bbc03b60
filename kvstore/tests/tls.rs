//! A 3-node `kvstore start` cluster with `tls` on, on loopback, with certificates
//! from a test CA (rcgen): clients that verify the nodes with `--tls-ca` are served
//! (with or without a client certificate); a client without the CA or with another
//! one fails at once with exit code 1 and says why; a node whose certificate comes
//! from another CA is refused, and the cluster's log says why.
//!
//! Waits poll a condition with a bounded deadline; nothing sleeps for a fixed time.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use common::pki::Ca;
use common::{Node, Run, Scratch, WAIT, cluster_slot, free_addrs, run, wait_until};

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Writes `name.pem` and `name.key` issued by `ca` for 127.0.0.1.
fn issue(scratch: &Scratch, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.issue(LOCALHOST);
    (
        scratch.write(&format!("{name}.pem"), &cert),
        scratch.write(&format!("{name}.key"), &key),
    )
}

/// A node file with a `tls` block whose paths are relative to the file.
fn node_conf(addr: SocketAddr, bootstrap: SocketAddr, n: usize, name: &str, ca: &str) -> String {
    format!(
        "kvstore {{\n\
         \x20 address = \"{addr}\"\n\
         \x20 bootstrap-address = \"{bootstrap}\"\n\
         \x20 boot-threshold = {n}\n\
         \x20 replication-degree = 3\n\
         \x20 tls {{\n\
         \x20   certificate = \"{name}.pem\"\n\
         \x20   private-key = \"{name}.key\"\n\
         \x20   ca = \"{ca}\"\n\
         \x20 }}\n\
         }}\n"
    )
}

/// `kvstore ARGS --endpoint EP --timeout 10s` plus `tls` flags.
fn cli(args: &[&str], ep: SocketAddr, tls: &[(&str, &Path)]) -> Run {
    let ep = ep.to_string();
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend(["--endpoint".into(), ep, "--timeout".into(), "10s".into()]);
    for (flag, path) in tls {
        v.push(flag.to_string());
        v.push(path.display().to_string());
    }
    let v: Vec<&str> = v.iter().map(String::as_str).collect();
    run(&v)
}

#[test]
fn a_tls_cluster_serves_verifying_clients_and_refuses_strangers() {
    let _slot = cluster_slot();
    let scratch = Scratch::new("tls-cluster");
    let ca = Ca::new("kompact-kv test CA");
    let foreign = Ca::new("kompact-kv test CA"); // the same name, another key
    let ca_file = scratch.write("ca.pem", &ca.pem());
    let foreign_file = scratch.write("foreign-ca.pem", &foreign.pem());

    let addrs = free_addrs(4);
    let bootstrap = addrs[0];
    let mut nodes = Vec::new();
    for (i, &a) in addrs[..3].iter().enumerate() {
        let name = format!("node{}", i + 1);
        issue(&scratch, &ca, &name);
        let conf = scratch.write(
            &format!("{name}.conf"),
            &node_conf(a, bootstrap, 3, &name, "ca.pem"),
        );
        let mut node = Node::start(a, conf, scratch.path.join(format!("{name}.log")), "info");
        if i == 0 {
            node.wait_for_log("bootstrap server waiting for nodes", WAIT);
        }
        nodes.push(node);
    }
    for node in &mut nodes {
        node.wait_for_log("replicas started", WAIT);
    }

    // A client that verifies the nodes against the CA is served.
    let with_ca = [("--tls-ca", ca_file.as_path())];
    wait_until("the cluster serves a TLS client", WAIT, || {
        cli(&["put", "k", "v"], addrs[1], &with_ca).code == Some(0)
    });
    let r = cli(&["get", "k"], addrs[2], &with_ca);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "v\n"),
        "{}",
        r.show()
    );
    // ... and so is one with a client certificate.
    let (cert, key) = issue(&scratch, &ca, "client");
    let r = cli(
        &["get", "k"],
        addrs[0],
        &[
            ("--tls-ca", &ca_file),
            ("--tls-cert", &cert),
            ("--tls-key", &key),
        ],
    );
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "v\n"),
        "{}",
        r.show()
    );
    let r = cli(&["status"], addrs[0], &with_ca);
    assert_eq!(r.code, Some(0), "{}", r.show());

    // Without the CA the client speaks plaintext, which the nodes refuse.
    let r = cli(&["put", "k", "plain"], addrs[0], &[]);
    println!("without --tls-ca: {}", r.stderr.trim_end());
    assert_eq!(r.code, Some(1), "{}", r.show());
    assert!(r.stderr.contains("requires TLS"), "{}", r.show());
    // With another CA the client refuses the nodes.
    let r = cli(
        &["put", "k", "wrong"],
        addrs[0],
        &[("--tls-ca", &foreign_file)],
    );
    println!("with another CA: {}", r.stderr.trim_end());
    assert_eq!(r.code, Some(1), "{}", r.show());
    assert!(
        r.stderr
            .contains("peer certificate not signed by the cluster CA"),
        "{}",
        r.show()
    );
    // A CA file that is not one is a usage error that names the flag and the file.
    let r = cli(
        &["get", "k"],
        addrs[0],
        &[("--tls-ca", &cert.with_extension("key"))],
    );
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(
        r.stderr.contains("--tls-ca") && r.stderr.contains("client.key"),
        "{}",
        r.show()
    );
    let r = cli(&["get", "k"], addrs[0], &with_ca);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "v\n"),
        "{}",
        r.show()
    );

    // A node whose certificate comes from another CA (it trusts both) is refused,
    // and the cluster's log says why.
    issue(&scratch, &foreign, "intruder");
    scratch.write("both.pem", &format!("{}{}", foreign.pem(), ca.pem()));
    let conf = scratch.write(
        "intruder.conf",
        &node_conf(addrs[3], bootstrap, 3, "intruder", "both.pem"),
    );
    let mut intruder = Node::start(addrs[3], conf, scratch.path.join("intruder.log"), "info");
    nodes[0].wait_for_log("peer certificate not signed by the cluster CA", WAIT);
    let log = nodes[0].log_text();
    assert!(
        log.contains("refused a TLS connection that failed the certificate check"),
        "{log}"
    );
    intruder.wait_for_log("peer refused the TLS session", WAIT);
    println!(
        "bootstrap log: {}",
        log.lines()
            .find(|l| l.contains("certificate check"))
            .unwrap_or_default()
    );
    assert!(!intruder.log_text().contains("replicas started"));
    let r = cli(&["status"], addrs[0], &with_ca);
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert!(!r.stdout.contains(&addrs[3].to_string()), "{}", r.show());
    for node in &nodes {
        assert!(!node.log_text().contains("panicked"));
    }
}

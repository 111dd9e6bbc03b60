//! `limits.max-frame-bytes` on a `kvstore start` node configured for values above
//! the default frame size: a 1.5 MiB value is written and read back through the
//! console (the answer to the read is a frame larger than the node's default
//! limit, which the client accepts), and a value over `limits.max-value-bytes` is
//! still refused with its reason.
//!
//! Waits poll a condition with a bounded deadline; nothing sleeps for a fixed time.

mod common;

use common::{Node, Scratch, WAIT, cluster_slot, free_addrs, run, run_with_input, wait_until};

#[test]
fn values_larger_than_the_default_frame_travel_when_the_limit_allows_them() {
    let _slot = cluster_slot();
    let scratch = Scratch::new("large-frames");
    let addr = free_addrs(1)[0];
    let conf = scratch.write(
        "node.conf",
        &format!(
            "kvstore {{\n\
             \x20 address = \"{addr}\"\n\
             \x20 bootstrap-address = \"{addr}\"\n\
             \x20 boot-threshold = 1\n\
             \x20 replication-degree = 1\n\
             \x20 limits {{ max-value-bytes = 2 MiB, max-frame-bytes = 8 MiB }}\n\
             }}\n"
        ),
    );
    let mut node = Node::start(addr, conf, scratch.path.join("node.log"), "info");
    node.wait_for_log("replicas started", WAIT);
    let ep = addr.to_string();
    let base = ["--endpoint", ep.as_str(), "--timeout", "10s"];
    wait_until("the node serves", WAIT, || {
        let mut args = vec!["put", "small", "1"];
        args.extend(base);
        run(&args).code == Some(0)
    });

    let large = "v".repeat(3 << 19); // 1.5 MiB
    let too_large = "w".repeat((2 << 20) + 1);
    let mut args = vec!["console"];
    args.extend(base);
    // The large answer comes last: the harness writes all of stdin before it reads
    // stdout, and a console blocked on a full stdout pipe would not read the rest.
    let r = run_with_input(
        &args,
        &format!("put bigger {too_large}\nput big {large}\nget big\n"),
        WAIT,
    );
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.show().chars().take(2000).collect::<String>()
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{:?}", r.stderr);
    assert!(
        lines[0].contains("2097153") && lines[0].contains("2097152"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[2], large, "the read did not return the value written");
    let log = node.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("larger than limits.max-frame-bytes"), "{log}");
}

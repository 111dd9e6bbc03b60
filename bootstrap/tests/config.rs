//! Node configuration loading: valid files, the fallback to the reference, and the
//! exact message a user sees for each kind of mistake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kv_bootstrap::config::{ConfigError, NodeConfig, Secret, load_file, load_str};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const ADDRESS: &str = "kvstore.address = \"127.0.0.1:45679\"\n";

/// Loads `text` (after a valid address line) as `node1.conf`.
fn load(text: &str) -> Result<NodeConfig, ConfigError> {
    load_str(&format!("{ADDRESS}{text}"), "node1.conf")
}

/// The message a user sees for `text` (after a valid address line); printed so that
/// `cargo test -- --nocapture` shows every message.
fn error(text: &str) -> String {
    error_raw(&format!("{ADDRESS}{text}"))
}

/// The message a user sees for exactly `text`.
fn error_raw(text: &str) -> String {
    match load_str(text, "node1.conf") {
        Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
        Err(e) => {
            let message = e.to_string();
            println!("{message}");
            message
        }
    }
}

// ---------------------------------------------------------------------------------
// Valid configurations

#[test]
fn minimal_file_only_needs_the_address() {
    let config = load_file(&data("minimal.conf")).expect("minimal.conf is valid");
    assert_eq!(config.address, addr("127.0.0.1:45679"));
    assert_eq!(
        config,
        NodeConfig::reference().with_address(addr("127.0.0.1:45679"))
    );
    assert!(!config.is_bootstrap_server());
}

#[test]
fn reference_values() {
    let r = NodeConfig::reference();
    assert_eq!(r.address, addr("127.0.0.1:45678"));
    assert_eq!(r.bootstrap_address, addr("127.0.0.1:45678"));
    assert!(r.is_bootstrap_server());
    assert_eq!(r.boot_threshold, 3);
    assert_eq!(r.partitions, 1);
    assert_eq!(r.replication_degree, 3);
    assert_eq!(r.keep_alive_period, Duration::from_secs(1));
    assert_eq!(r.cluster_name, "kompact-kv");
    assert_eq!(r.tick_period, Duration::from_millis(10));
    assert_eq!(r.failure_detector.initial_delay, Duration::from_millis(300));
    assert_eq!(
        r.failure_detector.delay_increment,
        Duration::from_millis(100)
    );
    assert_eq!(
        r.leader_election.heartbeat_period,
        Duration::from_millis(50)
    );
    assert_eq!(r.paxos.max_batch, 1024);
    assert_eq!(r.paxos.max_inflight_batches, 4);
    assert_eq!(r.paxos.resend_period, Duration::from_millis(200));
    assert_eq!(r.paxos.max_log_entries, 100_000);
    assert_eq!(r.paxos.snapshot_interval, 10_000);
    assert_eq!(r.paxos.max_pending, 10_000);
    assert_eq!(r.link.retransmit_period, Duration::from_millis(200));
    assert_eq!(r.link.max_unacked, 100_000);
    assert_eq!(r.link.unreachable_warning, Duration::from_secs(5));
    assert_eq!(r.limits.max_key_bytes, 1024);
    assert_eq!(r.limits.max_value_bytes, 65536);
    assert_eq!(r.limits.max_inflight_per_node, 10_000);
    assert_eq!(r.limits.max_clients, 100_000);
    assert_eq!(r.limits.max_frame_bytes, 1 << 20);
    assert_eq!(r.cluster_secret, None);
    assert_eq!(r.sessions.idle_timeout, Duration::from_secs(600));
    assert_eq!(r.metrics_address, None);
    r.validate("reference").expect("the reference is valid");
}

#[test]
fn keys_in_the_file_override_the_reference_and_the_rest_falls_back() {
    let config = load(
        "kvstore { partitions = 4, paxos { max-batch = 16 } }\n\
         kvstore.limits.max-clients = 7\n",
    )
    .expect("valid");
    let expected = {
        let mut c = NodeConfig::reference()
            .with_address(addr("127.0.0.1:45679"))
            .with_partitions(4);
        c.paxos.max_batch = 16;
        c.limits.max_clients = 7;
        c
    };
    assert_eq!(config, expected);
    // Untouched keys of a section the file does set keep their reference values.
    assert_eq!(config.paxos.max_inflight_batches, 4);
}

#[test]
fn full_example_file_sets_every_key() {
    let c = load_file(&data("node1.conf")).expect("node1.conf is valid");
    assert_eq!(c.address, addr("10.0.0.1:45678"));
    assert!(c.is_bootstrap_server());
    assert_eq!(c.boot_threshold, 5);
    assert_eq!(c.partitions, 8);
    assert_eq!(c.replication_degree, 5);
    assert_eq!(c.keep_alive_period, Duration::from_secs(2));
    assert_eq!(c.cluster_name, "staging");
    assert_eq!(c.tick_period, Duration::from_millis(5));
    assert_eq!(c.failure_detector.initial_delay, Duration::from_secs(1));
    assert_eq!(
        c.failure_detector.delay_increment,
        Duration::from_millis(250)
    );
    assert_eq!(
        c.leader_election.heartbeat_period,
        Duration::from_millis(100)
    );
    assert_eq!(c.paxos.max_batch, 512);
    assert_eq!(c.paxos.max_inflight_batches, 8);
    assert_eq!(c.paxos.resend_period, Duration::from_millis(500));
    assert_eq!(c.paxos.max_log_entries, 200_000);
    assert_eq!(c.paxos.snapshot_interval, 20_000);
    assert_eq!(c.paxos.max_pending, 5000);
    assert_eq!(c.link.retransmit_period, Duration::from_millis(300));
    assert_eq!(c.link.max_unacked, 50_000);
    assert_eq!(c.link.unreachable_warning, Duration::from_secs(10));
    assert_eq!(c.limits.max_key_bytes, 512);
    assert_eq!(c.limits.max_value_bytes, 1 << 20);
    assert_eq!(c.limits.max_inflight_per_node, 20_000);
    assert_eq!(c.limits.max_clients, 1000);
    assert_eq!(c.limits.max_frame_bytes, 4 << 20);
    assert_eq!(
        c.cluster_secret,
        Some(Secret("correct horse battery staple".into()))
    );
    // Never shown in the configuration's debug form.
    assert!(!format!("{c:?}").contains("horse"));
    let t = c.transport();
    assert_eq!(
        t.secret.as_deref(),
        Some(&b"correct horse battery staple"[..])
    );
    assert_eq!(
        (t.max_frame_bytes, t.cluster.as_str()),
        (4 << 20, "staging")
    );
    assert_eq!(c.sessions.idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.metrics_address, Some(addr("10.0.0.1:9100")));
}

#[test]
fn durations_in_every_accepted_form() {
    let cases = [
        ("500ms", Duration::from_millis(500)),
        ("\"2 s\"", Duration::from_secs(2)),
        ("2 seconds", Duration::from_secs(2)),
        ("1m", Duration::from_secs(60)),
        ("1.5s", Duration::from_millis(1500)),
        ("250", Duration::from_millis(250)),
        ("\"750\"", Duration::from_millis(750)),
        ("100 millis", Duration::from_millis(100)),
        ("2500us", Duration::from_micros(2500)),
        ("1 h", Duration::from_secs(3600)),
    ];
    for (written, expected) in cases {
        let config = load(&format!("kvstore.keep-alive-period = {written}\n"))
            .unwrap_or_else(|e| panic!("{written}: {e}"));
        assert_eq!(config.keep_alive_period, expected, "{written}");
    }
}

#[test]
fn sizes_take_units() {
    let c = load("kvstore.limits { max-key-bytes = 2KiB, max-value-bytes = \"64 kB\" }\n")
        .expect("valid");
    assert_eq!(c.limits.max_key_bytes, 2048);
    assert_eq!(c.limits.max_value_bytes, 64_000);
}

#[test]
fn integers_may_be_quoted_or_written_with_an_exponent() {
    let c = load("kvstore { partitions = \"6\", paxos.max-log-entries = 1e6 }\n").expect("valid");
    assert_eq!(c.partitions, 6);
    assert_eq!(c.paxos.max_log_entries, 1_000_000);
}

#[test]
fn substitutions_see_the_reference_and_the_file() {
    let c = load(
        "kvstore.boot-threshold = 5\n\
         kvstore.replication-degree = ${kvstore.boot-threshold}\n\
         kvstore.link.retransmit-period = ${kvstore.paxos.resend-period}\n",
    )
    .expect("valid");
    assert_eq!(c.replication_degree, 5);
    assert_eq!(c.link.retransmit_period, Duration::from_millis(200));
}

#[test]
fn include_is_relative_to_the_including_file() {
    let c = load_file(&data("with-include.conf")).expect("valid");
    assert_eq!(c.address, addr("127.0.0.1:46001"));
    assert_eq!(c.bootstrap_address, addr("127.0.0.1:46000"));
    assert_eq!(c.boot_threshold, 5);
    assert_eq!(c.partitions, 4);
}

#[test]
fn metrics_address_is_optional() {
    let c = load("kvstore.metrics-address = \"127.0.0.1:9100\"\n").expect("valid");
    assert_eq!(c.metrics_address, Some(addr("127.0.0.1:9100")));
    let c = load("kvstore.metrics-address = null\n").expect("valid");
    assert_eq!(c.metrics_address, None);
}

#[test]
fn ipv6_addresses() {
    let c = load_str(
        "kvstore { address = \"[::1]:45679\", bootstrap-address = \"[::1]:45678\" }",
        "node1.conf",
    )
    .expect("valid");
    assert_eq!(c.address, addr("[::1]:45679"));
}

#[test]
fn display_is_a_one_line_summary() {
    assert_eq!(
        NodeConfig::reference().to_string(),
        "kompact-kv 127.0.0.1:45678 (bootstrap 127.0.0.1:45678, 3 nodes, 1 partitions x 3 replicas, tick 10ms)"
    );
}

// ---------------------------------------------------------------------------------
// Errors: reading and syntax

#[test]
fn unreadable_file() {
    let path = data("does-not-exist.conf");
    let e = load_file(&path).expect_err("missing file");
    let message = e.to_string();
    println!("{message}");
    assert!(matches!(e, ConfigError::Read { .. }));
    let prefix = format!("{}: cannot read the file: ", path.display());
    assert!(message.starts_with(&prefix), "{message}");
    if cfg!(target_os = "linux") {
        assert_eq!(
            message,
            format!("{prefix}No such file or directory (os error 2)")
        );
    }
}

#[test]
fn syntax_error_unclosed_brace() {
    assert_eq!(
        error_raw("kvstore {\n  address = \"127.0.0.1:45679\"\n"),
        "node1.conf: syntax error: line 1: the '{' opened here is never closed"
    );
}

#[test]
fn syntax_error_stray_brace() {
    assert_eq!(
        error("kvstore { partitions = 2 } }\n"),
        "node1.conf: syntax error: line 2: '}' closes nothing"
    );
}

#[test]
fn syntax_error_unterminated_string() {
    assert_eq!(
        error("kvstore.cluster-name = \"abc\n"),
        "node1.conf: syntax error: line 2: the string is never closed"
    );
}

#[test]
fn syntax_error_unquoted_address() {
    assert_eq!(
        error_raw("kvstore {\n  address = 127.0.0.1:45679\n}\n"),
        "node1.conf: syntax error: line 2: unquoted value 127.0.0.1:45679 contains ':' \
         (write it in quotes: \"127.0.0.1:45679\")"
    );
}

#[test]
fn syntax_error_key_without_value() {
    assert_eq!(
        error("kvstore {\n  partitions =\n}\n"),
        "node1.conf: syntax error: line 3: partitions has no value"
    );
}

#[test]
fn include_is_not_available_in_text() {
    assert_eq!(
        error("include \"cluster.conf\"\n"),
        "node1.conf: syntax error: `include` is only supported when the configuration is \
         loaded from a file"
    );
}

#[test]
fn missing_include() {
    let path = data("bad-include.conf");
    let message = load_file(&path).expect_err("missing include").to_string();
    println!("{message}");
    assert_eq!(
        message,
        format!(
            "{}: cannot include \"no-such-file.conf\" (missing, unreadable or not valid HOCON)",
            path.display()
        )
    );
}

#[test]
fn syntax_error_in_an_included_file_names_that_file_and_line() {
    let message = load_file(&data("include-broken.conf"))
        .expect_err("broken include")
        .to_string();
    println!("{message}");
    assert_eq!(
        message,
        format!(
            "{}: syntax error: line 4: '}}' does not close the '[' opened on line 3",
            data("broken-part.conf").display()
        )
    );
}

#[test]
fn an_undefined_optional_substitution_keeps_the_reference_value() {
    let c = load(
        "kvstore.cluster-name = ${?KVSTORE_TEST_SURELY_UNSET}
",
    )
    .expect("valid");
    assert_eq!(c.cluster_name, "kompact-kv");
}

#[test]
fn undefined_substitution() {
    assert_eq!(
        error("kvstore.partitions = ${kvstore.shards}\n"),
        "node1.conf: kvstore.partitions: substitution ${kvstore.shards} is not defined"
    );
}

// ---------------------------------------------------------------------------------
// Errors: keys

#[test]
fn unknown_key_with_suggestion() {
    assert_eq!(
        error("kvstore.replication-degre = 3\n"),
        "node1.conf: unknown key kvstore.replication-degre (did you mean kvstore.replication-degree?)"
    );
}

#[test]
fn unknown_nested_key_with_suggestion() {
    assert_eq!(
        error("kvstore.paxos { max-bach = 3 }\n"),
        "node1.conf: unknown key kvstore.paxos.max-bach (did you mean kvstore.paxos.max-batch?)"
    );
}

#[test]
fn unknown_section_with_suggestion() {
    assert_eq!(
        error("kvstore.paxo { max-batch = 3 }\n"),
        "node1.conf: unknown key kvstore.paxo (did you mean kvstore.paxos?)"
    );
}

#[test]
fn key_in_the_wrong_section() {
    assert_eq!(
        error("kvstore.max-batch = 3\n"),
        "node1.conf: unknown key kvstore.max-batch (did you mean kvstore.paxos.max-batch?)"
    );
}

#[test]
fn snake_case_key() {
    assert_eq!(
        error("kvstore.replication_degree = 3\n"),
        "node1.conf: unknown key kvstore.replication_degree (did you mean kvstore.replication-degree?)"
    );
}

#[test]
fn unknown_key_without_suggestion() {
    assert_eq!(
        error("kvstore.colour = red\n"),
        "node1.conf: unknown key kvstore.colour"
    );
}

#[test]
fn misspelt_namespace() {
    assert_eq!(
        error("kvstor { partitions = 2 }\n"),
        "node1.conf: unknown key kvstor (did you mean kvstore?)"
    );
}

#[test]
fn keys_outside_the_namespace_are_rejected() {
    assert_eq!(
        error("akka.loglevel = DEBUG\n"),
        "node1.conf: unknown key akka (every setting lives under kvstore)"
    );
}

#[test]
fn missing_address() {
    assert_eq!(
        error_raw("kvstore.partitions = 2\n"),
        "node1.conf: missing required key kvstore.address \
         (this node's own IP:PORT, e.g. address = \"127.0.0.1:45678\")"
    );
    // An empty file too.
    assert_eq!(
        error_raw(""),
        "node1.conf: missing required key kvstore.address \
         (this node's own IP:PORT, e.g. address = \"127.0.0.1:45678\")"
    );
}

// ---------------------------------------------------------------------------------
// Errors: types and values

#[test]
fn wrong_type_integer() {
    assert_eq!(
        error("kvstore.boot-threshold = \"three\"\n"),
        "node1.conf: kvstore.boot-threshold: expected an integer, found \"three\""
    );
    assert_eq!(
        error("kvstore.paxos.max-batch = 1.5\n"),
        "node1.conf: kvstore.paxos.max-batch: expected an integer, found 1.5"
    );
    assert_eq!(
        error("kvstore.partitions = true\n"),
        "node1.conf: kvstore.partitions: expected an integer, found true"
    );
}

#[test]
fn wrong_type_section() {
    assert_eq!(
        error("kvstore.paxos = 5\n"),
        "node1.conf: kvstore.paxos: expected a section { ... }, found 5"
    );
}

#[test]
fn wrong_type_value_given_a_section() {
    assert_eq!(
        error("kvstore.tick-period { ms = 10 }\n"),
        "node1.conf: kvstore.tick-period: expected a duration, found a section { ... }"
    );
}

#[test]
fn wrong_type_address() {
    assert_eq!(
        error("kvstore.bootstrap-address = 45678\n"),
        "node1.conf: kvstore.bootstrap-address: expected an IP:PORT address in quotes, found 45678"
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        error("kvstore.keep-alive-period = \"2 parsecs\"\n"),
        "node1.conf: kvstore.keep-alive-period = \"2 parsecs\": not a duration (examples: 500ms, 2s, 1m)"
    );
    // Unquoted, the same text reaches the loader as the same string.
    assert_eq!(
        error("kvstore.keep-alive-period = 2 parsecs\n"),
        "node1.conf: kvstore.keep-alive-period = \"2 parsecs\": not a duration (examples: 500ms, 2s, 1m)"
    );
}

#[test]
fn negative_duration() {
    assert_eq!(
        error("kvstore.tick-period = -5ms\n"),
        "node1.conf: kvstore.tick-period = \"-5ms\": must not be negative"
    );
}

#[test]
fn zero_duration() {
    assert_eq!(
        error("kvstore.keep-alive-period = 0s\n"),
        "node1.conf: kvstore.keep-alive-period = 0ms: must be greater than 0"
    );
}

#[test]
fn tick_below_one_millisecond() {
    assert_eq!(
        error("kvstore.tick-period = 0.5ms\n"),
        "node1.conf: kvstore.tick-period = 500us: must be at least 1ms"
    );
}

#[test]
fn heartbeat_shorter_than_a_tick() {
    assert_eq!(
        error("kvstore { tick-period = 20ms, leader-election.heartbeat-period = 10ms }\n"),
        "node1.conf: kvstore.leader-election.heartbeat-period = 10ms: must be at least \
         kvstore.tick-period = 20ms (a period shorter than one tick cannot be kept)"
    );
}

#[test]
fn negative_integer() {
    assert_eq!(
        error("kvstore.boot-threshold = -1\n"),
        "node1.conf: kvstore.boot-threshold = -1: must not be negative"
    );
}

#[test]
fn zero_partitions() {
    assert_eq!(
        error("kvstore.partitions = 0\n"),
        "node1.conf: kvstore.partitions = 0: must be at least 1"
    );
}

#[test]
fn a_frame_limit_too_small_for_the_largest_request() {
    assert_eq!(
        error("kvstore.limits { max-value-bytes = 1 MiB, max-frame-bytes = 1 MiB }\n"),
        "node1.conf: kvstore.limits.max-frame-bytes = 1048576: must be in 2102272..=4294967295: \
         at least 64KiB and at least kvstore.limits.max-key-bytes + 2 x \
         kvstore.limits.max-value-bytes + 4KiB, so that a CAS of the largest key and values \
         fits in one frame"
    );
    assert!(
        error("kvstore.limits.max-frame-bytes = 1000\n")
            .starts_with("node1.conf: kvstore.limits.max-frame-bytes = 1000: must be in 136192..=")
    );
}

#[test]
fn an_empty_or_mistyped_cluster_secret() {
    assert_eq!(
        error("kvstore.cluster-secret = \"\"\n"),
        "node1.conf: kvstore.cluster-secret = \"\": must not be empty (leave it out to run \
         without a secret)"
    );
    assert!(error("kvstore.cluster-secret = [1, 2]\n").contains("kvstore.cluster-secret"),);
}

#[test]
fn zero_limit() {
    assert_eq!(
        error("kvstore.limits.max-clients = 0\n"),
        "node1.conf: kvstore.limits.max-clients = 0: must be at least 1"
    );
}

#[test]
fn even_replication_degree() {
    assert_eq!(
        error("kvstore.replication-degree = 2\n"),
        "node1.conf: kvstore.replication-degree = 2: must be odd (a group of 2f+1 replicas tolerates f failures)"
    );
}

#[test]
fn replication_degree_above_boot_threshold() {
    assert_eq!(
        error("kvstore.replication-degree = 5\n"),
        "node1.conf: kvstore.replication-degree = 5: must be at most kvstore.boot-threshold = 3 \
         (the replicas of a partition sit on distinct nodes)"
    );
}

#[test]
fn snapshot_interval_above_log_size() {
    assert_eq!(
        error("kvstore.paxos { max-log-entries = 100, snapshot-interval = 1000 }\n"),
        "node1.conf: kvstore.paxos.snapshot-interval = 1000: must be at most \
         kvstore.paxos.max-log-entries = 100 (the log would fill up before a snapshot)"
    );
}

#[test]
fn integer_overflow() {
    assert_eq!(
        error("kvstore.partitions = 5000000000\n"),
        "node1.conf: kvstore.partitions = 5000000000: out of range (at most 4294967295)"
    );
    // Beyond 64 bits the parser hands over a floating-point number.
    assert_eq!(
        error("kvstore.boot-threshold = 99999999999999999999\n"),
        "node1.conf: kvstore.boot-threshold = 100000000000000000000: out of range \
         (at most 18446744073709551615)"
    );
    assert_eq!(
        error("kvstore.paxos.max-pending = \"999999999999999999999999999999999999999999\"\n"),
        "node1.conf: kvstore.paxos.max-pending = \"999999999999999999999999999999999999999999\": \
         out of range (at most 18446744073709551615)"
    );
}

#[test]
fn duration_overflow() {
    assert_eq!(
        error("kvstore.sessions.idle-timeout = \"99999999999999999999999 days\"\n"),
        "node1.conf: kvstore.sessions.idle-timeout = \"99999999999999999999999 days\": too large"
    );
}

#[test]
fn bad_size() {
    assert_eq!(
        error("kvstore.limits.max-value-bytes = lots\n"),
        "node1.conf: kvstore.limits.max-value-bytes = \"lots\": not a size in bytes \
         (examples: 1024, 64KiB, 1 MiB)"
    );
}

#[test]
fn unparsable_address() {
    assert_eq!(
        error_raw("kvstore.address = \"localhost:45679\"\n"),
        "node1.conf: kvstore.address = \"localhost:45679\": not an IP:PORT address \
         (example: \"127.0.0.1:45678\"; host names are not resolved)"
    );
    assert_eq!(
        error_raw("kvstore.address = \"127.0.0.1\"\n"),
        "node1.conf: kvstore.address = \"127.0.0.1\": not an IP:PORT address \
         (example: \"127.0.0.1:45678\"; host names are not resolved)"
    );
}

#[test]
fn unreachable_addresses() {
    assert_eq!(
        error("kvstore.bootstrap-address = \"127.0.0.1:0\"\n"),
        "node1.conf: kvstore.bootstrap-address = \"127.0.0.1:0\": port 0 picks a random port, \
         which other nodes could not know"
    );
    assert_eq!(
        error_raw("kvstore.address = \"0.0.0.0:45679\"\n"),
        "node1.conf: kvstore.address = \"0.0.0.0:45679\": an unspecified IP cannot be reached \
         by other nodes; use the IP they should connect to"
    );
    assert_eq!(
        error("kvstore.metrics-address = \"127.0.0.1:45679\"\n"),
        "node1.conf: kvstore.metrics-address = \"127.0.0.1:45679\": must differ from \
         kvstore.address (both would bind it)"
    );
}

#[test]
fn empty_cluster_name() {
    assert_eq!(
        error("kvstore.cluster-name = \"\"\n"),
        "node1.conf: kvstore.cluster-name = \"\": must not be empty"
    );
}

#[test]
fn validate_checks_configurations_built_in_code() {
    let config = NodeConfig::reference().with_replication_degree(4);
    let message = config.validate("demo").expect_err("even").to_string();
    println!("{message}");
    assert_eq!(
        message,
        "demo: kvstore.replication-degree = 4: must be odd (a group of 2f+1 replicas tolerates f failures)"
    );
    let config = NodeConfig::reference()
        .with_boot_threshold(1)
        .with_replication_degree(1)
        .with_address(addr("127.0.0.1:0"))
        .with_bootstrap_address(addr("127.0.0.1:45678"));
    config
        .validate("demo")
        .expect("a single-replica node on port 0 is fine");
    assert!(!config.is_bootstrap_server());
}

#[test]
fn documented_example_file_is_valid() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let Ok(doc) = std::fs::read_to_string(&doc_path) else {
        // The documentation is not part of a packaged crate.
        return;
    };
    let start = doc
        .find("```hocon\n")
        .expect("docs/configuration.md has a hocon example")
        + 9;
    let len = doc[start..].find("```").expect("the example is closed");
    let example = &doc[start..start + len];
    let c = load_str(example, "node2.conf").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.address, addr("10.0.0.2:45678"));
    assert!(!c.is_bootstrap_server());
    assert_eq!(c.paxos.max_batch, 512);
    assert_eq!(c.paxos.max_pending, 10_000);
    assert_eq!(c.limits.max_value_bytes, 1 << 20);
}

#[test]
fn only_the_named_file_is_read() {
    // A sibling with the same stem and another extension is not merged in.
    let c = load_file(&data("node3.hocon")).expect("valid");
    assert_eq!(c.address, addr("127.0.0.1:45679"));
    assert_eq!(c.partitions, 1);
}

// ---------------------------------------------------------------------------------
// Seeds

#[test]
fn seeds_default_to_none_and_take_a_list_of_addresses() {
    assert!(load("").unwrap().seeds.is_empty());
    let c = load("kvstore.seeds = [\"10.0.0.2:45678\", \"10.0.0.3:45678\", \"10.0.0.2:45678\"]\n")
        .unwrap();
    assert_eq!(
        c.seeds,
        vec![addr("10.0.0.2:45678"), addr("10.0.0.3:45678")],
        "duplicates are dropped, order kept"
    );
}

#[test]
fn bad_seeds_are_refused_with_the_key() {
    let e = error("kvstore.seeds = \"10.0.0.2:45678\"\n");
    assert!(e.contains("kvstore.seeds") && e.contains("list"), "{e}");
    let e = error("kvstore.seeds = [\"node2:45678\"]\n");
    assert!(e.contains("kvstore.seeds") && e.contains("IP:PORT"), "{e}");
    let e = error("kvstore.seeds = [\"10.0.0.2:0\"]\n");
    assert!(e.contains("kvstore.seeds") && e.contains("port 0"), "{e}");
    let many: Vec<String> = (1..=65).map(|i| format!("\"10.0.1.{i}:1\"")).collect();
    let e = error(&format!("kvstore.seeds = [{}]\n", many.join(", ")));
    assert!(
        e.contains("kvstore.seeds") && e.contains("at most 64"),
        "{e}"
    );
}

/// The node files of the Compose cluster (`docker/conf`), the spare node6 included,
/// load as they are: they are otherwise read only inside containers, where a mistake
/// shows up as a node that never starts.
#[test]
fn compose_node_files_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/conf");
    for i in 1..=6 {
        let c = load_file(&dir.join(format!("node{i}.conf")))
            .unwrap_or_else(|e| panic!("node{i}.conf: {e}"));
        assert_eq!(c.address, addr(&format!("10.213.0.1{i}:45678")));
        assert_eq!(c.bootstrap_address, addr("10.213.0.11:45678"));
        assert_eq!(c.seeds.len(), 4, "node{i}: the seeds of cluster.conf");
        if std::env::var_os("KV_REPLACE_AFTER").is_none() {
            assert_eq!(
                c.membership.replace_after,
                Some(Duration::from_secs(30)),
                "node{i}: without KV_REPLACE_AFTER, the reference's replace-after"
            );
        }
    }
}

/// `KV_REPLACE_AFTER` (which the Compose file passes on, and the fault test's replace
/// fault sets) becomes `membership.replace-after` of the Compose cluster's nodes;
/// unset, the field is left to the reference.
#[test]
fn compose_replace_after_comes_from_the_environment() {
    use kv_bootstrap::hocon::{self, Source, Value};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/conf");
    let text = std::fs::read_to_string(dir.join("node6.conf")).expect("node6.conf");
    let replace_after = |env: &dyn Fn(&str) -> Option<String>| {
        let doc = hocon::load(
            &[Source {
                text: &text,
                origin: "node6.conf",
                dir: Some(&dir),
            }],
            env,
        )
        .expect("node6.conf reads");
        let Some(Value::Object(kv)) = doc.get("kvstore") else {
            panic!("no kvstore section");
        };
        match kv.get("membership") {
            Some(Value::Object(m)) => m.get("replace-after").cloned(),
            _ => None,
        }
    };
    let set = |name: &str| (name == "KV_REPLACE_AFTER").then(|| "3s".to_string());
    assert_eq!(replace_after(&set), Some(Value::String("3s".into())));
    assert_eq!(replace_after(&|_| None), None);
}

#[test]
fn the_message_size_follows_the_limits_unless_set() {
    // Defaults: 256 KiB, which holds a CAS of the largest key and values.
    assert_eq!(load("").unwrap().max_message_bytes(), 256 * 1024);
    // Larger values raise it; a smaller frame lowers it.
    let big =
        load("kvstore.limits { max-value-bytes = 1 MiB, max-frame-bytes = 4 MiB }\n").unwrap();
    assert_eq!(big.max_message_bytes(), 1024 + 2 * 1024 * 1024 + 512);
    let small =
        load("kvstore.limits { max-value-bytes = 1 KiB, max-frame-bytes = 64 KiB }\n").unwrap();
    assert_eq!(small.max_message_bytes(), 63 * 1024);
    let set = load("kvstore.paxos.max-message-bytes = 200 KiB\n").unwrap();
    assert_eq!(set.max_message_bytes(), 200 * 1024);
}

#[test]
fn a_message_size_that_cannot_hold_a_request_or_exceeds_a_frame() {
    assert_eq!(
        error("kvstore.paxos.max-message-bytes = 64 KiB\n"),
        "node1.conf: kvstore.paxos.max-message-bytes = 65536: must be in 132608..=1047552: at \
         least kvstore.limits.max-key-bytes + 2 x kvstore.limits.max-value-bytes + 512, so \
         that a CAS of the largest key and values fits in one message, and at most \
         kvstore.limits.max-frame-bytes - 1KiB"
    );
    assert!(
        error("kvstore.paxos.max-message-bytes = 1 MiB\n").contains("must be in 132608..=1047552")
    );
}

#[test]
fn more_partitions_than_the_layout_can_carry_in_a_frame() {
    // 1 MiB frames carry the layout of 2,500 partitions of 3, not of 3,000.
    assert!(load("kvstore.partitions = 2500\n").is_ok());
    let e = error("kvstore.partitions = 3000\n");
    assert!(
        e.starts_with("node1.conf: kvstore.partitions = 3000: the layout of 3000 partitions"),
        "{e}"
    );
    assert!(load("kvstore { partitions = 3000, limits.max-frame-bytes = 2 MiB }\n").is_ok());
}

//! `kvstore start --config FILE` with a broken configuration: the node does not
//! start, exits with code 2, and prints one message that names the file and the key
//! (issue 3, "Done when", second bullet). Each test prints the message a user sees
//! (`cargo test -p kvstore --test config_errors -- --nocapture`).

mod common;

use std::path::Path;

use common::{Run, Scratch, free_port, run};

/// Starts a node from `path` and returns the finished run; the node must not start.
fn start(path: &Path) -> Run {
    let p = path.to_str().expect("utf-8 path");
    run(&["start", "--config", p])
}

/// Writes `text` as `name`, starts a node from it, and checks the outcome: exit code
/// 2, nothing on stdout, one line on stderr that names the file and contains every
/// `expected` fragment. Returns the message.
fn rejected(name: &str, text: &str, expected: &[&str]) -> String {
    let scratch = Scratch::new("config");
    let path = scratch.write(name, text);
    check(&path, expected)
}

fn check(path: &Path, expected: &[&str]) -> String {
    let r = start(path);
    let message = r.stderr.trim_end().to_string();
    println!("{message}");
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert_eq!(r.stdout, "", "{}", r.show());
    assert_eq!(
        message.lines().count(),
        1,
        "expected one line on stderr: {}",
        r.show()
    );
    let file = path.display().to_string();
    assert!(
        message.contains(&file),
        "the message does not name the file {file}: {message}"
    );
    for e in expected {
        assert!(
            message.contains(e),
            "the message lacks {e:?}: {message}\nwhole run: {}",
            r.show()
        );
    }
    message
}

/// A valid address line on a port nothing listens on.
fn address() -> String {
    format!("  address = \"127.0.0.1:{}\"\n", free_port())
}

fn node(body: &str) -> String {
    format!("kvstore {{\n{}{body}}}\n", address())
}

#[test]
fn unknown_key_names_the_key_and_suggests_the_right_one() {
    let m = rejected(
        "typo.conf",
        &node("  replication-degre = 3\n"),
        &[
            "unknown key kvstore.replication-degre",
            "did you mean kvstore.replication-degree?",
        ],
    );
    assert!(m.starts_with("kvstore: "), "{m}");
}

#[test]
fn unknown_key_in_the_wrong_section_suggests_the_section() {
    rejected(
        "section.conf",
        &node("  max-batch = 10\n"),
        &[
            "unknown key kvstore.max-batch",
            "did you mean kvstore.paxos.max-batch?",
        ],
    );
}

#[test]
fn wrong_type_names_the_key_and_the_value() {
    rejected(
        "type.conf",
        &node("  boot-threshold = \"three\"\n"),
        &["kvstore.boot-threshold", "expected an integer", "\"three\""],
    );
}

#[test]
fn bad_duration_names_the_key_and_the_value() {
    rejected(
        "duration.conf",
        &node("  keep-alive-period = \"2 parsecs\"\n"),
        &[
            "kvstore.keep-alive-period",
            "\"2 parsecs\"",
            "not a duration",
        ],
    );
}

#[test]
fn negative_duration_is_rejected() {
    rejected(
        "negative.conf",
        &node("  failure-detector.initial-delay = -5ms\n"),
        &["kvstore.failure-detector.initial-delay", "negative"],
    );
}

#[test]
fn even_replication_degree_is_rejected() {
    rejected(
        "even.conf",
        &node("  replication-degree = 2\n  boot-threshold = 3\n"),
        &["kvstore.replication-degree = 2", "must be odd"],
    );
}

#[test]
fn replication_degree_above_boot_threshold_is_rejected() {
    rejected(
        "toolarge.conf",
        &node("  replication-degree = 5\n  boot-threshold = 3\n"),
        &[
            "kvstore.replication-degree = 5",
            "must be at most kvstore.boot-threshold = 3",
        ],
    );
}

#[test]
fn host_name_address_is_rejected() {
    rejected(
        "hostname.conf",
        "kvstore {\n  address = \"localhost:45679\"\n}\n",
        &["kvstore.address", "\"localhost:45679\"", "not an IP:PORT"],
    );
}

#[test]
fn address_without_port_is_rejected() {
    rejected(
        "noport.conf",
        &format!(
            "kvstore {{\n{}  bootstrap-address = \"127.0.0.1\"\n}}\n",
            address()
        ),
        &[
            "kvstore.bootstrap-address",
            "\"127.0.0.1\"",
            "not an IP:PORT",
        ],
    );
}

/// A syntax error names the line rather than the key (the message for an unquoted
/// address names the value and the line, not `kvstore.address`).
#[test]
fn unquoted_address_is_a_syntax_error_that_says_how_to_fix_it() {
    rejected(
        "unquoted.conf",
        "kvstore {\n  address = 127.0.0.1:45679\n}\n",
        &[
            "syntax error",
            "line 2",
            "127.0.0.1:45679",
            "in quotes: \"127.0.0.1:45679\"",
        ],
    );
}

#[test]
fn missing_address_is_reported() {
    rejected(
        "noaddress.conf",
        "kvstore {\n  partitions = 2\n}\n",
        &["missing required key kvstore.address"],
    );
}

#[test]
fn missing_file_is_reported() {
    let scratch = Scratch::new("config");
    let path = scratch.path.join("does-not-exist.conf");
    check(&path, &["cannot read the file"]);
}

#[test]
fn unclosed_brace_is_a_syntax_error_with_its_line() {
    rejected(
        "brace.conf",
        &format!("kvstore {{\n{}  partitions = 2\n", address()),
        &["syntax error", "line 1", "never closed"],
    );
}

#[test]
fn key_without_value_is_a_syntax_error_naming_the_key() {
    rejected(
        "novalue.conf",
        &node("  partitions =\n"),
        &["syntax error", "partitions"],
    );
}

#[test]
fn settings_outside_the_namespace_are_rejected() {
    rejected(
        "akka.conf",
        &format!("{}akka.loglevel = DEBUG\n", node("")),
        &["unknown key akka", "every setting lives under kvstore"],
    );
}

#[test]
fn bad_log_level_is_a_usage_error() {
    let scratch = Scratch::new("config");
    let path = scratch.write("ok.conf", &node(""));
    let r = run(&[
        "start",
        "--config",
        path.to_str().unwrap(),
        "--log-level",
        "loud",
    ]);
    println!("{}", r.stderr.trim_end());
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(r.stderr.contains("--log-level"), "{}", r.show());
}

/// A node file in `scratch` with a `tls` block over the given file names (relative
/// to the node file), with a CA and a certificate for 127.0.0.1 written as
/// `ca.pem`, `node.pem` and `node.key`.
fn tls_case(scratch: &common::Scratch, block: &str) -> std::path::PathBuf {
    let ca = common::pki::Ca::new("test CA");
    let (cert, key) = ca.issue([127, 0, 0, 1].into());
    scratch.write("ca.pem", &ca.pem());
    scratch.write("node.pem", &cert);
    scratch.write("node.key", &key);
    scratch.write("tls.conf", &node(&format!("  tls {{\n{block}  }}\n")))
}

fn tls_block(cert: &str, key: &str, ca: &str) -> String {
    format!("    certificate = \"{cert}\"\n    private-key = \"{key}\"\n    ca = \"{ca}\"\n")
}

#[test]
fn tls_with_a_missing_file_names_the_key_and_the_file() {
    let scratch = Scratch::new("config-tls-missing");
    let path = tls_case(&scratch, &tls_block("missing.pem", "node.key", "ca.pem"));
    let missing = scratch.path.join("missing.pem").display().to_string();
    check(
        &path,
        &[
            "kvstore.tls.certificate = \"missing.pem\"",
            &format!("cannot read {missing}"),
            "No such file",
        ],
    );
}

#[test]
fn tls_with_a_file_that_is_not_pem_names_the_key_and_the_file() {
    let scratch = Scratch::new("config-tls-garbage");
    scratch.write("garbage.pem", "this is not a certificate\n");
    let path = tls_case(&scratch, &tls_block("node.pem", "node.key", "garbage.pem"));
    check(
        &path,
        &["kvstore.tls.ca", "garbage.pem", "no PEM certificate"],
    );
    let path = tls_case(&scratch, &tls_block("node.pem", "garbage.pem", "ca.pem"));
    check(
        &path,
        &[
            "kvstore.tls.private-key",
            "garbage.pem",
            "no PEM private key",
        ],
    );
}

#[test]
fn tls_with_a_key_that_does_not_match_the_certificate_is_rejected() {
    let scratch = Scratch::new("config-tls-key");
    let other = common::pki::Ca::new("test CA")
        .issue([127, 0, 0, 1].into())
        .1;
    scratch.write("other.key", &other);
    let path = tls_case(&scratch, &tls_block("node.pem", "other.key", "ca.pem"));
    check(
        &path,
        &[
            "kvstore.tls.private-key = \"other.key\"",
            "the private key does not match the certificate",
        ],
    );
}

#[test]
fn tls_with_a_certificate_from_another_ca_is_rejected() {
    let scratch = Scratch::new("config-tls-ca");
    let foreign = common::pki::Ca::new("test CA");
    let (cert, key) = foreign.issue([127, 0, 0, 1].into());
    scratch.write("foreign.pem", &cert);
    scratch.write("foreign.key", &key);
    let path = tls_case(&scratch, &tls_block("foreign.pem", "foreign.key", "ca.pem"));
    check(
        &path,
        &[
            "kvstore.tls.certificate = \"foreign.pem\"",
            "the certificate is not signed by the CA in tls.ca",
        ],
    );
}

#[test]
fn tls_with_a_certificate_for_another_address_is_rejected() {
    let scratch = Scratch::new("config-tls-name");
    let ca = common::pki::Ca::new("test CA");
    let (cert, key) = ca.issue([10, 1, 2, 3].into());
    scratch.write("ca.pem", &ca.pem());
    scratch.write("other.pem", &cert);
    scratch.write("other.key", &key);
    let path = scratch.write(
        "tls.conf",
        &node(&format!(
            "  tls {{\n{}  }}\n",
            tls_block("other.pem", "other.key", "ca.pem")
        )),
    );
    check(
        &path,
        &[
            "kvstore.tls.certificate",
            "other.pem",
            "does not name this node's address 127.0.0.1",
        ],
    );
}

#[test]
fn tls_needs_all_three_files() {
    rejected(
        "tls-partial.conf",
        &node("  tls.certificate = \"node.pem\"\n"),
        &["missing required key kvstore.tls.private-key"],
    );
}

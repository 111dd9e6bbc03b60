//! Inputs found by fuzzing the configuration loader (`fuzz/`, target
//! `config_load_str`), kept as regression tests: each gives a configuration or a
//! one-line error naming the file (and, for a syntax error, the line), never a panic.
//!
//! All three classes below made an earlier HOCON parser panic, so `kvstore start`
//! exited with code 101 instead of explaining the file.

use kv_bootstrap::config::load_str;

const ADDRESS: &str = "kvstore.address = \"127.0.0.1:45679\"\n";

/// Non-ASCII text outside quotes (the earlier parser decoded unquoted strings byte by
/// byte). HOCON allows it in unquoted strings, so it is read as text.
#[test]
fn non_ascii_outside_quotes() {
    // The input the fuzzer found: 02 4a d9 b3, a key with no value.
    let e = load_str("\u{2}J\u{673}", "crash.conf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "crash.conf: syntax error: line 1: \\u{2}J\u{673} has no value"
    );
    let text = "kvstore {\n  address = \"127.0.0.1:45679\"\n  cluster-name = café\n}\n";
    let cfg = load_str(text, "node.conf").expect("unquoted non-ASCII text is a string");
    assert_eq!(cfg.cluster_name, "café");
    let text = format!("{ADDRESS}kvstore.cluster-name = naïve ünïcode\n");
    let cfg = load_str(&text, "node.conf").expect("valid");
    assert_eq!(cfg.cluster_name, "naïve ünïcode");
}

/// Non-ASCII text after a carriage return inside a comment (the earlier parser ended
/// comments there). A comment runs to the end of the line, a carriage return
/// included.
#[test]
fn non_ascii_after_a_carriage_return_in_a_comment() {
    // The input the fuzzer found (CI, 20 s run): the comment swallows the rest.
    let found = "2=#\"\"\0\0#\"\"\u{292}<\"\0\0\0\0\0\0\0\r\u{292}\0";
    assert_eq!(
        load_str(found, "crash.conf").unwrap_err().to_string(),
        "crash.conf: syntax error: line 1: 2 has no value"
    );
    // Only a comment: an empty file, which lacks the address.
    let e = load_str("#x\r\u{292}", "crash.conf")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("crash.conf: missing required key kvstore.address"),
        "{e}"
    );
    let text = format!("{ADDRESS}kvstore.partitions = 2 // x\r\u{292}\n");
    assert_eq!(load_str(&text, "crash.conf").unwrap().partitions, 2);
    let text = format!("{ADDRESS}kvstore.partitions = 3 # x\r\u{292}\r\n");
    assert_eq!(load_str(&text, "crash.conf").unwrap().partitions, 3);
}

/// Non-ASCII text right after a run of four or more quotes that closes a `"""`
/// string. The quotes before the closing three belong to the string.
#[test]
fn non_ascii_after_a_long_run_of_closing_quotes() {
    let text = format!("{ADDRESS}kvstore.cluster-name = \"\"\"x\"\"\"\"é\n");
    let cfg = load_str(&text, "node.conf").expect("valid");
    assert_eq!(cfg.cluster_name, "x\"é");
    let text = format!("{ADDRESS}kvstore.cluster-name = \"\"\"a\"\"\"\"\"\"\n");
    let cfg = load_str(&text, "node.conf").expect("valid");
    assert_eq!(cfg.cluster_name, "a\"\"\"");
    // As a key it is still an error, with its line.
    let e = load_str("\"\"\"x\"\"\"\"é = 1", "crash.conf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "crash.conf: syntax error: line 1: a key cannot be a \"\"\" string"
    );
    // Never closed.
    let e = load_str(&format!("{ADDRESS}a = \"\"\"x\"\"é"), "crash.conf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "crash.conf: syntax error: line 2: the \"\"\" string is never closed"
    );
}

/// Non-ASCII text is fine in quoted strings and in comments.
#[test]
fn non_ascii_in_quotes_and_comments_is_accepted() {
    let text = "# café\n// naïve\nkvstore {\n  address = \"127.0.0.1:45679\" # ünïcode\n  cluster-name = \"café \\\"ü\\\"\"\n}\n";
    let cfg = load_str(text, "node.conf").expect("valid");
    assert_eq!(cfg.cluster_name, "café \"ü\"");
    let text = "kvstore.address = \"127.0.0.1:45679\"\nkvstore.cluster-name = \"\"\"x\ny é\"\"\"\n";
    let cfg = load_str(text, "node.conf").expect("valid");
    assert_eq!(cfg.cluster_name, "x\ny é");
}

/// Inputs that could exhaust the stack or the memory are refused with their line.
#[test]
fn deep_and_explosive_inputs_are_bounded() {
    let deep = format!("a = {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let e = load_str(&deep, "deep.conf").unwrap_err().to_string();
    assert!(
        e.starts_with("deep.conf: syntax error: line 1: a: nested more than"),
        "{e}"
    );
    let deep = format!("{} = 1", vec!["a"; 10_000].join("."));
    let e = load_str(&deep, "deep.conf").unwrap_err().to_string();
    assert!(e.contains("nested more than"), "{e}");
    let deep = format!("a {}{}", "{ a ".repeat(10_000), "}".repeat(10_000));
    let e = load_str(&deep, "deep.conf").unwrap_err().to_string();
    assert!(e.contains("nested more than"), "{e}");
    // Each key doubles the one before: 2^40 bytes if nothing stopped it.
    let mut text = String::from("x0 = \"0123456789abcdef\"\n");
    for i in 1..=40 {
        text.push_str(&format!("x{i} = ${{x{}}}${{x{}}}\n", i - 1, i - 1));
    }
    let e = load_str(&text, "boom.conf").unwrap_err().to_string();
    assert!(e.contains("expand too far"), "{e}");
    // A chain of substitutions.
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(&format!("x{i} = ${{x{}}}\n", i + 1));
    }
    text.push_str("x1000 = 1\n");
    let e = load_str(&text, "chain.conf").unwrap_err().to_string();
    assert!(e.contains("nested more than"), "{e}");
    // The same key set over itself many times.
    let text = "a = 1\n".to_string() + &"a = ${a} 1\n".repeat(1000);
    let e = load_str(&text, "chain.conf").unwrap_err().to_string();
    assert!(e.contains("line 34: a: set over a substitution"), "{e}");
    let text = "a = 1\n".to_string() + &"a = ${?b}\n".repeat(1000);
    let e = load_str(&text, "chain.conf").unwrap_err().to_string();
    assert!(e.contains("set over a substitution"), "{e}");
}

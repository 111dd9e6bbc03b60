//! Inputs found by fuzzing the configuration loader (`fuzz/`, target
//! `config_load_str`), kept as regression tests: each must give a one-line error
//! naming the line, never a panic.

use kv_bootstrap::config::load_str;

/// The parser (hocon 0.9) panicked on non-ASCII text outside quotes
/// (`called Result::unwrap() on an Err value: Utf8Error` in `unquoted_string`), so
/// `kvstore start` crashed with exit code 101 instead of explaining the file.
#[test]
fn non_ascii_outside_quotes_is_a_syntax_error_not_a_panic() {
    // The input the fuzzer found: 02 4a d9 b3.
    let e = load_str("\u{2}J\u{673}", "crash.conf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "crash.conf: syntax error: line 1: '\u{673}' outside quotes (non-ASCII text is only accepted in quoted strings: write it in quotes)"
    );
    let text = "kvstore {\n  address = \"127.0.0.1:45679\"\n  cluster-name = café\n}\n";
    let e = load_str(text, "node.conf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "node.conf: syntax error: line 3: 'é' outside quotes (non-ASCII text is only accepted in quoted strings: write it in quotes)"
    );
}

/// The parser ends a `#` or `//` comment at a carriage return, so non-ASCII text
/// after one is outside the comment; it panicked the parser the same way.
#[test]
fn non_ascii_after_a_carriage_return_in_a_comment_is_a_syntax_error_not_a_panic() {
    // The input the fuzzer found (CI, 20 s run), and its shortest form.
    let found = "2=#\"\"\0\0#\"\"\u{292}<\"\0\0\0\0\0\0\0\r\u{292}\0";
    for text in [found, "#x\r\u{292}", "a = 1 // x\r\u{292}\n"] {
        let e = load_str(text, "crash.conf").unwrap_err();
        assert_eq!(
            e.to_string(),
            "crash.conf: syntax error: line 1: '\u{292}' outside quotes (non-ASCII text is only accepted in quoted strings: write it in quotes)",
            "{text:?}"
        );
    }
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

//! Reading and writing the history format.

use kv_checker::{
    CheckResult, Error, HistoryOp, Op, check_file, parse_history, parse_line, write_history,
};

fn line_error(text: &str) -> String {
    parse_line(text).expect_err("should be rejected")
}

#[test]
fn the_documented_examples_parse() {
    let text = r#"
{"client":1,"call":5,"ret":9,"body":{"op":"put","key":"k","value":"v"}}
{"client":2,"call":10,"ret":12,"body":{"op":"get","key":"k","out":"v"}}
{"client":2,"call":13,"ret":14,"body":{"op":"get","key":"x","out":null}}
{"client":3,"call":15,"ret":20,"body":{"op":"cas","key":"k","from":"v","to":"w","ok":true}}
{"client":4,"call":21,"unknown":true,"body":{"op":"put","key":"k","value":"z"}}
{"client":4,"call":30,"ret":99,"unknown":true,"body":{"op":"cas","key":"k","from":"a","to":"b"}}
{"client":5,"call":100,"ret":110,"body":{"op":"del","key":"k","existed":true}}
{"client":5,"call":111,"ret":120,"body":{"op":"cas","key":"k","from":null,"to":"n","ok":true}}
{"client":5,"call":121,"ret":130,"body":{"op":"del","key":"x","existed":false}}
{"client":6,"call":131,"unknown":true,"body":{"op":"del","key":"k"}}
"#;
    let ops = parse_history(text).expect("valid history");
    assert_eq!(ops.len(), 10);
    assert_eq!(
        ops[2].op,
        Op::Get {
            key: "x".into(),
            out: None
        }
    );
    assert_eq!(ops[4].ret, None);
    assert_eq!(ops[5].ret, None, "an unknown operation has no known return");
    assert_eq!(
        ops[6].op,
        Op::Del {
            key: "k".into(),
            existed: true
        }
    );
    assert_eq!(
        ops[7].op,
        Op::Cas {
            key: "k".into(),
            from: None,
            to: "n".into(),
            ok: true
        }
    );
    assert_eq!(ops[9].ret, None);
    assert_eq!(check_history_of(&ops), CheckResult::Linearizable);
}

fn check_history_of(ops: &[HistoryOp]) -> CheckResult {
    kv_checker::check_history(ops)
}

#[test]
fn writer_and_parser_roundtrip_including_unknown_and_unicode() {
    let ops = vec![
        HistoryOp {
            client: 1,
            call: 0,
            ret: Some(3),
            op: Op::Put {
                key: "clé \"q\"\n".into(),
                value: "鍵\\".into(),
            },
        },
        HistoryOp {
            client: u64::MAX,
            call: 4,
            ret: Some(4),
            op: Op::Get {
                key: "k".into(),
                out: None,
            },
        },
        HistoryOp {
            client: 2,
            call: 5,
            ret: None,
            op: Op::Cas {
                key: "k".into(),
                from: Some("a".into()),
                to: "b".into(),
                ok: false,
            },
        },
        HistoryOp {
            client: 3,
            call: 5,
            ret: Some(7),
            op: Op::Cas {
                key: "k".into(),
                from: None,
                to: "c".into(),
                ok: true,
            },
        },
        HistoryOp {
            client: 3,
            call: 8,
            ret: Some(9),
            op: Op::Del {
                key: "k".into(),
                existed: true,
            },
        },
        HistoryOp {
            client: 3,
            call: 10,
            ret: None,
            op: Op::Del {
                key: "k".into(),
                existed: false,
            },
        },
        HistoryOp {
            client: 2,
            call: 6,
            ret: None,
            op: Op::Get {
                key: "k".into(),
                out: None,
            },
        },
    ];
    let mut buf = Vec::new();
    write_history(&mut buf, &ops).expect("write to memory");
    let text = String::from_utf8(buf).expect("UTF-8");
    assert_eq!(text.lines().count(), 7);
    assert_eq!(parse_history(&text), Ok(ops));
    assert!(text.contains(r#"{"client":2,"call":5,"unknown":true,"body":{"op":"cas""#));
    assert!(text.contains(
        r#"{"client":3,"call":5,"ret":7,"body":{"op":"cas","key":"k","from":null,"to":"c","ok":true}}"#
    ));
    assert!(
        text.contains(
            r#"{"client":3,"call":8,"ret":9,"body":{"op":"del","key":"k","existed":true}}"#
        )
    );
    assert!(
        text.contains(r#"{"client":3,"call":10,"unknown":true,"body":{"op":"del","key":"k"}}"#)
    );
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let text = "\n{\"client\":1,\"call\":1,\"ret\":2,\"body\":{\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"}}\n{\"client\":1,\"ret\":2,\"body\":{\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"}}\n";
    let e = parse_history(text).expect_err("missing call");
    assert_eq!(e.line, 3);
    assert_eq!(e.message, r#"missing field "call""#);
    assert_eq!(e.to_string(), r#"line 3: missing field "call""#);
}

#[test]
fn malformed_lines_are_rejected_with_specific_messages() {
    assert!(line_error("{").starts_with("invalid JSON"));
    assert_eq!(line_error("[1]"), "expected a JSON object, found an array");
    assert_eq!(
        line_error(r#"{"client":-1,"call":1,"ret":2,"body":{"op":"get","key":"k","out":null}}"#),
        r#"field "client" must be a non-negative integer, found the number -1"#
    );
    assert_eq!(
        line_error(r#"{"client":1,"call":1,"body":{"op":"get","key":"k","out":null}}"#),
        r#"missing field "ret""#
    );
    assert_eq!(
        line_error(r#"{"client":1,"call":5,"ret":2,"body":{"op":"get","key":"k","out":null}}"#),
        r#""ret" (2) is before "call" (5)"#
    );
    assert_eq!(
        line_error(r#"{"client":1,"call":1,"ret":2,"body":{"op":"incr","key":"k"}}"#),
        r#"unknown operation "incr" in "body" (expected "get", "put", "cas" or "del")"#
    );
    assert_eq!(
        line_error(r#"{"client":1,"call":1,"ret":2,"body":{"op":"del","key":"k"}}"#),
        r#"missing field "existed" in "body""#
    );
    assert_eq!(
        line_error(r#"{"client":1,"call":1,"ret":2,"body":{"op":"del","key":"k","existed":1}}"#),
        r#"field "existed" in "body" must be a boolean, found the number 1"#
    );
    assert_eq!(
        line_error(
            r#"{"client":1,"call":1,"ret":2,"body":{"op":"del","key":"k","existed":true,"value":"v"}}"#
        ),
        r#"unknown field "value" in "body""#
    );
    assert_eq!(
        line_error(
            r#"{"client":1,"call":1,"ret":2,"body":{"op":"cas","key":"k","to":"b","ok":true}}"#
        ),
        r#"missing field "from" in "body""#
    );
    assert_eq!(
        line_error(
            r#"{"client":1,"call":1,"ret":2,"body":{"op":"cas","key":"k","from":false,"to":"b","ok":true}}"#
        ),
        r#"field "from" in "body" must be a string or null, found false"#
    );
    assert_eq!(
        line_error(r#"{"client":1,"call":1,"ret":2,"body":{"op":"put","key":"k","vaule":"v"}}"#),
        r#"unknown field "vaule" in "body""#
    );
    assert_eq!(
        line_error(r#"{"client":1,"call":1,"ret":2,"body":{"op":"get","key":"k"}}"#),
        r#"missing field "out" in "body""#
    );
    assert_eq!(
        line_error(
            r#"{"client":1,"call":1,"ret":2,"body":{"op":"cas","key":"k","from":"a","to":"b"}}"#
        ),
        r#"missing field "ok" in "body""#
    );
    assert_eq!(
        line_error(r#"{"client":1,"call":1,"ret":2,"body":{"op":"get","key":7,"out":null}}"#),
        r#"field "key" in "body" must be a string, found the number 7"#
    );
    assert_eq!(
        line_error(
            r#"{"client":1,"call":1,"ret":2,"unknown":"yes","body":{"op":"get","key":"k","out":null}}"#
        ),
        r#"field "unknown" must be a boolean, found the string "yes""#
    );
    assert_eq!(
        line_error(r#"{"client":1,"call":1,"ret":2,"extra":0,"body":{}}"#),
        r#"unknown field "extra""#
    );
}

#[test]
fn check_file_reports_io_and_parse_errors_with_the_path() {
    let dir = std::env::temp_dir().join(format!("kv-checker-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let missing = dir.join("missing.jsonl");
    let e = check_file(&missing).expect_err("no such file");
    assert!(matches!(e, Error::Io { .. }));
    assert!(e.to_string().starts_with(&missing.display().to_string()));

    let bad = dir.join("history.jsonl");
    let mut text = String::new();
    for i in 0..16 {
        text.push_str(&format!(
            "{{\"client\":1,\"call\":{i},\"ret\":{i},\"body\":{{\"op\":\"get\",\"key\":\"k\",\"out\":null}}}}\n"
        ));
    }
    text.push_str(
        "{\"client\":1,\"ret\":99,\"body\":{\"op\":\"get\",\"key\":\"k\",\"out\":null}}\n",
    );
    std::fs::write(&bad, &text).expect("write");
    let e = check_file(&bad).expect_err("line 17 is bad");
    assert_eq!(
        e.to_string(),
        format!("{}:17: missing field \"call\"", bad.display())
    );

    let good = dir.join("good.jsonl");
    std::fs::write(&good, text.lines().take(16).collect::<Vec<_>>().join("\n")).expect("write");
    let report = check_file(&good).expect("valid file");
    assert!(report.is_linearizable());
    assert_eq!(
        (report.ops, report.keys, report.unknown_outcome),
        (16, 1, 0)
    );
    assert!(
        report
            .to_string()
            .starts_with("linearizable (16 operations on 1 keys")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

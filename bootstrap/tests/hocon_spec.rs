//! The HOCON reader (`kv_bootstrap::hocon`) against the HOCON specification
//! (Lightbend config's HOCON.md), for the part of it configuration files use, and the
//! message and line of each kind of error.

use std::path::{Path, PathBuf};

use kv_bootstrap::hocon::{self, Error, Object, Source, Value};

fn parse(text: &str) -> Object {
    hocon::load(
        &[Source {
            text,
            origin: "t.conf",
            dir: None,
        }],
        &env,
    )
    .unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn env(name: &str) -> Option<String> {
    match name {
        "KV_TEST_HOST" => Some("10.0.0.9".into()),
        _ => None,
    }
}

fn error(text: &str) -> String {
    match hocon::load(
        &[Source {
            text,
            origin: "t.conf",
            dir: None,
        }],
        &env,
    ) {
        Ok(doc) => panic!("expected an error for {text:?}, got {doc:?}"),
        Err(e) => e.to_string(),
    }
}

/// The value at a dotted path.
fn at<'a>(doc: &'a Object, path: &str) -> &'a Value {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let mut v = doc
        .get(first)
        .unwrap_or_else(|| panic!("{path}: no {first}"));
    for p in parts {
        match v {
            Value::Object(o) => v = o.get(p).unwrap_or_else(|| panic!("{path}: no {p}")),
            other => panic!("{path}: {other:?} is not an object"),
        }
    }
    v
}

fn s(text: &str) -> Value {
    Value::String(text.into())
}

fn keys(v: &Value) -> Vec<String> {
    match v {
        Value::Object(o) => o.iter().map(|(k, _)| k.clone()).collect(),
        other => panic!("{other:?} is not an object"),
    }
}

// ---------------------------------------------------------------------------------
// Objects and keys

#[test]
fn the_root_braces_are_optional() {
    assert_eq!(parse("a = 1\nb = 2"), parse("{ a = 1, b = 2 }"));
    assert_eq!(parse("{\n a = 1\n}\n# done\n"), parse("a = 1"));
    assert!(parse("").is_empty());
    assert!(parse("  # only a comment\n\n").is_empty());
}

#[test]
fn separators() {
    let doc = parse("a = 1\nb : 2\nc { d = 3 }\ne: { f: 4 }\n");
    assert_eq!(at(&doc, "a"), &Value::Int(1));
    assert_eq!(at(&doc, "b"), &Value::Int(2));
    assert_eq!(at(&doc, "c.d"), &Value::Int(3));
    assert_eq!(at(&doc, "e.f"), &Value::Int(4));
}

#[test]
fn fields_are_separated_by_commas_or_new_lines() {
    let doc = parse("a = 1, b = 2\nc = 3,\nd = [1, 2,]\ne { x = 1, }");
    assert_eq!(keys(&Value::Object(doc.clone())), ["a", "b", "c", "d", "e"]);
    assert_eq!(
        at(&doc, "d"),
        &Value::List(vec![Value::Int(1), Value::Int(2)])
    );
}

#[test]
fn path_keys_make_nested_objects() {
    assert_eq!(parse("a.b.c = 1"), parse("a { b { c = 1 } }"));
    let doc = parse("a.b = 1\na.c = 2\na { d = 3 }");
    assert_eq!(keys(at(&doc, "a")), ["b", "c", "d"]);
}

#[test]
fn quoted_keys_are_one_part() {
    let doc = parse("\"a.b\" = 1\n\"x\".\"y z\" = 2\n\"\" = 3");
    assert_eq!(doc.get("a.b"), Some(&Value::Int(1)));
    assert_eq!(at(&doc, "x").clone(), {
        let d = parse("\"y z\" = 2");
        Value::Object(d)
    });
    assert_eq!(doc.get(""), Some(&Value::Int(3)));
    // Spaces inside an unquoted key are kept.
    assert_eq!(parse("a b = 1").get("a b"), Some(&Value::Int(1)));
}

#[test]
fn a_key_set_twice_merges_objects_and_replaces_anything_else() {
    let doc = parse("a { x = 1, y = 2 }\na { y = 3, z = 4 }\nb = 1\nb = 2");
    assert_eq!(at(&doc, "a.x"), &Value::Int(1));
    assert_eq!(at(&doc, "a.y"), &Value::Int(3));
    assert_eq!(at(&doc, "a.z"), &Value::Int(4));
    assert_eq!(at(&doc, "b"), &Value::Int(2));
    // A value that is not an object breaks the merge.
    let doc = parse("a { x = 1 }\na = 5\na { y = 2 }");
    assert_eq!(keys(at(&doc, "a")), ["y"]);
    // Keys keep the place where they were first set.
    assert_eq!(
        keys(&Value::Object(parse("b = 1\na = 1\nb = 2"))),
        ["b", "a"]
    );
}

#[test]
fn later_sources_override_earlier_ones() {
    let doc = hocon::load(
        &[
            Source {
                text: "k { a = 1, b = 2 }",
                origin: "reference.conf",
                dir: None,
            },
            Source {
                text: "k.b = 3\nk.c = ${k.a}",
                origin: "node.conf",
                dir: None,
            },
        ],
        &env,
    )
    .unwrap();
    assert_eq!(at(&doc, "k.a"), &Value::Int(1));
    assert_eq!(at(&doc, "k.b"), &Value::Int(3));
    assert_eq!(at(&doc, "k.c"), &Value::Int(1));
}

// ---------------------------------------------------------------------------------
// Values

#[test]
fn numbers_booleans_and_null() {
    let doc = parse(
        "a = 42\nb = -7\nc = 1.5\nd = 1e6\ne = 99999999999999999999\nf = true\ng = false\nh = null",
    );
    assert_eq!(at(&doc, "a"), &Value::Int(42));
    assert_eq!(at(&doc, "b"), &Value::Int(-7));
    assert_eq!(at(&doc, "c"), &Value::Real(1.5));
    assert_eq!(at(&doc, "d"), &Value::Real(1e6));
    assert_eq!(at(&doc, "e"), &Value::Real(1e20));
    assert_eq!(at(&doc, "f"), &Value::Bool(true));
    assert_eq!(at(&doc, "g"), &Value::Bool(false));
    assert_eq!(at(&doc, "h"), &Value::Null);
    // Not numbers: strings.
    let doc = parse("a = 1.\nb = .5\nc = 10ms\nd = -\ne = 1.2.3\nf = truely");
    for (k, v) in [
        ("a", "1."),
        ("b", ".5"),
        ("c", "10ms"),
        ("d", "-"),
        ("e", "1.2.3"),
        ("f", "truely"),
    ] {
        assert_eq!(at(&doc, k), &s(v), "{k}");
    }
}

#[test]
fn quoted_strings_and_escapes() {
    let doc = parse(r#"a = "x \"y\" \\ \/ \t\n\u00e9\ud83d\ude00 # not a comment""#);
    assert_eq!(at(&doc, "a"), &s("x \"y\" \\ / \t\né😀 # not a comment"));
    assert_eq!(at(&parse("a = \"\""), "a"), &s(""));
    assert_eq!(at(&parse("a = \"true\""), "a"), &s("true"));
    assert_eq!(at(&parse("a = \"42\""), "a"), &s("42"));
}

#[test]
fn triple_quoted_strings() {
    let doc = parse("a = \"\"\"line 1\n  \"quoted\" \\n # no comment\nline 3\"\"\"\nb = 1");
    assert_eq!(
        at(&doc, "a"),
        &s("line 1\n  \"quoted\" \\n # no comment\nline 3")
    );
    assert_eq!(at(&doc, "b"), &Value::Int(1));
    // Quotes before the closing three belong to the string.
    assert_eq!(at(&parse("a = \"\"\"x\"\"\"\"\""), "a"), &s("x\"\""));
    assert_eq!(at(&parse("a = \"\"\"\"\"\""), "a"), &s(""));
}

#[test]
fn unquoted_strings() {
    let doc = parse("a = hello\nb = some words here  \nc = café\nd = a-b_c/d.e");
    assert_eq!(at(&doc, "a"), &s("hello"));
    assert_eq!(at(&doc, "b"), &s("some words here"));
    assert_eq!(at(&doc, "c"), &s("café"));
    assert_eq!(at(&doc, "d"), &s("a-b_c/d.e"));
    // `//` starts a comment even in an unquoted string.
    assert_eq!(at(&parse("a = x//y"), "a"), &s("x"));
}

#[test]
fn concatenation_keeps_the_spaces_between_parts() {
    let doc = parse("a = 2 seconds\nb = 1   MiB\nc = \"x\" y\"z\"\nd = 1.5 s # comment");
    assert_eq!(at(&doc, "a"), &s("2 seconds"));
    assert_eq!(at(&doc, "b"), &s("1   MiB"));
    assert_eq!(at(&doc, "c"), &s("x yz"));
    assert_eq!(at(&doc, "d"), &s("1.5 s"));
    let doc = parse("a = [1] [2, 3]\nb = { x = 1 } { y = 2 }");
    assert_eq!(
        at(&doc, "a"),
        &Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
    );
    assert_eq!(keys(at(&doc, "b")), ["x", "y"]);
    assert_eq!(
        error("a = [1] x"),
        "t.conf: line 1: a: a list and text cannot be joined into one value (quote the text)"
    );
}

#[test]
fn lists() {
    let doc = parse("a = [\n  1\n  \"two\", three # c\n  [4]\n  { five = 5 }\n]\nb = []");
    let Value::List(items) = at(&doc, "a") else {
        panic!("a list")
    };
    assert_eq!(items.len(), 5);
    assert_eq!(items[1], s("two"));
    assert_eq!(items[2], s("three"));
    assert_eq!(items[3], Value::List(vec![Value::Int(4)]));
    assert_eq!(at(&doc, "b"), &Value::List(vec![]));
}

#[test]
fn comments() {
    let doc = parse("# one\n// two\na = 1 # three\nb = 2 // four\n\"c#\" = \"#\"");
    assert_eq!(keys(&Value::Object(doc.clone())), ["a", "b", "c#"]);
    assert_eq!(at(&doc, "b"), &Value::Int(2));
    assert_eq!(doc.get("c#"), Some(&s("#")));
    // A comment ends at a line feed only; carriage returns are spaces.
    assert_eq!(
        parse("a = 1 # x\r y = 2\r\nb = 2\r\n"),
        parse("a = 1\nb = 2")
    );
}

// ---------------------------------------------------------------------------------
// Substitutions

#[test]
fn substitutions() {
    let doc = parse(
        "base { host = \"10.0.0.1\", port = 45678 }\n\
         a = ${base.port}\n\
         b = ${base}\n\
         c = ${base.host}\":\"${base.port}\n\
         d = ${a} ms\n\
         e = [${a}, ${base.host}]",
    );
    assert_eq!(at(&doc, "a"), &Value::Int(45678));
    assert_eq!(keys(at(&doc, "b")), ["host", "port"]);
    assert_eq!(at(&doc, "c"), &s("10.0.0.1:45678"));
    assert_eq!(at(&doc, "d"), &s("45678 ms"));
    assert_eq!(
        at(&doc, "e"),
        &Value::List(vec![Value::Int(45678), s("10.0.0.1")])
    );
    // A substitution may come before the key it names, and chain.
    let doc = parse("a = ${b}\nb = ${c.d}\nc.d = x");
    assert_eq!(at(&doc, "a"), &s("x"));
}

#[test]
fn substitutions_fall_back_to_the_environment() {
    let doc = parse("host = ${KV_TEST_HOST}\naddr = ${KV_TEST_HOST}\":1\"");
    assert_eq!(at(&doc, "host"), &s("10.0.0.9"));
    assert_eq!(at(&doc, "addr"), &s("10.0.0.9:1"));
}

#[test]
fn optional_substitutions() {
    // Undefined: the field is not set, or keeps its earlier value.
    let doc = parse("a = ${?NOPE}\nb = 1\nb = ${?NOPE}\nc = ${?KV_TEST_HOST}\nd = x ${?NOPE}");
    assert_eq!(doc.get("a"), None);
    assert_eq!(at(&doc, "b"), &Value::Int(1));
    assert_eq!(at(&doc, "c"), &s("10.0.0.9"));
    assert_eq!(at(&doc, "d"), &s("x "));
    let doc = parse("a = [1, ${?NOPE}, 2]");
    assert_eq!(
        at(&doc, "a"),
        &Value::List(vec![Value::Int(1), Value::Int(2)])
    );
}

#[test]
fn self_references_see_the_earlier_value() {
    let doc = parse(
        "a = [1]\na = ${a} [2]\nb = x\nb = ${b}y\nc += 1\nc += 2\nd { x = 1 }\nd = ${d} { y = 2 }",
    );
    assert_eq!(
        at(&doc, "a"),
        &Value::List(vec![Value::Int(1), Value::Int(2)])
    );
    assert_eq!(at(&doc, "b"), &s("xy"));
    assert_eq!(
        at(&doc, "c"),
        &Value::List(vec![Value::Int(1), Value::Int(2)])
    );
    assert_eq!(keys(at(&doc, "d")), ["x", "y"]);
    // Also across sources, and through a section set in braces.
    let doc = hocon::load(
        &[
            Source {
                text: "k { seeds = [\"a\"] }",
                origin: "reference.conf",
                dir: None,
            },
            Source {
                text: "k { seeds = ${k.seeds} [\"b\"] }",
                origin: "node.conf",
                dir: None,
            },
        ],
        &env,
    )
    .unwrap();
    assert_eq!(at(&doc, "k.seeds"), &Value::List(vec![s("a"), s("b")]));
}

#[test]
fn a_substitution_over_a_section_merges_with_it() {
    let doc = parse("a { x = 1, y = 1 }\nb { y = 2 }\na = ${b}");
    assert_eq!(at(&doc, "a.x"), &Value::Int(1));
    assert_eq!(at(&doc, "a.y"), &Value::Int(2));
    let doc = parse("a { x = 1 }\nb = 5\na = ${b}");
    assert_eq!(at(&doc, "a"), &Value::Int(5));
}

#[test]
fn substitution_errors_name_the_key_and_the_line() {
    assert_eq!(
        error("a = 1\nb {\n  c = ${nope.x}\n}"),
        "t.conf: line 3: b.c: substitution ${nope.x} is not defined"
    );
    assert_eq!(
        error("a = ${b}\nb = ${a}"),
        "t.conf: line 2: substitution ${a} refers back to itself (a cycle)"
    );
    assert_eq!(
        error("a = ${a.b}"),
        "t.conf: line 1: substitution ${a.b} refers back to itself (a cycle)"
    );
    assert_eq!(
        error("a = ${a}"),
        "t.conf: line 1: a: substitution ${a} is not defined"
    );
    assert_eq!(
        error("a = { x = ${a} }"),
        "t.conf: line 1: substitution ${a} refers back to itself (a cycle)"
    );
    assert_eq!(
        error("a = ${"),
        "t.conf: line 1: a substitution ${...} is not closed by '}'"
    );
    assert_eq!(
        error("a = ${}"),
        "t.conf: line 1: an empty substitution ${}"
    );
    assert_eq!(
        error("a = [1]\nb = x ${a}"),
        "t.conf: line 2: b: a list and text cannot be joined into one value (quote the text)"
    );
}

// ---------------------------------------------------------------------------------
// Syntax errors: each names the file and the line

#[test]
fn syntax_errors() {
    let cases = [
        (
            "a {\n b = 1\n",
            "line 1: the '{' opened here is never closed",
        ),
        ("a = [\n1\n", "line 1: the '[' opened here is never closed"),
        ("a = 1\n}", "line 2: '}' closes nothing"),
        ("a = 1\n]", "line 2: ']' closes nothing"),
        (
            "a {\n b = [1 }\n}",
            "line 2: '}' does not close the '[' opened on line 2",
        ),
        (
            "a {\n b = 1 ]",
            "line 2: ']' does not close the '{' opened on line 1",
        ),
        ("a = \"x\n", "line 1: the string is never closed"),
        (
            "\n\na = \"\"\"x\n",
            "line 3: the \"\"\" string is never closed",
        ),
        (
            "a = \"\\q\"",
            "line 1: \\q is not an escape (use \\\\ for a backslash)",
        ),
        (
            "a = \"\\u12\"",
            "line 1: \\u must be followed by four hex digits",
        ),
        ("a = \"\\ud800\"", "line 1: \\u escape: unpaired surrogate"),
        ("a\n", "line 1: a has no value"),
        ("x = 1\na =\n", "line 2: a has no value"),
        ("a = # c\n", "line 1: a has no value"),
        ("a = 1,,b = 2", "line 1: ',' where a key belongs"),
        ("a = [1,,2]", "line 1: a: ',' where a value belongs"),
        (
            "a..b = 1",
            "line 1: a..: empty key part (two dots, or a dot at the start)",
        ),
        ("a. = 1", "line 1: a.: a key cannot end with '.'"),
        ("[1, 2]", "line 1: expected a key, found \"[\""),
        (
            "a = 127.0.0.1:80",
            "line 1: unquoted value 127.0.0.1:80 contains ':' (write it in quotes: \"127.0.0.1:80\")",
        ),
        (
            "a = x!y, b = 1",
            "line 1: unquoted value x!y, b = 1 contains '!' (write it in quotes: \"x!y, b = 1\")",
        ),
        (
            "a = $x",
            "line 1: unquoted value $x contains '$' (write it in quotes: \"$x\")",
        ),
        (
            "a + 1",
            "line 1: expected '=', ':' or '{' after a, found \"+\"",
        ),
        (
            "{ a = 1 } b",
            "line 1: \"b\" after the '}' that closes the file's object",
        ),
        (
            "include url(\"http://x\")",
            "line 1: only files can be included (not url or classpath)",
        ),
        (
            "include file(x)",
            "line 1: include takes a file name in quotes",
        ),
        (
            "include required(\"x.conf\"",
            "line 1: include: ')' missing",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), format!("t.conf: {expected}"), "{text:?}");
    }
}

#[test]
fn include_needs_a_file() {
    assert_eq!(
        error("a = 1\ninclude \"x.conf\""),
        "t.conf: line 2: `include` needs a file to be relative to"
    );
}

// ---------------------------------------------------------------------------------
// Includes

/// A fresh directory under the test's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hocon_spec")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).expect("scratch directory");
    dir
}

fn load_file(path: &Path) -> Result<Object, Error> {
    let text = std::fs::read_to_string(path).expect("test file");
    let origin = path.display().to_string();
    hocon::load(
        &[Source {
            text: &text,
            origin: &origin,
            dir: path.parent(),
        }],
        &env,
    )
}

#[test]
fn includes_are_relative_to_the_including_file_and_merge_in_place() {
    let dir = scratch("relative");
    std::fs::write(
        dir.join("main.conf"),
        "a = 0\ninclude \"sub/one.conf\"\nb = 2\nsection {\n  include file(\"sub/two.conf\")\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sub/one.conf"),
        "a = 1\nb = 1\ninclude required(\"three.conf\")",
    )
    .unwrap();
    std::fs::write(dir.join("sub/two.conf"), "{ x = 2, y = ${b} }").unwrap();
    std::fs::write(dir.join("sub/three.conf"), "c = 3").unwrap();
    let doc = load_file(&dir.join("main.conf")).unwrap();
    assert_eq!(at(&doc, "a"), &Value::Int(1));
    assert_eq!(at(&doc, "b"), &Value::Int(2), "set after the include");
    assert_eq!(at(&doc, "c"), &Value::Int(3));
    assert_eq!(at(&doc, "section.x"), &Value::Int(2));
    assert_eq!(at(&doc, "section.y"), &Value::Int(2));
}

#[test]
fn include_errors_name_the_file_and_the_line() {
    let dir = scratch("errors");
    std::fs::write(dir.join("missing.conf"), "a = 1\ninclude \"nope.conf\"").unwrap();
    let e = load_file(&dir.join("missing.conf")).unwrap_err();
    assert_eq!(
        e,
        Error::Include {
            origin: dir.join("missing.conf").display().to_string(),
            line: 2,
            path: "nope.conf".into()
        }
    );
    std::fs::write(dir.join("broken.conf"), "include \"sub/bad.conf\"").unwrap();
    std::fs::write(dir.join("sub/bad.conf"), "x = 1\ny = [\n").unwrap();
    assert_eq!(
        load_file(&dir.join("broken.conf")).unwrap_err().to_string(),
        format!(
            "{}: line 2: the '[' opened here is never closed",
            dir.join("sub/bad.conf").display()
        )
    );
    std::fs::write(dir.join("loop.conf"), "include \"loop.conf\"").unwrap();
    let e = load_file(&dir.join("loop.conf")).unwrap_err().to_string();
    assert!(e.contains("includes nested more than 8 deep"), "{e}");
}

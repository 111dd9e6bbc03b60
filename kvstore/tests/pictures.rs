//! Issue 16, pictures: `kvstore bench --report DIR` against a real three-node
//! cluster writes a self-contained page with the latency-by-percentile and the
//! per-second charts and the data behind them; `kvstore report` draws that data
//! again with windows shaded; `kvstore check-history --html` draws the offending key
//! of a history that is not linearizable (the bench's own history with one stale
//! read appended). Bad output paths are refused before any work, with exit code 2.
//!
//! Waits poll a condition with a bounded deadline; nothing sleeps for a fixed time,
//! and no duration is asserted.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Cluster, Scratch, WAIT, run, run_with_input, wait_until};
use kv_checker::{HistoryOp, Op, parse_history};

/// Hang guard of the bench run (2.5 s of load plus the client deadline).
const BENCH_LIMIT: Duration = Duration::from_secs(120);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A read appended after every other operation of `history` that returns a value
/// of a key that a later, non-overlapping PUT had replaced: a stale read, which no
/// linearizable history has. Returns the history's text with it, and the key.
fn with_stale_read(history: &str) -> (String, String) {
    let ops = parse_history(history).expect("the bench writes a valid history");
    let last = ops
        .iter()
        .map(|o| o.ret.unwrap_or(o.call).max(o.call))
        .max()
        .expect("operations");
    let puts: Vec<(&str, &str, u64, u64)> = ops
        .iter()
        .filter_map(|o| match (&o.op, o.ret) {
            (Op::Put { key, value }, Some(ret)) => {
                Some((key.as_str(), value.as_str(), o.call, ret))
            }
            _ => None,
        })
        .collect();
    // Bench values (of PUT and CAS alike) are unique per client and sequence, so
    // once `b`, called after `a` returned, has replaced `a`'s value, nothing writes
    // that value again.
    let (key, value) = puts
        .iter()
        .find_map(|a| {
            puts.iter()
                .any(|b| b.0 == a.0 && b.2 > a.3)
                .then_some((a.0, a.1))
        })
        .expect("some key was written twice, one write after the other");
    let stale = HistoryOp {
        client: 999,
        call: last + 1_000,
        ret: Some(last + 2_000),
        op: Op::Get {
            key: key.to_string(),
            out: Some(value.to_string()),
        },
    };
    (
        format!("{}\n{}\n", history.trim_end(), stale.to_json_line()),
        key.to_string(),
    )
}

#[test]
fn bench_report_and_check_history_html_draw_what_they_promise() {
    let cluster = Cluster::start("pictures", 3, 1, 3);
    let ep = cluster.nodes[0].address.to_string();
    wait_until(&format!("the store is served through {ep}"), WAIT, || {
        let r = run(&["get", "probe", "--endpoint", &ep, "--timeout", "2s"]);
        matches!(r.code, Some(0) | Some(1))
    });
    let dir = cluster.scratch.path.join("report");
    let history = cluster.scratch.path.join("history.jsonl");
    let (dir_s, hist_s) = (
        dir.to_string_lossy().to_string(),
        history.to_string_lossy().to_string(),
    );
    let r = run_with_input(
        &[
            "bench",
            "--endpoint",
            &ep,
            "--clients",
            "8",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--keys",
            "20",
            "--timeout",
            "10s",
            "--history",
            &hist_s,
            "--report",
            &dir_s,
        ],
        "",
        BENCH_LIMIT,
    );
    assert_eq!(r.code, Some(0), "bench failed: {}", r.show());
    let line: serde_json::Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("bench printed no JSON line ({e}): {}", r.show()));
    let ops = line["ops"].as_u64().expect("ops");
    assert!(ops > 0, "{line}");

    // The page: self-contained, both charts inlined, every series named.
    let html = read(&dir.join("index.html"));
    assert_eq!(html.matches("<svg").count(), 2, "two inline charts");
    for s in [
        "Latency by percentile",
        "99%",
        "Throughput and p99 latency per second",
        "throughput (ops/s, left)",
        "p99 latency (ms, right)",
        "errors (refused)",
        "timeouts",
        "warm-up",
        "report.json",
    ] {
        assert!(html.contains(s), "{s:?} missing from index.html");
    }
    assert!(!html.contains("<script") && !html.contains("<link"));
    for svg in ["latency.svg", "per-second.svg"] {
        assert!(read(&dir.join(svg)).starts_with("<svg"), "{svg}");
    }
    // The data: the summary line, a bucket for every second of the run, and the
    // percentile curve of the measured operations.
    let data: serde_json::Value =
        serde_json::from_str(&read(&dir.join("report.json"))).expect("report.json is JSON");
    assert_eq!(data["summary"]["ops"], line["ops"]);
    let seconds = data["seconds"].as_array().expect("seconds");
    let ts: Vec<u64> = seconds.iter().filter_map(|s| s["t"].as_u64()).collect();
    assert_eq!(ts, (0..ts.len() as u64).collect::<Vec<_>>(), "{data}");
    let answered: u64 = seconds.iter().filter_map(|s| s["ops"].as_u64()).sum();
    assert!(
        answered >= ops,
        "the buckets (warm-up included) hold at least the measured operations: {answered} < {ops}"
    );
    let curve = data["percentiles"].as_array().expect("percentiles");
    assert!(curve.len() > 20, "{curve:?}");

    // The same data drawn again with a window shaded.
    let again = cluster.scratch.path.join("again");
    let again_s = again.to_string_lossy().to_string();
    let data_s = dir.join("report.json").to_string_lossy().to_string();
    let r = run(&[
        "report",
        &data_s,
        "--out",
        &again_s,
        "--window",
        "kill=0.8..1.6",
        "--title",
        "fault test",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let html = read(&again.join("index.html"));
    assert!(html.contains("<h1>fault test</h1>"));
    assert!(html.contains("<td>kill</td>"), "the window is listed");
    assert!(read(&again.join("per-second.svg")).contains("kill"));

    // The bench's history is linearizable: the page says so.
    let ok_page = cluster.scratch.path.join("ok.html");
    let ok_s = ok_page.to_string_lossy().to_string();
    let r = run(&["check-history", &hist_s, "--html", &ok_s]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert!(read(&ok_page).contains("History is linearizable"));

    // With a stale read appended it is not: the page names the key and draws it.
    let (bad, key) = with_stale_read(&read(&history));
    let bad_history = cluster.scratch.write("bad.jsonl", &bad);
    let bad_page = cluster.scratch.path.join("bad.html");
    let (bad_s, page_s) = (
        bad_history.to_string_lossy().to_string(),
        bad_page.to_string_lossy().to_string(),
    );
    let r = run(&["check-history", &bad_s, "--html", &page_s]);
    assert_eq!(r.code, Some(1), "{}", r.show());
    assert!(
        r.stdout
            .contains(&format!("NOT linearizable on key {key:?}"))
    );
    let html = read(&bad_page);
    assert!(
        html.contains(&format!("NOT linearizable on key &quot;{key}&quot;")),
        "the key is named in the page"
    );
    assert_eq!(html.matches("<svg").count(), 1, "one timeline");
    assert!(html.contains("client 999"), "the stale reader has a row");
    assert!(html.contains("cannot be ordered by here"));
}

#[test]
fn output_paths_that_cannot_be_written_are_refused_first() {
    let scratch = Scratch::new("pictures-paths");
    let file = scratch.write("a-file", "not a directory");
    let under_file = file.join("report").to_string_lossy().to_string();
    // No cluster at this endpoint: the path is refused before any connection.
    let r = run(&[
        "bench",
        "--endpoint",
        "127.0.0.1:9",
        "--duration",
        "1s",
        "--report",
        &under_file,
    ]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(
        r.stderr.contains("--report") && r.stderr.contains("a-file"),
        "{}",
        r.show()
    );

    let history = scratch.write(
        "h.jsonl",
        r#"{"client":1,"call":0,"ret":10,"body":{"op":"put","key":"k","value":"a"}}"#,
    );
    let h = history.to_string_lossy().to_string();
    let r = run(&["check-history", &h, "--html", &under_file]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(r.stderr.contains("--html"), "{}", r.show());
    let r = run(&["check-history", &h, "--html", &h]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(
        read(&history).contains("\"put\""),
        "the history is untouched"
    );

    let out = scratch.path.join("out").to_string_lossy().to_string();
    let r = run(&["report", &h, "--out", &out]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(r.stderr.contains("not a bench report"), "{}", r.show());
    let r = run(&["report", &h, "--out", &out, "--window", "kill=5..1"]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(r.stderr.contains("--window"), "{}", r.show());
}
